// @ts-check
// Road operations on the wall: incidents, roadworks, closures and planned events
// (GET /api/v1/operations, live `operations` and `operation` frames). Each has an icon on
// the map (its shape and colour tell the kind, as road signs do; its size and the pips
// under it the severity), its segments are wrapped in black and white barrier stripes
// while it is active (a closed road is drawn dark), and the panel lists the active and
// imminent ones; clicking one brings it into view.
import { apiJson } from './api.js';
import { t, hhmm, dateTime, ago } from './i18n.js';
import { state, dirty } from './state.js';
import { allOperations } from './opsdata.js';
import { $, fromTemplate, slot } from './util.js';

export const KINDS = ['incident', 'roadworks', 'closure', 'event'];
export const SEVERITIES = ['minor', 'moderate', 'major', 'critical'];
const SEV_RANK = { critical: 0, major: 1, moderate: 2, minor: 3 };
const LIVE = new Set(['active', 'planned']);
const NS = 'http://www.w3.org/2000/svg';

/** @type {(op: import('./state.js').Operation) => void} */
let onSelect = () => {};

/** @param {{onSelect: (op: import('./state.js').Operation) => void}} h */
export function initOperations(h) {
  onSelect = h.onSelect;
  const list = $('ops-list');
  // The alerts' list outranks this one on the wall: what fits changes with it, so the rows
  // shown are counted again when the list's size changes (after layout), not polled.
  new ResizeObserver(() => countHidden()).observe(list);
  list.addEventListener('click', (/** @type {MouseEvent} */ e) => {
    const li = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (e.target).closest('li[data-op]'));
    if (li?.dataset.op) select(li.dataset.op);
  });
  list.addEventListener('keydown', (/** @type {KeyboardEvent} */ e) => {
    const li = /** @type {HTMLElement} */ (e.target);
    if (e.key === 'Enter' && li.dataset.op) select(li.dataset.op);
  });
}

/** @param {string} id */
export function select(id) {
  const op = state.operations.get(id);
  if (!op) return;
  state.selectedOp = id;
  dirty.operations = true;
  onSelect(op);
}

/**
 * The operations not ended or cancelled, from the server (again after a reconnection).
 * A server without operations answers 404: the panel stays hidden.
 */
export async function load() {
  let all;
  try {
    all = await allOperations(apiJson, 'limit=500');
  } catch (e) {
    if (/** @type {any} */ (e).status === 404) {
      state.operationsAvailable = false;
      dirty.operations = true;
      return;
    }
    console.warn('operations', e);
    return;
  }
  replaceAll(all);
}

/** @param {import('./state.js').Operation[]} list the live snapshot, replacing what was known */
export function replaceAll(list) {
  state.operationsAvailable = true;
  state.operations.clear();
  for (const op of list) upsert(op);
  dirty.operations = true;
}

/** One operation from REST or a live frame; an older version than the one held is ignored. @param {import('./state.js').Operation} op */
export function upsert(op) {
  if (!op || typeof op.id !== 'string') return;
  state.operationsAvailable = true;
  const known = state.operations.get(op.id);
  if (known && (known.version ?? 0) > (op.version ?? 0)) return;
  if (LIVE.has(op.status)) state.operations.set(op.id, op);
  else {
    state.operations.delete(op.id);
    if (state.selectedOp === op.id) state.selectedOp = null;
  }
  dirty.operations = true;
}

/** When it started (actual) or starts (planned), in ms. @param {import('./state.js').Operation} op */
export function sinceOf(op) {
  const s = op.status === 'active' ? op.actual?.from ?? op.planned?.from : op.planned?.from;
  const ms = s ? Date.parse(s) : NaN;
  return Number.isFinite(ms) ? ms : null;
}

/** Active first, then by severity, then the most recent. */
export function ordered() {
  return [...state.operations.values()].sort((a, b) => {
    if (a.status !== b.status) return a.status === 'active' ? -1 : 1;
    const s = (SEV_RANK[a.severity] ?? 9) - (SEV_RANK[b.severity] ?? 9);
    if (s) return s;
    return (sinceOf(b) ?? 0) - (sinceOf(a) ?? 0);
  });
}

/** An operation's segments: its own, else those the server derived from its point or area. @param {import('./state.js').Operation} op @returns {string[]} */
export function affectedSegments(op) {
  return op.segments?.length ? op.segments : op.derived_segments || [];
}

/** The segments to mark on the map: every active operation's, closed when one closes the road. */
export function markedSegments() {
  /** @type {Map<string, {closes: boolean}>} */
  const marks = new Map();
  for (const op of state.operations.values()) {
    if (op.status !== 'active') continue;
    for (const s of affectedSegments(op)) {
      const m = marks.get(s);
      marks.set(s, { closes: Boolean(op.closes_road) || Boolean(m?.closes) });
    }
  }
  return marks;
}

/** A known agency's name in the chosen language; another agency's id as it is. @param {string} agency */
export const agencyName = (agency) => {
  const key = `agency_${agency}`;
  const s = t(key);
  return s === key ? agency : s;
};

/**
 * The icon of a kind at a severity: the shape and colour name the kind; pips (1 to 4)
 * name the severity without colour.
 * @param {string} kind @param {string} severity
 */
