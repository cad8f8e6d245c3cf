// @ts-check
// Time-series charts (uPlot): nice axis ranges (zero included for counts, flows and
// speeds), a crosshair readout, 24-hour clock and dates in the chosen language, one series
// per detector, and a size that follows the container.
import { t, num, hhmm, dayMonth, dateTime, metricInfo, metricLabel, unitOf } from './i18n.js';
import { cssVar, rem } from './util.js';

const SERIES_COLOURS = ['--series-1', '--series-2', '--series-3', '--series-4', '--series-5', '--series-6'];

/** A step that is 1, 2 or 5 times a power of ten. @param {number} span @param {number} ticks */
function niceStep(span, ticks) {
  const raw = span / Math.max(1, ticks);
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}
/**
 * The y range: from zero for quantities that start at zero, never narrower than a
 * meaningful span (no 0.1 km/h zoom), rounded to nice steps.
 * @param {string} metric @param {number | null} min @param {number | null} max
 * @returns {[number, number]}
 */
export function yRange(metric, min, max) {
  const info = metricInfo(metric);
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, info ? Math.min(info.max, 100) : 1];
  const zero = info ? info.zero_based : min >= 0;
  let lo = zero ? Math.min(0, min) : min;
  let hi = max;
  const decimals = info?.decimals ?? 1;
  const minSpan = Math.max(Math.abs(hi) * 0.2, 10 ** -decimals * 10);
  if (hi - lo < minSpan) {
    const mid = (hi + lo) / 2;
    lo = zero ? lo : mid - minSpan / 2;
    hi = zero ? lo + Math.max(minSpan, hi - lo) : mid + minSpan / 2;
  }
  const step = niceStep(hi - lo, 5);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil((hi + step * 0.05) / step) * step;
  if (zero && lo < 0 && min >= 0) lo = 0;
  return [lo, hi];
}

/** @param {number} spanS */
function timeTicks(spanS) {
  return (/** @type {any} */ _u, /** @type {number[]} */ splits) => splits.map((s, i) => {
    const ms = s * 1000;
    if (spanS > 3 * 86400) return dayMonth(ms);
    const d = new Date(ms);
    const first = i === 0 || new Date(splits[i - 1] * 1000).getDate() !== d.getDate();
    return first && spanS > 6 * 3600 ? `${hhmm(ms)}\n${dayMonth(ms)}` : hhmm(ms);
  });
}

/** The charts on screen by name (for the tests' probe, window.sccr.charts). @type {Record<string, any>} */
export const charts = {};

/**
 * @typedef {{label: string, xs: number[], ys: (number | null)[], colour?: string, dash?: number[]}} Series
 *   colour: a CSS variable's name (default: the series palette in order); dash: a dashed line
 * @typedef {{from: number, to: number, label: string, fill: string}} Band a shaded time span with its name at the top
 * @typedef {{xs: number[], lo: (number | null)[], hi: (number | null)[], label: string}} Envelope the usual range (learned baseline) drawn as a band behind the lines
 * @param {HTMLElement} el container (the chart fills its width; height from the container or aspect)
 * @param {{name: string, metric: string, from: number, to: number, series: Series[], readout: HTMLElement | null, aspect?: number, bands?: Band[], envelope?: Envelope | null}} spec
 */
