// @ts-check
// The planner's screen: any metric of the city, a segment or a device over a range, as a
// chart and as CSV or Parquet downloads; and a road operation's segments before, during
// and after it, against the same hours a week earlier, as a chart for a report (PNG).
import { api, apiJson, baselines, history } from './api.js';
import { t, num, percent, metricIds, metricLabel, unitOf, metricInfo, dateTime } from './i18n.js';
import { drawChart, envelopeOf, seriesOf, chartTitle } from './charts.js';
import { impactOf, change, allOperations } from './opsdata.js';
import { state } from './state.js';
import { $, cssVar, fromTemplate, slot } from './util.js';

/** Operations the planner can compare (ended ones too), by id. @type {Map<string, import('./state.js').Operation>} */
const comparable = new Map();

/** @type {{destroy: () => void} | null} */
let chart = null;
export const shown = () => chart !== null;

export function initPlanner() {
  $('p-kind').addEventListener('change', fillSubjects);
  $('p-range').addEventListener('change', () => {
    document.querySelectorAll('.planner-form .custom').forEach((el) => { /** @type {HTMLElement} */ (el).hidden = $('p-range').value !== 'custom'; });
  });
  $('planner-form').addEventListener('submit', (/** @type {Event} */ e) => { e.preventDefault(); show(); });
  $('dl-csv').addEventListener('click', () => download('csv'));
  $('dl-parquet').addEventListener('click', () => download('parquet'));
  $('dl-png').addEventListener('click', downloadPng);
}

/** Metric names in the chosen language, from the server's catalogue. */
export function fillMetrics() {
  const sel = $('p-metric');
  const current = sel.value || 'speed_kmh';
  const ids = metricIds().filter((m) => metricInfo(m)?.kind !== 'code');
  sel.replaceChildren(...ids.map((m) => new Option(unitOf(m) ? `${metricLabel(m)} (${unitOf(m)})` : metricLabel(m), m)));
  sel.value = ids.includes(current) ? current : ids[0] ?? '';
}

export function fillSubjects() {
  const kind = $('p-kind').value;
  /** @type {HTMLOptionElement} */ ($('p-kind').querySelector('option[value="operation"]')).hidden = state.operationsAvailable !== true;
  $('p-subject-wrap').hidden = kind === 'city';
  $('p-unflagged-wrap').hidden = kind !== 'device';
  $('p-range-wrap').hidden = kind === 'operation';
  document.querySelectorAll('.planner-form .custom').forEach((el) => { /** @type {HTMLElement} */ (el).hidden = kind === 'operation' || $('p-range').value !== 'custom'; });
  $('downloads').classList.toggle('off', kind === 'operation');
  $('dl-png').hidden = kind !== 'operation';
  $('impact-figures').hidden = kind !== 'operation';
  const sel = $('p-subject');
  const current = sel.value;
  /** @type {[string, string][]} */
  let items = [];
  if (kind === 'segment') items = [...state.segments.values()].map((s) => /** @type {[string, string]} */ ([s.id, s.props.name ? `${s.props.name} (${s.id})` : s.id])).sort((a, b) => a[1].localeCompare(b[1]));
  if (kind === 'device') items = [...state.devices.keys()].sort().map((d) => [d, d]);
  if (kind === 'operation') {
    for (const op of state.operations.values()) comparable.set(op.id, op);
    items = [...comparable.values()].sort((a, b) => String(b.planned?.from).localeCompare(String(a.planned?.from)))
      .map((op) => [op.id, `${op.title} · ${t(`op_kind_${op.kind}`)} · ${t(`op_status_${op.status}`)}`]);
    if (!fetchedComparable) loadComparable();
  }
  sel.replaceChildren(...items.map(([v, l]) => new Option(l, v)));
  if (items.some(([v]) => v === current)) sel.value = current;
}

function query() {
  const kind = $('p-kind').value;
  /** @type {Record<string, any>} */
  const q = { metric: $('p-metric').value, step: 'auto' };
  // Counts add up over a bucket (vehicles per bucket); levels average.
  if (metricInfo(q.metric)?.aggregate === 'sum') q.agg = 'sum';
  if (kind !== 'city') q[kind] = $('p-subject').value;
  // Readings inside a detector-health flag left out (a device's history only).
  if (kind === 'device' && /** @type {HTMLInputElement} */ ($('p-unflagged')).checked) q.exclude_flagged = 'true';
  const r = $('p-range').value;
  const now = Date.now();
  if (r === 'custom') {
    q.from = new Date($('p-from').value).getTime() || now - 24 * 3600_000;
    q.to = new Date($('p-to').value).getTime() || now;
  } else {
    const n = parseInt(r, 10);
    q.from = now - n * (r.endsWith('d') ? 86_400_000 : 3_600_000);
    q.to = now;
  }
  return q;
}

let fetchedComparable = false;
/** Ended operations as well as the live ones (the live list holds only those not over). */
async function loadComparable() {
  fetchedComparable = true;
  try {
    const [ended, live] = await Promise.all([allOperations(apiJson, 'status=ended&limit=200', 5), allOperations(apiJson, 'limit=200', 5)]);
    for (const op of [...live, ...ended]) comparable.set(op.id, op);
    if ($('p-kind').value === 'operation') fillSubjects();
  } catch (_) { fetchedComparable = false; }
}

