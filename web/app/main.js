// @ts-check
// SCCR wall dashboard: the live map of the road segments coloured by Level of Service,
// KPI tiles, alarm handling, segment and planner charts. Native ES modules, no build
// step; Leaflet and uPlot are vendored under vendor/ and used as globals.
import { auth, apiJson, allRows, whoAmI } from './api.js';
import * as i18n from './i18n.js';
import { t, applyTexts, clock, ago } from './i18n.js';
import * as los from './los.js';
import * as mapView from './map.js';
import * as alerts from './alerts.js';
import { renderKpis } from './kpi.js';
import { charts } from './charts.js';
import { openDetail, closeDetail, renderFigures } from './detail.js';
import * as planner from './planner.js';
import * as operations from './operations.js';
import { connect, reconnect } from './live.js';
import { state, dirty, canExport } from './state.js';
import { $ } from './util.js';

/** The debugging and test handle. */
const probe = {
  state, ready: false, frames: 0, losOf: (/** @type {string} */ id) => state.segments.get(id)?.los ?? null, segmentPoint: mapView.segmentPoint, map: mapView.getMap, charts, wallFontPx: 0,
  segmentAt: mapView.segmentAtPage, segmentPixel: mapView.segmentPixel, segmentStyle: mapView.segmentStyle, segmentDraws: mapView.segmentDrawStats,
};
/** @type {any} */ (window).sccr = probe;

// ---------- wall mode ----------
// The smallest text on the wall subtends 16 arc minutes at the viewing distance (the
// minimum character height of ISO 9241-303; 20–22' preferred, used for the key figures).
// At 5 m that is a 23.3 mm capital; on a 55-inch 1080p panel (0.634 mm pixels) 36.7 px,
// so 51 px type (DejaVu Sans capitals are 0.73 em). A 4K canvas is taken to be a wall of
// such panels (same pixel pitch), so it shows more rather than the same twice as large;
// ?distance=<m>&diagonal=<inches> describe another wall.
const ARCMIN = 16;
const CAP_HEIGHT_EM = 0.73;
const PANEL_PITCH_MM = (55 * 25.4 * 16) / Math.hypot(16, 9) / 1920;
function wallFontPx() {
  const q = new URLSearchParams(location.search);
  const distance = Number(q.get('distance')) || 5;
  const diagonal = Number(q.get('diagonal'));
  const pitch = diagonal > 0 ? (diagonal * 25.4 * 16) / Math.hypot(16, 9) / window.innerWidth : PANEL_PITCH_MM;
  const cap = (distance * 1000 * Math.tan(((ARCMIN / 60) * Math.PI) / 180)) / pitch;
  return Math.ceil(cap / CAP_HEIGHT_EM);
}
/** @param {string} mode */
function setMode(mode) {
  const changed = state.mode !== (mode === 'wall' ? 'wall' : 'desk');
  state.mode = mode === 'wall' ? 'wall' : 'desk';
  document.body.dataset.mode = state.mode;
  probe.wallFontPx = wallFontPx();
  document.documentElement.style.fontSize = state.mode === 'wall' ? `${probe.wallFontPx}px` : '';
  localStorage.setItem('sccr.mode', state.mode);
  $('mode').textContent = t(state.mode === 'wall' ? 'mode_desk' : 'mode_wall');
  if (state.mode === 'wall' && document.body.dataset.view !== 'live') setView('live');
  los.readColours();
  mapView.renderLegend();
  for (const seg of state.segments.values()) { seg.styled = false; dirty.segments.add(seg.id); }
  dirty.alerts = true;
  renderKpis(); // the worst list's length depends on the mode
  alerts.countHidden();
  operations.countHidden();
  // Entering wall mode shows the whole network; a resize keeps a view someone chose (a
  // zoom, a pan, an alert in focus) and fits the network again only if it was in view.
  const refit = changed || mapView.showsAll();
  setTimeout(() => {
    mapView.getMap()?.invalidateSize();
    if (state.mode === 'wall' && !state.selected && refit) mapView.fitAll();
  }, 0);
  scheduleFrame();
}

