#!/usr/bin/env node
// Builds web/geo/florence-context.geojson, the wall map's offline context layer of Florence
// (the Arno, the ring avenues, the historic centre, parks, railways, bridges, landmarks).
//
// Plain Node 20, no dependencies. Everything here was digitised by hand from general
// knowledge of the city and aligned to the demo's road segments
// (deploy/seed/florence-segments.geojson): in the centre the Arno's centreline is the
// midline between the north-bank and south-bank lungarni of the seed, its width is clamped
// so that the water stays clear of every seed road, and the ring and the bridges reuse the
// seed's vertices. Approximate, not survey-grade: see web/geo/SOURCES.md.
//
//   node scripts/build-geo.mjs            # rewrite web/geo/florence-context.geojson
//   node scripts/check-geo.mjs            # then check it
//
// The generated file is committed; edit the tables below and rerun rather than editing it.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SEED = path.join(root, 'deploy/seed/florence-segments.geojson');
const OUT = path.join(root, 'web/geo/florence-context.geojson');

// ---------------------------------------------------------------------------------------
// Local metric projection (equirectangular around the centre; error < 0.2 % over the area).
const LAT0 = 43.77;
const LON0 = 11.25;
const KX = 80522; // metres per degree of longitude at LAT0
const KY = 111108; // metres per degree of latitude at LAT0
const xy = ([lon, lat]) => [(lon - LON0) * KX, (lat - LAT0) * KY];
const ll = ([x, y]) => [LON0 + x / KX, LAT0 + y / KY];
const r5 = (v) => Math.round(v * 1e5) / 1e5;
const round = (c) => [r5(c[0]), r5(c[1])];

function distPointSeg(p, a, b) {
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const l2 = dx * dx + dy * dy;
  let t = l2 ? ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2 : 0;
  t = Math.max(0, Math.min(1, t));
  return Math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy));
}

// ---------------------------------------------------------------------------------------
// The seed road segments.
const seed = JSON.parse(fs.readFileSync(SEED, 'utf8'));
const seg = new Map(seed.features.map((f) => [f.properties.id ?? f.id, f.geometry.coordinates]));
const need = (id) => {
  const c = seg.get(id);
  if (!c) throw new Error(`seed segment ${id} is missing from ${SEED}`);
  return c;
};
const seedLinesXY = [...seg.values()].map((cs) => cs.map(xy));
const distToSeed = (p) => {
  let d = Infinity;
  for (const line of seedLinesXY) {
    for (let i = 1; i < line.length; i++) d = Math.min(d, distPointSeg(p, line[i - 1], line[i]));
  }
  return d;
};

// A bank: every vertex of its lungarni, west to east (the lungarni run roughly along x).
function bank(ids) {
  const pts = ids.flatMap((id) => need(id)).slice().sort((a, b) => a[0] - b[0]);
  return pts.filter((p, i) => i === 0 || p[0] - pts[i - 1][0] > 1e-6);
}
const NORTH = bank(['lungarno-vespucci', 'lungarno-corsini', 'lungarno-acciaiuoli', 'lungarno-diaz',
  'lungarno-grazie', 'lungarno-zecca-vecchia', 'lungarno-pecori-giraldi']);
const SOUTH = bank(['lungarno-santa-rosa', 'lungarno-soderini', 'lungarno-guicciardini',
  'lungarno-torrigiani', 'lungarno-serristori', 'lungarno-cellini']);
// Latitude of a bank at a longitude (linear between vertices; across the Ponte Vecchio gap,
// where the seed has no lungarno, this is the straight line between the two ends).
function latAt(bankPts, lon) {
  for (let i = 1; i < bankPts.length; i++) {
    const [a, b] = [bankPts[i - 1], bankPts[i]];
    if (lon >= a[0] && lon <= b[0]) return a[1] + ((lon - a[0]) / (b[0] - a[0])) * (b[1] - a[1]);
  }
  throw new Error(`longitude ${lon} outside the bank`);
}

