// @ts-check
// The map: an offline context layer of Florence (or the configured basemap), the road
// segments coloured by Level of Service and the device dots on one canvas (app/segcanvas.js:
// the map hit-tests the segments itself, so they answer hovers and clicks), alert markers,
// operations' icons, and highlighting.
import { apiJson } from './api.js';
import { t, num, percent, lang } from './i18n.js';
import { COLOUR, GRADES, losOfRatio, widthFactor, live } from './los.js';
import { state, dirty } from './state.js';
import { cssVar, rem } from './util.js';
import { segmentLayer, toDrawable, mercator } from './segcanvas.js';

/** @type {any} */
let map;
/** @type {any} the white edge under the segment under the pointer */
let hoverLine = null;
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
/** The segment under a point of the page, as a click there would find it (for tests). @param {number} x @param {number} y */
export function segmentAtPage(x, y) {
  const box = map.getContainer().getBoundingClientRect();
  return segLayer.hit(L.point(x - box.left, y - box.top));
}
/** The colour the segment canvas shows at a point of the page: a promise of [r, g, b, a]. @param {number} x @param {number} y */
export const segmentPixel = (x, y) => segLayer.pixel(x, y);
/** The canvas's drawing figures: draws, last and total milliseconds, segments drawn. */
export const segmentDrawStats = () => ({ ...segLayer.stats, segments: segLayer.items.size, mode: segLayer.mode });

