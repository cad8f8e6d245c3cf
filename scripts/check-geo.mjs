#!/usr/bin/env node
// Checks the wall map's offline context layer (web/geo/florence-context.geojson) against its
// schema (web/geo/SOURCES.md) and against the demo's road segments
// (deploy/seed/florence-segments.geojson): the Arno lies between the lungarni without
// covering them, the bridges join the two banks, the ring passes through the ends of the
// seed's ring avenues. Exits 1 with one line per problem; prints a short summary otherwise.
//
//   node scripts/check-geo.mjs [--geo FILE] [--seed FILE]
//   node scripts/check-geo.mjs --svg out.svg [--bbox minLon,minLat,maxLon,maxLat]
//
// --svg also draws the seed segments and the layer (equirectangular, x scaled by
// cos(latitude)) for a look by eye. Plain Node 20, no dependencies.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  if (i + 1 >= args.length) usage(`${name} needs a value`);
  return args[i + 1];
};
function usage(msg) {
  console.error(`check-geo: ${msg}\nusage: node scripts/check-geo.mjs [--geo FILE] [--seed FILE] [--svg OUT.svg [--bbox minLon,minLat,maxLon,maxLat]]`);
  process.exit(2);
}
for (let i = 0; i < args.length; i += 2) {
  if (!['--geo', '--seed', '--svg', '--bbox'].includes(args[i])) usage(`unknown argument ${args[i]}`);
}
const GEO = opt('--geo', path.join(root, 'web/geo/florence-context.geojson'));
const SEED = opt('--seed', path.join(root, 'deploy/seed/florence-segments.geojson'));
const SVG = opt('--svg', null);
const BBOX = opt('--bbox', null);

// Limits the dashboard relies on.
const LON = [11.10, 11.40];
const LAT = [43.70, 43.86];
const MAX_BYTES = 60 * 1000;
const KINDS = ['river', 'river_line', 'stream', 'ring', 'centre', 'park', 'rail', 'bridge', 'landmark'];
const GEOMETRY = {
  river: ['Polygon', 'MultiPolygon'], river_line: ['LineString', 'MultiLineString'],
  stream: ['LineString', 'MultiLineString'], ring: ['LineString', 'MultiLineString'],
  centre: ['Polygon', 'MultiPolygon'], park: ['Polygon', 'MultiPolygon'],
  rail: ['LineString', 'MultiLineString'], bridge: ['LineString'], landmark: ['Point'],
};
const REQUIRED = {
  park: ['Parco delle Cascine', 'Giardino di Boboli'],
  bridge: ['Ponte Vecchio', 'Ponte Santa Trinita', 'Ponte alla Carraia', 'Ponte alle Grazie',
    'Ponte Amerigo Vespucci', 'Ponte San Niccolò', 'Ponte Giovanni da Verrazzano'],
  landmark: ['Cattedrale di Santa Maria del Fiore', 'Stazione di Santa Maria Novella', 'Ponte Vecchio',
    'Piazza della Signoria', 'Uffizi', 'Palazzo Pitti', 'Santa Croce', 'Fortezza da Basso',
    'Piazzale Michelangelo', 'Campo di Marte', 'Stadio Artemio Franchi', 'Porta Romana', 'Careggi',
    'Aeroporto Amerigo Vespucci'],
};
const BANK_MAX_M = 150; // every lungarno vertex within this of the river centreline
const BRIDGE_ZONE_M = 30; // a seed vertex or edge in the river is fine this close to a bridge
const RING_SNAP_M = 10; // ring_road segment ends within this of the ring

const errors = [];
const fail = (msg) => errors.push(msg);