// ---------------------------------------------------------------------------------------
// The Arno's centreline, west to east.
// West of the seed (Cascine, Ponte all'Indiano, towards San Donnino) and east of it
// (Ponte da Verrazzano, Varlungo, Rovezzano): digitised. The Passerella dell'Isolotto
// (43.78002, 11.21822), Ponte all'Indiano (43.79005, 11.19615), Ponte Giovanni da
// Verrazzano (43.76500, 11.28167) and Ponte di Varlungo (43.7637, 11.3039) positions were
// cross-checked with the coordinates their encyclopaedia articles publish.
const ARNO_WEST = [
  [11.1600, 43.7853], [11.1660, 43.7863], [11.1720, 43.7873], [11.1780, 43.7883],
  [11.1840, 43.7891], [11.1900, 43.7897], [11.1962, 43.7900], [11.2000, 43.78845],
  [11.2040, 43.7866], [11.2085, 43.7844], [11.2130, 43.7823], [11.2182, 43.7800],
  [11.2240, 43.77805], [11.2300, 43.7763], [11.2335, 43.77525],
];
const ARNO_EAST = [
  [11.2716, 43.7648], [11.2760, 43.76495], [11.2817, 43.7650], [11.2870, 43.76515],
  [11.2930, 43.7650], [11.2985, 43.7644], [11.3039, 43.7637], [11.3090, 43.7638],
  [11.3140, 43.7645], [11.3200, 43.7656],
];
// Through the seed: the midline between the two banks, every ~65 m.
const ARNO_SEED = [];
{
  const lo = Math.max(NORTH[0][0], SOUTH[0][0]);
  const hi = Math.min(NORTH.at(-1)[0], SOUTH.at(-1)[0]);
  const n = Math.round((hi - lo) / 0.0008);
  for (let i = 0; i <= n; i++) {
    const lon = lo + ((hi - lo) * i) / n;
    ARNO_SEED.push([lon, (latAt(NORTH, lon) + latAt(SOUTH, lon)) / 2]);
  }
}
// One round of Chaikin corner cutting, keeping the ends, smooths the joins.
function chaikin(pts) {
  const out = [pts[0]];
  for (let i = 1; i < pts.length; i++) {
    const [a, b] = [pts[i - 1], pts[i]];
    out.push([0.75 * a[0] + 0.25 * b[0], 0.75 * a[1] + 0.25 * b[1]]);
    out.push([0.25 * a[0] + 0.75 * b[0], 0.25 * a[1] + 0.75 * b[1]]);
  }
  out.push(pts.at(-1));
  return out;
}
const centre = chaikin([...ARNO_WEST, ...ARNO_SEED, ...ARNO_EAST].map(xy));

// Water width in metres by longitude (the real river: ~80 m at the Ponte Vecchio, 90-100 m
// elsewhere in the centre, 100-115 m upstream and at the Cascine), then narrowed so that the
// water edge stays at least MARGIN metres from the centreline of every seed road.
const WIDTH = [
  [11.16, 100], [11.196, 110], [11.218, 100], [11.235, 100], [11.243, 100], [11.2475, 95],
  [11.2505, 90], [11.2532, 82], [11.256, 86], [11.2587, 95], [11.264, 105], [11.271, 112],
  [11.282, 115], [11.304, 115], [11.32, 110],
];
const MARGIN = 12;
function widthAt(lon) {
  if (lon <= WIDTH[0][0]) return WIDTH[0][1];
  for (let i = 1; i < WIDTH.length; i++) {
    const [a, b] = [WIDTH[i - 1], WIDTH[i]];
    if (lon <= b[0]) return a[1] + ((lon - a[0]) / (b[0] - a[0])) * (b[1] - a[1]);
  }
  return WIDTH.at(-1)[1];
}
const hwRaw = centre.map((p) => Math.min(widthAt(ll(p)[0]) / 2, distToSeed(p) - MARGIN));
// Windowed minimum: a clamp never gets undone by its neighbours.
const hw = hwRaw.map((_, i) => Math.min(...hwRaw.slice(Math.max(0, i - 1), i + 2)));
if (hw.some((h) => h < 25)) throw new Error('the seed roads leave less than 50 m for the Arno somewhere');
// Unit normal at each vertex, pointing to the left of the west-to-east direction (north).
const normals = centre.map((p, i) => {
  const a = centre[Math.max(0, i - 1)];
  const b = centre[Math.min(centre.length - 1, i + 1)];
  const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
  const l = Math.hypot(dx, dy);
  return [-dy / l, dx / l];
});
const offset = (i, d) => [centre[i][0] + normals[i][0] * d, centre[i][1] + normals[i][1] * d];
const northEdge = centre.map((_, i) => offset(i, hw[i]));
const southEdge = centre.map((_, i) => offset(i, -hw[i]));