/** @param {{onSegment: (id: string) => void, onAlert: (id: number) => void, onBackground: () => void}} handlers */
export function initMap(handlers) {
  onSegmentClick = handlers.onSegment;
  onAlertMarkerClick = handlers.onAlert;
  map = L.map('map', { zoomControl: true, attributionControl: true, zoomSnap: 0.25, preferCanvas: false });
  map.attributionControl.setPrefix('Leaflet');
  map.createPane('context').style.zIndex = '250';
  // The road segments, and the device dots above them, on one canvas (app/segcanvas.js):
  // the pane ignores the pointer, which the map hit-tests itself.
  map.createPane('segments').style.zIndex = '400';
  map.createPane('labels').style.zIndex = '380';
  map.createPane('highlight').style.zIndex = '390';
  // The white edge of the hovered segment, under its line.
  map.createPane('hover').style.zIndex = '395';
  // Operations' icons above the segments, below the alert markers (the marker pane, 600).
  map.createPane('operations').style.zIndex = '560';
  // Forecast marks beside the segments predicted to degrade, above the operations' icons
  // and below the alert markers: they take no pointer.
  const fc = map.createPane('forecasts');
  fc.style.zIndex = '570';
  fc.style.pointerEvents = 'none';
  segLayer = segmentLayer({ pane: 'segments', style: segStyle }).addTo(map);
  map.setView([43.7731, 11.256], 14);
  wireSegmentPointer();
  map.on('click', (/** @type {any} */ e) => {
    const id = segLayer.hit(e.containerPoint);
    if (id) onSegmentClick(id);
    else handlers.onBackground();
  });
  // The segments are drawn anew at the moveend that follows (app/segcanvas.js).
  map.on('zoomend', () => { updateLabels(); });
  map.on('moveend', () => { updateLabels(); onViewChanged(); });
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

/** What the names were last placed for: zoom, language, type size. */
let labelsFor = '';
/**
 * Landmark names in the chosen language; minor ones only when zoomed in, and a name that
 * would overlap one already placed (in rank order) is left out. Placed anew only when the
 * zoom, the language or the type size changed (a pan moves them all alike), and measured
 * all at once after they are written (one layout, not one per name).
 */
export function updateLabels() {
  if (!labelLayer) return;
  const z = map.getZoom();
  const pad = rem() * 0.2;
  const key = `${z}|${lang()}|${pad}`;
  if (key === labelsFor) return;
  const layers = /** @type {any[]} */ (labelLayer.getLayers()).sort((a, b) => (a.feature.properties.rank ?? 1) - (b.feature.properties.rank ?? 1));
  /** @type {HTMLElement[]} */
  const spans = [];
  // Not placed for good while a marker has no element yet.
  labelsFor = layers.every((m) => m.getElement()) ? key : '';
  for (const m of layers) {
    const p = m.feature.properties || {};
    const el = m.getElement();
    if (!el) continue;
    el.replaceChildren();
    if ((p.rank ?? 1) > 1 && z < 15) continue;
    const span = document.createElement('span');
    span.textContent = (lang() === 'it' ? p.name_it : p.name_en) || p.name || '';
    el.append(span);
    spans.push(span);
  }
  const boxes = spans.map((span) => span.getBoundingClientRect());
  /** @type {DOMRect[]} */
  const placed = [];
  spans.forEach((span, i) => {
    const box = boxes[i];
    if (placed.some((b) => box.left - pad < b.right && box.right + pad > b.left && box.top - pad < b.bottom && box.bottom + pad > b.top)) span.remove();
    else placed.push(box);
  });
}

/** The road segments' canvas layer (app/segcanvas.js). @type {any} */
let segLayer = null;
/** @type {any} */
let tooltip = null;

/** The segments as the canvas draws them: the palette and widths of the moment. */
const segStyle = () => ({
  colour: COLOUR, width: lineWeight(), widthFactor, outline: '#000',
  devOn: cssVar('--dev-on'), devRing: cssVar('--dev-ring'), devOff: cssVar('--dev-off'), devRadius: deviceRadius(),
});
/** Device dots grow with the type, between 3 and 7 px. */
const deviceRadius = () => Math.min(7, Math.max(3, rem() * 0.28));

/** Hover and click on the canvas: the nearest segment within reach of the pointer. */
function wireSegmentPointer() {
  let pending = null;
  map.on('mousemove', (/** @type {any} */ e) => {
    pending = e;
    lastPointer = e.containerPoint;
    if (pointerQueued) return;
    pointerQueued = true;
    requestAnimationFrame(() => {
      pointerQueued = false;
      if (pending && !moving) hoverAt(pending);
    });
  });
  map.on('mouseout', () => { pending = null; lastPointer = null; hoverAt(null); });
  // While the map moves, nothing is hovered (a redraw per frame of a dragged city would be
  // wasted): the hover comes back with the next pointer move after it settles.
  map.on('zoomstart movestart', () => { moving = true; pending = null; hoverAt(null); });
  map.on('moveend', () => {
    moving = false;
    if (lastPointer) hoverAt({ containerPoint: lastPointer, latlng: map.containerPointToLatLng(lastPointer) });
  });
}
let pointerQueued = false;
let moving = false;
/** @type {any} where the pointer last was over the map (container point), or null */
let lastPointer = null;
/** @param {any} e a Leaflet mouse event, or null when the pointer left */
function hoverAt(e) {
  const id = e ? segLayer.hit(e.containerPoint) : null;
  const container = map.getContainer();
  container.classList.toggle('on-segment', id !== null);
  const seg = id ? state.segments.get(id) : null;
  if (id !== segLayer.hover) {
    segLayer.hover = id;
    hoverLine?.remove();
    hoverLine = seg ? L.polyline(seg.parts, { pane: 'hover', color: cssVar('--highlight') || '#fff', opacity: 0.9, weight: segLayer.zoomWidth() * widthFactor(seg.los) + 6, lineCap: 'butt', lineJoin: 'miter', interactive: false }).addTo(map) : null;
  }
  if (!seg) {
    if (tooltip) { tooltip.remove(); tooltip = null; }
    return;
  }
  if (!tooltip) tooltip = L.tooltip({ className: 'seg-tip', direction: 'top', offset: [0, -rem() * 0.6], interactive: false });
  tooltip.setLatLng(e.latlng).setContent(tooltipText(seg));
  if (!map.hasLayer(tooltip)) tooltip.addTo(map);
  tooltip.getElement()?.setAttribute('data-segment', id);
}

/**
 * A segment's parts as [lat, lon] lists, from a LineString or a MultiLineString.
 * @param {any} geometry
 * @returns {[number, number][][]}
 */
function partsOf(geometry) {
  const lines = geometry?.type === 'MultiLineString' ? geometry.coordinates : geometry?.type === 'LineString' ? [geometry.coordinates] : [];
  return (lines || []).map((/** @type {number[][]} */ l) => l.map(([lon, lat]) => /** @type {[number, number]} */ ([lat, lon]))).filter((/** @type {any[]} */ l) => l.length >= 2);
}

/**
 * Segments from a GeoJSON answer of GET /api/v1/segments, added to (or replacing the
 * geometry of) those known. A geometry simplified for a lower zoom never replaces a finer one.
 * @param {any} collection
 * @param {number} zoom the zoom the answer was simplified for (Infinity: full detail)
 * @returns {Record<string, any>[]} the features' properties (their live state is applied by the caller)
 */
export function mergeSegments(collection, zoom) {
  const props = [];
  for (const f of collection.features || []) {
    const p = f.properties || {};
    const parts = partsOf(f.geometry);
    if (!parts.length) continue;
    const id = String(p.id ?? f.id);
    props.push(p);
    const known = state.segments.get(id);
    if (known && known.zoom >= zoom) continue;
    const coords = parts.reduce((a, b) => (b.length > a.length ? b : a));
    const geo = toDrawable(parts);
    if (known) {
      Object.assign(known.draw, geo);
      segLayer.put(known.draw);
      known.parts = parts;
      known.coords = coords;
      known.zoom = zoom;
      known.mid = coords[Math.floor(coords.length / 2)];
      known.props = { ...known.props, ...p };
      continue;
    }
    /** @type {import('./state.js').Segment} */
    const seg = { id, props: p, coords, parts, zoom, draw: { id, ...geo, los: null, op: null }, speeds: new Map(), window: windowOf(p), los: null, styled: false, mid: coords[Math.floor(coords.length / 2)] };
    state.segments.set(id, seg);
    segLayer.put(seg.draw);
    dirty.segments.add(id);
  }
  segLayer.redraw();
  return props;
}

// ---------- segments by viewport ----------
// GET /api/v1/segments?bbox=&zoom= answers the segments in a box, simplified for the zoom.
// A server without these parameters refuses them (400) or answers every segment: from then
// on the full list is asked once and the map never asks again for a view.
const segFetch = { mode: /** @type {'unknown' | 'bbox' | 'full'} */ ('unknown'), covered: /** @type {any} */ (null), zoom: -1, asked: 0 };
const WORLD = [-180, -85, 180, 85];

/** @param {number[]} b @param {any} f */
function outside(b, f) {
  const parts = partsOf(f.geometry);
  const margin = 0.01;
  return parts.every((l) => l.every(([lat, lon]) => lon < b[0] - margin || lon > b[2] + margin || lat < b[1] - margin || lat > b[3] + margin));
}

/**
 * Load the segments: the whole network simplified for a city view first, then each view's
 * detail as the map is zoomed in. Returns the properties of every feature received (their
 * live state).
 * @param {boolean} [fit] bring the whole network into view
 */
export async function loadSegments(fit = false) {
  const first = segFetch.mode === 'unknown';
  let props;
  if (segFetch.mode === 'full') {
    props = mergeSegments(await apiJson('/api/v1/segments'), Infinity);
  } else {
    const z = first ? 12 : Math.round(map.getZoom());
    const b = first ? WORLD : viewBox(0.5);
    props = await fetchBox(b, z);
  }
  if ((fit || first) && state.segments.size) fitAll(false);
  return props;
}

/** The view's box, widened by a fraction on every side: [minLon, minLat, maxLon, maxLat]. @param {number} pad */
function viewBox(pad) {
  const b = map.getBounds().pad(pad);
  return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => Math.round(v * 1e5) / 1e5);
}

