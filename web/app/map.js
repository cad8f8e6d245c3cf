// @ts-check
// The map: an offline context layer of Florence (or the configured basemap), the road
// segments coloured by Level of Service (clickable and hoverable: device markers sit on a
// canvas that takes no pointer events), device markers, alert markers, and highlighting.
import { apiJson } from './api.js';
import { t, num, percent, lang } from './i18n.js';
import { COLOUR, GRADES, losOfRatio, widthFactor, live } from './los.js';
import { state, dirty } from './state.js';
import { cssVar, rem } from './util.js';

/** @type {any} */
let map;
/** @type {any} */
let deviceRenderer;
/** @type {any} */
let labelLayer = null;
/** @type {any} */
let highlight = null;
/** @type {Map<number, any>} */
const alertMarkers = new Map();
/** @type {(id: string) => void} */
let onSegmentClick = () => {};
/** @type {(id: number) => void} */
let onAlertMarkerClick = () => {};

export const getMap = () => map;

/** @param {{onSegment: (id: string) => void, onAlert: (id: number) => void, onBackground: () => void}} handlers */
export function initMap(handlers) {
  onSegmentClick = handlers.onSegment;
  onAlertMarkerClick = handlers.onAlert;
  map = L.map('map', { zoomControl: true, attributionControl: true, zoomSnap: 0.25, preferCanvas: false });
  map.attributionControl.setPrefix('Leaflet');
  map.createPane('context').style.zIndex = '250';
  map.createPane('labels').style.zIndex = '380';
  map.createPane('highlight').style.zIndex = '390';
  // Device markers on a canvas above the lines: the pane ignores the pointer (style.css),
  // so a click or hover reaches the segment underneath.
  map.createPane('devices').style.zIndex = '450';
  deviceRenderer = L.canvas({ padding: 0.2, pane: 'devices' });
  map.setView([43.7731, 11.256], 14);
  map.on('click', handlers.onBackground);
  map.on('zoomend', () => { restyleAll(); updateLabels(); });
  map.on('moveend', () => updateLabels());
}

/** Line width: grows with the type up to 10 px, so lines never hide the map in wall mode. */
const lineWeight = () => Math.min(10, Math.max(3, rem() * 0.4));

/** The configured basemap, or the offline context layer. */
export async function loadBasemap() {
  let basemap = { kind: 'context' };
  try {
    basemap = (await apiJson('/api/v1/wall')).basemap || basemap;
  } catch (_) { /* an older server: the context layer */ }
  if (basemap.kind === 'xyz' && basemap.url) {
    L.tileLayer(basemap.url, { attribution: basemap.attribution || '', maxZoom: basemap.max_zoom || 19 }).addTo(map);
    document.body.dataset.basemap = 'xyz';
    return;
  }
  if (basemap.kind === 'pmtiles' && basemap.url) {
    try {
      await loadScript('vendor/pmtiles/pmtiles.js');
      const pm = /** @type {any} */ (window).pmtiles;
      pm.leafletRasterLayer(new pm.PMTiles(basemap.url), { attribution: basemap.attribution || '', maxZoom: basemap.max_zoom || 19 }).addTo(map);
      document.body.dataset.basemap = 'pmtiles';
      return;
    } catch (e) {
      console.warn('basemap', e);
    }
  }
  await loadContext();
}

/** @param {string} src */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(s);
  });
}

async function loadContext() {
  let geo;
  try {
    const res = await fetch('geo/florence-context.geojson');
    if (!res.ok) return;
    geo = await res.json();
  } catch (_) {
    return;
  }
  const w = lineWeight();
  /** @param {any} f */
  const style = (f) => {
    const k = f.properties?.kind;
    const base = { pane: 'context', interactive: false, stroke: false, fill: false };
    switch (k) {
      case 'river': return { ...base, fill: true, fillColor: cssVar('--ctx-water'), fillOpacity: 1 };
      case 'stream': return { ...base, stroke: true, color: cssVar('--ctx-water'), weight: w * 0.8 };
      case 'centre': return { ...base, fill: true, fillColor: cssVar('--ctx-centre'), fillOpacity: 1, stroke: true, color: cssVar('--ctx-edge'), weight: 1.5, dashArray: '6 6' };
      case 'park': return { ...base, fill: true, fillColor: cssVar('--ctx-park'), fillOpacity: 1 };
      case 'ring': return { ...base, stroke: true, color: cssVar('--ctx-road'), weight: w * 2.2, lineCap: 'round' };
      case 'rail': return { ...base, stroke: true, color: cssVar('--ctx-rail'), weight: 2, dashArray: '8 6' };
      case 'bridge': return { ...base, stroke: true, color: cssVar('--ctx-road'), weight: w * 1.2 };
      default: return { ...base };
    }
  };
  L.geoJSON(geo, { style, filter: (/** @type {any} */ f) => f.geometry?.type !== 'Point' && f.properties?.kind !== 'river_line' }).addTo(map);
  labelLayer = L.layerGroup().addTo(map);
  for (const f of geo.features || []) {
    if (f.geometry?.type !== 'Point') continue;
    const [lon, lat] = f.geometry.coordinates;
    const marker = L.marker([lat, lon], { pane: 'labels', interactive: false, keyboard: false, icon: L.divIcon({ className: 'landmark', html: '', iconSize: null }) });
    marker.feature = f;
    labelLayer.addLayer(marker);
  }
  document.body.dataset.basemap = 'context';
  updateLabels();
}