// Ring from an array of xy or lon/lat points: closed, rounded, counter-clockwise (RFC 7946).
function polygonRing(pts, isXY = true) {
  const r = pts.map((p) => round(isXY ? ll(p) : p));
  if (r[0][0] !== r.at(-1)[0] || r[0][1] !== r.at(-1)[1]) r.push(r[0]);
  let a = 0;
  for (let i = 1; i < r.length; i++) a += (r[i - 1][0] * r[i][1]) - (r[i][0] * r[i - 1][1]);
  return a < 0 ? r.reverse() : r;
}
const line = (pts, isXY = false) => pts.map((p) => round(isXY ? ll(p) : p));

// A bridge computed across the modelled river where `at` projects onto the centreline,
// square to it, reaching `extra` metres past each water edge.
function bridgeAcross(at, extra) {
  const p = xy(at);
  let best = { d: Infinity };
  for (let i = 1; i < centre.length; i++) {
    const [a, b] = [centre[i - 1], centre[i]];
    const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
    const t = Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)));
    const q = [a[0] + t * dx, a[1] + t * dy];
    const d = Math.hypot(p[0] - q[0], p[1] - q[1]);
    if (d < best.d) best = { d, q, n: [-dy / Math.hypot(dx, dy), dx / Math.hypot(dx, dy)], h: hw[i - 1] + t * (hw[i] - hw[i - 1]) };
  }
  const r = best.h + extra;
  return [ll([best.q[0] + best.n[0] * r, best.q[1] + best.n[1] * r]), ll([best.q[0] - best.n[0] * r, best.q[1] - best.n[1] * r])];
}
// A point on a seed segment at a longitude.
const onSeed = (id, lon) => [lon, latAt(need(id).slice().sort((a, b) => a[0] - b[0]), lon)];

// ---------------------------------------------------------------------------------------
// Bridges, north end first. Where the seed has lungarni on both banks the ends are points
// of those lungarni (most are the junctions where two seed segments meet).
const BRIDGES = [
  { id: 'ponte-all-indiano', name: "Ponte all'Indiano", name_en: "Indiano Bridge", coords: bridgeAcross([11.19615, 43.79005], 30) },
  { id: 'passerella-isolotto', name: "Passerella dell'Isolotto", name_en: 'Isolotto Footbridge', coords: bridgeAcross([11.21822, 43.78002], 12) },
  { id: 'ponte-alla-vittoria', name: 'Ponte alla Vittoria', name_en: 'Vittoria Bridge', coords: bridgeAcross([11.2343, 43.7749], 18) },
  { id: 'ponte-vespucci', name: 'Ponte Amerigo Vespucci', name_en: 'Amerigo Vespucci Bridge', coords: [onSeed('lungarno-vespucci', 11.2432), onSeed('lungarno-soderini', 11.2427)] },
  { id: 'ponte-alla-carraia', name: 'Ponte alla Carraia', name_en: 'Carraia Bridge', coords: [[11.2468, 43.7711], [11.2463, 43.77005]] },
  { id: 'ponte-santa-trinita', name: 'Ponte Santa Trinita', name_en: 'Santa Trinita Bridge', coords: [[11.2505, 43.76953], [11.25, 43.7686]] },
  { id: 'ponte-vecchio', name: 'Ponte Vecchio', name_en: 'Ponte Vecchio', coords: [[11.2532, 43.7684], [11.253, latAt(SOUTH, 11.253)]] },
  { id: 'ponte-alle-grazie', name: 'Ponte alle Grazie', name_en: 'Grazie Bridge', coords: [[11.2587, 43.7667], [11.2585, 43.76555]] },
  { id: 'ponte-san-niccolo', name: 'Ponte San Niccolò', name_en: 'San Niccolò Bridge', coords: [[11.2713, 43.76555], [11.2706, 43.7638]] },
  { id: 'ponte-da-verrazzano', name: 'Ponte Giovanni da Verrazzano', name_en: 'Giovanni da Verrazzano Bridge', coords: bridgeAcross([11.28167, 43.765], 20) },
  { id: 'ponte-di-varlungo', name: 'Ponte di Varlungo', name_en: 'Varlungo Bridge', coords: bridgeAcross([11.3039, 43.7637], 25) },
];
const vittoria = BRIDGES.find((b) => b.id === 'ponte-alla-vittoria').coords;