// ---------- language ----------
function applyLang() {
  applyTexts();
  document.querySelectorAll('.lang button').forEach((b) => b.classList.toggle('on', /** @type {HTMLElement} */ (b).dataset.lang === i18n.lang()));
  $('mode').textContent = t(state.mode === 'wall' ? 'mode_desk' : 'mode_wall');
  mapView.renderLegend();
  mapView.updateLabels();
  renderConn();
  alerts.render();
  operations.render();
  renderKpis();
  if (state.selected) openDetail(state.selected); // its chart's dates in the new language
  planner.fillMetrics();
  planner.fillSubjects();
  if (planner.shown()) planner.show();
}

// ---------- live frames ----------
/** @param {any[]} values @param {boolean} counted */
function onValues(values, counted) {
  const now = Date.now();
  if (counted) state.valueTimes.push([now, values.length]);
  for (const v of values) {
    const dev = state.devices.get(v.device);
    if (dev && v.time > dev.last) dev.last = Math.min(v.time, now);
    if (v.metric !== 'speed_kmh' || !dev?.segment) continue;
    const seg = state.segments.get(dev.segment);
    if (!seg) continue;
    const prev = seg.speeds.get(v.device);
    if (!prev || v.time >= prev.t) {
      seg.speeds.set(v.device, { v: v.value, t: v.time });
      dirty.segments.add(seg.id);
    }
  }
}
/** @param {any} s */
function onSegmentState(s) {
  const seg = state.segments.get(s.segment);
  if (!seg) return;
  const w = seg.window;
  if (w && (s.start < w.start || (s.start === w.start && (s.revision ?? 0) < (w.revision ?? 0)))) return;
  if (Boolean(seg.window?.forecast?.degrading) !== Boolean(s.forecast?.degrading) || (s.forecast?.degrading && seg.window?.forecast?.horizons?.at(-1)?.los !== s.forecast.horizons.at(-1)?.los)) dirty.forecasts = true;
  seg.window = s;
  dirty.segments.add(seg.id);
}
/** @param {any} msg */
function onFrame(msg) {
  probe.frames += 1;
  state.lastFrameAt = Date.now();
  switch (msg.type) {
    case 'snapshot':
      onValues(msg.values || [], false);
      for (const s of msg.segments || []) onSegmentState(s);
      if (msg.alerts) alerts.replaceAll(msg.alerts);
      renderKpis();
      probe.ready = true;
      document.body.dataset.ready = 'true';
      break;
    case 'delta': onValues(msg.values || [], true); break;
    case 'segment': onSegmentState(msg.segment); break;
    case 'alert': alerts.upsert(msg.alert, true); break;
    case 'kpi': state.kpi = msg.kpi; state.kpiAt = Date.now(); break;
    case 'operations': operations.replaceAll(msg.operations || []); break;
    case 'operation': operations.upsert(msg.operation); break;
    default: break;
  }
  scheduleFrame();
}

// ---------- connection state: stale figures are shown as stale ----------
function renderConn() {
  const s = state.live;
  $('conn-state').textContent = t(s === 'open' ? 'conn_open' : s === 'closed' ? 'conn_closed' : 'conn_connecting');
  const banner = $('conn-banner');
  const stale = $('stale');
  if (s !== 'closed') {
    banner.hidden = true;
    stale.hidden = true;
    return;
  }
  const { attempt, retryAt } = reconnect();
  const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
  const at = state.lastFrameAt ? clock(state.lastFrameAt) : '–';
  const age = state.lastFrameAt ? i18n.duration((Date.now() - state.lastFrameAt) / 1000) : '–';
  banner.textContent = secs > 0 ? t('banner_lost', { s: secs, n: attempt, at, age }) : t('banner_retrying', { n: attempt, at, age });
  banner.hidden = false;
  stale.textContent = state.lastFrameAt ? `${t('stale_since', { at })} · ${ago(state.lastFrameAt)}` : '';
  stale.hidden = false;
}
let wasLive = 'connecting';
function onConnState() {
  renderConn();
  if (state.live !== wasLive) {
    wasLive = state.live;
    dirty.alerts = true; // actions are enabled only while connected
    scheduleFrame();
  }
}