/** The metrics whose usual range (learned baseline) the planner draws, by subject kind. */
const USUAL = { device: ['speed_kmh', 'occupancy_pct', 'no2_ugm3', 'pm10_ugm3'], segment: ['speed_kmh', 'occupancy_pct'] };

/**
 * The learned baseline of the question's subject and metric over its range, or null (a city,
 * an area, a metric not learned, a range over 31 days, or none learned).
 * @param {Record<string, any>} q
 */
async function usualRange(q) {
  const kind = $('p-kind').value;
  const learned = /** @type {Record<string, string[]>} */ (USUAL)[kind];
  if (!learned || !learned.includes(q.metric) || q.to - q.from > 31 * 86_400_000) return null;
  return baselines({ [kind]: q[kind], metric: q.metric, from: q.from, to: q.to }).catch(() => null);
}

/**
 * A device's data-quality score and the flags holding now, as a badge (other subjects: hidden).
 * @param {Record<string, any>} q
 */
async function showQuality(q) {
  const badge = $('planner-quality');
  if ($('p-kind').value !== 'device' || !q.device) { badge.hidden = true; return; }
  try {
    const r = await apiJson(`/api/v1/devices/${encodeURIComponent(q.device)}/quality`);
    const score = num(r.score, 2);
    const flags = r.active.map((/** @type {string} */ f) => t(`flag_${f}`)).join(', ');
    badge.textContent = flags ? t('quality_flags', { score, flags }) : t('quality_badge', { score });
    badge.classList.toggle('poor', r.score < 0.9 || r.active.length > 0);
    badge.dataset.score = String(r.score);
    badge.hidden = false;
  } catch (_) { badge.hidden = true; }
}

let asked = 0;
export async function show() {
  if ($('p-kind').value === 'operation') { showImpact(); return; }
  const mine = (asked += 1);
  const el = $('planner-chart');
  /** @type {Record<string, any>} */
  const q = { ...query(), max_points: Math.max(100, Math.min(5000, Math.round(el.clientWidth / 2))) };
  $('planner-title').textContent = chartTitle(q.metric);
  try {
    const [h, usual] = await Promise.all([history(q), usualRange(q), showQuality(q)]);
    if (mine !== asked) return; // a newer question was asked meanwhile
    chart?.destroy();
    const envelope = usual && usual.learned_slots > 0 ? envelopeOf(usual, t('usual_range')) : null;
    chart = drawChart(el, { name: 'planner', metric: q.metric, from: q.from, to: q.to, series: [seriesOf(h, metricLabel(q.metric))], readout: $('planner-readout'), envelope });
    const step = h.step_ms ? `${h.step_ms / 60_000} min` : t('raw');
    const excluded = h.excluded ? ` · ${t('planner_excluded', { n: h.excluded.readings })}` : '';
    $('planner-info').textContent = (h.points.length ? t('planner_info', { n: h.points.length, res: h.resolution, step }) : t('planner_none')) + excluded;
  } catch (e) {
    if (mine === asked) $('planner-info').textContent = t('error', { m: /** @type {Error} */ (e).message });
  }
}

/** The last comparison drawn, for its PNG. @type {{title: string, sub: string, figures: string} | null} */
let lastImpact = null;

