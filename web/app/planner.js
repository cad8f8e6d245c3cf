// @ts-check
// The planner's screen: any metric of the city, a segment or a device over a range, as a
// chart and as CSV or Parquet downloads.
import { api, history } from './api.js';
import { t, metricIds, metricLabel, unitOf, metricInfo } from './i18n.js';
import { drawChart, seriesOf, chartTitle } from './charts.js';
import { state } from './state.js';
import { $ } from './util.js';

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
  $('p-subject-wrap').hidden = kind === 'city';
  const sel = $('p-subject');
  const current = sel.value;
  /** @type {[string, string][]} */
  let items = [];
  if (kind === 'segment') items = [...state.segments.values()].map((s) => /** @type {[string, string]} */ ([s.id, s.props.name ? `${s.props.name} (${s.id})` : s.id])).sort((a, b) => a[1].localeCompare(b[1]));
  if (kind === 'device') items = [...state.devices.keys()].sort().map((d) => [d, d]);
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

let asked = 0;
export async function show() {
  const mine = (asked += 1);
  const el = $('planner-chart');
  /** @type {Record<string, any>} */
  const q = { ...query(), max_points: Math.max(100, Math.min(5000, Math.round(el.clientWidth / 2))) };
  $('planner-title').textContent = chartTitle(q.metric);
  try {
    const h = await history(q);
    if (mine !== asked) return; // a newer question was asked meanwhile
    chart?.destroy();
    chart = drawChart(el, { name: 'planner', metric: q.metric, from: q.from, to: q.to, series: [seriesOf(h, metricLabel(q.metric))], readout: $('planner-readout') });
    const step = h.step_ms ? `${h.step_ms / 60_000} min` : t('raw');
    $('planner-info').textContent = h.points.length ? t('planner_info', { n: h.points.length, res: h.resolution, step }) : t('planner_none');
  } catch (e) {
    if (mine === asked) $('planner-info').textContent = t('error', { m: /** @type {Error} */ (e).message });
  }
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