/**
 * Landmark names in the chosen language; minor ones only when zoomed in, and a name that
 * would overlap one already placed (in rank order) is left out.
 */
export function updateLabels() {
  if (!labelLayer) return;
  const z = map.getZoom();
  /** @type {DOMRect[]} */
  const placed = [];
  const layers = /** @type {any[]} */ (labelLayer.getLayers()).sort((a, b) => (a.feature.properties.rank ?? 1) - (b.feature.properties.rank ?? 1));
  for (const m of layers) {
    const p = m.feature.properties || {};
    const el = m.getElement();
    if (!el) continue;
    el.replaceChildren();
    if ((p.rank ?? 1) > 1 && z < 15) continue;
    const span = document.createElement('span');
    span.textContent = (lang() === 'it' ? p.name_it : p.name_en) || p.name || '';
    el.append(span);
    const box = span.getBoundingClientRect();
    const pad = rem() * 0.2;
    if (placed.some((b) => box.left - pad < b.right && box.right + pad > b.left && box.top - pad < b.bottom && box.bottom + pad > b.top)) {
      span.remove();
    } else {
      placed.push(box);
    }
  }
}

/** @param {any} collection GeoJSON of the road segments with their state */
export function drawSegments(collection) {
  for (const seg of state.segments.values()) { seg.line.remove(); seg.hit.remove(); seg.outline.remove(); }
  state.segments.clear();
  const bounds = L.latLngBounds([]);
  const w = lineWeight();
  for (const f of collection.features || []) {
    const p = f.properties || {};
    /** @type {[number, number][]} */
    const coords = (f.geometry?.coordinates || []).map((/** @type {number[]} */ [lon, lat]) => [lat, lon]);
    if (coords.length < 2) continue;
    const id = String(p.id ?? f.id);
    const outline = L.polyline(coords, { color: '#000', weight: w + 3, opacity: 0.7, interactive: false }).addTo(map);
    const line = L.polyline(coords, { color: COLOUR.none, weight: w, opacity: 1, lineCap: 'round', interactive: false }).addTo(map);
    // A wider transparent line above takes the pointer: easy to hit with a mouse or a finger.
    const hit = L.polyline(coords, { color: '#fff', opacity: 0, weight: Math.max(14, w * 2.5), lineCap: 'butt', interactive: true }).addTo(map);
    hit.on('click', (/** @type {any} */ e) => { L.DomEvent.stopPropagation(e); onSegmentClick(id); });
    /** @type {import('./state.js').Segment} */
    const seg = { id, props: p, coords, line, hit, outline, speeds: new Map(), window: null, los: null, styled: false, mid: coords[Math.floor(coords.length / 2)] };
    hit.bindTooltip(() => tooltipText(seg), { className: 'seg-tip', sticky: true });
    seg.window = windowOf(p);
    line.getElement()?.setAttribute('data-segment', id);
    hit.getElement()?.setAttribute('data-hit', id);
    for (const c of coords) bounds.extend(c);
    state.segments.set(id, seg);
    dirty.segments.add(id);
  }
  if (bounds.isValid()) {
    allBounds = bounds;
    map.fitBounds(bounds, { padding: [30, 30] });
  }
}

/** @type {any} */
let allBounds = null;
/** The whole network in view (entering wall mode). */
export function fitAll() {
  if (allBounds) map.fitBounds(allBounds, { padding: [30, 30], animate: false });
}

/**
 * A segment's last closed window from its GeoJSON properties (GET /api/v1/segments).
 * @param {Record<string, any>} p
 * @returns {import('./state.js').SegmentWindow | null}
 */
export function windowOf(p) {
  if (!p.window || p.los === undefined) return null;
  return { los: p.los, speed_kmh: p.speed_kmh, flow_vph: p.flow_vph, occupancy_pct: p.occupancy_pct, detectors: p.detectors, start: p.window.start, end: p.window.end };
}

