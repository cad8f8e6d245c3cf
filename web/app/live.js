// @ts-check
// The live websocket: subscribe, apply frames, reconnect with backoff and jitter. The
// token travels as a websocket subprotocol, never in the URL (so it is never printed in
// the browser console when a connection fails).
import { auth } from './api.js';
import { state } from './state.js';

/** @type {WebSocket | null} */
let ws = null;
let attempt = 0;
let retryAt = 0;
let everOpen = false;
let kpiUnsupported = false;
/** @type {{onFrame: (msg: any) => void, onState: () => void, onReopen: () => void}} */
let handlers = { onFrame: () => {}, onState: () => {}, onReopen: () => {} };

export const reconnect = () => ({ attempt, retryAt });

/** @param {typeof handlers} h */
export function connect(h) {
  handlers = h;
  open();
}

function subscribe() {
  /** @type {Record<string, any>} */
  const sub = { type: 'subscribe', segments: [], alerts: true, values: true };
  if (!kpiUnsupported) sub.kpi = true;
  ws?.send(JSON.stringify(sub));
}

function open() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const protocols = ['sccr.live'];
  if (auth.token) protocols.push(`sccr.token.${auth.token}`);
  /** @type {WebSocket} */
  let socket;
  try {
    socket = new WebSocket(`${proto}://${location.host}/api/v1/live`, protocols);
  } catch (_) {
    schedule();
    return;
  }
  ws = socket;
  socket.onopen = () => {
    const wasDown = everOpen;
    everOpen = true;
    attempt = 0;
    setLive('open');
    subscribe();
    if (wasDown) handlers.onReopen();
  };
  socket.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (_) { return; }
    if (msg.type === 'error' && !kpiUnsupported && /kpi/.test(msg.message || '')) {
      // A server without KPI frames: subscribe without them; the tiles are computed here.
      kpiUnsupported = true;
      subscribe();
      return;
    }
    handlers.onFrame(msg);
  };
  socket.onclose = () => {
    if (ws !== socket) return;
    ws = null;
    setLive('closed');
    schedule();
  };
  socket.onerror = () => { /* onclose follows */ };
}

function schedule() {
  attempt += 1;
  // 0.5 s, 1 s, 2 s, … up to 5 s, with jitter so a wall of screens does not reconnect in step.
  const base = Math.min(5000, 500 * 2 ** (attempt - 1));
  const delay = base * (0.8 + Math.random() * 0.4);
  retryAt = Date.now() + delay;
  handlers.onState();
  setTimeout(open, delay);
}

/** @param {string} s */
function setLive(s) {
  state.live = s;
  document.body.dataset.live = s;
  handlers.onState();
}