export function opIcon(kind, severity) {
  const wrap = document.createElement('span');
  wrap.className = `opicon k-${KINDS.includes(kind) ? kind : 'incident'} s-${SEVERITIES.includes(severity) ? severity : 'minor'}`;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 32 32');
  svg.setAttribute('aria-hidden', 'true');
  /** @param {string} tag @param {Record<string, string | number>} attrs */
  const add = (tag, attrs) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
    return el;
  };
  switch (kind) {
    case 'closure': // no entry: a red disc with a white bar
      add('circle', { cx: 16, cy: 16, r: 14.5, fill: '#d6001c', stroke: '#000', 'stroke-width': 2 });
      add('rect', { x: 6, y: 13, width: 20, height: 6, fill: '#fff' });
      break;
    case 'roadworks': // an orange diamond with a traffic cone
      add('path', { d: 'M16 1.5 L30.5 16 L16 30.5 L1.5 16 Z', fill: '#ff8a00', stroke: '#000', 'stroke-width': 2, 'stroke-linejoin': 'round' });
      add('path', { d: 'M16 8 L21 22 H11 Z', fill: '#000' });
      add('rect', { x: 9, y: 22, width: 14, height: 3, fill: '#000' });
      add('rect', { x: 12.6, y: 14.5, width: 6.8, height: 2.4, fill: '#ff8a00' });
      break;
    case 'event': // a violet square with a white star
      add('rect', { x: 2, y: 2, width: 28, height: 28, rx: 5, fill: '#7b4dff', stroke: '#000', 'stroke-width': 2 });
      add('path', { d: 'M16 6 L18.9 12.6 L26 13.2 L20.6 17.9 L22.2 25 L16 21.3 L9.8 25 L11.4 17.9 L6 13.2 L13.1 12.6 Z', fill: '#fff' });
      break;
    default: // incident: a warning triangle
      add('path', { d: 'M16 2 L30.5 28.5 H1.5 Z', fill: '#ffd400', stroke: '#000', 'stroke-width': 2, 'stroke-linejoin': 'round' });
      add('rect', { x: 14.4, y: 10, width: 3.2, height: 10, fill: '#000' });
      add('rect', { x: 14.4, y: 22, width: 3.2, height: 3.2, fill: '#000' });
  }
  wrap.append(svg);
  const pips = document.createElement('span');
  pips.className = 'pips';
  const n = (SEVERITIES.indexOf(severity) + 1) || 1;
  for (let i = 0; i < 4; i += 1) {
    const p = document.createElement('i');
    if (i < n) p.className = 'on';
    pips.append(p);
  }
  wrap.append(pips);
  return wrap;
}

/** Where an operation sits on the map: its point, else its first known segment's middle, else its area's centre. @param {import('./state.js').Operation} op @returns {[number, number] | null} */
export function operationPosition(op) {
  if (Array.isArray(op.point) && op.point.length === 2) return [op.point[1], op.point[0]];
  for (const id of affectedSegments(op)) {
    const seg = state.segments.get(id);
    if (seg) return seg.mid;
  }
  const ring = op.area?.type === 'Polygon' ? op.area.coordinates?.[0] : null;
  if (Array.isArray(ring) && ring.length) {
    const n = ring.length;
    return [ring.reduce((s, p) => s + p[1], 0) / n, ring.reduce((s, p) => s + p[0], 0) / n];
  }
  return null;
}

/** The line under the title: kind · severity · agency · since when. @param {import('./state.js').Operation} op */
export function metaText(op) {
  const since = sinceOf(op);
  const when = since === null ? '' : op.status === 'active'
    ? t('op_since', { at: sameDay(since) ? hhmm(since) : dateTime(since), ago: ago(since) })
    : t('op_from', { at: sameDay(since) ? hhmm(since) : dateTime(since) });
  return [t(`op_kind_${op.kind}`), t(`op_sev_${op.severity}`), agencyName(op.agency), when].filter(Boolean).join(' · ');
}
/** @param {number} ms */
const sameDay = (ms) => new Date(ms).toDateString() === new Date().toDateString();

/** The panel: active operations first, then those planned to start soon. */
export function render() {
  const panel = $('ops-panel');
  panel.hidden = state.operationsAvailable !== true;
  if (panel.hidden) return;
  const list = $('ops-list');
  const ops = ordered();
  $('ops-count').textContent = String(ops.filter((o) => o.status === 'active').length);
  $('ops-empty').hidden = ops.length > 0;
  list.replaceChildren(...ops.map((op) => {
    const li = fromTemplate('tpl-op');
    li.dataset.op = op.id;
    li.dataset.status = op.status;
    li.dataset.kind = op.kind;
    li.classList.add(`s-${op.severity}`);
    if (state.selectedOp === op.id) li.classList.add('selected');
    li.querySelector('[data-slot="icon"]')?.replaceChildren(opIcon(op.kind, op.severity));
    slot(li, 'title', op.title);
    slot(li, 'status', op.status === 'planned' ? t('op_planned') : op.closes_road ? t('op_closed_road') : '');
    slot(li, 'meta', metaText(op));
    return li;
  }));
  countHidden();
}

/**
 * On the wall the panel shows the rows that fit whole (a row cut by its edge is left out)
 * and counts the rest on its heading line, as the alerts' list does. Where no row fits (a
 * 1080p wall with alerts listed) the heading's count says it alone: "+N" would only repeat
 * it, and in Italian would not fit beside the heading.
 */
export function countHidden() {
  const list = $('ops-list');
  const more = $('ops-more');
  const wall = document.body.dataset.mode === 'wall';
  const bottom = list.getBoundingClientRect().bottom;
  let hidden = 0;
  for (const li of list.children) {
    const cut = wall && li.getBoundingClientRect().bottom > bottom + 1;
    li.classList.toggle('clipped', cut);
    if (cut) hidden += 1;
  }
  more.hidden = !wall || hidden === 0 || hidden === list.children.length;
  more.textContent = t('more_alerts', { n: hidden });
}
