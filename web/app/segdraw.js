// @ts-check
// The drawing of the road segments and the device dots, without the DOM: it runs in a
// worker on OffscreenCanvases (app/segworker.js), so that rasterising a city's 25,000
// segments at 4K never holds the page's main thread, or in the page itself where a
// browser has no OffscreenCanvas. The page (app/segcanvas.js) speaks to it in messages:
//
//   init {canvases}              two canvases: one shown, the next whole drawing made in the other
//   geom {items: [idx, u, box][]} segment geometry (normalised Web Mercator, as segcanvas.js keeps it)
//   devices {xy, look}           device positions (x0, y0, x1, …) and their look (1 online, 0 offline)
//   draw {seq, target, frame, styles, style}  a whole drawing into canvas `target`; answers drawn
//   paint {list, targets}        segments whose grade changed (idx, code, code before, …), painted
//                                over on those canvases; answers painted
//   pixel {id, target, x, y}     the colour at a pixel of a canvas; answers pixel
//
// A segment's style is one byte: its grade (0 none, 1–6 A–F) in the low bits, OP if a road
// operation marks it, CLOSES if that operation closes the road.

export const OP = 16;
export const CLOSES = 32;
export const GRADE_CODES = ['none', 'A', 'B', 'C', 'D', 'E', 'F'];

/**
 * @typedef {{scale: number, x0: number, y0: number, w: number, h: number, dpr: number}} Frame
 *   scale: pixels per normalised unit; x0, y0: the normalised point at the canvas's top left; w, h: CSS pixels.
 * @typedef {{colour: string[], widthFactor: number[], width: number, outline: string, devOn: string, devRing: string, devOff: string, devRadius: number}} Style
 *   colour and widthFactor by grade code.
 */

export class Renderer {
  /** @param {(msg: any, transfer?: Transferable[]) => void} post */
  constructor(post) {
    this.post = post;
    /** @type {(Float64Array[] | undefined)[]} */
    this.u = [];
    /** @type {(number[] | undefined)[]} */
    this.box = [];
    this.styles = new Uint8Array(0);
    this.devXY = new Float64Array(0);
    this.devLook = new Uint8Array(0);
    /** @type {{canvas: any, ctx: any, frame: Frame | null, base: number, dots: boolean}[]} */
    this.targets = [];
    /** @type {Style | null} */
    this.style = null;
  }

  /** @param {any} m */
  handle(m) {
    switch (m.type) {
      case 'init':
        this.targets = m.canvases.map((/** @type {any} */ canvas) => ({ canvas, ctx: canvas.getContext('2d'), frame: null, base: 1, dots: false }));
        break;
      case 'geom':
        for (const [idx, u, box] of m.items) { this.u[idx] = u; this.box[idx] = box; }
        break;
      case 'devices':
        this.devXY = m.xy;
        this.devLook = m.look;
        break;
      case 'draw': {
        const started = performance.now();
        this.styles = m.styles;
        this.style = m.style;
        const t = this.targets[m.target];
        const drawn = this.draw(t, m.frame);
        this.post({ type: 'drawn', seq: m.seq, target: m.target, ms: performance.now() - started, drawn, base: t.base });
        break;
      }
      case 'paint': {
        const started = performance.now();
        const list = /** @type {Int32Array} */ (m.list);
        for (let i = 0; i < list.length; i += 3) this.styles[list[i]] = list[i + 1];
        for (const i of new Set(m.targets)) if (this.targets[i]?.frame) this.paint(this.targets[i], list);
        this.post({ type: 'painted', ms: performance.now() - started });
        break;
      }
      case 'pixel': {
        const t = this.targets[m.target];
        const rgba = t && t.frame ? [...t.ctx.getImageData(m.x, m.y, 1, 1).data] : [0, 0, 0, 0];
        this.post({ type: 'pixel', id: m.id, rgba });
        break;
      }
      default: break;
    }
  }

  /**
   * Trace segments into the current path.
   * @param {any} ctx @param {number[]} list indexes @param {Frame} f
   */
  trace(ctx, list, f) {
    const { scale, x0, y0 } = f;
    ctx.beginPath();
    for (const idx of list) {
      for (const a of /** @type {Float64Array[]} */ (this.u[idx])) {
        ctx.moveTo((a[0] - x0) * scale, (a[1] - y0) * scale);
        for (let i = 2; i < a.length; i += 2) ctx.lineTo((a[i] - x0) * scale, (a[i + 1] - y0) * scale);
      }
    }
  }

