// @ts-check
// The segment panel: its grade, live figures and the last 24 hours of speed, one line per
// detector (or the segment's mean, named as such, when it has many).
import { baselines, history } from './api.js';
import { t, num, percent, unitOf } from './i18n.js';
import { COLOUR } from './los.js';
import { currentSpeed, ratioOf } from './map.js';
import { drawChart, envelopeOf, seriesOf } from './charts.js';
import { state } from './state.js';
import { $, fromTemplate, slot } from './util.js';

const MAX_DETECTOR_SERIES = 6;
/** @type {{destroy: () => void} | null} */
let chart = null;

/** @param {string} id */
export function openDetail(id) {
  const seg = state.segments.get(id);
  if (!seg) return;
  state.selected = id;
  $('detail').hidden = false;
  $('detail').dataset.segment = id;
  $('detail-name').textContent = seg.props.name || id;
  renderFigures();
  loadChart(id);
}
export function closeDetail() {
  state.selected = null;
  $('detail').hidden = true;
  chart?.destroy();
  chart = null;
}

export function renderFigures() {
  const seg = state.selected ? state.segments.get(state.selected) : null;
  if (!seg) return;
  const now = Date.now();
  const w = seg.window;
  const figs = [
    [t('los'), seg.los ?? '–', '', true],
    [`${t('speed')} (${t('live_estimate')})`, num(currentSpeed(seg, now)), 'km/h', false],
    [t('relative'), percent(ratioOf(seg, now)), '', false],
    [t('flow'), num(w?.flow_vph ?? null), 'veh/h', false],
    [t('occupancy'), num(w?.occupancy_pct ?? null, 1), '%', false],
    // The forecast made from the newest window (docs/forecasts.md): speed and grade ahead.
    ...(w?.forecast?.horizons ?? []).map((h) => [`${t('forecast')} ${t('in_min', { m: h.minutes })}`, num(h.speed_kmh), `km/h · ${h.los ?? '–'}`, false]),
  ].map(([label, value, unit, badge]) => {
    const f = fromTemplate('tpl-fig');
    slot(f, 'label', String(label));
    const v = slot(f, 'value', String(value));
    slot(f, 'unit', String(unit));
    if (badge && v) {
      v.classList.add('los-badge');
      v.style.background = COLOUR[seg.los ?? 'none'] || COLOUR.none;
    }
    return f;
  });
  $('detail-figures').replaceChildren(...figs);
}

/** @param {string} id */
async function loadChart(id) {
  const el = $('detail-chart');
  $('detail-chart-title').textContent = `${t('chart_24h')} (${unitOf('speed_kmh') || 'km/h'})`;
  const now = Date.now();
  const from = now - 24 * 3600_000;
  const detectors = [...state.devices.values()].filter((d) => d.segment === id && /loop|radar|traffic|speed/.test(d.kind || d.id)).map((d) => d.id).sort();
  const points = Math.max(100, Math.round(el.clientWidth / 3));
  try {
    let series;
    if (detectors.length > 0 && detectors.length <= MAX_DETECTOR_SERIES) {
      const answers = await Promise.all(detectors.map((d) => history({ device: d, metric: 'speed_kmh', from, to: now, step: 'auto', max_points: points })));
      series = answers.map((h, i) => seriesOf(h, detectors[i]));
    } else {
      const h = await history({ segment: id, metric: 'speed_kmh', from, to: now, step: 'auto', max_points: points });
      series = [seriesOf(h, t('mean_of', { n: detectors.length || '?' }))];
    }
    // The segment's usual speed at this time of the week, when learned (docs/baselines.md).
    const usual = await baselines({ segment: id, metric: 'speed_kmh', from, to: now }).catch(() => null);
    if (state.selected !== id) return;
    chart?.destroy();
    const envelope = usual && usual.learned_slots > 0 ? envelopeOf(usual, t('usual_range')) : null;
    chart = drawChart(el, { name: 'detail', metric: 'speed_kmh', from, to: now, series, readout: $('detail-readout'), aspect: 0.45, envelope });
    const legend = $('detail-legend');
    legend.replaceChildren(...series.map((s, i) => {
      const item = fromTemplate('tpl-legend-item');
      item.style.setProperty('--c', `var(--series-${(i % 6) + 1})`);
      slot(item, 'label', s.label);
      return item;
    }));
  } catch (e) {
    if (state.selected === id) el.textContent = t('error', { m: /** @type {Error} */ (e).message });
  }
}
