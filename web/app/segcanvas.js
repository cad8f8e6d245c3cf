// @ts-check
// The road segments on one canvas: a city's whole graph (tens of thousands of segments)
// drawn in a few batched strokes per frame instead of one SVG element each. Geometry is
// kept in normalised Web Mercator (0..1), so panning and zooming never re-project it;
// the pointer is hit-tested here (nearest segment within a finger's reach), so the map
// still answers clicks and hovers on a line.
//
// Layers, bottom to top: road operations' casing (black and white barrier stripes, a
// channel no Level-of-Service colour uses), the dark outline, the LOS colour at its
// width (E and F wider), and a white edge around the segment under the pointer.

/**
 * @typedef {{id: string, u: Float64Array[], box: [number, number, number, number], los: string | null, op: {closes: boolean} | null}} Drawable
 *   u: each part's points as x0, y0, x1, y1, … in normalised Web Mercator; box: minX, minY, maxX, maxY.
 */

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

/**
 * The layer. `style()` gives the colours and the base line width of the moment (they follow
 * the palette in style.css and the type size of wall mode).
 * @param {{pane: string, style: () => {colour: Record<string, string>, width: number, widthFactor: (los: string | null) => number, outline: string, hover: string}}} options
 */
export function segmentLayer(options) {
  const Layer = L.Layer.extend({
    options: { padding: 0.15, pane: options.pane },

    initialize() {
      /** @type {Map<string, Drawable>} */
      this.items = new Map();
      /** @type {string | null} */
      this.hover = null;
      this.queued = false;
      this.stats = { draws: 0, lastMs: 0, totalMs: 0, drawn: 0, repaints: 0, repaintMs: 0 };
      /** @type {[Drawable, string | null][]} segments whose grade changed since the last painting */
      this.changed = [];
      this.paintQueued = false;
      /** @type {any} the full drawing that settles widths after repaints */
      this.settle = null;
    },

    onAdd() {
      this.canvas = L.DomUtil.create('canvas', 'sccr-segments leaflet-zoom-animated');
      this.canvas.dataset.layer = 'segments';
      this.getPane().appendChild(this.canvas);
      this.ctx = this.canvas.getContext('2d');
      this.reset();
    },
    onRemove() { L.DomUtil.remove(this.canvas); },
    getEvents() {
      return { viewreset: this.reset, zoom: this.onZoom, moveend: this.reset, zoomanim: this.animateZoom, resize: this.reset };
    },

    // Zoom animation and pinch: scale the last drawing as Leaflet's own renderers do, and
    // draw anew once the map has settled.
    animateZoom(/** @type {any} */ ev) { this.transform(ev.center, ev.zoom); },
    onZoom() { this.transform(this._map.getCenter(), this._map.getZoom()); },
    transform(/** @type {any} */ center, /** @type {number} */ zoom) {
      if (!this.origin) return;
      const map = this._map;
      const scale = map.getZoomScale(zoom, this.zoom);
      const half = map.getSize().multiplyBy(0.5 + this.options.padding);
      const offset = half.multiplyBy(-scale).add(map.project(this.center, zoom)).subtract(map._getNewPixelOrigin(center, zoom));
      if (L.Browser.any3d) L.DomUtil.setTransform(this.canvas, offset, scale);
      else L.DomUtil.setPosition(this.canvas, offset);
    },

    reset() {
      const map = this._map;
      if (!map) return;
      const p = this.options.padding;
      const size = map.getSize();
      const min = map.containerPointToLayerPoint(size.multiplyBy(-p)).round();
      const span = size.multiplyBy(1 + p * 2).round();
      this.center = map.getCenter();
      this.zoom = map.getZoom();
      this.origin = min;
      L.DomUtil.setPosition(this.canvas, min);
      const dpr = Math.min(2, window.devicePixelRatio || 1);
      this.dpr = dpr;
      this.canvas.width = Math.round(span.x * dpr);
      this.canvas.height = Math.round(span.y * dpr);
      this.canvas.style.width = `${span.x}px`;
      this.canvas.style.height = `${span.y}px`;
      this.draw();
    },

    /** Redraw at the next animation frame (styles changed); several requests make one drawing. */
    redraw() {
      if (this.queued || !this._map) return;
      this.queued = true;
      requestAnimationFrame(() => { this.queued = false; this.draw(); });
    },

    /**
     * A segment's grade changed: paint it over in its new colour at the next frame, without
     * drawing the whole city again (a full drawing of 25,000 segments costs the rasteriser
     * far more than the script). The line is painted at least as wide as it was, so no edge
     * of the old colour stays; widths settle at the next full drawing, within 5 s or at
     * the end of a move. A segment with an operation's stripes is left to the full drawing.
     * @param {Drawable} d @param {string | null} before its grade before
     */
    restyle(d, before) {
      if (!this._map || this.queued) return;
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
      if (this.queued || !this.ctx || !list.length) return;
      const started = performance.now();
      const ctx = this.ctx;
      const { scale, x0, y0 } = this.frame();
      const x1 = x0 + this.canvas.width / this.dpr / scale;
      const y1 = y0 + this.canvas.height / this.dpr / scale;
      const st = options.style();
      const base = this.zoomWidth();
      /** @type {Map<string, Drawable[]>} */
      const groups = new Map();
      for (const [d, before] of list) {
        const b = d.box;
        if (b[2] < x0 || b[0] > x1 || b[3] < y0 || b[1] > y1) continue;
        const g = d.los ?? 'none';
        const f = Math.max(g === 'none' ? 1 : st.widthFactor(g), before === null ? 1 : st.widthFactor(before));
        const key = `${g}|${f}`;
        let group = groups.get(key);
        if (!group) groups.set(key, (group = []));
        group.push(d);
      }
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      ctx.lineJoin = 'miter';
      ctx.lineCap = 'butt';
      for (const [key, group] of groups) {
        const [g, f] = key.split('|');
        ctx.beginPath();
        for (const d of group) {
          for (const a of d.u) {
            ctx.moveTo((a[0] - x0) * scale, (a[1] - y0) * scale);
            for (let i = 2; i < a.length; i += 2) ctx.lineTo((a[i] - x0) * scale, (a[i + 1] - y0) * scale);
          }
        }
        ctx.strokeStyle = st.colour[g] || st.colour.none;
        ctx.lineWidth = base * Number(f);
        ctx.stroke();
      }
      this.stats.repaints += 1;
      this.stats.repaintMs += performance.now() - started;
    },

    /** Pixels per normalised unit at the drawn zoom, and the normalised point at the canvas's top left. */
    frame() {
      const map = this._map;
      const scale = map.options.crs.scale(this.zoom);
      const tl = this.origin.add(map.getPixelOrigin());
      return { scale, x0: tl.x / scale, y0: tl.y / scale };
    },

    /** The base line width of the last drawing (see draw). */
    zoomWidth() {
      return this.base || options.style().width;
    },

    draw() {
      if (!this.ctx || !this._map) return;
      this.changed = [];
      if (this.settle) { clearTimeout(this.settle); this.settle = null; }
      const started = performance.now();
      const ctx = this.ctx;
      const { scale, x0, y0 } = this.frame();
      const w = this.canvas.width / this.dpr;
      const h = this.canvas.height / this.dpr;
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const x1 = x0 + w / scale;
      const y1 = y0 + h / scale;
      const st = options.style();
      /** @type {Map<string, Drawable[]>} */
      const byGrade = new Map();
      /** @type {Drawable[]} */
      const ops = [];
      /** @type {Drawable[]} */
      const visible = [];
      // A segment shorter than a third of a pixel is drawn as part of its neighbours' blur.
      const tiny = 0.35 / scale;
      for (const d of this.items.values()) {
        const b = d.box;
        if (b[2] < x0 || b[0] > x1 || b[3] < y0 || b[1] > y1) continue;
        if (b[2] - b[0] < tiny && b[3] - b[1] < tiny && !d.op) continue;
        visible.push(d);
        const g = d.op?.closes ? 'closed' : d.los ?? 'none';
        let list = byGrade.get(g);
        if (!list) byGrade.set(g, (list = []));
        list.push(d);
        if (d.op) ops.push(d);
      }
      // Lines thin out where the network is dense (a whole city in view): about a third of
      // the mean spacing between the segments in view, never wider than the style's width.
      const spacing = Math.sqrt((w * h) / Math.max(1, visible.length));
      const base = Math.max(1, Math.min(st.width, spacing * 0.35));
      this.base = base;
      /** @param {Drawable[]} list */
      const trace = (list) => {
        ctx.beginPath();
        for (const d of list) {
          for (const a of d.u) {
            ctx.moveTo((a[0] - x0) * scale, (a[1] - y0) * scale);
            for (let i = 2; i < a.length; i += 2) ctx.lineTo((a[i] - x0) * scale, (a[i + 1] - y0) * scale);
          }
        }
      };
      // Butt ends and mitred corners: round ones cost the software rasteriser several
      // times as much at a city's scale, for a difference nobody sees at these widths.
      ctx.lineJoin = 'miter';
      // Operations: black and white barrier stripes around the line.
      if (ops.length) {
        const cw = base * 2.6 + 4;
        trace(ops);
        ctx.lineCap = 'butt';
        ctx.setLineDash([]);
        ctx.strokeStyle = '#ffffff';
        ctx.lineWidth = cw;
        ctx.stroke();
        ctx.setLineDash([cw * 0.6, cw * 0.6]);
        ctx.strokeStyle = '#000000';
        ctx.stroke();
        ctx.setLineDash([]);
      }
      // The dark outline under every line, so lines read on any basemap; not where the
      // network is dense (lines thinned), where the lines themselves fill the view and the
      // outline would double the drawing's cost.
      if (base >= 2 && base >= st.width) {
        trace(visible.filter((d) => !d.op));
        ctx.lineCap = 'butt';
        ctx.strokeStyle = st.outline;
        ctx.globalAlpha = 0.7;
        ctx.lineWidth = base + 3;
        ctx.stroke();
        ctx.globalAlpha = 1;
      }
      ctx.lineCap = 'butt';
      for (const [g, list] of byGrade) {
        trace(list);
        if (g === 'closed') {
          // A closed road carries no traffic: dark, with white ticks across.
          ctx.strokeStyle = '#000000';
          ctx.lineWidth = base * 1.2;
          ctx.stroke();
          ctx.setLineDash([2, base * 1.6]);
          ctx.lineCap = 'butt';
          ctx.strokeStyle = '#ffffff';
          ctx.stroke();
          ctx.setLineDash([]);
          continue;
        }
        ctx.strokeStyle = st.colour[g] || st.colour.none;
        ctx.lineWidth = base * (g === 'none' ? 1 : st.widthFactor(g));
        ctx.stroke();
      }
      const hov = this.hover ? this.items.get(this.hover) : null;
      if (hov) {
        trace([hov]);
        ctx.strokeStyle = st.hover;
        ctx.globalAlpha = 0.9;
        ctx.lineWidth = base * st.widthFactor(hov.los) + 6;
        ctx.globalCompositeOperation = 'destination-over';
        ctx.stroke();
        ctx.globalCompositeOperation = 'source-over';
        ctx.globalAlpha = 1;
      }
      const ms = performance.now() - started;
      this.stats.draws += 1;
      this.stats.lastMs = ms;
      this.stats.totalMs += ms;
      this.stats.drawn = visible.length;
    },

    /**
     * The segment under a point of the map's container, or null: the nearest within reach
     * of a finger (at least 8 px, or a little more than the line's half width).
     * @param {{x: number, y: number}} cp
     */
    hit(cp) {
      if (!this._map || !this.origin) return null;
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

    /** The colour drawn at a point of the page (for tests): [r, g, b, a]. @param {number} x @param {number} y */
    pixel(x, y) {
      const r = this.canvas.getBoundingClientRect();
      const px = Math.round((x - r.left) * (this.canvas.width / r.width));
      const py = Math.round((y - r.top) * (this.canvas.height / r.height));
      return [...this.ctx.getImageData(px, py, 1, 1).data];
    },
  });
  return new Layer();
}