// ---------- frame loop: map restyling and alert list batched per animation frame ----------
let frameQueued = false;
/** Whether the legend shows the operations' stripes (once the server is known to have them). @type {boolean | null} */
let legendOps = null;
function scheduleFrame() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(() => {
    frameQueued = false;
    const now = Date.now();
    for (const id of dirty.segments) { const seg = state.segments.get(id); if (seg) mapView.styleSegment(seg, now); }
    dirty.segments.clear();
    if (dirty.alerts) {
      alerts.render();
      mapView.drawAlertMarkers(alerts.onMap());
    }
    if (dirty.forecasts) {
      dirty.forecasts = false;
      mapView.drawForecasts();
    }
    if (dirty.operations) {
      dirty.operations = false;
      if (legendOps !== state.operationsAvailable) { legendOps = state.operationsAvailable; mapView.renderLegend(); planner.fillSubjects(); }
      operations.render();
      mapView.drawOperations(operations.ordered(), operations.markedSegments(), operations.operationPosition, (op) => operations.opIcon(op.kind, op.severity));
    }
  });
}
function tick() {
  const now = Date.now();
  $('clock').textContent = clock(now);
  // Live speeds age out: re-grade once a second the segments that have any (the others
  // change only with a new window, which marks them); devices go offline.
  for (const seg of state.segments.values()) if (seg.speeds.size) dirty.segments.add(seg.id);
  for (const d of state.devices.values()) {
    const on = d.last > 0 && now - d.last < los.live.deviceOnlineMs;
    if (on !== d.online) { d.online = on; mapView.styleDevice(d); }
  }
  scheduleFrame();
  renderKpis();
  // "since 12 min ago" moves on; a planned operation's start passes.
  if (state.operations.size && Math.floor(now / 1000) % 15 === 0) operations.render();
  renderConn();
  if (state.selected) renderFigures();
}

// ---------- views ----------
/** @param {string} v */
function setView(v) {
  if (v === 'planner' && state.mode === 'wall') setMode('desk');
  document.body.dataset.view = v;
  $('view-live').hidden = v !== 'live';
  $('view-planner').hidden = v !== 'planner';
  if (v === 'live') mapView.getMap()?.invalidateSize();
  if (v === 'planner') { planner.fillSubjects(); if (!planner.shown()) planner.show(); }
  const url = new URL(location.href);
  url.hash = v === 'live' ? '' : v;
  window.history.replaceState(null, '', url);
}

/** An alert chosen in the list or on the map: highlight its subject and bring it into view. @param {import('./state.js').Alert} a */
function selectAlert(a) {
  const seg = a.subject?.segment ?? (a.subject?.device ? state.devices.get(a.subject.device)?.segment : null) ?? null;
  const point = mapView.alertPosition(a);
  mapView.focus(a.subject?.segment ? seg : null, a.subject?.segment ? null : point);
  if (seg && a.subject?.segment) openDetail(seg);
  dirty.alerts = true;
  scheduleFrame();
}

// ---------- signalling a new critical alert ----------
/** @type {AudioContext | null} */
let audio = null;
function signalCritical() {
  const panel = $('alerts-panel');
  panel.classList.remove('pulse');
  void panel.offsetWidth; // restart the animation
  panel.classList.add('pulse');
  try {
    if (!audio || audio.state !== 'running') return; // sound only after a user gesture
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.6);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.6);
  } catch (_) { /* no sound available */ }
}

// ---------- start ----------
function showLogin(/** @type {boolean} */ bad) {
  const dlg = $('login');
  $('login-error').hidden = !bad || !auth.token;
  $('login-error').textContent = t('login_bad');
  if (!dlg.open) dlg.showModal();
}
function applyRole() {
  $('user').textContent = state.me && state.me.role !== 'none' ? `${state.me.name} · ${state.me.role}` : '';
  $('logout').hidden = !auth.token;
  $('downloads').hidden = !canExport();
  document.body.dataset.role = state.me?.role ?? 'none';
}

/** An operation chosen in the panel or on the map: its segments, place or area in view. @param {import('./state.js').Operation} op */
function selectOperation(op) {
  mapView.focusMany(operations.affectedSegments(op), operations.operationPosition(op), op.area);
  scheduleFrame();
}