export function drawChart(el, spec) {
  el.replaceChildren();
  const fs = rem();
  const font = `${Math.round(fs * 0.85)}px "DejaVu Sans", sans-serif`;
  // One time axis for all series: the union of their times.
  const times = [...new Set(spec.series.flatMap((s) => s.xs))].sort((a, b) => a - b);
  const index = new Map(times.map((x, i) => [x, i]));
  const data = [times.map((x) => x / 1000)];
  let min = Infinity;
  let max = -Infinity;
  for (const s of spec.series) {
    const ys = new Array(times.length).fill(null);
    s.xs.forEach((x, i) => {
      const v = s.ys[i];
      ys[/** @type {number} */ (index.get(x))] = v;
      if (v !== null && Number.isFinite(v)) { min = Math.min(min, v); max = Math.max(max, v); }
    });
    data.push(ys);
  }
  const env = spec.envelope && spec.envelope.xs.length ? spec.envelope : null;
  for (const v of env ? [...env.lo, ...env.hi] : []) {
    if (v !== null && Number.isFinite(v)) { min = Math.min(min, v); max = Math.max(max, v); }
  }
  const range = yRange(spec.metric, Number.isFinite(min) ? min : null, Number.isFinite(max) ? max : null);
  const decimals = metricInfo(spec.metric)?.decimals ?? 1;
  const axisStroke = cssVar('--text');
  const grid = { stroke: cssVar('--grid'), width: 1 };
  const size = () => {
    const width = Math.max(200, el.clientWidth);
    const height = spec.aspect ? Math.round(width * spec.aspect) : Math.max(160, el.clientHeight);
    return { width, height };
  };
  const spanS = (spec.to - spec.from) / 1000;
  const opts = {
    ...size(),
    scales: { x: { time: true, range: () => [spec.from / 1000, spec.to / 1000] }, y: { range: () => range } },
    axes: [
      { stroke: axisStroke, grid, ticks: grid, font, size: fs * (spanS > 6 * 3600 && spanS <= 3 * 86400 ? 3.4 : 2.2), space: fs * 6, values: timeTicks(spanS) },
      { stroke: axisStroke, grid, ticks: grid, font, size: fs * 4, space: fs * 2.5, values: (/** @type {any} */ _u, /** @type {number[]} */ v) => v.map((x) => num(x, niceDecimals(range))) },
    ],
    series: [{}, ...spec.series.map((s, i) => ({ label: s.label, stroke: cssVar(s.colour || SERIES_COLOURS[i % SERIES_COLOURS.length]), width: Math.max(1.5, fs * 0.14), dash: s.dash ? s.dash.map((d) => d * fs * 0.1) : undefined, spanGaps: false, points: { show: false } }))],
    legend: { show: false },
    cursor: { drag: { x: true, y: false }, points: { size: fs * 0.7 } },
    hooks: {
      // Shaded spans under the lines, named at the top of the plot.
      drawClear: [(/** @type {any} */ u) => { drawBands(u, spec.bands || [], fs, false); if (env) drawEnvelope(u, env); }],
      draw: [(/** @type {any} */ u) => drawBands(u, spec.bands || [], fs, true)],
      setCursor: [(/** @type {any} */ u) => {
        if (!spec.readout) return;
        const i = u.cursor.idx;
        if (i === null || i === undefined) { spec.readout.textContent = ''; return; }
        const parts = [dateTime(u.data[0][i] * 1000)];
        const usual = env ? envelopeAt(env, u.data[0][i] * 1000) : null;
        spec.series.forEach((s, k) => {
          const v = u.data[k + 1][i];
          if (v !== null && v !== undefined) parts.push(`${spec.series.length > 1 ? `${s.label}: ` : ''}${num(v, decimals)} ${unitOf(spec.metric)}`);
        });
        if (usual) parts.push(`${env?.label}: ${num(usual[0], decimals)}–${num(usual[1], decimals)}`);
        spec.readout.textContent = parts.join(' · ');
      }],
    },
  };
  const chart = new uPlot(opts, data, el);
  chart.envelope = env;
  charts[spec.name] = chart;
  const ro = new ResizeObserver(() => {
    const s = size();
    if (s.width !== chart.width || s.height !== chart.height) chart.setSize(s);
  });
  ro.observe(el);
  return { destroy: () => { ro.disconnect(); chart.destroy(); if (charts[spec.name] === chart) delete charts[spec.name]; }, chart };
}

/**
 * @param {any} u the uPlot chart @param {Band[]} bands @param {number} fs 1rem in pixels
 * @param {boolean} labels the names (drawn over the lines) or the fills (under them)
 */
