// @ts-check
// Road operations' data as the API gives it, turned into what the screens draw. No DOM and
// no imports: the unit checks (tests/browser/unit/) run it under Node against a stub server.

/** A time from the API (RFC 3339 or milliseconds) in milliseconds, or null. @param {any} v */
export function toMs(v) {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string') {
    const ms = Date.parse(v);
    return Number.isFinite(ms) ? ms : null;
  }
  return null;
}

/**
 * A list of points as times and values: [{t, v}], [{t, avg}], [{time, value}] or [[t, v]].
 * @param {any[]} points
 * @returns {{xs: number[], ys: (number | null)[]}}
 */
export function pointsOf(points) {
  const xs = [];
  const ys = [];
  for (const p of Array.isArray(points) ? points : []) {
    const t = toMs(Array.isArray(p) ? p[0] : p?.t ?? p?.time ?? p?.from);
    const raw = Array.isArray(p) ? p[1] : p?.v ?? p?.avg ?? p?.value ?? null;
    if (t === null) continue;
    xs.push(t);
    ys.push(typeof raw === 'number' && Number.isFinite(raw) ? raw : null);
  }
  return { xs, ys };
}

/**
 * @typedef {{key: string, from: number, to: number, avg: number | null, count: number, xs: number[], ys: (number | null)[]}} Period
 * @typedef {{periods: Period[], baseline: {avg: number | null, xs: number[], ys: (number | null)[]} | null, from: number, to: number}} Impact
 */

/**
 * GET /api/v1/operations/{id}/impact as periods to draw: before, during and after on their
 * own times, and the baseline (a week earlier) moved forward by its offset onto them.
 * @param {any} body
 * @returns {Impact | null} null when the answer has no period with times
 */
export function impactOf(body) {
  /** @type {Period[]} */
  const periods = [];
  for (const key of ['before', 'during', 'after']) {
    const p = body?.[key];
    const from = toMs(p?.from);
    const to = toMs(p?.to);
    if (from === null || to === null) continue;
    const { xs, ys } = pointsOf(p.points);
    periods.push({ key, from, to, avg: typeof p.avg === 'number' ? p.avg : null, count: Number(p.count) || 0, xs, ys });
  }
  if (!periods.length) return null;
  const from = Math.min(...periods.map((p) => p.from));
  const to = Math.max(...periods.map((p) => p.to));
  let baseline = null;
  const b = body?.baseline;
  if (b) {
    // One span ({from, to, points, avg}) or the three periods a week earlier.
    const spans = ['before', 'during', 'after'].map((k) => b[k]).filter(Boolean);
    const parts = spans.length ? spans : [b];
    const xs = [];
    const ys = [];
    for (const s of parts) {
      const pts = pointsOf(s.points);
      xs.push(...pts.xs);
      ys.push(...pts.ys);
    }
    const bFrom = Math.min(...parts.map((s) => toMs(s.from) ?? Infinity));
    const week = 7 * 86_400_000;
    const shift = Number.isFinite(bFrom) ? Math.round((from - bFrom) / 3_600_000) * 3_600_000 || week : week;
    const avgs = parts.map((s) => s.avg).filter((v) => typeof v === 'number');
    const avg = typeof b.avg === 'number' ? b.avg : avgs.length ? avgs.reduce((x, y) => x + y, 0) / avgs.length : null;
    baseline = { avg, xs: xs.map((x) => x + shift), ys };
  }
  return { periods, baseline, from, to };
}

/** The change from before, as a ratio (−0.4 is 40 % lower), or null. @param {number | null} v @param {number | null} before */
export const change = (v, before) => (v === null || before === null || before === 0 ? null : v / before - 1);

/**
 * Every operation of a listing, following `next_cursor` (at most `maxPages` pages).
 * @param {(path: string) => Promise<any>} getJson
 * @param {string} query without cursor, e.g. "status=ended&limit=200"
 */
export async function allOperations(getJson, query, maxPages = 20) {
  const out = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const sep = query ? '&' : '';
    const body = await getJson(`/api/v1/operations?${query}${cursor ? `${sep}cursor=${encodeURIComponent(cursor)}` : ''}`);
    out.push(...(body?.operations || []));
    cursor = body?.next_cursor;
    if (!cursor) break;
  }
  return out;
}