/** @param {number[]} b @param {number} z */
async function fetchBox(b, z) {
  const mine = (segFetch.asked += 1);
  let body;
  try {
    body = await apiJson(`/api/v1/segments?bbox=${b.join(',')}&zoom=${z}`);
  } catch (e) {
    if (/** @type {any} */ (e).status !== 400) throw e;
    segFetch.mode = 'full';
    return mergeSegments(await apiJson('/api/v1/segments'), Infinity);
  }
  // Parameters ignored: a feature wholly outside the box asked for.
  const ignored = b !== WORLD && (body.features || []).some((/** @type {any} */ f) => outside(b, f));
  if (ignored) {
    segFetch.mode = 'full';
    return mergeSegments(body, Infinity);
  }
  if (segFetch.mode === 'unknown') segFetch.mode = 'bbox';
  if (mine === segFetch.asked) {
    segFetch.covered = L.latLngBounds([b[1], b[0]], [b[3], b[2]]);
    segFetch.zoom = z;
  }
  return mergeSegments(body, z >= 17 ? Infinity : z);
}

/** After a move: the view's detail when it is not covered yet (debounced by Leaflet's moveend). */
function onViewChanged() {
  if (segFetch.mode !== 'bbox') return;
  const z = Math.round(map.getZoom());
  if (segFetch.covered && segFetch.covered.contains(map.getBounds()) && (z <= segFetch.zoom || segFetch.zoom >= 17)) return;
  fetchBox(viewBox(0.5), z).catch((e) => console.warn('segments', e));
}