// --------------------------------------------------------------------------------------
// Geometry helpers (local metric projection; < 0.2 % error over the area).
const LAT0 = 43.77;
const KX = 111319.49 * Math.cos((LAT0 * Math.PI) / 180) / Math.sqrt(1 - 0.00669438 * Math.sin((LAT0 * Math.PI) / 180) ** 2);
const KY = 111132.95 - 559.82 * Math.cos((2 * LAT0 * Math.PI) / 180);
const xy = ([lon, lat]) => [lon * KX, lat * KY];
const dist = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1]);
function distPointSeg(p, a, b) {
  const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
  const l2 = dx * dx + dy * dy;
  const t = l2 ? Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2)) : 0;
  return Math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy));
}
const distPointLine = (p, line) => {
  let d = Infinity;
  for (let i = 1; i < line.length; i++) d = Math.min(d, distPointSeg(p, line[i - 1], line[i]));
  return d;
};
const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
function segmentsCross(p1, p2, q1, q2) {
  const d1 = cross(q1, q2, p1);
  const d2 = cross(q1, q2, p2);
  const d3 = cross(p1, p2, q1);
  const d4 = cross(p1, p2, q2);
  return ((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0));
}
function inRing(p, ring) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [a, b] = [ring[i], ring[j]];
    if ((a[1] > p[1]) !== (b[1] > p[1]) && p[0] < ((b[0] - a[0]) * (p[1] - a[1])) / (b[1] - a[1]) + a[0]) inside = !inside;
  }
  return inside;
}
const inPolygon = (p, rings) => inRing(p, rings[0]) && !rings.slice(1).some((h) => inRing(p, h));
const polygonsOf = (g) => (g.type === 'Polygon' ? [g.coordinates] : g.type === 'MultiPolygon' ? g.coordinates : []);
const linesOf = (g) => (g.type === 'LineString' ? [g.coordinates] : g.type === 'MultiLineString' ? g.coordinates
  : g.type === 'Polygon' ? g.coordinates : g.type === 'MultiPolygon' ? g.coordinates.flat() : []);
// Side of p relative to a polyline: the sign of the cross product with its nearest segment.
function sideOf(p, line) {
  let best = Infinity;
  let side = 0;
  for (let i = 1; i < line.length; i++) {
    const d = distPointSeg(p, line[i - 1], line[i]);
    if (d < best) { best = d; side = Math.sign(cross(line[i - 1], line[i], p)); }
  }
  return side;
}
const isPos = (c) => Array.isArray(c) && c.length >= 2 && c.length <= 3 && c.every((v) => typeof v === 'number' && Number.isFinite(v));

// --------------------------------------------------------------------------------------
// Load.
function load(file, what) {
  let text;
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) { usage(`cannot read the ${what} ${file}: ${e.message}`); }
  try { return { text, json: JSON.parse(text) }; } catch (e) {
    console.error(`check-geo: ${file} is not valid JSON: ${e.message}`);
    process.exit(1);
  }
}
const { json: geo } = load(GEO, 'context layer');
const bytes = fs.statSync(GEO).size;
const { json: seed } = load(SEED, 'seed segments');
const rel = (f) => path.relative(process.cwd(), f) || f;

