// @ts-check
// The road segments on one canvas: a city's whole graph (tens of thousands of segments)
// drawn in a few batched strokes per frame instead of one SVG element each. Geometry is
// kept in normalised Web Mercator (0..1), so panning and zooming never re-project it;
// the pointer is hit-tested here (nearest segment within a finger's reach), so the map
// still answers clicks and hovers on a line.
//
// The drawing itself (app/segdraw.js) runs in a worker on OffscreenCanvases where the
// browser has them, so rasterising a city at 4K never holds the page's main thread; this
// layer keeps the geometry for hit-testing, tells the drawing what changed, and places the
// canvas it shows. Two canvases: a whole drawing is made in the hidden one and shown when
// done, at the place it was drawn for, so the map never shows a half-made or misplaced
// drawing; a segment whose grade changes is painted over on the canvas shown.
//
// Layers, bottom to top: road operations' casing (black and white barrier stripes, a
// channel no Level-of-Service colour uses), the dark outline, the LOS colour at its
// width (E and F wider), the device dots. The white edge of the segment under the
// pointer is a line of its own under the canvas (map.js).

/**
 * @typedef {{id: string, idx?: number, u: Float64Array[], box: [number, number, number, number], los: string | null, op: {closes: boolean} | null}} Drawable
 *   u: each part's points as x0, y0, x1, y1, … in normalised Web Mercator; box: minX, minY, maxX, maxY;
 *   idx: its number in the drawing (given by the layer).
 * @typedef {{colour: Record<string, string>, width: number, widthFactor: (los: string | null) => number, outline: string, devOn: string, devRing: string, devOff: string, devRadius: number}} LayerStyle
 * @typedef {{origin: any, center: any, zoom: number, pixelOrigin: any, span: any, frame: import('./segdraw.js').Frame}} View
 *   where a drawing is placed (layer point of its top left, and the map's state it was made for).
 */

import { Renderer, OP, CLOSES, GRADE_CODES } from './segdraw.js';

const MAX_LAT = 85.0511287798;

/** Normalised Web Mercator of a WGS84 point (what Leaflet's EPSG:3857 projects, at scale 1). @param {number} lon @param {number} lat */
export function mercator(lon, lat) {
  const la = Math.max(-MAX_LAT, Math.min(MAX_LAT, lat)) * (Math.PI / 180);
  return [(lon + 180) / 360, 0.5 - Math.log(Math.tan(Math.PI / 4 + la / 2)) / (2 * Math.PI)];
}

/**
 * A segment's parts ([[lat, lon], …] each) as drawable geometry.
 * @param {[number, number][][]} parts
 * @returns {{u: Float64Array[], box: [number, number, number, number]}}
 */
export function toDrawable(parts) {
  /** @type {[number, number, number, number]} */
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  const u = parts.map((coords) => {
    const a = new Float64Array(coords.length * 2);
    coords.forEach(([lat, lon], i) => {
      const [x, y] = mercator(lon, lat);
      a[2 * i] = x;
      a[2 * i + 1] = y;
      if (x < box[0]) box[0] = x;
      if (y < box[1]) box[1] = y;
      if (x > box[2]) box[2] = x;
      if (y > box[3]) box[3] = y;
    });
    return a;
  });
  return { u, box };
}

/** Squared distance from p to the piece a–b. */
function dist2(/** @type {number} */ px, /** @type {number} */ py, /** @type {number} */ ax, /** @type {number} */ ay, /** @type {number} */ bx, /** @type {number} */ by) {
  const dx = bx - ax;
  const dy = by - ay;
  const l = dx * dx + dy * dy;
  let t = l > 0 ? ((px - ax) * dx + (py - ay) * dy) / l : 0;
  t = Math.max(0, Math.min(1, t));
  const x = ax + t * dx - px;
  const y = ay + t * dy - py;
  return x * x + y * y;
}

/** A segment's style byte for the drawing (app/segdraw.js). @param {Drawable} d */
function codeOf(d) {
  if (d.op) return OP | (d.op.closes ? CLOSES : 0) | Math.max(0, GRADE_CODES.indexOf(d.los ?? 'none'));
  return Math.max(0, GRADE_CODES.indexOf(d.los ?? 'none'));
}

/**
 * The layer. `style()` gives the colours and the base line width of the moment (they follow
 * the palette in style.css and the type size of wall mode).
 * @param {{pane: string, style: () => LayerStyle}} options
 */