function drawBands(u, bands, fs, labels) {
  if (!bands.length) return;
  const ctx = u.ctx;
  const { top, height, left, width } = u.bbox;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  const px = Math.round(fs * 0.9 * (window.devicePixelRatio || 1));
  ctx.font = `700 ${px}px "DejaVu Sans", sans-serif`;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'center';
  for (const b of bands) {
    const x0 = Math.max(left, u.valToPos(b.from / 1000, 'x', true));
    const x1 = Math.min(left + width, u.valToPos(b.to / 1000, 'x', true));
    if (x1 <= x0) continue;
    if (labels) {
      ctx.fillStyle = cssVar('--text');
      ctx.fillText(b.label, (x0 + x1) / 2, top + px * 0.3, x1 - x0 - 4);
    } else {
      ctx.fillStyle = b.fill;
      ctx.fillRect(x0, top, x1 - x0, height);
      ctx.fillStyle = cssVar('--line');
      ctx.fillRect(x0, top, Math.max(1, px * 0.08), height);
    }
  }
  ctx.restore();
}

/** How many robust spreads the band spans on each side of the baseline's centre. */
export const ENVELOPE_SPREADS = 2;

/**
 * A baselines answer (GET /api/v1/baselines) as the band centre ± ENVELOPE_SPREADS × spread.
 * @param {any} b @param {string} label @returns {Envelope}
 */
export function envelopeOf(b, label) {
  const xs = [];
  const lo = [];
  const hi = [];
  for (const p of b.points || []) {
    xs.push(p.t);
    const ok = p.centre !== null && p.spread !== null;
    lo.push(ok ? Math.max(0, p.centre - ENVELOPE_SPREADS * p.spread) : null);
    hi.push(ok ? p.centre + ENVELOPE_SPREADS * p.spread : null);
  }
  return { xs, lo, hi, label };
}

/** The band's [lo, hi] at time ms (its 15-minute bucket), or null. @param {Envelope} env @param {number} ms */
function envelopeAt(env, ms) {
  let k = -1;
  for (let i = 0; i < env.xs.length && env.xs[i] <= ms; i += 1) k = i;
  if (k < 0 || ms - env.xs[k] >= 15 * 60_000) return null;
  const [lo, hi] = [env.lo[k], env.hi[k]];
  return lo === null || hi === null ? null : [lo, hi];
}

/** The band behind the lines: one filled run per stretch of learned slots. @param {any} u @param {Envelope} env */
function drawEnvelope(u, env) {
  const ctx = u.ctx;
  const { top, height, left, width } = u.bbox;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  ctx.fillStyle = cssVar('--envelope') || 'rgba(160, 160, 160, 0.22)';
  const x = (/** @type {number} */ t) => u.valToPos(t / 1000, 'x', true);
  const y = (/** @type {number} */ v) => u.valToPos(v, 'y', true);
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      ctx.beginPath();
      run.forEach((i, n) => (n ? ctx.lineTo(x(env.xs[i]), y(/** @type {number} */ (env.hi[i]))) : ctx.moveTo(x(env.xs[i]), y(/** @type {number} */ (env.hi[i])))));
      for (let n = run.length - 1; n >= 0; n -= 1) ctx.lineTo(x(env.xs[run[n]]), y(/** @type {number} */ (env.lo[run[n]])));
      ctx.closePath();
      ctx.fill();
    }
    run = [];
  };
  env.xs.forEach((_, i) => { if (env.lo[i] === null || env.hi[i] === null) flush(); else run.push(i); });
  flush();
  ctx.restore();
}

/** @param {[number, number]} range */
function niceDecimals([lo, hi]) {
  const step = niceStep(hi - lo, 5);
  return step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
}

/** The chart's title: the metric's label and unit from the catalogue. @param {string} metric */
export const chartTitle = (metric) => t('chart_unit', { label: metricLabel(metric), unit: unitOf(metric) || '–' });

/** A history answer as one series. @param {any} h @param {string} label @returns {Series} */
export function seriesOf(h, label) {
  const xs = [];
  const ys = [];
  for (const p of h.points || []) { xs.push(p.t); ys.push(p.v ?? null); }
  return { label, xs, ys };
}

/**
 * A small inline SVG trend line (the worst segments' last hour on a 4K wall).
 * @param {number[]} values @param {number} lo @param {number} hi
 */
export function sparkline(values, lo, hi) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 100 30');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.classList.add('spark');
  if (values.length < 2) return svg;
  const pts = values.map((v, i) => `${(i / (values.length - 1)) * 100},${30 - ((v - lo) / Math.max(1e-9, hi - lo)) * 28 - 1}`);
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', pts.join(' '));
  svg.append(line);
  return svg;
}
