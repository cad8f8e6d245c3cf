// @ts-check
// Alarm handling as control rooms practise it (ISA-18.2): active-unacknowledged,
// active-acknowledged and returned-to-normal-unacknowledged alerts stay on the wall until
// acknowledged; an operator may shelve a nuisance alert with a reason and an expiry;
// alerts suppressed by design and shelved ones have their own tabs; closed ones a
// recent-history list. Messages are rendered from the alert's code and parameters.
import { apiJson, postJson } from './api.js';
import { t, alertText, ago, hhmm, dateTime, duration } from './i18n.js';
import { state, dirty, canAct, mayAct } from './state.js';
import { $, fromTemplate, slot } from './util.js';

const SEV_RANK = { critical: 0, warning: 1, info: 2 };
const UNACKED = new Set(['raised', 'returned']);
/** @type {{view: string, form: {id: number, act: string} | null}} */
const ui = { view: 'active', form: null };
/** @type {(a: import('./state.js').Alert) => void} */
let onSelect = () => {};
/** @type {() => void} */
let onCritical = () => {};

/** @param {{onSelect: (a: import('./state.js').Alert) => void, onCritical: () => void}} h */
export function initAlerts(h) {
  onSelect = h.onSelect;
  onCritical = h.onCritical;
  const list = $('alert-list');
  // What fits changes with the panels above the list: counted when its size changes (after
  // layout, so the measuring forces none), not polled.
  new ResizeObserver(() => countHidden()).observe(list);
  list.addEventListener('click', onClick);
  list.addEventListener('keydown', (/** @type {KeyboardEvent} */ e) => {
    const target = /** @type {HTMLElement} */ (e.target);
    if (e.key === 'Enter' && target.matches('input')) target.closest('.alert')?.querySelector('[data-act="confirm"]')?.dispatchEvent(new MouseEvent('click', { bubbles: true }));
    if (e.key === 'Enter' && target.matches('li.alert')) select(Number(target.dataset.alert));
  });
  document.querySelectorAll('.alert-tabs button').forEach((b) => b.addEventListener('click', () => {
    ui.view = /** @type {HTMLElement} */ (b).dataset.view || 'active';
    if (ui.view === 'history') loadHistory();
    render();
  }));
  $('filter-severity').addEventListener('change', render);
  $('filter-area').addEventListener('change', render);
}

/** An alert from the server (REST, snapshot or live frame). @param {import('./state.js').Alert} a @param {boolean} live */
export function upsert(a, live) {
  const known = state.alerts.get(a.id);
  if (a.state === 'cleared') {
    if (known || live) {
      state.alerts.delete(a.id);
      state.closed = [a, ...state.closed.filter((c) => c.id !== a.id)].slice(0, 50);
    }
  } else {
    state.alerts.set(a.id, { ...a, fresh: live && !known });
    const visible = !a.shelved && !a.suppressed;
    if (live && visible && a.severity === 'critical' && a.state === 'raised' && (!known || known.state !== 'raised')) onCritical();
  }
  dirty.alerts = true;
}

/** @param {import('./state.js').Alert[]} alerts the open alerts, replacing what was known */
export function replaceAll(alerts) {
  state.alerts.clear();
  for (const a of alerts) upsert(a, false);
}

async function loadHistory() {
  try {
    const body = await apiJson('/api/v1/alerts?state=cleared&limit=50');
    state.closed = body.alerts || [];
    dirty.alerts = true;
  } catch (_) { /* shown as empty */ }
}

/** Which list an alert belongs to. @param {import('./state.js').Alert} a */
const viewOf = (a) => (a.shelved ? 'shelved' : a.suppressed ? 'suppressed' : 'active');

/** @param {import('./state.js').Alert} a */
function alertArea(a) {
  if (a.subject?.segment) return a.subject.segment;
  if (a.subject?.device) return state.devices.get(a.subject.device)?.segment ?? '';
  return '';
}
/** @param {import('./state.js').Alert} a */
function subjectText(a) {
  if (a.subject?.segment) return state.segments.get(a.subject.segment)?.props.name || a.subject.segment;
  if (a.subject?.device) {
    const seg = state.devices.get(a.subject.device)?.segment;
    const name = seg ? state.segments.get(seg)?.props.name : null;
    return name ? `${a.subject.device} · ${name}` : a.subject.device;
  }
  return `${t('rule')} ${a.rule}`;
}
/** The ISA-18.2 order: unacknowledged first, then severity, then newest. @param {import('./state.js').Alert} a @param {import('./state.js').Alert} b */
function order(a, b) {
  const ua = UNACKED.has(a.state) ? 0 : 1;
  const ub = UNACKED.has(b.state) ? 0 : 1;
  return ua - ub || (SEV_RANK[a.severity] ?? 3) - (SEV_RANK[b.severity] ?? 3) || b.raised_at - a.raised_at || b.id - a.id;
}

