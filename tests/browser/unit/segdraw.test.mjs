// Unit checks of the wall's segment drawing (web/app/segdraw.js) under Node, on a canvas
// that records what is stroked: what a whole drawing draws and how wide, what a repaint
// paints, the device dots left out at city density. The browser suite checks the pixels
// themselves (dashboard.spec.mjs). Run: node --test tests/browser/unit/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Renderer, OP, CLOSES } from '../../../web/app/segdraw.js';

/** A 2D context that records each stroke and fill with the segments' first points in its path. */
function recorder() {
  const ops = [];
  let path = [];
  const ctx = {
    strokeStyle: '', fillStyle: '', lineWidth: 1, globalAlpha: 1, lineJoin: '', lineCap: '',
    setTransform() {}, clearRect() {}, setLineDash() {},
    beginPath() { path = []; },
    moveTo(x, y) { path.push([x, y]); },
    lineTo() {},
    arc() {},
    stroke() { ops.push({ op: 'stroke', style: ctx.strokeStyle, width: ctx.lineWidth, starts: path.length }); },
    fill() { ops.push({ op: 'fill', style: ctx.fillStyle, starts: path.length }); },
    getImageData() { return { data: [1, 2, 3, 255] }; },
  };
  return { canvas: { width: 0, height: 0, getContext: () => ctx }, ops };
}

const STYLE = {
  colour: ['#none', '#A', '#B', '#C', '#D', '#E', '#F'], widthFactor: [1, 1, 1, 1, 1, 1.45, 1.9], width: 10,
  outline: '#000', devOn: '#on', devRing: '#ring', devOff: '#off', devRadius: 5,
};
/** A frame of 1000 × 1000 px over the normalised square 0..1 (1000 px per unit). */
const FRAME = { scale: 1000, x0: 0, y0: 0, w: 1000, h: 1000, dpr: 1 };
/** Segment i: a short horizontal line in row i. */
const seg = (i) => [i, [Float64Array.from([0.1, 0.01 * (i + 1), 0.2, 0.01 * (i + 1)])], [0.1, 0.01 * (i + 1), 0.2, 0.01 * (i + 1)]];

function setup(n, devices = 0) {
  const posted = [];
  const r = new Renderer((m) => posted.push(m));
  const a = recorder();
  const b = recorder();
  r.handle({ type: 'init', canvases: [a.canvas, b.canvas] });
  r.handle({ type: 'geom', items: Array.from({ length: n }, (_, i) => seg(i)) });
  const xy = new Float64Array(devices * 2);
  for (let i = 0; i < devices; i += 1) { xy[2 * i] = (i % 100) / 100; xy[2 * i + 1] = Math.floor(i / 100) / 100; }
  r.handle({ type: 'devices', xy, look: new Uint8Array(devices).fill(1) });
  return { r, a, b, posted };
}

test('a whole drawing strokes each grade once, E and F wider, and answers what it drew', () => {
  const { r, a, posted } = setup(4);
  // none, A, F, and a closed road (operation) with grade B.
  const styles = Uint8Array.from([0, 1, 6, OP | CLOSES | 2]);
  r.handle({ type: 'draw', seq: 7, target: 0, frame: FRAME, styles, style: STYLE });
  assert.deepEqual(posted.map((m) => [m.type, m.seq, m.target, m.drawn]), [['drawn', 7, 0, 4]]);
  const strokes = a.ops.filter((o) => o.op === 'stroke');
  const byStyle = (s) => strokes.filter((o) => o.style === s);
  assert.equal(byStyle('#A').length, 1);
  assert.equal(byStyle('#F')[0].width, 10 * 1.9);
  assert.equal(byStyle('#none')[0].width, 10);
  // The closed road: barrier stripes around it (white, then black dashes), then black with white ticks.
  assert.ok(byStyle('#ffffff').length >= 2 && byStyle('#000000').length >= 2);
  assert.equal(byStyle('#B').length, 0, 'a closed road is not drawn in its grade');
});

test('a repaint paints only changed segments, at the wider of the two grades, on the canvases asked', () => {
  const { r, a, b, posted } = setup(3);
  r.handle({ type: 'draw', seq: 1, target: 0, frame: FRAME, styles: Uint8Array.from([1, 1, OP | 1]), style: STYLE });
  a.ops.length = 0;
  // Segment 0 from F to A (painted at F's width, so no red edge stays), segment 2 has an
  // operation (left to the whole drawing).
  r.handle({ type: 'paint', list: Int32Array.from([0, 1, 6, 2, OP | 3, 1]), targets: [0] });
  const strokes = a.ops.filter((o) => o.op === 'stroke');
  assert.deepEqual(strokes.map((o) => [o.style, o.width, o.starts]), [['#A', 10 * 1.9, 1]]);
  assert.equal(b.ops.length, 0, 'the canvas not asked for is left alone');
  assert.equal(posted.at(-1).type, 'painted');
});

test('device dots are drawn where there is room, left out at a whole city', () => {
  const few = setup(1, 20);
  few.r.handle({ type: 'draw', seq: 1, target: 0, frame: FRAME, styles: Uint8Array.from([1]), style: STYLE });
  const fills = few.a.ops.filter((o) => o.op === 'fill');
  assert.deepEqual(fills.map((o) => [o.style, o.starts]), [['#on', 20]]);
  // 10,000 devices in 1000 × 1000 px: one per 10 px, under six radii (30 px).
  const many = setup(1, 10_000);
  many.r.handle({ type: 'draw', seq: 1, target: 0, frame: FRAME, styles: Uint8Array.from([1]), style: STYLE });
  assert.equal(many.a.ops.filter((o) => o.op === 'fill').length, 0);
});

test('the pixel answer names its question', () => {
  const { r, posted } = setup(1);
  r.handle({ type: 'draw', seq: 1, target: 1, frame: FRAME, styles: Uint8Array.from([1]), style: STYLE });
  r.handle({ type: 'pixel', id: 42, target: 1, x: 5, y: 5 });
  assert.deepEqual(posted.at(-1), { type: 'pixel', id: 42, rgba: [1, 2, 3, 255] });
});