/** The view fitAll last set: {lat, lng, zoom}, or null. @type {{lat: number, lng: number, zoom: number} | null} */
let fittedView = null;
/** Whether the map still shows the view fitAll set (nobody moved it since). */
export function showsAll() {
  if (!fittedView || !map) return false;
  const c = map.getCenter();
  return map.getZoom() === fittedView.zoom && Math.abs(c.lat - fittedView.lat) < 1e-7 && Math.abs(c.lng - fittedView.lng) < 1e-7;
}

/** The whole network in view (at start, entering wall mode). @param {boolean} [animate] */
export function fitAll(animate = false) {
  let box = null;
  for (const d of segLayer.items.values()) {
    if (!box) box = [...d.box];
    else { box[0] = Math.min(box[0], d.box[0]); box[1] = Math.min(box[1], d.box[1]); box[2] = Math.max(box[2], d.box[2]); box[3] = Math.max(box[3], d.box[3]); }
  }
  if (!box) return;
  const crs = map.options.crs;
  const sw = crs.pointToLatLng(L.point(box[0] * 256, box[3] * 256), 0);
  const ne = crs.pointToLatLng(L.point(box[2] * 256, box[1] * 256), 0);
  const remember = () => { const c = map.getCenter(); fittedView = { lat: c.lat, lng: c.lng, zoom: map.getZoom() }; };
  if (animate) map.once('moveend', remember);
  map.fitBounds(L.latLngBounds(sw, ne), { padding: [30, 30], animate });
  if (!animate) remember();
}

/**
 * A segment's last closed window from its GeoJSON properties (GET /api/v1/segments).
 * @param {Record<string, any>} p
 * @returns {import('./state.js').SegmentWindow | null}
 */
export function windowOf(p) {
  if (!p.window || p.los === undefined) return null;
  return { los: p.los, speed_kmh: p.speed_kmh, flow_vph: p.flow_vph, occupancy_pct: p.occupancy_pct, detectors: p.detectors, start: p.window.start, end: p.window.end, revision: p.window.revision, forecast: p.forecast ?? null };
}

/** @param {import('./state.js').Segment} seg */
function tooltipText(seg) {
  const now = Date.now();
  const v = currentSpeed(seg, now);
  const r = ratioOf(seg, now);
  const f = seg.window?.forecast?.horizons ?? [];
  const ahead = f.length ? ` · ${t('forecast_tip', { list: f.map((h) => `+${h.minutes}′ ${h.los ?? '–'}`).join(' ') })}` : '';
  return `${seg.props.name || seg.id} · LOS ${seg.los ?? '–'}${v !== null ? ` · ${num(v)} km/h · ${percent(r)} ${t('relative')}` : ''}${ahead}`;
}

/** Most segments marked as degrading at once (the worst forecasts first). */
const MAX_FORECAST_MARKS = 200;
/** @type {Map<string, any>} */
const forecastMarks = new Map();
/**
 * A mark beside each segment predicted to degrade (its forecast LOS, D or worse, is worse
 * than now): an arrow and the grade expected, in the grade's colour (docs/forecasts.md).
 */