/** Visible counts for the KPI tile: open alerts neither shelved nor suppressed. */
export function counts() {
  const c = { critical: 0, warning: 0, info: 0, unacked: 0, shelved: 0, suppressed: 0 };
  for (const a of state.alerts.values()) {
    const v = viewOf(a);
    if (v === 'shelved') c.shelved += 1;
    else if (v === 'suppressed') c.suppressed += 1;
    else {
      c[/** @type {'critical' | 'warning' | 'info'} */ (a.severity)] += 1;
      if (UNACKED.has(a.state)) c.unacked += 1;
    }
  }
  return c;
}

/** The alerts drawn on the map: open and neither shelved nor suppressed. */
export const onMap = () => [...state.alerts.values()].filter((a) => viewOf(a) === 'active');

function renderAreaFilter() {
  const sel = $('filter-area');
  const current = sel.value;
  const areas = new Set();
  for (const a of state.alerts.values()) { const ar = alertArea(a); if (ar) areas.add(ar); }
  const opts = [new Option(t('all_areas'), '')];
  for (const id of [...areas].sort()) opts.push(new Option(state.segments.get(id)?.props.name || id, id));
  sel.replaceChildren(...opts);
  sel.value = areas.has(current) ? current : '';
}

export function render() {
  dirty.alerts = false;
  // Keep a note or reason being typed.
  if (document.activeElement?.closest?.('.alert .form')) return;
  renderAreaFilter();
  const c = counts();
  for (const [view, n] of [['active', c.critical + c.warning + c.info], ['shelved', c.shelved], ['suppressed', c.suppressed]]) {
    const b = document.querySelector(`.alert-tabs button[data-view="${view}"] .n`);
    if (b) b.textContent = String(n);
  }
  document.querySelectorAll('.alert-tabs button').forEach((b) => b.classList.toggle('on', /** @type {HTMLElement} */ (b).dataset.view === ui.view));
  const sev = $('filter-severity').value;
  const area = $('filter-area').value;
  const source = ui.view === 'history' ? state.closed : [...state.alerts.values()].filter((a) => viewOf(a) === ui.view).sort(order);
  const list = source.filter((a) => (!sev || a.severity === sev) && (!area || alertArea(a) === area)).slice(0, 200);
  const empty = $('alerts-empty');
  empty.hidden = list.length > 0;
  empty.textContent = t({ active: 'no_alerts', shelved: 'no_shelved', suppressed: 'no_suppressed', history: 'no_history' }[ui.view] || 'no_alerts');
  $('alert-list').replaceChildren(...list.map(row));
  for (const a of state.alerts.values()) a.fresh = false;
  /** @type {HTMLInputElement | null} */ (document.querySelector('.alert .form input'))?.focus();
  countHidden();
}

/** On the wall the list shows what fits; the rest is counted. */
export function countHidden() {
  const listEl = $('alert-list');
  const more = $('alerts-more');
  const bottom = listEl.getBoundingClientRect().bottom;
  const wall = document.body.dataset.mode === 'wall';
  let hidden = 0;
  for (const li of listEl.children) {
    // On the wall a row cut by the panel's edge is left out whole and counted.
    const cut = wall && li.getBoundingClientRect().bottom > bottom + 1;
    li.classList.toggle('clipped', cut);
    if (cut) hidden += 1;
  }
  more.hidden = hidden === 0 || !wall;
  more.textContent = t('more_alerts', { n: hidden });
}

/** @param {import('./state.js').Alert} a */
function row(a) {
  const li = fromTemplate('tpl-alert');
  li.classList.add(a.severity);
  if (a.fresh) li.classList.add('new');
  if (UNACKED.has(a.state)) li.classList.add('unacked');
  if (state.selectedAlert === a.id) li.classList.add('selected');
  li.dataset.alert = String(a.id);
  li.dataset.state = a.state;
  if (a.shelved) li.dataset.shelved = 'true';
  if (a.suppressed) li.dataset.suppressed = 'true';
  slot(li, 'icon', a.severity === 'critical' ? '!' : a.severity === 'warning' ? '▲' : 'i');
  slot(li, 'msg', alertText(a, (id) => state.segments.get(id)?.props.name || id));
  // The wall has room for ISA-18.2's short names (Unack, Acked, RTN unack).
  let stateText = t(document.body.dataset.mode === 'wall' ? `state_short_${a.state}` : `state_${a.state}`);
  if (a.shelved) stateText = t('state_shelved', { until: hhmm(a.shelved.until), by: a.shelved.by, reason: a.shelved.reason });
  else if (a.suppressed) stateText = t('state_suppressed');
  const st = slot(li, 'state', stateText);
  st?.classList.add(a.state);
  slot(li, 'subject', subjectText(a));
  slot(li, 'age', a.state === 'cleared' && a.cleared?.at ? t('closed_at', { at: dateTime(a.cleared.at) }) : ago(a.raised_at));
  slot(li, 'by', a.acknowledged ? t('acked_by', { by: a.acknowledged.by }) : '');
  const actions = /** @type {HTMLElement} */ (li.querySelector('.actions'));
  const showActions = a.state !== 'cleared' && (document.body.dataset.mode !== 'wall' || state.selectedAlert === a.id);
  if (showActions && mayAct()) {
    actions.hidden = false;
    if (ui.form?.id === a.id) actions.append(form(a, ui.form.act));
    else {
      if (UNACKED.has(a.state)) actions.append(button('ack', a.id, t('ack')));
      if (a.shelved) actions.append(button('unshelve', a.id, t('unshelve')));
      else actions.append(button('shelve', a.id, t('shelve')));
      actions.append(button('clear', a.id, t('clear')));
    }
    actions.querySelectorAll('button').forEach((b) => { b.disabled = !canAct(); });
  }
  return li;
}