// --------------------------------------------------------------------------------------
// 1. GeoJSON structure, bounds, rounding, closed rings.
if (geo.type !== 'FeatureCollection' || !Array.isArray(geo.features)) {
  console.error(`check-geo: ${rel(GEO)}: not a GeoJSON FeatureCollection with a features array`);
  process.exit(1);
}
const label = (f, i) => `feature ${i} (${f?.properties?.id ?? f?.id ?? f?.properties?.name ?? 'no id'})`;
function checkPositions(coords, depth, where) {
  // depth: 0 position, 1 list of positions, 2 list of lists, 3 list of lists of lists.
  if (depth === 0) {
    if (!isPos(coords)) { fail(`${where}: ${JSON.stringify(coords)} is not a [lon, lat] position`); return; }
    const [lon, lat] = coords;
    if (lon < LON[0] || lon > LON[1] || lat < LAT[0] || lat > LAT[1]) {
      fail(`${where}: [${lon}, ${lat}] is outside lon ${LON.join('–')}, lat ${LAT.join('–')} (swapped lon/lat?)`);
    }
    for (const v of coords.slice(0, 2)) {
      if (Math.abs(v * 1e5 - Math.round(v * 1e5)) > 1e-6) fail(`${where}: ${v} has more than 5 decimals`);
    }
    return;
  }
  if (!Array.isArray(coords)) { fail(`${where}: coordinates nest too shallow`); return; }
  coords.forEach((c) => checkPositions(c, depth - 1, where));
}
const DEPTH = { Point: 0, LineString: 1, MultiLineString: 2, Polygon: 2, MultiPolygon: 3 };
const ids = new Set();
const byKind = new Map(KINDS.map((k) => [k, []]));
geo.features.forEach((f, i) => {
  const where = label(f, i);
  if (f?.type !== 'Feature') { fail(`${where}: type is ${JSON.stringify(f?.type)}, not "Feature"`); return; }
  const p = f.properties;
  const g = f.geometry;
  if (!p || typeof p !== 'object') { fail(`${where}: no properties object`); return; }
  if (!g || !(g.type in DEPTH)) { fail(`${where}: geometry type ${JSON.stringify(g?.type)} is not one of ${Object.keys(DEPTH).join(', ')}`); return; }
  const before = errors.length;
  checkPositions(g.coordinates, DEPTH[g.type], where);
  if (g.type === 'LineString' && !(g.coordinates?.length >= 2)) fail(`${where}: a LineString needs at least 2 positions`);
  if (g.type === 'MultiLineString' && !g.coordinates?.every((l) => l.length >= 2)) fail(`${where}: every line of a MultiLineString needs at least 2 positions`);
  const geometryOk = errors.length === before;
  for (const poly of geometryOk ? polygonsOf(g) : []) {
    poly.forEach((ring, r) => {
      if (ring.length < 4) { fail(`${where}: ring ${r} has ${ring.length} positions, a closed ring needs at least 4`); return; }
      const [a, b] = [ring[0], ring.at(-1)];
      if (a[0] !== b[0] || a[1] !== b[1]) fail(`${where}: ring ${r} is not closed (first ${JSON.stringify(a)} ≠ last ${JSON.stringify(b)})`);
      let area2 = 0;
      for (let i = 1; i < ring.length; i++) area2 += ring[i - 1][0] * ring[i][1] - ring[i][0] * ring[i - 1][1];
      if (r === 0 && area2 <= 0) fail(`${where}: the outer ring runs clockwise; RFC 7946 wants counter-clockwise`);
      if (r > 0 && area2 >= 0) fail(`${where}: hole ${r} runs counter-clockwise; RFC 7946 wants clockwise`);
      const m = ring.map(xy);
      for (let s = 1; s < m.length; s++) {
        for (let t = s + 2; t < m.length; t++) {
          if (s === 1 && t === m.length - 1) continue;
          if (segmentsCross(m[s - 1], m[s], m[t - 1], m[t])) fail(`${where}: ring ${r} crosses itself (edges ${s} and ${t})`);
        }
      }
    });
  }
  // Properties.
  if (!KINDS.includes(p.kind)) { fail(`${where}: kind ${JSON.stringify(p.kind)} is not one of ${KINDS.join(', ')}`); return; }
  if (typeof p.name !== 'string' || !p.name.trim()) fail(`${where}: no name`);
  if (p.name_en !== undefined && (typeof p.name_en !== 'string' || !p.name_en.trim())) fail(`${where}: name_en is empty`);
  if (typeof p.id !== 'string' || !p.id) fail(`${where}: no properties.id`);
  else {
    if (ids.has(p.id)) fail(`${where}: id ${p.id} is used twice`);
    if (f.id !== p.id) fail(`${where}: feature id ${JSON.stringify(f.id)} differs from properties.id ${JSON.stringify(p.id)}`);
    ids.add(p.id);
  }
  if (!GEOMETRY[p.kind].includes(g.type)) fail(`${where}: a ${p.kind} must be a ${GEOMETRY[p.kind].join(' or ')}, not a ${g.type}`);
  if (p.kind === 'landmark') {
    for (const k of ['name_it', 'name_en']) if (typeof p[k] !== 'string' || !p[k].trim()) fail(`${where}: landmark without ${k}`);
    if (p.rank !== 1 && p.rank !== 2) fail(`${where}: landmark rank is ${JSON.stringify(p.rank)}, not 1 or 2`);
  }
  // Only well-formed geometries take part in the checks against the seed.
  if (geometryOk) byKind.get(p.kind).push(f);
});