/** @param {import('./state.js').Segment} seg */
function tooltipText(seg) {
  const now = Date.now();
  const v = currentSpeed(seg, now);
  const r = ratioOf(seg, now);
  return `${seg.props.name || seg.id} · LOS ${seg.los ?? '–'}${v !== null ? ` · ${num(v)} km/h · ${percent(r)} ${t('relative')}` : ''}`;
}

/** @param {import('./state.js').Segment} seg @param {number} now */
function liveSpeed(seg, now) {
  let sum = 0;
  let n = 0;
  for (const s of seg.speeds.values()) {
    if (now - s.t < live.speedFreshMs) { sum += s.v; n += 1; }
  }
  return n ? sum / n : null;
}
/** The segment's speed now: its detectors' fresh readings, else the last closed window. @param {import('./state.js').Segment} seg @param {number} now */
export function currentSpeed(seg, now) {
  const v = liveSpeed(seg, now);
  return v !== null ? v : seg.window?.speed_kmh ?? null;
}
/** @param {import('./state.js').Segment} seg @param {number} now */
export function ratioOf(seg, now) {
  const v = currentSpeed(seg, now);
  const ff = seg.props.free_flow_kmh;
  return v !== null && ff > 0 ? v / ff : null;
}
/** @param {import('./state.js').Segment} seg @param {number} now */
export function currentLos(seg, now) {
  const v = liveSpeed(seg, now);
  if (v !== null && seg.props.free_flow_kmh > 0) return losOfRatio(v / seg.props.free_flow_kmh);
  return seg.window?.los ?? null;
}

/** @param {import('./state.js').Segment} seg @param {number} now */
export function styleSegment(seg, now) {
  const los = currentLos(seg, now);
  if (los === seg.los && seg.styled) return;
  seg.los = los;
  seg.styled = true;
  const w = lineWeight() * widthFactor(los);
  seg.line.setStyle({ color: COLOUR[los ?? 'none'] || COLOUR.none, weight: w });
  seg.outline.setStyle({ weight: w + 3 });
  seg.line.getElement()?.setAttribute('data-los', los ?? '');
}
function restyleAll() {
  for (const seg of state.segments.values()) { seg.styled = false; dirty.segments.add(seg.id); }
}

/** @param {Record<string, any>[]} rows devices with their positions (GET /api/v1/map/devices) */
export function drawDevices(rows) {
  const last = new Map([...state.devices.values()].map((d) => [d.id, d.last]));
  for (const d of state.devices.values()) d.marker?.remove();
  state.devices.clear();
  const r = Math.min(7, Math.max(3, rem() * 0.28));
  for (const rec of rows) {
    /** @type {import('./state.js').Device} */
    const dev = { id: rec.id, kind: rec.kind, segment: rec.segment ?? null, lat: rec.lat ?? null, lon: rec.lon ?? null, last: Math.max(rec.last_seen ?? 0, last.get(rec.id) ?? 0), online: null, marker: null };
    if (dev.lat !== null && dev.lon !== null) {
      dev.marker = L.circleMarker([dev.lat, dev.lon], { renderer: deviceRenderer, radius: r, weight: 2, color: cssVar('--dev-ring'), fillColor: cssVar('--dev-on'), fillOpacity: 1, interactive: false }).addTo(map);
    }
    state.devices.set(dev.id, dev);
  }
  dirty.devices = true;
}

/** Online devices as dark dots ringed in white, offline ones as hollow magenta rings (a shape, not only a colour). */
export function styleDevice(/** @type {import('./state.js').Device} */ d) {
  d.marker?.setStyle(d.online ? { fillColor: cssVar('--dev-on'), fillOpacity: 1, color: cssVar('--dev-ring'), weight: 2 } : { fillOpacity: 0, color: cssVar('--dev-off'), weight: 3 });
}

/** Where an alert sits on the map: its segment's middle or its device. @param {import('./state.js').Alert} a @returns {[number, number] | null} */
export function alertPosition(a) {
  if (a.subject?.segment) return state.segments.get(a.subject.segment)?.mid ?? null;
  if (a.subject?.device) {
    const d = state.devices.get(a.subject.device);
    if (d && d.lat !== null && d.lon !== null) return [d.lat, d.lon];
    const seg = d?.segment ? state.segments.get(d.segment) : null;
    return seg ? seg.mid : null;
  }
  return null;
}