/** Devices, segments, open alerts and road operations from the server (again after a reconnection). */
async function loadStatic() {
  const first = state.segments.size === 0;
  const [segs, devs, open] = await Promise.all([
    mapView.loadSegments(first),
    allRows('/api/v1/map/devices?limit=5000'),
    apiJson('/api/v1/alerts?state=open&limit=1000'),
    operations.load(),
  ]);
  if (!first) {
    for (const p of segs) {
      const w = mapView.windowOf(p);
      if (w) onSegmentState({ ...w, segment: p.id });
    }
  }
  mapView.drawDevices(devs);
  for (const a of open.alerts || []) alerts.upsert(a, false);
  planner.fillSubjects();
  dirty.operations = true; // their icons sit on segments that may have just arrived
  scheduleFrame();
}

let started = false;
/** @param {{name: string, role: string}} me */
async function start(me) {
  started = true;
  state.me = me;
  applyRole();
  try {
    const catalogue = await apiJson('/api/v1/catalogue');
    i18n.setCatalogue(catalogue);
    los.setCatalogue(catalogue);
  } catch (e) {
    console.warn('catalogue', e);
  }
  applyLang();
  mapView.loadBasemap();
  try {
    await loadStatic();
  } catch (e) {
    console.warn('initial load failed', e);
  }
  connect({ onFrame, onState: onConnState, onReopen: () => { loadStatic().catch(() => {}); } });
  setInterval(tick, 1000);
  tick();
  if (location.hash === '#planner') setView('planner');
}

function wire() {
  document.querySelectorAll('.lang button').forEach((b) => b.addEventListener('click', () => {
    i18n.setLang(/** @type {HTMLElement} */ (b).dataset.lang || 'en');
    localStorage.setItem('sccr.lang', i18n.lang());
    applyLang();
  }));
  document.querySelectorAll('.tab').forEach((b) => b.addEventListener('click', () => setView(/** @type {HTMLElement} */ (b).dataset.tab || 'live')));
  $('mode').addEventListener('click', () => setMode(state.mode === 'wall' ? 'desk' : 'wall'));
  $('worst-list').addEventListener('click', (/** @type {MouseEvent} */ e) => {
    const li = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (e.target).closest('li[data-segment]'));
    if (li?.dataset.segment) { openDetail(li.dataset.segment); mapView.focus(li.dataset.segment); }
  });
  $('detail-close').addEventListener('click', () => { closeDetail(); mapView.clearFocus(); });
  planner.initPlanner();
  operations.initOperations({ onSelect: selectOperation });
  mapView.onOperationMarker((id) => operations.select(id));
  alerts.initAlerts({ onSelect: selectAlert, onCritical: signalCritical });
  $('logout').addEventListener('click', () => { localStorage.removeItem('sccr.token'); location.reload(); });
  $('login-form').addEventListener('submit', async (/** @type {Event} */ e) => {
    e.preventDefault();
    auth.token = $('login-token').value.trim();
    localStorage.setItem('sccr.token', auth.token);
    const me = await whoAmI().catch(() => null);
    if (!me) { showLogin(true); return; }
    $('login').close();
    if (!started) start(me);
  });
  // Sound needs a user gesture: the first click on the page arms it for critical alerts.
  document.addEventListener('click', () => {
    try {
      audio = audio || new AudioContext();
      if (audio.state === 'suspended') audio.resume().catch(() => {});
    } catch (_) { /* no audio */ }
  }, { once: true });
  window.addEventListener('resize', () => { if (state.mode === 'wall') setMode('wall'); else { dirty.alerts = true; scheduleFrame(); } });
}

async function main() {
  const stored = localStorage.getItem('sccr.lang');
  i18n.setLang(stored || ((navigator.language || 'en').startsWith('it') ? 'it' : 'en'));
  auth.onUnauthorized = showLogin;
  los.readColours();
  mapView.initMap({
    onSegment: (id) => { openDetail(id); mapView.focus(id); },
    onAlert: (id) => alerts.selectFromMap(id),
    onBackground: () => {
      closeDetail();
      mapView.clearFocus();
      if (state.selectedOp) { state.selectedOp = null; dirty.operations = true; scheduleFrame(); }
    },
  });
  wire();
  const q = new URLSearchParams(location.search);
  setMode(q.get('mode') || localStorage.getItem('sccr.mode') || 'desk');
  applyLang();
  let me = null;
  try { me = await whoAmI(); } catch (e) { console.warn(e); }
  if (!me) { showLogin(Boolean(auth.token)); return; }
  start(me);
}
main();