for (const k of ['river', 'river_line', 'ring', 'centre', 'park', 'rail', 'bridge', 'landmark']) {
  if (!byKind.get(k).length) fail(`no feature of kind ${k}`);
}
for (const [kind, names] of Object.entries(REQUIRED)) {
  for (const n of names) {
    const hit = byKind.get(kind).some((f) => [f.properties.name, f.properties.name_it].some((v) => typeof v === 'string' && v.includes(n)));
    if (!hit) fail(`no ${kind} named like "${n}"`);
  }
}
if (bytes >= MAX_BYTES) fail(`${rel(GEO)} is ${bytes} bytes, the limit is under ${MAX_BYTES}`);

// --------------------------------------------------------------------------------------
// 2. Consistency with the seed road segments.
const seedSegs = (seed.features || []).map((f) => ({
  id: f.properties?.id ?? f.id, kind: f.properties?.kind, coords: f.geometry?.coordinates || [],
}));
const lungarni = seedSegs.filter((s) => /^lungarno-/.test(s.id));
const ringRoads = seedSegs.filter((s) => s.kind === 'ring_road');
if (!lungarni.length) fail(`${rel(SEED)} has no lungarno-* segment to check the river against`);

const rivers = byKind.get('river').flatMap((f) => polygonsOf(f.geometry));
const riverRings = rivers.map((poly) => poly.map((r) => r.map(xy)));
const centreLines = byKind.get('river_line').flatMap((f) => linesOf(f.geometry)).map((l) => l.map(xy));
const bridges = byKind.get('bridge').map((f) => ({ name: f.properties.name, line: f.geometry.coordinates.map(xy) }));
const inRiver = (p) => riverRings.some((poly) => inPolygon(p, poly));
const nearBridge = (p) => bridges.some((b) => distPointLine(p, b.line) <= BRIDGE_ZONE_M);
const nearestCentre = (p) => {
  let best = { d: Infinity, line: null };
  for (const l of centreLines) { const d = distPointLine(p, l); if (d < best.d) best = { d, line: l }; }
  return best;
};

let seedVertices = 0;
for (const s of seedSegs) {
  const m = s.coords.map(xy);
  const isLungarno = /^lungarno-/.test(s.id);
  m.forEach((p, i) => {
    seedVertices++;
    if (!inRiver(p)) return;
    if (isLungarno) fail(`the river polygon covers vertex ${i} ${JSON.stringify(s.coords[i])} of ${s.id}`);
    else if (!nearBridge(p)) fail(`the river polygon covers vertex ${i} ${JSON.stringify(s.coords[i])} of ${s.id}, and no bridge is there`);
  });
  // Edges, too: a road may cross the water only on a bridge, a lungarno never.
  for (let i = 1; i < m.length; i++) {
    for (const poly of riverRings) {
      for (const ring of poly) {
        for (let j = 1; j < ring.length; j++) {
          if (!segmentsCross(m[i - 1], m[i], ring[j - 1], ring[j])) continue;
          const mid = [(m[i - 1][0] + m[i][0]) / 2, (m[i - 1][1] + m[i][1]) / 2];
          if (isLungarno || !nearBridge(mid)) fail(`${s.id} (edge ${i - 1}–${i}) runs into the river polygon`);
        }
      }
    }
  }
}
if (centreLines.length) {
  for (const s of lungarni) {
    s.coords.forEach((c, i) => {
      const { d } = nearestCentre(xy(c));
      if (d > BANK_MAX_M) fail(`${s.id} vertex ${i} ${JSON.stringify(c)} is ${Math.round(d)} m from the river centreline (limit ${BANK_MAX_M} m)`);
    });
  }
  for (const b of bridges) {
    const [a, z] = [b.line[0], b.line.at(-1)];
    const { line } = nearestCentre(a);
    const [sa, sz] = [sideOf(a, line), sideOf(z, line)];
    if (!(sa && sz && sa !== sz)) fail(`bridge ${b.name}: both ends are on the same side of the river centreline`);
    if (inRiver(a) || inRiver(z)) fail(`bridge ${b.name}: an end is in the water, not on a bank`);
    const len = dist(a, z);
    if (len < 40 || len > 400) fail(`bridge ${b.name}: ${Math.round(len)} m long, expected 40–400 m`);
  }
}