export function drawForecasts() {
  const rank = (/** @type {string | null | undefined} */ g) => (g ? GRADES.indexOf(g) : -1);
  /** @type {[import('./state.js').Segment, string][]} */
  const marks = [];
  for (const seg of state.segments.values()) {
    const f = seg.window?.forecast;
    if (!f?.degrading) continue;
    const worst = f.horizons.reduce((/** @type {string | null} */ w, h) => (rank(h.los) > rank(w) ? h.los : w), null);
    if (worst) marks.push([seg, worst]);
  }
  marks.sort((a, b) => rank(b[1]) - rank(a[1]) || a[0].id.localeCompare(b[0].id));
  const keep = new Set();
  for (const [seg, grade] of marks.slice(0, MAX_FORECAST_MARKS)) {
    keep.add(seg.id);
    const key = `${grade}`;
    let m = forecastMarks.get(seg.id);
    if (m && m.sccrKey === key) continue;
    m?.remove();
    const el = document.createElement('span');
    el.className = 'fcmark';
    el.dataset.forecastMark = seg.id;
    el.style.setProperty('--c', COLOUR[grade] || COLOUR.none);
    el.textContent = `↘${grade}`;
    m = L.marker(seg.mid, { pane: 'forecasts', keyboard: false, interactive: false, icon: L.divIcon({ className: 'fcmark-anchor', html: el, iconSize: null }) });
    m.sccrKey = key;
    m.addTo(map);
    forecastMarks.set(seg.id, m);
  }
  for (const [id, m] of forecastMarks) if (!keep.has(id)) { m.remove(); forecastMarks.delete(id); }
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
  const before = seg.los;
  const first = !seg.styled;
  seg.los = los;
  seg.styled = true;
  seg.draw.los = los;
  if (first) segLayer.redraw();
  else segLayer.restyle(seg.draw, before);
}
/** What the canvas draws for a segment (for tests and tours). @param {string} id */
export function segmentStyle(id) {
  const seg = state.segments.get(id);
  if (!seg) return null;
  const w = segLayer.zoomWidth();
  return { los: seg.los, colour: COLOUR[seg.los ?? 'none'] || COLOUR.none, width: seg.draw.op?.closes ? w * 1.2 : w * widthFactor(seg.los), operation: seg.draw.op };
}

/**
 * The devices with a position, as dots on the segment canvas (they take no pointer: a
 * click or hover reaches the segment underneath).
 * @param {Record<string, any>[]} rows devices with their positions (GET /api/v1/map/devices)
 */
export function drawDevices(rows) {
  const last = new Map([...state.devices.values()].map((d) => [d.id, d.last]));
  state.devices.clear();
  /** @type {number[]} */
  const xy = [];
  for (const rec of rows) {
    /** @type {import('./state.js').Device} */
    const dev = { id: rec.id, kind: rec.kind, segment: rec.segment ?? null, lat: rec.lat ?? null, lon: rec.lon ?? null, last: Math.max(rec.last_seen ?? 0, last.get(rec.id) ?? 0), online: null, dot: null };
    if (dev.lat !== null && dev.lon !== null) {
      dev.dot = xy.length / 2;
      xy.push(...mercator(dev.lon, dev.lat));
    }
    state.devices.set(dev.id, dev);
  }
  // Drawn online until the first tick knows better, as before any reading.
  segLayer.setDevices(Float64Array.from(xy), new Uint8Array(xy.length / 2).fill(1));
  dirty.devices = true;
}

