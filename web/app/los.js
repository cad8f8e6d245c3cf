// @ts-check
// Level of Service: the grade of a segment from its speed relative to free flow. The bounds
// come from the server's catalogue; the colours and line widths from style.css (a palette
// safe for colour-blind viewers, with wider lines for E and F as a second channel).
import { cssVar } from './util.js';

export const GRADES = ['A', 'B', 'C', 'D', 'E', 'F'];
/** @type {[number, string][]} ratio above which each grade holds, best first */
let bounds = [[0.85, 'A'], [0.67, 'B'], [0.5, 'C'], [0.4, 'D'], [0.3, 'E']];
export const live = { speedFreshMs: 90_000, deviceOnlineMs: 120_000 };
/** @type {Record<string, string>} */
export const COLOUR = {};

/** @param {any} catalogue */
export function setCatalogue(catalogue) {
  const levels = catalogue?.los?.levels;
  if (Array.isArray(levels) && levels.length) {
    bounds = levels.filter((l) => typeof l.above_ratio === 'number').map((l) => [l.above_ratio, l.los]);
  }
  if (catalogue?.live?.speed_fresh_s) live.speedFreshMs = catalogue.live.speed_fresh_s * 1000;
  if (catalogue?.live?.device_online_s) live.deviceOnlineMs = catalogue.live.device_online_s * 1000;
}
export function readColours() {
  for (const g of GRADES) COLOUR[g] = cssVar(`--los-${g}`);
  COLOUR.none = cssVar('--los-none');
}
/** @param {number} ratio speed / free-flow speed */
export function losOfRatio(ratio) {
  if (!Number.isFinite(ratio) || ratio < 0) return null;
  for (const [bound, g] of bounds) if (ratio > bound) return g;
  return 'F';
}
/** Line width factor: E and F are drawn wider, so they stand out without colour. @param {string | null} g */
export const widthFactor = (g) => (g === 'F' ? 1.9 : g === 'E' ? 1.45 : 1);

/**
 * The "worst segments" rule shared with the server (docs/api.md): relative speed
 * ascending, then worse grade, then segment id.
 * @param {{ratio: number | null, los: string | null, segment: string}} a
 * @param {{ratio: number | null, los: string | null, segment: string}} b
 */
export function worstFirst(a, b) {
  const ra = a.ratio ?? Infinity;
  const rb = b.ratio ?? Infinity;
  if (ra !== rb) return ra - rb;
  const ga = a.los ? GRADES.indexOf(a.los) : -1;
  const gb = b.los ? GRADES.indexOf(b.los) : -1;
  if (ga !== gb) return gb - ga;
  return a.segment < b.segment ? -1 : a.segment > b.segment ? 1 : 0;
}