// ---------------------------------------------------------------------------------------
// The ring avenues: the seed's ring_road segments in order, joined across the squares the
// seed leaves out, closed over Ponte alla Vittoria and Ponte San Niccolò; plus Viale della
// Giovine Italia, the branch from Piazza Beccaria to Piazza Piave along the old walls.
const RING_LOOP = [
  vittoria[0],
  [11.2356, 43.77585], // Piazza Vittorio Veneto
  ...need('viale-rosselli-cascine'),
  ...need('viale-rosselli-fortezza').slice(1),
  ...need('viale-strozzi').slice(1),
  ...need('viale-lavagnini').slice(1),
  [11.2618, 43.78375], // Piazza della Libertà
  ...need('viale-matteotti'),
  [11.2672, 43.7773], // Piazza Donatello
  ...need('viale-gramsci'),
  [11.27065, 43.77075], // Piazza Beccaria
  ...need('viale-amendola'),
  [11.2713, 43.76555], // Ponte San Niccolò, north end
  ...need('viale-michelangelo'), // from Piazza Ferrucci, the bridge's south end
  [11.2658, 43.76245], // Piazzale Michelangelo
  ...need('viale-galileo'),
  ...need('viale-machiavelli').slice(1),
  [11.2422, 43.76055], // Porta Romana
  ...need('viale-petrarca'),
  [11.2401, 43.7681], // Piazza Torquato Tasso, then Viale Ludovico Ariosto
  [11.2389, 43.7694],
  [11.2373, 43.77115], // outside Porta San Frediano
  [11.2352, 43.7723], // Piazza Pier Vettori
  vittoria[1],
  vittoria[0],
];
const RING_BRANCH = [[11.27065, 43.77075], ...need('viale-giovine-italia'), [11.26805, 43.7665]];

// ---------------------------------------------------------------------------------------
// The historic centre: inside the ring north of the Arno (Viale della Giovine Italia on the
// east, the line of the old walls), and the Oltrarno inside its walls (Porta San Niccolò,
// Porta San Miniato, Forte di Belvedere, Porta Romana, Porta San Frediano), the river
// between them included.
const CENTRE = [
  [11.2356, 43.77585],
  ...need('viale-rosselli-cascine'),
  ...need('viale-rosselli-fortezza').slice(1),
  ...need('viale-strozzi').slice(1),
  ...need('viale-lavagnini').slice(1),
  [11.2618, 43.78375],
  ...need('viale-matteotti'),
  [11.2672, 43.7773],
  ...need('viale-gramsci'),
  [11.27065, 43.77075],
  ...need('viale-giovine-italia'),
  [11.26805, 43.7665], // Piazza Piave, Torre della Zecca
  [11.2652, 43.7642], // Porta San Niccolò
  [11.2638, 43.7632],
  [11.2612, 43.7621], // Porta San Miniato
  [11.2578, 43.7616],
  [11.2538, 43.76215], // Porta San Giorgio
  [11.2506, 43.7626], // Forte di Belvedere
  [11.2482, 43.7615],
  [11.2452, 43.7608],
  [11.2425, 43.76035], // Porta Romana
  [11.2421, 43.7631],
  [11.2416, 43.7659],
  [11.2406, 43.7678],
  [11.2391, 43.76965],
  [11.2379, 43.7712], // Porta San Frediano
  [11.2369, 43.77265], // Torrino di Santa Rosa
];

// ---------------------------------------------------------------------------------------
// Parks.
// Cascine: between the Arno (12 m back from the modelled water) and the Fosso Macinante /
// Mugnone, from Piazza Vittorio Veneto to the Indiano at the Mugnone's mouth.
const CASCINE_NORTH = [
  [11.1990, 43.78925], [11.2015, 43.7892], [11.2060, 43.7886], [11.2110, 43.7876],
  [11.2160, 43.7862], [11.2210, 43.7847], [11.2260, 43.7829], [11.2300, 43.7809],
  [11.2330, 43.7789], [11.2349, 43.77665],
];
const CASCINE = (() => {
  const south = [];
  centre.forEach((c, i) => {
    const lon = ll(c)[0];
    if (lon > 11.1993 && lon < 11.2337) south.push(ll(offset(i, hw[i] + 12)));
  });
  return [...CASCINE_NORTH, ...south.reverse()];
})();
const BOBOLI = [
  [11.2488, 43.7649], [11.2512, 43.7646], [11.2515, 43.7636], [11.2502, 43.7629],
  [11.2481, 43.7619], [11.2456, 43.76115], [11.2433, 43.76075], [11.2439, 43.7617],
  [11.2457, 43.7630], [11.2474, 43.7642],
];
const SEMPLICI = [[11.2597, 43.7779], [11.2617, 43.7779], [11.2617, 43.77915], [11.2597, 43.77915]];
const MICHELANGELO = [[11.2641, 43.7628], [11.2663, 43.76255], [11.2665, 43.7634], [11.2643, 43.76365]];

