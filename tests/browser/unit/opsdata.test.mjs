// Unit checks of the wall's road-operation data (web/app/opsdata.js) under Node, against a
// small stub of the operations API that follows its contract (cursor paging, the impact
// answer). The browser suite (operations.spec.mjs) runs the same screens against the real
// server. Run: node --test tests/browser/unit/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { allOperations, impactOf, pointsOf, change, toMs } from '../../../web/app/opsdata.js';

const H = 3_600_000;
const T0 = Date.parse('2026-03-02T08:00:00Z');
const op = (i) => ({ id: `op-${i}`, version: 1, kind: ['incident', 'roadworks', 'closure', 'event'][i % 4], title: `Operation ${i}`, severity: 'minor', status: 'active',
  agency: 'mobility', segments: [`seg-${i}`], point: null, area: null, closes_road: i % 4 === 2, planned: { from: new Date(T0).toISOString(), to: new Date(T0 + H).toISOString() }, actual: { from: null, to: null } });
const OPS = Array.from({ length: 7 }, (_, i) => op(i));
const iso = (ms) => new Date(ms).toISOString();
const span = (from, to, v) => ({ from: iso(from), to: iso(to), points: [{ t: from, v }, { t: from + H / 2, v }], avg: v, count: 2 });
const IMPACT = {
  operation: 'op-2', metric: 'speed_kmh',
  before: span(T0 - H, T0, 40), during: span(T0, T0 + H, 12), after: span(T0 + H, T0 + 2 * H, 36),
  baseline: { from: iso(T0 - H - 7 * 24 * H), to: iso(T0 + 2 * H - 7 * 24 * H), points: [[T0 - 7 * 24 * H, 41]], avg: 41, count: 1 },
};
const asked = [];
let server;
let base;

before(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://stub');
    asked.push(url.pathname + url.search);
    res.setHeader('Content-Type', 'application/json');
    if (url.pathname === '/api/v1/operations') {
      const limit = Number(url.searchParams.get('limit') || 3);
      const from = Number(url.searchParams.get('cursor') || 0);
      const page = OPS.slice(from, from + limit);
      res.end(JSON.stringify({ operations: page, next_cursor: from + limit < OPS.length ? String(from + limit) : null }));
    } else if (url.pathname === '/api/v1/operations/op-2/impact') {
      res.end(JSON.stringify(IMPACT));
    } else {
      res.statusCode = 404;
      res.end(JSON.stringify({ error: { code: 'not_found', message: 'no such route' } }));
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}`;
});
after(() => server.close());

const getJson = async (path) => {
  const res = await fetch(base + path);
  const body = await res.json();
  if (!res.ok) throw Object.assign(new Error(body.error.message), { status: res.status });
  return body;
};

test('every page of a listing is read by its cursor, and the filter is kept', async () => {
  asked.length = 0;
  const list = await allOperations(getJson, 'status=ended&limit=3');
  assert.deepEqual(list.map((o) => o.id), OPS.map((o) => o.id));
  assert.deepEqual(asked, ['/api/v1/operations?status=ended&limit=3', '/api/v1/operations?status=ended&limit=3&cursor=3', '/api/v1/operations?status=ended&limit=3&cursor=6']);
});

test('a server without operations: the 404 reaches the caller with its status', async () => {
  await assert.rejects(() => getJson('/api/v1/operations/op-9/impact'), (e) => e.status === 404);
});

test('the impact answer becomes three periods and a baseline moved onto them', async () => {
  const imp = impactOf(await getJson('/api/v1/operations/op-2/impact'));
  assert.ok(imp);
  assert.deepEqual(imp.periods.map((p) => p.key), ['before', 'during', 'after']);
  assert.equal(imp.from, T0 - H);
  assert.equal(imp.to, T0 + 2 * H);
  assert.deepEqual(imp.periods[1].xs, [T0, T0 + H / 2]);
  assert.deepEqual(imp.periods[1].ys, [12, 12]);
  assert.equal(imp.baseline.avg, 41);
  // A week earlier, drawn on the operation's own hours.
  assert.deepEqual(imp.baseline.xs, [T0]);
  assert.equal(Math.round(change(imp.periods[1].avg, imp.periods[0].avg) * 100), -70);
});

test('hostile or partial answers: no periods is null, bad points are skipped, missing values are gaps', () => {
  assert.equal(impactOf(null), null);
  assert.equal(impactOf({ before: { from: 'yesterday' } }), null);
  assert.deepEqual(pointsOf([{ t: 'x', v: 1 }, [T0, 'fast'], { time: iso(T0), value: 3 }, null]), { xs: [T0, T0], ys: [null, 3] });
  assert.equal(toMs('2026-03-02T08:00:00Z'), T0);
  assert.equal(toMs({}), null);
  assert.equal(change(5, 0), null);
  assert.equal(change(null, 10), null);
});