/** One marker per visible open alert (shelved and suppressed ones have none). @param {import('./state.js').Alert[]} alerts */
export function drawAlertMarkers(alerts) {
  const keep = new Set();
  for (const a of alerts) {
    const pos = alertPosition(a);
    if (!pos) continue;
    keep.add(a.id);
    const unacked = a.state === 'raised' || a.state === 'returned';
    const cls = `amark ${a.severity}${unacked ? ' unacked' : ''}${a.state === 'returned' ? ' returned' : ''}${state.selectedAlert === a.id ? ' selected' : ''}`;
    const glyph = a.severity === 'critical' ? '!' : a.severity === 'warning' ? '▲' : 'i';
    let m = alertMarkers.get(a.id);
    if (!m) {
      m = L.marker(pos, { keyboard: false, riseOnHover: true, icon: L.divIcon({ className: cls, html: `<span class="shape"><b>${glyph}</b></span>`, iconSize: null }) });
      m.on('click', (/** @type {any} */ e) => { L.DomEvent.stopPropagation(e); onAlertMarkerClick(a.id); });
      m.addTo(map);
      alertMarkers.set(a.id, m);
    }
    const el = m.getElement();
    if (el) {
      el.className = `leaflet-marker-icon leaflet-interactive ${cls}`;
      el.dataset.alertMarker = String(a.id);
    }
  }
  for (const [id, m] of alertMarkers) if (!keep.has(id)) { m.remove(); alertMarkers.delete(id); }
}

/** Outline a segment (or a device's place) and bring it into view. @param {string | null} segment @param {[number, number] | null} [point] */
export function focus(segment, point = null) {
  highlight?.remove();
  highlight = null;
  const seg = segment ? state.segments.get(segment) : null;
  const w = lineWeight();
  if (seg) {
    highlight = L.polyline(seg.coords, { pane: 'highlight', color: cssVar('--highlight'), weight: w * 3.2, opacity: 0.6, lineCap: 'round', interactive: false }).addTo(map);
    map.flyToBounds(L.latLngBounds(seg.coords), { padding: [80, 80], maxZoom: 16, duration: 0.6 });
  } else if (point) {
    highlight = L.circleMarker(point, { pane: 'highlight', radius: w * 4, color: cssVar('--highlight'), weight: w, fill: false, interactive: false }).addTo(map);
    map.flyTo(point, Math.max(map.getZoom(), 16), { duration: 0.6 });
  }
}
export function clearFocus() {
  highlight?.remove();
  highlight = null;
}

/** Pixel position of a segment's middle inside the page (for tests and tours). @param {string} id */
export function segmentPoint(id) {
  const seg = state.segments.get(id);
  if (!seg) return null;
  const c = seg.coords;
  // The middle of the longest piece: on the line even for a curve.
  let best = 0;
  let at = 0;
  for (let i = 1; i < c.length; i += 1) {
    const d = Math.hypot(c[i][0] - c[i - 1][0], c[i][1] - c[i - 1][1]);
    if (d > best) { best = d; at = i; }
  }
  const mid = [(c[at][0] + c[at - 1][0]) / 2, (c[at][1] + c[at - 1][1]) / 2];
  const p = map.latLngToContainerPoint(mid);
  const box = map.getContainer().getBoundingClientRect();
  return { x: box.left + p.x, y: box.top + p.y };
}

/** The legend: grades as swatches with their letter, drawn at their line widths. */
export function renderLegend() {
  const el = document.getElementById('legend');
  if (!el) return;
  el.replaceChildren();
  const h = document.createElement('h4');
  h.textContent = t('legend_los');
  const row = document.createElement('div');
  row.className = 'grades';
  for (const g of [...GRADES, 'none']) {
    const sw = document.createElement('span');
    sw.className = `grade g-${g}`;
    sw.style.background = COLOUR[g];
    sw.style.height = `${0.5 * (g === 'none' ? 1 : widthFactor(g))}rem`;
    const lab = document.createElement('span');
    lab.className = 'gl';
    lab.textContent = g === 'none' ? t('legend_nodata') : g;
    const cell = document.createElement('span');
    cell.className = 'gcell';
    cell.append(sw, lab);
    row.append(cell);
  }
  const devs = document.createElement('div');
  devs.className = 'devs';
  for (const [cls, key] of [['dot on', 'legend_online'], ['dot off', 'legend_offline'], ['amark-sw', 'legend_alert']]) {
    const mark = document.createElement('span');
    mark.className = cls;
    if (cls === 'amark-sw') mark.textContent = '!';
    const label = document.createElement('span');
    label.dataset.t = key;
    label.textContent = t(key);
    devs.append(mark, label);
  }
  el.append(h, row, devs);
}
