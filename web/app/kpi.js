// @ts-check
// KPI tiles and the worst segments. Figures show "–" until data arrives and are greyed
// with their age while the live connection is down. A 4K wall lists ten worst segments
// with their last hour as a trend line; 1080p lists five.
import { history } from './api.js';
import { t, num, percent } from './i18n.js';
import { COLOUR, worstFirst, live } from './los.js';
import { currentLos, currentSpeed } from './map.js';
import { counts } from './alerts.js';
import { sparkline } from './charts.js';
import { state } from './state.js';
import { $, fromTemplate, slot } from './util.js';

/** @type {Map<string, {at: number, values: number[]}>} */
const trends = new Map();

/** Devices online by their last value (the server's KPI frame wins while it is fresh). @param {number} now */
function presence(now) {
  let online = 0;
  let known = 0;
  for (const d of state.devices.values()) {
    known += 1;
    const on = d.last > 0 && now - d.last < live.deviceOnlineMs;
    if (on) online += 1;
  }
  return { online, offline: known - online, known };
}

/** How many worst segments the tiles can list (a 4K wall). */
const WORST_MAX = 10;

/**
 * The figures computed here from the live values: what the server's KPI frame lacks.
 * The worst segments are picked in one pass (a city has tens of thousands of segments;
 * only ten are listed), in the order of worstFirst.
 * @param {number} now
 */
function clientKpi(now) {
  const { online, offline, known } = presence(now);
  while (state.valueTimes.length && now - state.valueTimes[0][0] > 10_000) state.valueTimes.shift();
  const values = state.valueTimes.reduce((s, [, n]) => s + n, 0);
  const span = state.valueTimes.length ? Math.max(1000, now - state.valueTimes[0][0]) : 10_000;
  let weighted = 0;
  let length = 0;
  /** @type {any[]} the worst so far, in order */
  const ranked = [];
  for (const seg of state.segments.values()) {
    const v = currentSpeed(seg, now);
    if (v === null) continue;
    const l = Math.max(1, seg.props.length_m || 1);
    weighted += v * l;
    length += l;
    const ff = seg.props.free_flow_kmh;
    const ratio = ff > 0 ? v / ff : null;
    // Ordered by ratio first: one with a higher ratio than the last of a full list cannot enter.
    if (ranked.length === WORST_MAX && (ratio ?? Infinity) > (ranked[WORST_MAX - 1].ratio ?? Infinity)) continue;
    const row = { segment: seg.id, name: seg.props.name, los: currentLos(seg, now), speed_kmh: v, ratio, free_flow_kmh: ff };
    let at = ranked.length;
    while (at > 0 && worstFirst(row, ranked[at - 1]) < 0) at -= 1;
    if (at < WORST_MAX) {
      ranked.splice(at, 0, row);
      if (ranked.length > WORST_MAX) ranked.pop();
    }
  }
  return {
    devices_online: known ? online : null, devices_offline: known ? offline : null,
    readings_per_s: state.valueTimes.length ? values / (span / 1000) : null,
    city_speed_kmh: length ? weighted / length : null, worst_segments: ranked,
  };
}

/** @param {string} id @param {string} text */
function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

/** How many worst segments fit: ten with trend lines on a 4K canvas, three on a 1080p wall (the alerts come first), five at a desk. */
const worstRows = () => (window.innerWidth >= 2560 ? 10 : document.body.dataset.mode === 'wall' ? 3 : 5);

