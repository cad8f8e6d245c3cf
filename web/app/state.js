// @ts-check
// The dashboard's shared state: what the server sent, kept in one place the modules read.

/**
 * @typedef {{minutes: number, at: number, speed_kmh: number, usual_kmh: number, los: string | null}} HorizonForecast
 * @typedef {{ratio: number, horizons: HorizonForecast[], degrading: boolean}} SegmentForecast
 *   A segment's short-term forecast (docs/forecasts.md), made from the window it rides on.
 * @typedef {{start: number, end: number, los: string | null, speed_kmh: number | null, flow_vph: number | null, occupancy_pct: number | null, detectors?: number, revision?: number, forecast?: SegmentForecast | null}} SegmentWindow
 * @typedef {{id: string, props: Record<string, any>, coords: [number, number][], parts: [number, number][][], zoom: number,
 *   draw: import('./segcanvas.js').Drawable, speeds: Map<string, {v: number, t: number}>, window: SegmentWindow | null, los: string | null,
 *   styled: boolean, mid: [number, number]}} Segment
 *   coords: the longest part as [lat, lon] points; parts: every part; zoom: the zoom its geometry was simplified for
 *   (Infinity: full detail); draw: its geometry and style on the map's canvas.
 * @typedef {{id: string, kind: string, segment: string | null, lat: number | null, lon: number | null, last: number, online: boolean | null, dot: number | null}} Device
 *   dot: its number among the dots of the segment canvas (null: no position).
 * @typedef {{id: number, rule: string, severity: string, state: string, active?: boolean, subject?: {device?: string, segment?: string},
 *   message?: string, code?: string, params?: Record<string, any>, raised_at: number, returned_at?: number | null, cleared?: {at: number, by: string | null, note?: string | null} | null,
 *   acknowledged?: {by: string, note?: string | null, at: number} | null, shelved?: {by: string, reason: string, at: number, until: number} | null,
 *   suppressed?: {reason: string, by_alert?: number | null} | null, fresh?: boolean}} Alert
 * @typedef {{id: string, version: number, kind: string, title: string, description?: string | null, severity: string, status: string,
 *   agency: string, segments: string[], derived_segments?: string[], point: [number, number] | null, area: any, closes_road: boolean,
 *   planned: {from: string, to: string}, actual: {from: string | null, to: string | null}, notes?: {at: string, by: string, text: string}[],
 *   linked_alerts?: number[], external_ref?: string | null, updated_at?: string}} Operation
 *   A road operation (incident, roadworks, closure, event) as the API and the live socket send it.
 */

export const state = {
  /** @type {{name: string, role: string} | null} */
  me: null,
  /** @type {Map<string, Segment>} */
  segments: new Map(),
  /** @type {Map<string, Device>} */
  devices: new Map(),
  /** @type {Map<number, Alert>} open alerts by id */
  alerts: new Map(),
  /** @type {Alert[]} recently closed alerts, newest first */
  closed: [],
  /** @type {any} the server's last KPI frame */
  kpi: null,
  kpiAt: 0,
  /** @type {[number, number][]} arrival time and count of recent values */
  valueTimes: [],
  /** When live data last arrived (ms), for the stale display. */
  lastFrameAt: 0,
  live: 'connecting',
  /** @type {string | null} selected segment */
  selected: null,
  /** @type {number | null} selected alert */
  selectedAlert: null,
  /** @type {Map<string, Operation>} road operations not ended or cancelled, by id */
  operations: new Map(),
  /** Whether the server has road operations (null: not known yet). @type {boolean | null} */
  operationsAvailable: null,
  /** @type {string | null} selected operation */
  selectedOp: null,
  mode: 'desk',
};

export const role = () => state.me?.role ?? 'none';
/** Whether the role may handle alerts at all (the buttons are shown). */
export const mayAct = () => ['none', 'admin', 'operator'].includes(role());
/** Whether it can now: the live connection is up (the buttons are enabled). */
export const canAct = () => mayAct() && state.live === 'open';
export const canExport = () => ['none', 'admin', 'planner'].includes(role());

/** Work to do at the next animation frame, batched. */
export const dirty = { segments: /** @type {Set<string>} */ (new Set()), alerts: false, devices: false, operations: false, forecasts: false };