/** Online devices as dark dots ringed in white, offline ones as hollow magenta rings (a shape, not only a colour). */
export function styleDevice(/** @type {import('./state.js').Device} */ d) {
  if (d.dot !== null) segLayer.deviceLook(d.dot, d.online ? 1 : 0);
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

/** @type {Map<string, any>} */
const opMarkers = new Map();
/** @type {(id: string) => void} */
let onOperationMarkerClick = () => {};

/**
 * Road operations on the map: an icon each (kind and severity, app/operations.js) and the
 * active ones' segments in barrier stripes on the segment canvas.
 * @param {import('./state.js').Operation[]} ops
 * @param {Map<string, {closes: boolean}>} marks the segments to mark
 * @param {(op: import('./state.js').Operation) => [number, number] | null} position
 * @param {(op: import('./state.js').Operation) => HTMLElement} icon
 */
export function drawOperations(ops, marks, position, icon) {
  for (const seg of state.segments.values()) {
    const m = marks.get(seg.id) ?? null;
    if (m?.closes !== seg.draw.op?.closes) seg.draw.op = m ? { closes: m.closes } : null;
  }
  segLayer.redraw();
  const keep = new Set();
  for (const op of ops) {
    const pos = position(op);
    if (!pos) continue;
    keep.add(op.id);
    const key = `${op.kind}|${op.severity}|${op.status}|${state.selectedOp === op.id}|${op.version}`;
    let m = opMarkers.get(op.id);
    if (m && m.sccrKey === key) { m.setLatLng(pos); continue; }
    m?.remove();
    const el = icon(op);
    el.classList.add('opmark', op.status);
    if (state.selectedOp === op.id) el.classList.add('selected');
    el.dataset.opMarker = op.id;
    el.title = op.title;
    m = L.marker(pos, { pane: 'operations', keyboard: false, riseOnHover: true, icon: L.divIcon({ className: 'opmark-anchor', html: el, iconSize: null }) });
    m.sccrKey = key;
    m.on('click', (/** @type {any} */ e) => { L.DomEvent.stopPropagation(e); onOperationMarkerClick(op.id); });
    m.addTo(map);
    opMarkers.set(op.id, m);
  }
  for (const [id, m] of opMarkers) if (!keep.has(id)) { m.remove(); opMarkers.delete(id); }
}
/** @param {(id: string) => void} f */
export function onOperationMarker(f) { onOperationMarkerClick = f; }

/** Outline a segment (or a device's place) and bring it into view. @param {string | null} segment @param {[number, number] | null} [point] */
export function focus(segment, point = null) {
  focusMany(segment ? [segment] : [], point);
}
/**
 * Outline segments and a place (an operation's) and bring them into view.
 * @param {string[]} segments @param {[number, number] | null} [point] @param {any} [area] a GeoJSON polygon
 */
export function focusMany(segments, point = null, area = null) {
  highlight?.remove();
  highlight = null;
  const w = lineWeight();
  const parts = segments.flatMap((id) => state.segments.get(id)?.parts ?? []);
  const group = L.featureGroup();
  if (parts.length) group.addLayer(L.polyline(parts, { pane: 'highlight', color: cssVar('--highlight'), weight: w * 3.2, opacity: 0.6, lineCap: 'round', interactive: false }));
  if (area?.type === 'Polygon') group.addLayer(L.polygon(area.coordinates.map((/** @type {number[][]} */ ring) => ring.map(([lon, lat]) => [lat, lon])), { pane: 'highlight', color: cssVar('--highlight'), weight: w * 0.8, dashArray: `${w * 2} ${w * 1.5}`, fill: false, interactive: false }));
  if (point && !parts.length) group.addLayer(L.circleMarker(point, { pane: 'highlight', radius: w * 4, color: cssVar('--highlight'), weight: w, fill: false, interactive: false }));
  if (!group.getLayers().length) return;
  highlight = group.addTo(map);
  if (parts.length || area) map.flyToBounds(group.getBounds(), { padding: [80, 80], maxZoom: 16, duration: 0.6 });
  else if (point) map.flyTo(point, Math.max(map.getZoom(), 16), { duration: 0.6 });
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
  const ops = state.operationsAvailable ? [['opsw', 'legend_operation']] : [];
  for (const [cls, key] of [['dot on', 'legend_online'], ['dot off', 'legend_offline'], ['amark-sw', 'legend_alert'], ['fcmark', 'legend_degrading'], ...ops]) {
    const mark = document.createElement('span');
    mark.className = cls;
    if (cls === 'amark-sw') mark.textContent = '!';
    if (cls === 'fcmark') { mark.textContent = '↘E'; mark.style.setProperty('--c', COLOUR.E); }
    const label = document.createElement('span');
    label.dataset.t = key;
    label.textContent = t(key);
    devs.append(mark, label);
  }
  el.append(h, row, devs);
}