// ---------------------------------------------------------------------------------------
// The Mugnone: from Le Cure, under Ponte Rosso (where Via Bolognese starts), along the
// north of the Fortezza and of the Cascine to its mouth at the Indiano.
const MUGNONE = [
  [11.2800, 43.8010], [11.2745, 43.7965], [11.2700, 43.7926], [11.2665, 43.7893],
  [11.2630, 43.7872], [11.2600, 43.7862], [11.2550, 43.7858], [11.2500, 43.7856],
  [11.2450, 43.7852], [11.2400, 43.7846], [11.2350, 43.7840], [11.2300, 43.7835],
  [11.2260, 43.7837], [11.2210, 43.7853], [11.2160, 43.7868], [11.2110, 43.7882],
  [11.2060, 43.7892], [11.2015, 43.7897], [11.1978, 43.7896],
];

// ---------------------------------------------------------------------------------------
// Railways. Station positions: Santa Maria Novella (43.77634, 11.24753), Rifredi (43.80028,
// 11.23667) and Campo di Marte (43.77749, 11.27639) as published; the tracks between them
// from general knowledge (about 100-200 m).
const SMN_THROAT = [[11.2477, 43.7765], [11.2463, 43.7786], [11.2448, 43.7809]];
const RAIL_RIFREDI = [
  ...SMN_THROAT, [11.2437, 43.7835], [11.2428, 43.7862], [11.2411, 43.7902],
  [11.2392, 43.7950], [11.2367, 43.8003], [11.2330, 43.8043], [11.2280, 43.8082],
];
const RAIL_CAMPO_DI_MARTE = [
  ...SMN_THROAT, [11.2450, 43.7838], [11.2470, 43.7869], [11.2510, 43.7884],
  [11.2560, 43.7888], [11.2610, 43.7889], [11.2660, 43.7881], [11.2700, 43.7847],
  [11.2735, 43.7808], [11.2764, 43.7775], [11.2810, 43.7750], [11.2880, 43.7726],
  [11.2960, 43.7706], [11.3040, 43.7693], [11.3120, 43.7692],
];

// ---------------------------------------------------------------------------------------
// Landmarks: rank 1 always labelled, rank 2 labelled when zoomed in. `name` is the official
// Italian name, `name_it` the Italian label (shorter where the official name is long).
const LANDMARKS = [
  ['duomo', 'Cattedrale di Santa Maria del Fiore', null, 'Florence Cathedral (Duomo)', 1, [11.2560, 43.7731]],
  ['stazione-smn', 'Stazione di Firenze Santa Maria Novella', 'Stazione di Santa Maria Novella', 'Santa Maria Novella station', 1, [11.24753, 43.77634]],
  ['ponte-vecchio', 'Ponte Vecchio', null, 'Ponte Vecchio', 1, [11.2531, 43.76799]],
  ['piazza-signoria', 'Piazza della Signoria e Palazzo Vecchio', null, 'Piazza della Signoria and Palazzo Vecchio', 2, [11.2558, 43.7696]],
  ['uffizi', 'Galleria degli Uffizi', null, 'Uffizi Gallery', 2, [11.2554, 43.7685]],
  ['palazzo-pitti', 'Palazzo Pitti', null, 'Pitti Palace', 2, [11.2500, 43.7652]],
  ['santa-croce', 'Basilica di Santa Croce', null, 'Basilica of Santa Croce', 2, [11.2622, 43.7686]],
  ['fortezza-da-basso', 'Fortezza da Basso', null, 'Fortezza da Basso', 1, [11.2490, 43.7813]],
  ['piazzale-michelangelo', 'Piazzale Michelangelo', null, 'Piazzale Michelangelo', 1, [11.2652, 43.7631]],
  ['stazione-campo-di-marte', 'Stazione di Firenze Campo di Marte', 'Stazione di Campo di Marte', 'Campo di Marte station', 1, [11.27639, 43.77749]],
  ['stadio-franchi', 'Stadio Artemio Franchi', null, 'Artemio Franchi Stadium', 1, [11.2822, 43.7809]],
  ['porta-romana', 'Porta Romana', null, 'Porta Romana', 2, [11.2422, 43.76055]],
  ['careggi', 'Azienda ospedaliero-universitaria Careggi', 'Ospedale di Careggi', 'Careggi University Hospital', 1, [11.2475, 43.8035]],
  ['aeroporto', 'Aeroporto di Firenze-Peretola "Amerigo Vespucci"', 'Aeroporto Amerigo Vespucci (Peretola)', 'Florence Airport (Peretola)', 1, [11.2039, 43.8097]],
];