export function renderKpis() {
  const now = Date.now();
  // The server's frame while it is fresh; what it cannot know yet (no closed window since
  // a start) comes from the live values here, computed only then.
  const server = state.kpi && now - state.kpiAt < 5000 ? state.kpi : null;
  const local = !server || server.city_speed_kmh === null || !(server.worst_segments || []).length ? clientKpi(now) : null;
  const k = server ? { ...server } : /** @type {any} */ (local);
  if (server && local && server.city_speed_kmh === null) k.city_speed_kmh = local.city_speed_kmh;
  if (server && local && !(server.worst_segments || []).length) k.worst_segments = local.worst_segments;
  const have = state.lastFrameAt > 0;
  setText('kpi-online', have ? num(k.devices_online) : '–');
  setText('kpi-offline', have ? num(k.devices_offline) : '–');
  setText('kpi-rps', have ? num(k.readings_per_s, k.readings_per_s !== null && k.readings_per_s < 10 ? 1 : 0) : '–');
  setText('kpi-city-speed', have ? num(k.city_speed_kmh) : '–');
  const c = counts();
  setText('kpi-crit', have ? String(c.critical) : '–');
  setText('kpi-warn', have ? String(c.warning) : '–');
  setText('kpi-info', have ? String(c.info) : '–');
  setText('kpi-unacked', have && c.unacked ? t('unacked', { n: c.unacked }) : '');
  document.body.dataset.kpiSource = server ? 'server' : 'client';
  // One rule for the order (docs/api.md): the server's list, re-sorted defensively.
  const worst = (k.worst_segments || []).map((/** @type {any} */ w) => ({ ...w, ratio: w.ratio ?? (w.free_flow_kmh > 0 && w.speed_kmh !== null ? w.speed_kmh / w.free_flow_kmh : null) }));
  worst.sort(worstFirst);
  const shown = worst.slice(0, worstRows());
  // Rebuild the list only when what it shows changes (a wall repaints nothing needlessly).
  const signature = JSON.stringify([document.documentElement.lang, shown.map((/** @type {any} */ w) => [w.segment, w.los, Math.round(w.speed_kmh ?? -1), Math.round((w.ratio ?? -1) * 100), trends.get(w.segment)?.values.join(',') ?? ''])]);
  if (signature !== lastWorst) {
    lastWorst = signature;
    $('worst-list').replaceChildren(...shown.map(worstRow));
  }
  if (worstRows() > 5) refreshTrends(worst.slice(0, 10).map((/** @type {any} */ w) => w.segment), now);
}

let lastWorst = '';
/** @param {any} w */
function worstRow(w) {
  const li = fromTemplate('tpl-worst');
  li.dataset.segment = w.segment;
  const badge = /** @type {HTMLElement} */ (li.querySelector('.los-badge'));
  badge.textContent = w.los ?? '–';
  badge.style.background = COLOUR[w.los ?? 'none'] || COLOUR.none;
  slot(li, 'name', w.name || state.segments.get(w.segment)?.props.name || w.segment);
  slot(li, 'speed', num(w.speed_kmh));
  slot(li, 'ratio', percent(w.ratio));
  const trend = trends.get(w.segment);
  if (worstRows() > 5 && trend && trend.values.length > 1) {
    const ff = w.free_flow_kmh || Math.max(...trend.values);
    li.querySelector('.trend')?.append(sparkline(trend.values, 0, Math.max(ff, ...trend.values)));
  }
  return li;
}

/** @type {Map<string, number>} since when each segment has been in the list */
const listedSince = new Map();
/** Seconds a segment stays listed before its trend is asked for (a list that changes every second asks for nothing). */
const TREND_AFTER_MS = 3000;
/**
 * Last hour of speed per listed segment, refreshed once a minute; asked for once a segment
 * has stayed in the list a few seconds, so a list that churns under live speeds does not
 * ask the server for a history every second.
 * @param {string[]} ids @param {number} now
 */
function refreshTrends(ids, now) {
  for (const id of listedSince.keys()) if (!ids.includes(id)) listedSince.delete(id);
  for (const id of ids) if (!listedSince.has(id)) listedSince.set(id, now);
  for (const id of ids) {
    if (now - (listedSince.get(id) ?? now) < TREND_AFTER_MS) continue;
    const known = trends.get(id);
    if (known && now - known.at < 60_000) continue;
    trends.set(id, { at: now, values: known?.values ?? [] });
    history({ segment: id, metric: 'speed_kmh', from: now - 3600_000, to: now, step: '2m' })
      .then((h) => { trends.set(id, { at: now, values: (h.points || []).map((/** @type {any} */ p) => p.v).filter((/** @type {any} */ v) => Number.isFinite(v)) }); })
      .catch(() => {});
  }
}