  /**
   * A whole drawing. Lines thin out where the network in view is dense: about a third of
   * the mean spacing between the segments in view, never wider than the style's width.
   * @param {{canvas: any, ctx: any, frame: Frame | null, base: number, dots: boolean}} t @param {Frame} f
   * @returns {number} the segments drawn
   */
  draw(t, f) {
    const st = /** @type {Style} */ (this.style);
    const { canvas, ctx } = t;
    const pw = Math.round(f.w * f.dpr);
    const ph = Math.round(f.h * f.dpr);
    if (canvas.width !== pw || canvas.height !== ph) { canvas.width = pw; canvas.height = ph; }
    t.frame = f;
    ctx.setTransform(f.dpr, 0, 0, f.dpr, 0, 0);
    ctx.clearRect(0, 0, f.w, f.h);
    const { x0, y0, scale } = f;
    const x1 = x0 + f.w / scale;
    const y1 = y0 + f.h / scale;
    /** @type {Map<number, number[]>} by grade code, CLOSES for closed roads */
    const byGrade = new Map();
    /** @type {number[]} */
    const ops = [];
    /** @type {number[]} */
    const plain = [];
    // A segment shorter than a third of a pixel is drawn as part of its neighbours' blur.
    const tiny = 0.35 / scale;
    let visible = 0;
    for (let idx = 0; idx < this.u.length; idx += 1) {
      const b = this.box[idx];
      if (!b) continue;
      if (b[2] < x0 || b[0] > x1 || b[3] < y0 || b[1] > y1) continue;
      const code = this.styles[idx] ?? 0;
      if (b[2] - b[0] < tiny && b[3] - b[1] < tiny && !(code & OP)) continue;
      visible += 1;
      const g = code & CLOSES ? CLOSES : code & 15;
      let list = byGrade.get(g);
      if (!list) byGrade.set(g, (list = []));
      list.push(idx);
      if (code & OP) ops.push(idx);
      else plain.push(idx);
    }
    const spacing = Math.sqrt((f.w * f.h) / Math.max(1, visible));
    const base = Math.max(1, Math.min(st.width, spacing * 0.35));
    t.base = base;
    // Butt ends and mitred corners: round ones cost the software rasteriser several
    // times as much at a city's scale, for a difference nobody sees at these widths.
    ctx.lineJoin = 'miter';
    ctx.lineCap = 'butt';
    // Operations: black and white barrier stripes around the line.
    if (ops.length) {
      const cw = base * 2.6 + 4;
      this.trace(ctx, ops, f);
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
    // network is dense (lines thinned), where the lines themselves fill the view.
    if (base >= 2 && base >= st.width) {
      this.trace(ctx, plain, f);
      ctx.strokeStyle = st.outline;
      ctx.globalAlpha = 0.7;
      ctx.lineWidth = base + 3;
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    for (const [g, list] of byGrade) {
      this.trace(ctx, list, f);
      if (g === CLOSES) {
        // A closed road carries no traffic: dark, with white ticks across.
        ctx.strokeStyle = '#000000';
        ctx.lineWidth = base * 1.2;
        ctx.stroke();
        ctx.setLineDash([2, base * 1.6]);
        ctx.strokeStyle = '#ffffff';
        ctx.stroke();
        ctx.setLineDash([]);
        continue;
      }
      ctx.strokeStyle = st.colour[g] || st.colour[0];
      ctx.lineWidth = base * st.widthFactor[g];
      ctx.stroke();
    }
    // Device dots only where they leave the lines readable: where the devices in view are
    // denser than one per six dot radii (a whole city), the lines' colours alone show the traffic.
    const devices = this.devicesIn(f);
    t.dots = devices > 0 && Math.sqrt((f.w * f.h) / devices) >= st.devRadius * 6;
    if (t.dots) this.drawDevices(t, null);
    return visible;
  }

  /**
   * Segments whose grade changed, painted over in their new colour at least as wide as
   * before (no edge of the old colour stays; widths settle at the next whole drawing), then
   * the device dots in the painted area drawn again on top.
   * @param {{canvas: any, ctx: any, frame: Frame | null, base: number, dots: boolean}} t @param {Int32Array} list
   */
  paint(t, list) {
    const st = /** @type {Style} */ (this.style);
    const f = /** @type {Frame} */ (t.frame);
    if (!st) return;
    const { ctx } = t;
    const { x0, y0, scale } = f;
    const x1 = x0 + f.w / scale;
    const y1 = y0 + f.h / scale;
    /** @type {Map<number, number[]>} by grade code and width factor */
    const groups = new Map();
    const area = [Infinity, Infinity, -Infinity, -Infinity];
    for (let i = 0; i < list.length; i += 3) {
      const idx = list[i];
      const code = list[i + 1];
      const b = this.box[idx];
      if (!b || code & OP || b[2] < x0 || b[0] > x1 || b[3] < y0 || b[1] > y1) continue;
      const g = code & 15;
      const before = list[i + 2] & 15;
      const key = g * 8 + Math.max(g, before, 4);
      let group = groups.get(key);
      if (!group) groups.set(key, (group = []));
      group.push(idx);
      area[0] = Math.min(area[0], b[0]); area[1] = Math.min(area[1], b[1]);
      area[2] = Math.max(area[2], b[2]); area[3] = Math.max(area[3], b[3]);
    }
    if (!groups.size) return;
    ctx.setTransform(f.dpr, 0, 0, f.dpr, 0, 0);
    ctx.lineJoin = 'miter';
    ctx.lineCap = 'butt';
    for (const [key, group] of groups) {
      const g = Math.floor(key / 8);
      const wider = key % 8;
      this.trace(ctx, group, f);
      ctx.strokeStyle = st.colour[g] || st.colour[0];
      // The wider of the two grades' widths (grades A–D share one width: code 4 stands for it).
      ctx.lineWidth = t.base * Math.max(st.widthFactor[g], st.widthFactor[wider]);
      ctx.stroke();
    }
    if (t.dots) this.drawDevices(t, area);
  }

  /** How many devices are in a frame. @param {Frame} f */
  devicesIn(f) {
    const xy = this.devXY;
    const x1 = f.x0 + f.w / f.scale;
    const y1 = f.y0 + f.h / f.scale;
    let n = 0;
    for (let i = 0; i < xy.length; i += 2) if (xy[i] >= f.x0 && xy[i] <= x1 && xy[i + 1] >= f.y0 && xy[i + 1] <= y1) n += 1;
    return n;
  }

  /**
   * The device dots (online: dark dots ringed in white; offline: hollow magenta rings), all
   * or those within an area (normalised box), in one path per look.
   * @param {{canvas: any, ctx: any, frame: Frame | null, base: number, dots: boolean}} t @param {number[] | null} area
   */
  drawDevices(t, area) {
    const st = /** @type {Style} */ (this.style);
    const f = /** @type {Frame} */ (t.frame);
    const xy = this.devXY;
    if (!xy.length) return;
    const { ctx } = t;
    const { x0, y0, scale } = f;
    const r = st.devRadius;
    const pad = (r + 3) / scale;
    const bx0 = Math.max(x0, area ? area[0] : -Infinity) - pad;
    const by0 = Math.max(y0, area ? area[1] : -Infinity) - pad;
    const bx1 = Math.min(x0 + f.w / scale, area ? area[2] : Infinity) + pad;
    const by1 = Math.min(y0 + f.h / scale, area ? area[3] : Infinity) + pad;
    ctx.setTransform(f.dpr, 0, 0, f.dpr, 0, 0);
    for (const look of [1, 0]) {
      ctx.beginPath();
      let n = 0;
      for (let i = 0; i < xy.length; i += 2) {
        const x = xy[i];
        const y = xy[i + 1];
        if (x < bx0 || x > bx1 || y < by0 || y > by1 || this.devLook[i / 2] !== look) continue;
        const px = (x - x0) * scale;
        const py = (y - y0) * scale;
        ctx.moveTo(px + r, py);
        ctx.arc(px, py, r, 0, Math.PI * 2);
        n += 1;
      }
      if (!n) continue;
      if (look) {
        ctx.fillStyle = st.devOn;
        ctx.fill();
        ctx.strokeStyle = st.devRing;
        ctx.lineWidth = 2;
      } else {
        ctx.strokeStyle = st.devOff;
        ctx.lineWidth = 3;
      }
      ctx.stroke();
    }
  }
}