/** An operation's segments before, during and after it (GET /api/v1/operations/{id}/impact). */
async function showImpact() {
  const mine = (asked += 1);
  const el = $('planner-chart');
  const id = $('p-subject').value;
  const metric = $('p-metric').value || 'speed_kmh';
  const op = comparable.get(id);
  lastImpact = null;
  if (!id || !op) { $('planner-info').textContent = t('impact_none'); return; }
  const title = t('impact_title', { metric: metricLabel(metric), title: op.title });
  $('planner-title').textContent = `${title} (${unitOf(metric) || '–'})`;
  try {
    const body = await apiJson(`/api/v1/operations/${encodeURIComponent(id)}/impact?metric=${encodeURIComponent(metric)}`);
    if (mine !== asked) return;
    const imp = impactOf(body);
    if (!imp) throw new Error(t('planner_none'));
    const label = (/** @type {string} */ k) => t(`impact_${k}`);
    const fills = { before: 'rgba(108,182,255,0.10)', during: 'rgba(245,179,66,0.22)', after: 'rgba(126,231,135,0.10)' };
    const main = { label: metricLabel(metric), xs: imp.periods.flatMap((p) => p.xs), ys: imp.periods.flatMap((p) => p.ys), colour: '--series-1' };
    const series = [main];
    if (imp.baseline && imp.baseline.xs.length) series.push({ label: label('baseline'), xs: imp.baseline.xs, ys: imp.baseline.ys, colour: '--muted', dash: [6, 4] });
    chart?.destroy();
    chart = drawChart(el, { name: 'planner', metric, from: imp.from, to: imp.to, series, readout: $('planner-readout'),
      bands: imp.periods.map((p) => ({ from: p.from, to: p.to, label: label(p.key), fill: fills[/** @type {'before'} */ (p.key)] })) });
    const during = imp.periods.find((p) => p.key === 'during');
    const to = op.status === 'active' ? t('impact_ongoing') : dateTime(during?.to ?? imp.to);
    const sub = t('impact_window', { kind: t(`op_kind_${op.kind}`), from: dateTime(during?.from ?? imp.from), to, n: (op.segments?.length ? op.segments : op.derived_segments || []).length });
    $('planner-info').textContent = sub;
    const before = imp.periods.find((p) => p.key === 'before')?.avg ?? null;
    const decimals = metricInfo(metric)?.decimals ?? 1;
    const figs = [...imp.periods.map((p) => ({ key: p.key, avg: p.avg })), ...(imp.baseline ? [{ key: 'baseline', avg: imp.baseline.avg }] : [])];
    $('impact-figures').replaceChildren(...figs.map((f) => {
      const fig = fromTemplate('tpl-fig');
      fig.classList.add(f.key);
      fig.dataset.period = f.key;
      slot(fig, 'label', label(f.key));
      slot(fig, 'value', num(f.avg, decimals));
      slot(fig, 'unit', unitOf(metric));
      const c = f.key === 'before' ? null : change(f.avg, before);
      if (c !== null) {
        const chg = document.createElement('span');
        chg.className = 'chg';
        chg.textContent = t('impact_change', { pct: `${c > 0 ? '+' : c < 0 ? '−' : ''}${percent(Math.abs(c))}` });
        fig.querySelector('.v')?.append(chg);
      }
      return fig;
    }));
    // What the two lines are: the metric (solid), a week earlier (dashed).
    const legend = document.createElement('div');
    legend.className = 'chart-legend impact-legend';
    for (const [name, colour, dashed] of [[metricLabel(metric), 'var(--series-1)', false], [label('baseline'), 'var(--muted)', true]]) {
      if (dashed && !imp.baseline) continue;
      const item = fromTemplate('tpl-legend-item');
      item.style.setProperty('--c', String(colour));
      if (dashed) item.classList.add('dashed');
      slot(item, 'label', String(name));
      legend.append(item);
    }
    $('impact-figures').append(legend);
    lastImpact = {
      title: $('planner-title').textContent, sub,
      figures: `━ ${metricLabel(metric)}${imp.baseline ? `   ╌ ${label('baseline')}` : ''}      ${figs.map((f) => `${label(f.key)}: ${num(f.avg, decimals)} ${unitOf(metric)}`).join('   ·   ')}`,
    };
  } catch (e) {
    if (mine !== asked) return;
    const status = /** @type {any} */ (e).status;
    // The operation was listed, so a 404 is a server without comparisons.
    $('planner-info').textContent = status === 404 ? t('impact_missing') : t('error', { m: /** @type {Error} */ (e).message });
  }
}

/** The comparison as a PNG a planner puts in a report: title, window, chart, averages. */
function downloadPng() {
  const u = /** @type {any} */ (chart)?.chart;
  if (!u || !lastImpact) return;
  const src = u.ctx.canvas;
  const fs = Math.round(16 * (window.devicePixelRatio || 1));
  const pad = fs;
  const head = fs * 3.6;
  const foot = fs * 2.2;
  const out = document.createElement('canvas');
  out.width = src.width + pad * 2;
  out.height = src.height + head + foot;
  const ctx = /** @type {CanvasRenderingContext2D} */ (out.getContext('2d'));
  ctx.fillStyle = cssVar('--bg') || '#000';
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.fillStyle = cssVar('--text') || '#fff';
  ctx.textBaseline = 'top';
  ctx.font = `700 ${Math.round(fs * 1.25)}px "DejaVu Sans", sans-serif`;
  ctx.fillText(lastImpact.title, pad, pad * 0.6);
  ctx.font = `${fs}px "DejaVu Sans", sans-serif`;
  ctx.fillText(lastImpact.sub, pad, pad * 0.6 + fs * 1.6);
  ctx.drawImage(src, pad, head);
  ctx.fillText(lastImpact.figures, pad, head + src.height + fs * 0.6);
  const a = document.createElement('a');
  a.href = out.toDataURL('image/png');
  a.download = `sccr-impact-${$('p-subject').value}-${$('p-metric').value}.png`;
  document.body.append(a);
  a.click();
  a.remove();
}

/** @param {string} format */
async function download(format) {
  const q = new URLSearchParams({ ...query(), format });
  try {
    const res = await api(`/api/v1/history?${q}`);
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new Error(body?.error?.message || `${res.status}`);
    }
    const blob = await res.blob();
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    const day = (/** @type {string | null} */ ms) => new Date(Number(ms)).toISOString().slice(0, 10);
    a.download = `sccr-${q.get('segment') || q.get('device') || 'city'}-${q.get('metric')}-${day(q.get('from'))}_${day(q.get('to'))}.${format}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (e) {
    $('planner-info').textContent = t('error', { m: /** @type {Error} */ (e).message });
  }
}