// The ring passes through the ends of the seed's ring avenues and closes around the centre.
const ringLines = byKind.get('ring').flatMap((f) => linesOf(f.geometry)).map((l) => l.map(xy));
if (ringLines.length) {
  for (const s of ringRoads) {
    for (const [which, c] of [['start', s.coords[0]], ['end', s.coords.at(-1)]]) {
      const d = Math.min(...ringLines.map((l) => distPointLine(xy(c), l)));
      if (d > RING_SNAP_M) fail(`the ring passes ${Math.round(d)} m from the ${which} of ${s.id} ${JSON.stringify(c)} (limit ${RING_SNAP_M} m)`);
    }
  }
  const loops = ringLines.filter((l) => l.length >= 4 && dist(l[0], l.at(-1)) < 1);
  const duomo = byKind.get('landmark').find((f) => /Santa Maria del Fiore/.test(f.properties.name_it ?? ''));
  if (!loops.length) fail('the ring has no closed line (first position = last)');
  else if (duomo && !loops.some((l) => inRing(xy(duomo.geometry.coordinates), l))) fail('the ring\'s closed line does not go around the Duomo');
}
// Central landmarks inside the centre polygon.
const centrePolys = byKind.get('centre').flatMap((f) => polygonsOf(f.geometry)).map((poly) => poly.map((r) => r.map(xy)));
for (const f of byKind.get('landmark')) {
  if (/Santa Maria del Fiore|Signoria|Uffizi|Pitti|Santa Croce|Ponte Vecchio/.test(f.properties.name_it ?? '')
    && !centrePolys.some((poly) => inPolygon(xy(f.geometry.coordinates), poly))) {
    fail(`landmark ${f.properties.name_it} is outside the centre polygon`);
  }
}

// --------------------------------------------------------------------------------------
// SVG preview.
if (SVG) writeSvg(SVG);

if (errors.length) {
  console.error(`check-geo: ${rel(GEO)}: ${errors.length} problem${errors.length > 1 ? 's' : ''}`);
  for (const e of errors) console.error(`  - ${e}`);
  process.exit(1);
}
const counts = KINDS.map((k) => [k, byKind.get(k).length]).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(', ');
console.log(`check-geo: ${rel(GEO)} OK`);
console.log(`  ${geo.features.length} features: ${counts}`);
console.log(`  ${bytes} bytes (${(bytes / 1024).toFixed(1)} KiB, limit ${MAX_BYTES} bytes)`);
console.log(`  against ${rel(SEED)}: ${seedSegs.length} segments, ${seedVertices} vertices clear of the river, `
  + `${lungarni.length} lungarni within ${BANK_MAX_M} m of the centreline, ${bridges.length} bridges bank to bank, `
  + `${ringRoads.length} ring avenues on the ring`);
if (SVG) console.log(`  preview: ${rel(SVG)}`);