// ---------------------------------------------------------------------------------------
const features = [];
const add = (id, kind, name, nameEn, type, coordinates, extra = {}) => {
  const properties = { id, kind, name, ...(nameEn ? { name_en: nameEn } : {}), ...extra };
  features.push({ type: 'Feature', id, properties, geometry: { type, coordinates } });
};

add('centro-storico', 'centre', 'Centro storico di Firenze', 'Historic Centre of Florence', 'Polygon', [polygonRing(CENTRE, false)]);
add('parco-delle-cascine', 'park', 'Parco delle Cascine', 'Cascine Park', 'Polygon', [polygonRing(CASCINE, false)]);
add('giardino-di-boboli', 'park', 'Giardino di Boboli', 'Boboli Gardens', 'Polygon', [polygonRing(BOBOLI, false)]);
add('giardino-dei-semplici', 'park', 'Giardino dei Semplici', 'Giardino dei Semplici botanical garden', 'Polygon', [polygonRing(SEMPLICI, false)]);
add('piazzale-michelangelo-area', 'park', 'Piazzale Michelangelo', 'Piazzale Michelangelo', 'Polygon', [polygonRing(MICHELANGELO, false)]);
add('arno', 'river', 'Arno', 'Arno', 'Polygon', [polygonRing([...northEdge, ...southEdge.slice().reverse()])]);
add('arno-centreline', 'river_line', 'Arno', 'Arno', 'LineString', line(centre, true));
add('mugnone', 'stream', 'Torrente Mugnone', 'Mugnone stream', 'LineString', line(MUGNONE));
add('ferrovia-smn-rifredi', 'rail', 'Ferrovia Firenze Santa Maria Novella – Firenze Rifredi', 'Railway Santa Maria Novella – Rifredi', 'LineString', line(RAIL_RIFREDI));
add('ferrovia-smn-campo-di-marte', 'rail', 'Ferrovia Firenze Santa Maria Novella – Campo di Marte – Rovezzano', 'Railway Santa Maria Novella – Campo di Marte – Rovezzano', 'LineString', line(RAIL_CAMPO_DI_MARTE));
add('viali-di-circonvallazione', 'ring', 'Viali di circonvallazione', 'Ring avenues (the Viali)', 'MultiLineString', [line(RING_LOOP), line(RING_BRANCH)]);
for (const b of BRIDGES) add(b.id, 'bridge', b.name, b.name_en, 'LineString', line(b.coords));
for (const [id, name, label, en, rank, c] of LANDMARKS) {
  add(`landmark-${id}`, 'landmark', name, en, 'Point', round(c), { name_it: label ?? name, rank });
}

// One feature per line block, coordinates on one line each: small, and diffs stay readable.
const body = features.map((f) => {
  const props = JSON.stringify(f.properties);
  const geom = `{"type": ${JSON.stringify(f.geometry.type)}, "coordinates": ${JSON.stringify(f.geometry.coordinates)}}`;
  return `  {"type": "Feature", "id": ${JSON.stringify(f.id)},\n   "properties": ${props},\n   "geometry": ${geom}}`;
});
const text = `{"type": "FeatureCollection",\n "features": [\n${body.join(',\n')}\n]}\n`;
fs.mkdirSync(path.dirname(OUT), { recursive: true });
fs.writeFileSync(OUT, text);
const mins = hw.map((h, i) => [h * 2, ll(centre[i])[0]]).filter(([, lon]) => lon > 11.236 && lon < 11.272);
const narrow = mins.reduce((a, b) => (b[0] < a[0] ? b : a));
console.log(`wrote ${path.relative(root, OUT)}: ${features.length} features, ${Buffer.byteLength(text)} bytes; `
  + `Arno in the centre ${Math.round(narrow[0])}-${Math.round(Math.max(...mins.map((m) => m[0])))} m wide `
  + `(narrowest at lon ${narrow[1].toFixed(4)})`);