/** @param {string} act @param {number} id @param {string} label */
function button(act, id, label) {
  const b = document.createElement('button');
  b.type = 'button';
  b.dataset.act = act;
  b.dataset.id = String(id);
  b.textContent = label;
  return b;
}

/** The note (acknowledge, clear) or reason and expiry (shelve) form. @param {import('./state.js').Alert} a @param {string} act */
function form(a, act) {
  const f = fromTemplate(act === 'shelve' ? 'tpl-shelve-form' : 'tpl-note-form');
  const input = /** @type {HTMLInputElement} */ (f.querySelector('input'));
  input.placeholder = act === 'shelve' ? t('reason') : t('note');
  const sel = f.querySelector('select');
  if (sel) for (const o of sel.options) o.textContent = `${t('shelve_for')} ${duration(Number(o.value))}`;
  const ok = button('confirm', a.id, t('confirm'));
  ok.dataset.kind = act;
  f.append(ok, button('cancel', a.id, t('cancel')));
  return f;
}

/** @param {number} id */
function select(id) {
  const a = state.alerts.get(id) || state.closed.find((c) => c.id === id);
  if (!a) return;
  state.selectedAlert = id;
  dirty.alerts = true;
  onSelect(a);
}
/** Select from outside (a map marker): show its tab and scroll to it. @param {number} id */
export function selectFromMap(id) {
  const a = state.alerts.get(id);
  if (a) ui.view = viewOf(a);
  select(id);
  render();
  document.querySelector(`li[data-alert="${id}"]`)?.scrollIntoView({ block: 'nearest' });
}

/** @param {MouseEvent} e */
function onClick(e) {
  const target = /** @type {HTMLElement} */ (e.target);
  const b = /** @type {HTMLButtonElement | null} */ (target.closest('button[data-act]'));
  if (!b) {
    if (target.closest('.form')) return;
    const li = /** @type {HTMLElement | null} */ (target.closest('li[data-alert]'));
    if (li) select(Number(li.dataset.alert));
    return;
  }
  const id = Number(b.dataset.id);
  const act = b.dataset.act || '';
  if (['ack', 'clear', 'shelve'].includes(act)) {
    ui.form = { id, act };
    b.blur();
    render();
  } else if (act === 'cancel') {
    ui.form = null;
    b.blur();
    render();
  } else if (act === 'unshelve') {
    b.disabled = true;
    move(id, 'unshelve', {}, b);
  } else if (act === 'confirm') {
    const li = /** @type {HTMLElement} */ (b.closest('.alert'));
    const text = /** @type {HTMLInputElement | null} */ (li.querySelector('.form input'))?.value?.trim() || null;
    const kind = b.dataset.kind || 'ack';
    /** @type {Record<string, any>} */
    let body = { note: text };
    if (kind === 'shelve') {
      if (!text) { li.querySelector('.form input')?.classList.add('invalid'); return; }
      const secs = Number(/** @type {HTMLSelectElement} */ (li.querySelector('.form select')).value);
      body = { reason: text, for: `${secs}s` };
    }
    b.disabled = true;
    move(id, kind, body, b);
  }
}

/** @param {number} id @param {string} kind @param {any} body @param {HTMLButtonElement} b */
function move(id, kind, body, b) {
  postJson(`/api/v1/alerts/${id}/${kind}`, body)
    .then((res) => { ui.form = null; if (res?.alert) upsert(res.alert, false); })
    .catch((err) => { b.closest('.alert')?.querySelector('.meta')?.append(` ${t('error', { m: err.message })}`); })
    .finally(() => { b.blur(); render(); });
}
