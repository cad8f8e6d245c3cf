// Where the main thread's time goes in a Chromium trace (the load test writes one when
// SCCR_TRACE_OUT is set): self time by trace event on the page's main thread, the
// JavaScript entry points (animation frames, timers, messages, events), and the sampling
// profiler's self time by function.   node tests/browser/tracesum.mjs trace.json
import fs from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node tracesum.mjs TRACE.json');
  process.exit(2);
}
const raw = JSON.parse(fs.readFileSync(file, 'utf8'));
const events = Array.isArray(raw) ? raw : raw.traceEvents;

// The page's main thread: the CrRendererMain with the most events.
const names = new Map();
for (const e of events) if (e.ph === 'M' && e.name === 'thread_name') names.set(`${e.pid}:${e.tid}`, e.args.name);
const counts = new Map();
for (const e of events) {
  const k = `${e.pid}:${e.tid}`;
  if (names.get(k) === 'CrRendererMain') counts.set(k, (counts.get(k) || 0) + 1);
}
const main = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
if (!main) throw new Error('no renderer main thread in the trace');

// Complete events (X, or B/E pairs) of the main thread, nested by time.
/** @type {{name: string, ts: number, end: number, args: any}[]} */
const spans = [];
const open = [];
for (const e of events) {
  if (`${e.pid}:${e.tid}` !== main) continue;
  if (e.ph === 'X') spans.push({ name: e.name, ts: e.ts, end: e.ts + (e.dur || 0), args: e.args });
  else if (e.ph === 'B') open.push(e);
  else if (e.ph === 'E') {
    const b = open.pop();
    if (b) spans.push({ name: b.name, ts: b.ts, end: e.ts, args: b.args });
  }
}
spans.sort((a, b) => a.ts - b.ts || b.end - a.end);
const self = new Map();
const entry = new Map();
let first = Infinity;
let last = 0;
let busy = 0;
const stack = [];
/** The JavaScript entry point a span stands for. */
const label = (s) => {
  const d = s.args?.data || {};
  if (s.name === 'FunctionCall') return `FunctionCall ${d.functionName || '?'} ${String(d.url || '').split('/').pop()}:${d.lineNumber ?? ''}`;
  if (s.name === 'EventDispatch') return `EventDispatch ${d.type || ''}`;
  if (s.name === 'TimerFire') return 'TimerFire';
  if (s.name === 'FireAnimationFrame') return 'FireAnimationFrame';
  return null;
};
for (const s of spans) {
  while (stack.length && stack[stack.length - 1].end <= s.ts) stack.pop();
  const parent = stack[stack.length - 1];
  const dur = s.end - s.ts;
  if (parent) self.set(parent.name, (self.get(parent.name) || 0) - Math.min(dur, parent.end - s.ts));
  else if (s.name === 'ThreadControllerImpl::RunTask' || s.name === 'RunTask') { busy += dur; first = Math.min(first, s.ts); last = Math.max(last, s.end); }
  self.set(s.name, (self.get(s.name) || 0) + dur);
  const l = label(s);
  if (l && !stack.some((p) => label(p))) entry.set(l, (entry.get(l) || 0) + dur);
  stack.push(s);
}
const secs = (last - first) / 1e6;
const ms = (us) => (us / 1000 / secs).toFixed(1);
console.log(`main thread ${main}: ${secs.toFixed(1)} s traced, tasks ${ms(busy)} ms/s (${((busy / 1e6 / secs) * 100).toFixed(1)} % busy)`);
console.log('\nself time by event, ms per second:');
for (const [n, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${ms(v).padStart(7)}  ${n}`);
console.log('\nJavaScript entry points (outermost), ms per second:');
for (const [n, v] of [...entry].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`  ${ms(v).padStart(7)}  ${n}`);

// The sampling profiler: a Profile event names the thread, its ProfileChunks (on the
// profiler's own thread) carry the samples under the same id.
/** @param {string} pidTid @param {string} title */
function sampled(pidTid, title) {
  const profile = events.find((e) => e.name === 'Profile' && `${e.pid}:${e.tid}` === pidTid);
  if (!profile) return;
  const nodes = new Map();
  const samples = [];
  for (const e of events) {
    if (e.name !== 'ProfileChunk' || e.id !== profile.id || e.pid !== profile.pid) continue;
    const c = e.args?.data?.cpuProfile || {};
    for (const n of c.nodes || []) nodes.set(n.id, n);
    const deltas = e.args.data.timeDeltas || [];
    (c.samples || []).forEach((id, i) => samples.push([id, deltas[i] || 0]));
  }
  const fn = new Map();
  for (let i = 0; i < samples.length - 1; i += 1) {
    const f = nodes.get(samples[i][0])?.callFrame || {};
    const k = `${f.functionName || '(anonymous)'} ${String(f.url || '').split('/').pop()}:${(f.lineNumber ?? -1) + 1}`;
    fn.set(k, (fn.get(k) || 0) + samples[i + 1][1]);
  }
  const idle = ['(idle)', '(program)'];
  const total = [...fn].filter(([k]) => !idle.some((x) => k.startsWith(x))).reduce((a, [, v]) => a + v, 0);
  console.log(`\n${title}: JavaScript and native self time by function (sampled), ${ms(total)} ms/s outside (idle) and (program):`);
  for (const [n, v] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${ms(v).padStart(7)}  ${n}`);
}
sampled(main, 'main thread');
for (const [k, n] of names) if (n === 'DedicatedWorker thread' && k.startsWith(`${main.split(':')[0]}:`)) sampled(k, `worker ${k}`);