export function segmentLayer(options) {
  const Layer = L.Layer.extend({
    options: { padding: 0.15, pane: options.pane },

    initialize() {
      /** @type {Map<string, Drawable>} */
      this.items = new Map();
      /** @type {Drawable[]} by idx */
      this.list = [];
      /** @type {Set<number>} segments whose geometry the drawing has not had yet */
      this.geomQueue = new Set();
      /** @type {{xy: Float64Array, look: Uint8Array} | null} */
      this.devices = null;
      this.devicesSent = true;
      /** @type {string | null} */
      this.hover = null;
      this.queued = false;
      this.stats = { draws: 0, lastMs: 0, totalMs: 0, drawn: 0, repaints: 0, repaintMs: 0 };
      /** @type {[Drawable, string | null][]} segments whose grade changed since the last painting */
      this.changed = [];
      this.paintQueued = false;
      /** @type {any} the whole drawing that settles widths after repaints */
      this.settle = null;
      this.seq = 0;
      /** @type {{seq: number, target: number, view: View} | null} the whole drawing being made */
      this.inFlight = null;
      this.wanted = false;
      /** @type {View | null} the view to draw for */
      this.want = null;
      /** @type {View | null} the view of the drawing shown */
      this.view = null;
      this.shown = -1;
      this.base = 0;
      /** @type {Map<number, (rgba: number[]) => void>} */
      this.pixelAsks = new Map();
      this.asks = 0;
      /** @type {((m: any, transfer?: Transferable[]) => void) | null} */
      this.send = null;
      /** @type {Worker | null} */
      this.worker = null;
      /** 'worker' or 'page': where the drawing runs */
      this.mode = '';
    },

    onAdd() {
      this.start(typeof OffscreenCanvas !== 'undefined' && typeof Worker !== 'undefined');
      this.reset();
    },
    onRemove() {
      this.worker?.terminate();
      this.worker = null;
      this.send = null;
      for (const c of this.canvases) L.DomUtil.remove(c);
    },
    getEvents() {
      return { viewreset: this.reset, zoom: this.onZoom, moveend: this.reset, zoomanim: this.animateZoom, resize: this.reset };
    },

    /** Two canvases and their drawing: in a worker, or in the page (no OffscreenCanvas, or the worker failed). @param {boolean} inWorker */
    start(inWorker) {
      for (const c of this.canvases || []) L.DomUtil.remove(c);
      this.canvases = [0, 1].map(() => {
        const c = L.DomUtil.create('canvas', 'sccr-segments leaflet-zoom-animated');
        c.dataset.layer = 'segments';
        c.style.visibility = 'hidden';
        this.getPane().appendChild(c);
        return c;
      });
      this.shown = -1;
      this.view = null;
      this.inFlight = null;
      this.geomQueue = new Set(this.list.map((d) => /** @type {number} */ (d.idx)));
      this.devicesSent = false;
      if (inWorker) {
        try {
          const worker = new Worker(new URL('./segworker.js', import.meta.url), { type: 'module' });
          const off = this.canvases.map((c) => c.transferControlToOffscreen());
          worker.onmessage = (e) => this.onRendered(e.data);
          // A worker that cannot start (an old server without the file): draw in the page.
          worker.onerror = (e) => {
            console.warn('segment drawing worker', e.message || e);
            worker.terminate();
            if (this.worker === worker) { this.worker = null; this.start(false); this.reset(); }
          };
          worker.postMessage({ type: 'init', canvases: off }, off);
          this.worker = worker;
          this.send = (m, transfer) => worker.postMessage(m, transfer || []);
          this.mode = 'worker';
          return;
        } catch (e) {
          console.warn('segment drawing worker', e);
          this.start(false);
          return;
        }
      }
      const renderer = new Renderer((m) => this.onRendered(m));
      renderer.handle({ type: 'init', canvases: this.canvases });
      this.send = (m) => { Promise.resolve().then(() => renderer.handle(m)); };
      this.mode = 'page';
    },

    // Zoom animation and pinch: scale the drawing shown as Leaflet's own renderers do, and
    // draw anew once the map has settled.
    animateZoom(/** @type {any} */ ev) { this.transform(ev.center, ev.zoom); },
    onZoom() { this.transform(this._map.getCenter(), this._map.getZoom()); },
    transform(/** @type {any} */ center, /** @type {number} */ zoom) {
      const v = this.view;
      if (!v || this.shown < 0) return;
      const map = this._map;
      const scale = map.getZoomScale(zoom, v.zoom);
      const half = map.getSize().multiplyBy(0.5 + this.options.padding);
      const offset = half.multiplyBy(-scale).add(map.project(v.center, zoom)).subtract(map._getNewPixelOrigin(center, zoom));
      const c = this.canvases[this.shown];
      if (L.Browser.any3d) L.DomUtil.setTransform(c, offset, scale);
      else L.DomUtil.setPosition(c, offset);
    },

    /** The map settled (or resized): a whole drawing for the view. */
    reset() {
      const map = this._map;
      if (!map) return;
      const p = this.options.padding;
      const size = map.getSize();
      const origin = map.containerPointToLayerPoint(size.multiplyBy(-p)).round();
      const span = size.multiplyBy(1 + p * 2).round();
      const zoom = map.getZoom();
      const scale = map.options.crs.scale(zoom);
      const pixelOrigin = map.getPixelOrigin();
      const tl = origin.add(pixelOrigin);
      const dpr = Math.min(2, window.devicePixelRatio || 1);
      this.want = { origin, center: map.getCenter(), zoom, pixelOrigin, span, frame: { scale, x0: tl.x / scale, y0: tl.y / scale, w: span.x, h: span.y, dpr } };
      this.requestDraw();
    },

    /** Redraw at the next animation frame (styles changed); several requests make one drawing. */
    redraw() {
      if (this.queued || !this._map) return;
      this.queued = true;
      requestAnimationFrame(() => { this.queued = false; this.requestDraw(); });
    },

    /** A segment is new or has finer geometry. @param {Drawable} d */
    put(d) {
      if (d.idx === undefined) {
        d.idx = this.list.length;
        this.list.push(d);
        this.items.set(d.id, d);
      }
      this.geomQueue.add(d.idx);
    },

    /** The device dots: positions (normalised x, y each) and looks (1 online, 0 offline). @param {Float64Array} xy @param {Uint8Array} look */
    setDevices(xy, look) {
      this.devices = { xy, look };
      this.devicesSent = false;
      this.redraw();
    },
    /** A device's look changed (online 1, offline 0). @param {number} i @param {number} look */
    deviceLook(i, look) {
      if (!this.devices || this.devices.look[i] === look) return;
      this.devices.look[i] = look;
      this.devicesSent = false;
      this.redraw();
    },

    /** Send the drawing what it has not had: geometry, devices. */
    flush() {
      if (!this.send) return;
      if (this.geomQueue.size) {
        const items = [...this.geomQueue].map((idx) => { const d = this.list[idx]; return [idx, d.u, d.box]; });
        this.geomQueue.clear();
        this.send({ type: 'geom', items });
      }
      if (!this.devicesSent && this.devices) {
        this.devicesSent = true;
        this.send({ type: 'devices', xy: this.devices.xy.slice(), look: this.devices.look.slice() });
      }
    },

    /** The styles the drawing needs: colours and width factors by grade code. */
    drawStyle() {
      const st = options.style();
      return {
        colour: GRADE_CODES.map((g) => st.colour[g] || st.colour.none),
        widthFactor: GRADE_CODES.map((g) => (g === 'none' ? 1 : st.widthFactor(g))),
        width: st.width, outline: st.outline, devOn: st.devOn, devRing: st.devRing, devOff: st.devOff, devRadius: st.devRadius,
      };
    },

    /** A whole drawing for the wanted view, in the canvas not shown (one at a time; the last request wins). */
    requestDraw() {
      if (!this.want || !this.send) return;
      if (this.inFlight) { this.wanted = true; return; }
      this.flush();
      if (this.settle) { clearTimeout(this.settle); this.settle = null; }
      this.changed = [];
      const styles = new Uint8Array(this.list.length);
      for (let i = 0; i < this.list.length; i += 1) styles[i] = codeOf(this.list[i]);
      const target = this.shown === 0 ? 1 : 0;
      this.seq += 1;
      this.inFlight = { seq: this.seq, target, view: this.want };
      this.send({ type: 'draw', seq: this.seq, target, frame: this.want.frame, styles, style: this.drawStyle() }, [styles.buffer]);
    },

    /** @param {any} m a message of the drawing */
    onRendered(m) {
      if (m.type === 'drawn') {
        const f = this.inFlight;
        if (!f || f.seq !== m.seq) return;
        this.inFlight = null;
        this.stats.draws += 1;
        this.stats.lastMs = m.ms;
        this.stats.totalMs += m.ms;
        this.stats.drawn = m.drawn;
        const map = this._map;
        // Shown only where it still fits: same zoom and pixel origin, no zoom under way.
        if (map && !map._animatingZoom && map.getZoom() === f.view.zoom && map.getPixelOrigin().equals(f.view.pixelOrigin)) {
          const c = this.canvases[f.target];
          L.DomUtil.setPosition(c, f.view.origin);
          c.style.width = `${f.view.span.x}px`;
          c.style.height = `${f.view.span.y}px`;
          c.style.visibility = 'visible';
          if (this.shown >= 0 && this.shown !== f.target) this.canvases[this.shown].style.visibility = 'hidden';
          this.shown = f.target;
          this.view = f.view;
          this.base = m.base;
        } else if (f.view !== this.want) {
          this.wanted = true;
        }
        if (this.wanted) { this.wanted = false; this.requestDraw(); }
      } else if (m.type === 'painted') {
        this.stats.repaints += 1;
        this.stats.repaintMs += m.ms;
      } else if (m.type === 'pixel') {
        this.pixelAsks.get(m.id)?.(m.rgba);
        this.pixelAsks.delete(m.id);
      }
    },

    /**
     * A segment's grade changed: paint it over in its new colour at the next frame, without
     * drawing the whole city again (a whole drawing of 25,000 segments costs the rasteriser
     * far more than the script). The line is painted at least as wide as it was, so no edge
     * of the old colour stays; widths settle at the next whole drawing, within 5 s or at
     * the end of a move. A segment with an operation's stripes is left to the whole drawing.
     * @param {Drawable} d @param {string | null} before its grade before
     */
    restyle(d, before) {
      if (!this._map) return;
      if (d.op) { this.redraw(); return; }
      this.changed.push([d, before]);
      if (!this.paintQueued) {
        this.paintQueued = true;
        requestAnimationFrame(() => { this.paintQueued = false; this.paintChanged(); });
      }
      if (!this.settle) this.settle = setTimeout(() => { this.settle = null; this.redraw(); }, 5000);
    },

    paintChanged() {
      const list = this.changed;
      this.changed = [];
      if (!list.length || !this.send) return;
      this.flush();
      const a = new Int32Array(list.length * 3);
      list.forEach(([d, before], i) => {
        a[3 * i] = /** @type {number} */ (d.idx);
        a[3 * i + 1] = codeOf(d);
        a[3 * i + 2] = Math.max(0, GRADE_CODES.indexOf(before ?? 'none'));
      });
      // The canvas shown and the one being drawn for (its styles were taken before).
      const targets = [this.shown, this.inFlight?.target ?? -1].filter((t) => t >= 0);
      this.send({ type: 'paint', list: a, targets }, [a.buffer]);
    },

    /** The base line width of the drawing shown (lines thin out where the network is dense). */
    zoomWidth() {
      return this.base || options.style().width;
    },

    /**
     * The segment under a point of the map's container, or null: the nearest within reach
     * of a finger (at least 8 px, or a little more than the line's half width).
     * @param {{x: number, y: number}} cp
     */
    hit(cp) {
      if (!this._map) return null;
      const map = this._map;
      const scale = map.options.crs.scale(map.getZoom());
      const wp = map.containerPointToLayerPoint(cp).add(map.getPixelOrigin());
      const px = wp.x / scale;
      const py = wp.y / scale;
      const reach = Math.max(8, this.zoomWidth() * 1.3) / scale;
      const r2 = reach * reach;
      let best = null;
      let bestD = r2;
      for (const d of this.items.values()) {
        const b = d.box;
        if (px < b[0] - reach || px > b[2] + reach || py < b[1] - reach || py > b[3] + reach) continue;
        for (const a of d.u) {
          for (let i = 2; i < a.length; i += 2) {
            const dd = dist2(px, py, a[i - 2], a[i - 1], a[i], a[i + 1]);
            if (dd <= bestD) { bestD = dd; best = d.id; }
          }
        }
      }
      return best;
    },

    /** The colour drawn at a point of the page (for tests): [r, g, b, a]. @param {number} x @param {number} y @returns {Promise<number[]>} */
    pixel(x, y) {
      const v = this.view;
      if (!v || this.shown < 0 || !this.send) return Promise.resolve([0, 0, 0, 0]);
      const r = this.canvases[this.shown].getBoundingClientRect();
      const px = Math.round((x - r.left) * ((v.frame.w * v.frame.dpr) / r.width));
      const py = Math.round((y - r.top) * ((v.frame.h * v.frame.dpr) / r.height));
      const id = (this.asks += 1);
      return new Promise((resolve) => {
        this.pixelAsks.set(id, resolve);
        /** @type {any} */ (this.send)({ type: 'pixel', id, target: this.shown, x: px, y: py });
      });
    },
  });
  return new Layer();
}