function writeSvg(out) {
  let box;
  if (BBOX) {
    box = BBOX.split(',').map(Number);
    if (box.length !== 4 || box.some((v) => !Number.isFinite(v))) usage('--bbox wants minLon,minLat,maxLon,maxLat');
  } else {
    const all = [...geo.features.flatMap((f) => allPositions(f.geometry)), ...seedSegs.flatMap((s) => s.coords)];
    box = [Math.min(...all.map((c) => c[0])), Math.min(...all.map((c) => c[1])), Math.max(...all.map((c) => c[0])), Math.max(...all.map((c) => c[1]))];
  }
  const [x0, y0, x1, y1] = box;
  const k = Math.cos((((y0 + y1) / 2) * Math.PI) / 180);
  const W = 1600;
  const pad = 20;
  const s = (W - 2 * pad) / ((x1 - x0) * k);
  const H = Math.round((y1 - y0) * s + 2 * pad);
  const px = ([lon, lat]) => `${(pad + (lon - x0) * k * s).toFixed(1)},${(pad + (y1 - lat) * s).toFixed(1)}`;
  const pathOf = (lines, close) => lines.map((l) => `M${l.map(px).join('L')}${close ? 'Z' : ''}`).join('');
  const esc = (t) => String(t).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const el = [];
  const draw = (kind, style, close = false) => {
    for (const f of byKind.get(kind)) {
      const g = f.geometry;
      const lines = close ? polygonsOf(g).flat() : linesOf(g);
      el.push(`<path d="${pathOf(lines, close)}" ${style}><title>${esc(f.properties.name)}</title></path>`);
    }
  };
  draw('centre', 'fill="#3a3320" fill-opacity="0.6" stroke="#8a7a40" stroke-width="1"', true);
  draw('park', 'fill="#1f4d2a" stroke="#3c8a4e" stroke-width="1"', true);
  draw('river', 'fill="#1d5fa8" fill-opacity="0.85" stroke="#4d9be6" stroke-width="1" fill-rule="evenodd"', true);
  draw('river_line', 'fill="none" stroke="#9fd0ff" stroke-width="0.8" stroke-dasharray="4 3"');
  draw('stream', 'fill="none" stroke="#4d9be6" stroke-width="2"');
  draw('rail', 'fill="none" stroke="#aaaaaa" stroke-width="2" stroke-dasharray="8 4"');
  draw('ring', 'fill="none" stroke="#ff9d2e" stroke-width="6" stroke-opacity="0.45"');
  const colour = { lungarno: '#ff4d4d', ring_road: '#ffe14d', radial: '#e64dff' };
  for (const sg of seedSegs) {
    el.push(`<path d="${pathOf([sg.coords], false)}" fill="none" stroke="${colour[sg.kind] ?? '#ffffff'}" stroke-width="2.5"><title>${esc(sg.id)}</title></path>`);
    for (const c of sg.coords) {
      const [cx, cy] = px(c).split(',');
      el.push(`<circle cx="${cx}" cy="${cy}" r="1.8" fill="${colour[sg.kind] ?? '#fff'}"/>`);
    }
  }
  draw('bridge', 'fill="none" stroke="#ffffff" stroke-width="3.5"');
  for (const f of byKind.get('landmark')) {
    const [cx, cy] = px(f.geometry.coordinates).split(',');
    const big = f.properties.rank === 1;
    el.push(`<circle cx="${cx}" cy="${cy}" r="${big ? 5 : 3.5}" fill="${big ? '#ffffff' : '#cccccc'}" stroke="#000"/>`);
    el.push(`<text x="${+cx + 7}" y="${+cy + 4}" font-size="${big ? 14 : 11}" fill="#fff" font-family="sans-serif">${esc(f.properties.name_en)}</text>`);
  }
  const legend = 'seed: lungarno red, ring_road yellow, radial magenta · layer: ring orange, rail grey dashed, bridges white';
  el.push(`<text x="${pad}" y="${H - 6}" font-size="12" fill="#bbb" font-family="sans-serif">${esc(legend)} · bbox ${box.map((v) => v.toFixed(4)).join(',')}</text>`);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">\n<rect width="100%" height="100%" fill="#0b0d10"/>\n${el.join('\n')}\n</svg>\n`;
  fs.writeFileSync(out, svg);
}
function allPositions(g) {
  if (g.type === 'Point') return [g.coordinates];
  return linesOf(g).flat();
}
