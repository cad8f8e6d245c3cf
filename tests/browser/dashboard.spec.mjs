// Browser tests of the wall dashboard against a running `sccr demo` (started by
// tests/tests/browser.rs, which passes in the environment):
//   SCCR_URL         the demo's HTTP address
//   SCCR_MQTT_PORT   its embedded broker
//   SCCR_TOKEN       an admin token, when the server has authentication
//   SCCR_CONTROL_URL the harness's /stop and /start (stops and restarts the demo)
//   SCCR_SCREENSHOTS where screenshots go (target/screenshots)
//   SCCR_PERF_OUT    where the load test writes its figures (JSON)
// Each test does what a person does: clicks the map itself, reads what the screen shows.
import fs from 'node:fs';
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { test, expect } from '@playwright/test';
import mqtt from 'mqtt';
import { TOKEN, SIZES, auth, shot, getJson, open } from './helpers.mjs';

const MQTT_PORT = Number(process.env.SCCR_MQTT_PORT || 11883);
const CONTROL = process.env.SCCR_CONTROL_URL || '';
const LOS_F_COLOUR = '#d73027';

test.describe.configure({ mode: 'serial' });

async function publish(topic, payload) {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${MQTT_PORT}`, { protocolVersion: 5, clientId: `browser-test-${process.pid}-${Date.now()}` });
  try {
    await client.publishAsync(topic, JSON.stringify(payload), { qos: 1 });
  } finally {
    await client.endAsync();
  }
}

let seq = 900_000_000 + (Date.now() % 1_000_000) * 100;
/** A speed reading from a device, through the broker. */
const speed = (device, v) => publish(`sccr/v1/devices/${device}/telemetry`, { seq: (seq += 1), ts: Date.now(), readings: [{ m: 'speed_kmh', v }] });

/** Add (or replace) an alert rule through the API. */
async function putRule(request, rule) {
  const res = await request.put(`/api/v1/alert-rules/${rule.id}`, { headers: { ...auth(), 'Content-Type': 'application/json' }, data: rule });
  expect(res.ok(), await res.text()).toBeTruthy();
}

/** The longest segment on screen with a detector reporting now, and that detector. */
async function longSegmentWithDetector(page, request) {
  const { columns, rows } = await getJson(request, '/api/v1/map/devices?limit=20000');
  const devs = rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]]))).filter((d) => d.online && d.last_seen > Date.now() - 60_000);
  const id = await page.evaluate((withDevices) => {
    const m = window.sccr;
    let best = null;
    let bestLen = 0;
    for (const seg of m.state.segments.values()) {
      if (!withDevices.includes(seg.id)) continue;
      const c = seg.coords;
      const len = Math.hypot(c[0][0] - c[c.length - 1][0], c[0][1] - c[c.length - 1][1]);
      if (len > bestLen) { bestLen = len; best = seg.id; }
    }
    return best;
  }, devs.filter((d) => d.segment && /loop/.test(d.id)).map((d) => d.segment));
  return { segment: id, device: devs.find((d) => d.segment === id && /loop/.test(d.id)).id };
}

// ---------- 1. the map itself answers the pointer ----------
test('clicking and hovering a road segment on the map opens its panel and tooltip', async ({ page, request }) => {
  const errors = await open(page);
  await expect.poll(() => page.evaluate(() => window.sccr.segmentDraws().segments), { timeout: 10_000 }).toBeGreaterThanOrEqual(20);
  const { segment } = await longSegmentWithDetector(page, request);
  const pt = await page.evaluate((id) => window.sccr.segmentPoint(id), segment);
  // The segments are drawn on one canvas: the map finds the one under the pointer.
  await page.mouse.move(pt.x, pt.y);
  const tip = page.locator('.leaflet-tooltip.seg-tip');
  await expect(tip).toBeVisible({ timeout: 3_000 });
  await expect(tip).toHaveAttribute('data-segment', segment);
  const name = await page.evaluate((id) => window.sccr.state.segments.get(id).props.name || id, segment);
  await expect(tip).toContainText(name);
  await expect(page.locator('#map')).toHaveClass(/on-segment/);
  // Away from every line nothing answers: no tooltip.
  const away = { x: pt.x, y: pt.y + 300 };
  if ((await page.evaluate(({ x, y }) => window.sccr.segmentAt(x, y), away)) === null) {
    await page.mouse.move(away.x, away.y);
    await expect(tip).toBeHidden();
    await page.mouse.move(pt.x, pt.y);
  }
  await page.mouse.click(pt.x, pt.y);
  await expect(page.locator('#detail')).toBeVisible();
  await expect(page.locator('#detail')).toHaveAttribute('data-segment', segment);
  expect(errors).toEqual([]);
});

// The segments and device dots are drawn in a worker on OffscreenCanvas; a browser (or an
// older server) without it gets the same drawing in the page. Either way the canvas shows a
// segment's grade colour under it and a click there opens the segment.
test('the map draws in a worker, and in the page when the worker cannot start', async ({ browser, request }) => {
  /** The segment's colour is on the canvas at its middle. */
  const colourShown = (page, id) => page.evaluate(async (seg) => {
    const s = window.sccr.segmentStyle(seg);
    const pt = window.sccr.segmentPoint(seg);
    if (!s?.los || !pt) return false;
    const [r, g, b, a] = await window.sccr.segmentPixel(pt.x, pt.y);
    const want = [1, 3, 5].map((i) => parseInt(s.colour.slice(i, i + 2), 16));
    return a > 200 && Math.abs(r - want[0]) <= 6 && Math.abs(g - want[1]) <= 6 && Math.abs(b - want[2]) <= 6;
  }, id);
  for (const worker of [true, false]) {
    const page = await browser.newPage();
    if (!worker) await page.route('**/app/segworker.js', (r) => r.fulfill({ status: 404, contentType: 'text/plain', body: 'not here' }));
    const errors = await open(page);
    await expect.poll(() => page.evaluate(() => window.sccr.segmentDraws().mode), { timeout: 10_000 }).toBe(worker ? 'worker' : 'page');
    await expect.poll(() => page.evaluate(() => window.sccr.segmentDraws().drawn), { timeout: 10_000 }).toBeGreaterThan(0);
    const { segment } = await longSegmentWithDetector(page, request);
    await expect.poll(() => colourShown(page, segment), { timeout: 10_000 }).toBe(true);
    const pt = await page.evaluate((id) => window.sccr.segmentPoint(id), segment);
    await page.mouse.click(pt.x, pt.y);
    await expect(page.locator('#detail')).toHaveAttribute('data-segment', segment);
    // The refused worker script is the only complaint.
    expect(errors.filter((e) => !(!worker && /segworker|404/.test(e)))).toEqual([]);
    await page.close();
  }
});

// ---------- 2. every device, without listing them in the browser ----------
test('the map loads every device through the paged map call, never the device list', async ({ page }) => {
  const N = 12_000;
  const calls = [];
  page.on('request', (r) => { if (/\/api\/v1\/(map\/)?devices/.test(r.url())) calls.push(r.url()); });
  await page.route('**/api/v1/map/devices**', (route) => {
    const url = new URL(route.request().url());
    const limit = Number(url.searchParams.get('limit') || 5000);
    const from = Number(url.searchParams.get('cursor') || 0);
    const rows = [];
    for (let i = from; i < Math.min(N, from + limit); i += 1) rows.push([`syn-${i}`, 'traffic_loop', null, 11.2 + (i % 100) * 0.001, 43.76 + Math.floor(i / 100) * 0.0005, true, Date.now()]);
    const next = from + limit < N ? String(from + limit) : null;
    route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ columns: ['id', 'kind', 'segment', 'lon', 'lat', 'online', 'last_seen'], rows, next_cursor: next }) });
  });
  const errors = await open(page);
  await expect.poll(() => page.evaluate(() => window.sccr.state.devices.size), { timeout: 10_000 }).toBe(N);
  expect(calls.some((u) => /\/api\/v1\/devices/.test(u))).toBe(false);
  expect(calls.filter((u) => u.includes('/map/devices')).length).toBe(3);
  expect(errors).toEqual([]);
});

// ---------- 3. geography, offline ----------
test('Florence is recognisable: river, ring avenues and landmarks, nothing from the internet', async ({ page }) => {
  const foreign = [];
  page.on('request', (r) => { const u = new URL(r.url()); if (!['127.0.0.1', 'localhost'].includes(u.hostname)) foreign.push(r.url()); });
  const errors = await open(page);
  await expect(page.locator('body')).toHaveAttribute('data-basemap', 'context');
  await expect(page.locator('.landmark span', { hasText: /Duomo|Cathedral/ })).toBeVisible();
  await expect(page.locator('.leaflet-context-pane path')).not.toHaveCount(0);
  expect(foreign).toEqual([]);
  await page.locator('.lang button[data-lang="it"]').click();
  await expect(page.locator('.landmark span', { hasText: /Duomo|Santa Maria del Fiore/ })).toBeVisible();
  expect(errors).toEqual([]);
});

test('a configured XYZ basemap replaces the context layer', async ({ page }) => {
  const tiles = [];
  await page.route('**/api/v1/wall', (r) => r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ basemap: { kind: 'xyz', url: 'http://127.0.0.1:9/tiles/{z}/{x}/{y}.png', attribution: '© City of Florence', max_zoom: 19 } }) }));
  await page.route('http://127.0.0.1:9/tiles/**', (r) => { tiles.push(r.request().url()); r.fulfill({ status: 200, contentType: 'image/png', body: Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=', 'base64') }); });
  await open(page);
  await expect(page.locator('body')).toHaveAttribute('data-basemap', 'xyz');
  await expect.poll(() => tiles.length, { timeout: 5_000 }).toBeGreaterThan(0);
  expect(tiles[0]).toMatch(/\/tiles\/\d+\/\d+\/\d+\.png$/);
  await expect(page.locator('.leaflet-control-attribution')).toContainText('City of Florence');
});

// ---------- 4. colour-blind safe, with a second channel ----------
test('Level-of-Service colours stay apart for deuteranopes and protanopes; E and F are wider', async ({ page, request }) => {
  await open(page);
  const colours = await page.evaluate(() => ['A', 'B', 'C', 'D', 'E', 'F'].map((g) => getComputedStyle(document.documentElement).getPropertyValue(`--los-${g}`).trim()));
  const devOn = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--dev-on').trim());
  const hex = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16) / 255);
  const lin = (c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const gam = (c) => (c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055);
  // Machado, Oliveira & Fernandes (2009), severity 1.0, in linear RGB.
  const SIM = {
    deuteranopia: [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    protanopia: [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    normal: [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
  };
  const lab = (rgb) => {
    const [r, g, b] = rgb.map(lin);
    const x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    const y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    const z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    const f = (t) => (t > 216 / 24389 ? Math.cbrt(t) : (24389 / 27 * t + 16) / 116);
    return [116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))];
  };
  const sim = (m, rgb) => { const l = rgb.map(lin); return m.map((row) => gam(Math.min(1, Math.max(0, row[0] * l[0] + row[1] * l[1] + row[2] * l[2])))); };
  const dE = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
  const report = {};
  for (const [name, m] of Object.entries(SIM)) {
    const labs = colours.map((c) => lab(sim(m, hex(c))));
    let min = Infinity;
    for (let i = 0; i < labs.length; i += 1) for (let j = i + 1; j < labs.length; j += 1) min = Math.min(min, dE(labs[i], labs[j]));
    report[name] = Number(min.toFixed(1));
    // Every pair of grades at least 10 ΔE*ab apart (clearly distinguishable side by side).
    expect(min, `${name}: closest pair of grades ${min.toFixed(1)} ΔE`).toBeGreaterThan(10);
    // Online device dots are not any grade's colour.
    const dev = lab(sim(m, hex(devOn)));
    for (const l of labs) expect(dE(dev, l)).toBeGreaterThan(10);
  }
  console.log(`LOS palette, smallest ΔE*ab between grades: ${JSON.stringify(report)}`);
  // Second channel: a segment at F is drawn wider than one at A.
  const { segment, device } = await longSegmentWithDetector(page, request);
  await speed(device, 1);
  // A hang deadline; the reading-to-colour latency is measured by the recolour test.
  await expect.poll(() => page.evaluate((id) => window.sccr.losOf(id), segment), { timeout: 10_000 }).toBe('F');
  const widths = await page.evaluate((id) => {
    const f = window.sccr.segmentStyle(id).width;
    const a = [...window.sccr.state.segments.values()].filter((s) => s.los === 'A').map((s) => window.sccr.segmentStyle(s.id).width);
    return { f, a: a.length ? Math.max(...a) : null };
  }, segment);
  if (widths.a !== null) expect(widths.f).toBeGreaterThan(widths.a * 1.5);
});

// ---------- 5. charts ----------
test('charts: zero-based nice axis, 24-hour clock, readout on hover, one line per detector, resizing', async ({ page, request }) => {
  const errors = await open(page, { lang: 'it' });
  const { segment } = await longSegmentWithDetector(page, request);
  const pt = await page.evaluate((id) => window.sccr.segmentPoint(id), segment);
  await page.mouse.click(pt.x, pt.y);
  const chart = page.locator('#detail-chart canvas');
  await expect(chart).toBeVisible({ timeout: 10_000 });
  const info = await page.evaluate(() => {
    const u = window.sccr.charts.detail;
    return { yMin: u.scales.y.min, yMax: u.scales.y.max, series: u.series.length - 1, width: u.width };
  });
  expect(info.yMin).toBe(0);
  expect(info.yMax).toBeGreaterThanOrEqual(10);
  const detectors = await page.evaluate((id) => [...window.sccr.state.devices.values()].filter((d) => d.segment === id && /loop/.test(d.id)).length, segment);
  expect(info.series).toBe(Math.min(detectors, 6) || 1);
  // The time axis in 24-hour clock, no AM/PM.
  const ticks = await page.evaluate(() => window.sccr.charts.detail.axes[0]._values ?? []);
  for (const label of ticks.flat()) expect(String(label)).not.toMatch(/AM|PM/i);
  expect(ticks.flat().some((l) => /^\d{2}:\d{2}/.test(String(l)))).toBe(true);
  // A readout follows the pointer.
  const box = await chart.boundingBox();
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height / 2);
  await expect(page.locator('#detail-readout')).toContainText(/\d{2}:\d{2}/);
  await expect(page.locator('#detail-readout')).not.toContainText(/AM|PM/);
  // The planner: a custom range keeps the chart whole; the chart follows the window's size.
  await page.locator('.tab[data-tab="planner"]').click();
  await page.locator('#p-range').selectOption('custom');
  await page.locator('#planner-form button[type="submit"]').click();
  await expect(page.locator('#planner-chart canvas')).toBeVisible({ timeout: 10_000 });
  const inside = await page.evaluate(() => {
    const c = document.querySelector('#planner-chart .uplot').getBoundingClientRect();
    return c.bottom <= window.innerHeight + 1 && c.right <= window.innerWidth + 1;
  });
  expect(inside).toBe(true);
  const before = await page.evaluate(() => window.sccr.charts.planner.width);
  await page.setViewportSize({ width: 1400, height: 900 });
  await expect.poll(() => page.evaluate(() => window.sccr.charts.planner.width), { timeout: 5_000 }).toBeLessThan(before);
  expect(errors).toEqual([]);
});

// ---------- 6. Italian, from the server's catalogue ----------
test('Italian throughout: metric names and units from the catalogue, alert messages from codes', async ({ page, request }) => {
  const catalogue = await getJson(request, '/api/v1/catalogue');
  expect(catalogue.metrics.find((m) => m.id === 'no2_ugm3').unit).toBe('µg/m³');
  const errors = await open(page, { lang: 'it' });
  await page.locator('.tab[data-tab="planner"]').click();
  const labels = await page.locator('#p-metric option').allTextContents();
  expect(labels.join('|')).toContain('µg/m³');
  expect(labels.join('|')).not.toMatch(/no2_ugm3|ug\/m3/);
  // Every message code the server can send has a text in both languages.
  const codes = catalogue.alert_codes || [];
  const missing = await page.evaluate(async (list) => {
    const i18n = await import('/app/i18n.js');
    return list.map((c) => (typeof c === 'string' ? c : c.code)).filter((c) => !i18n.hasText(`alert.${c}`));
  }, codes);
  expect(missing).toEqual([]);
  expect(errors).toEqual([]);
});

// ---------- 7. alarm handling (ISA-18.2) ----------
test('an alert that returns to normal stays until acknowledged; acknowledging it closes it', async ({ page, request }) => {
  const errors = await open(page);
  await putRule(request, { id: 'browser-flap', severity: 'critical', threshold: { metric: 'speed_kmh', above: 200, clear: 150 } });
  const { device, segment } = await longSegmentWithDetector(page, request);
  await speed(device, 230);
  let alert = null;
  await expect.poll(async () => {
    const { alerts } = await getJson(request, `/api/v1/alerts?state=open&device=${device}&rule=browser-flap`);
    alert = alerts[0];
    return Boolean(alert);
  }, { timeout: 15_000 }).toBe(true);
  await speed(device, 20);
  const item = page.locator(`li[data-alert="${alert.id}"]`);
  await expect(item).toHaveAttribute('data-state', 'returned', { timeout: 10_000 });
  await expect(item).toBeVisible();
  // A marker on the map; clicking the alert brings its place into view.
  await expect(page.locator(`[data-alert-marker="${alert.id}"] .shape`)).toBeVisible();
  await item.locator('.msg').click();
  await expect(item).toHaveClass(/selected/);
  await expect(page.locator('.leaflet-highlight-pane path')).toHaveCount(1);
  // The map flies to the alert's place (an animation: wait for it to arrive).
  await expect.poll(() => page.evaluate((id) => {
    const c = window.sccr.map().getCenter();
    const seg = window.sccr.state.segments.get(id);
    return seg.coords.some(([lat, lon]) => Math.abs(lat - c.lat) < 0.01 && Math.abs(lon - c.lng) < 0.01);
  }, segment), { timeout: 5_000 }).toBe(true);
  await shot(page, 'alert-returned-1920x1080.png');
  await item.locator('button[data-act="ack"]').click();
  await item.locator('input.note').fill('seen, back to normal (browser test)');
  await item.locator('button[data-act="confirm"]').click();
  // Stored, then mirrored by the engine and sent back live: allow a loaded machine its time.
  await expect(page.locator(`#alert-list li[data-alert="${alert.id}"]`)).toHaveCount(0, { timeout: 15_000 });
  const stored = await getJson(request, `/api/v1/alerts/${alert.id}`);
  expect(stored.alert.state).toBe('cleared');
  // The recent-history list keeps it.
  await page.locator('.alert-tabs button[data-view="history"]').click();
  await expect(page.locator(`#alert-list li[data-alert="${alert.id}"]`)).toBeVisible({ timeout: 5_000 });
  expect(errors).toEqual([]);
});

test('an operator shelves a nuisance alert with a reason; it leaves the active list and is audited', async ({ page, request }) => {
  const errors = await open(page);
  await putRule(request, { id: 'browser-shelve', severity: 'warning', threshold: { metric: 'speed_kmh', above: 240 } });
  const { device } = await longSegmentWithDetector(page, request);
  await speed(device, 245);
  let alert = null;
  await expect.poll(async () => {
    const { alerts } = await getJson(request, `/api/v1/alerts?state=open&device=${device}&rule=browser-shelve`);
    alert = alerts[0];
    return Boolean(alert);
  }, { timeout: 15_000 }).toBe(true);
  // Against a demo that ran this test before, the alert may still be on its shelf.
  if (alert.shelved) {
    const res = await request.post(`/api/v1/alerts/${alert.id}/unshelve`, { headers: { ...auth(), 'Content-Type': 'application/json' }, data: {} });
    expect(res.ok(), await res.text()).toBeTruthy();
  }
  const item = page.locator(`li[data-alert="${alert.id}"]`);
  await expect(item).toBeVisible({ timeout: 5_000 });
  await item.locator('button[data-act="shelve"]').click();
  // A reason is required.
  await item.locator('button[data-act="confirm"]').click();
  await expect(item.locator('input.reason')).toHaveClass(/invalid/);
  await item.locator('input.reason').fill('detector under maintenance (browser test)');
  await item.locator('select.for').selectOption('900');
  await item.locator('button[data-act="confirm"]').click();
  await expect(page.locator(`#alert-list li[data-alert="${alert.id}"]`)).toHaveCount(0, { timeout: 5_000 });
  await page.locator('.alert-tabs button[data-view="shelved"]').click();
  await expect(page.locator(`#alert-list li[data-alert="${alert.id}"]`)).toHaveAttribute('data-shelved', 'true');
  const stored = await getJson(request, `/api/v1/alerts/${alert.id}`);
  expect(stored.alert.shelved.reason).toBe('detector under maintenance (browser test)');
  expect(stored.events.some((e) => /shelve/.test(JSON.stringify(e)))).toBe(true);
  const metrics = await (await request.get('/metrics')).text();
  expect(metrics).toMatch(/sccr_alerts_per_position_last_10m/);
  expect(errors).toEqual([]);
});

// ---------- 8. outage: stale, disabled, no jump ----------
test('during an outage figures are stale, actions disabled, and the layout does not move', async ({ page, request }) => {
  test.skip(!CONTROL, 'no harness control URL (SCCR_CONTROL_URL)');
  await open(page);
  await expect(page.locator('#kpi-online')).not.toHaveText('–');
  const mapBox = await page.locator('#map').boundingBox();
  const stop = await request.get(`${CONTROL}/stop`);
  expect(stop.ok()).toBeTruthy();
  const banner = page.locator('#conn-banner');
  await expect(banner).toBeVisible({ timeout: 10_000 });
  await expect(page.locator('body')).toHaveAttribute('data-live', 'closed');
  expect(await page.locator('#map').boundingBox()).toEqual(mapBox);
  await expect(page.locator('#stale')).toContainText(/as of \d{2}:\d{2}:\d{2}/);
  const greyed = await page.evaluate(() => getComputedStyle(document.querySelector('#kpi-online').closest('.k-value')).opacity);
  expect(Number(greyed)).toBeLessThan(1);
  const enabled = await page.locator('li.alert button[data-act]:not([disabled])').count();
  expect(enabled).toBe(0);
  await shot(page, 'disconnected-1920x1080.png');
  const start = await request.get(`${CONTROL}/start`, { timeout: 60_000 });
  expect(start.ok()).toBeTruthy();
  await expect(banner).toBeHidden({ timeout: 15_000 });
  await expect(page.locator('body')).toHaveAttribute('data-live', 'open');
  const frames = await page.evaluate(() => window.sccr.frames);
  await expect.poll(() => page.evaluate(() => window.sccr.frames), { timeout: 10_000 }).toBeGreaterThan(frames);
});

// ---------- 9. legible from across the room ----------
test('wall mode: no text smaller than the rule allows, "–" before data, 4K shows more', async ({ browser }) => {
  for (const [width, height] of SIZES) {
    const page = await browser.newPage({ viewport: { width, height } });
    // Before any live frame, the tiles say "–", not zero.
    await page.routeWebSocket(/\/api\/v1\/live/, () => {});
    await open(page, { query: '?mode=wall', ready: false });
    await expect(page.locator('#kpi-online')).toHaveText('–');
    await expect(page.locator('#kpi-crit')).toHaveText('–');
    await page.close();
    const live = await browser.newPage({ viewport: { width, height } });
    const errors = await open(live, { query: '?mode=wall' });
    await expect(live.locator('body')).toHaveAttribute('data-mode', 'wall');
    const rule = await live.evaluate(() => window.sccr.wallFontPx);
    expect(rule).toBeGreaterThanOrEqual(40);
    const smallest = await live.evaluate(() => {
      let min = Infinity;
      let what = '';
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        const el = walker.currentNode.parentElement;
        if (!walker.currentNode.textContent.trim() || !el || el.closest('[hidden], template, dialog, .leaflet-control-attribution')) continue;
        const r = el.getBoundingClientRect();
        const cs = getComputedStyle(el);
        if (r.width === 0 || r.height === 0 || cs.visibility === 'hidden' || cs.display === 'none') continue;
        const px = parseFloat(cs.fontSize);
        if (px < min) { min = px; what = `${el.className || el.tagName}: ${walker.currentNode.textContent.trim().slice(0, 30)}`; }
      }
      return { min, what };
    });
    expect(smallest.min, `smallest text: ${smallest.what}`).toBeGreaterThanOrEqual(rule - 0.5);
    await expect(live.locator('#kpi-city-speed')).not.toHaveText('–', { timeout: 15_000 });
    await shot(live, `wall-${width}x${height}.png`);
    const worst = await live.locator('#worst-list li').count();
    if (width >= 3840) expect(worst).toBeGreaterThan(5);
    else expect(worst).toBeLessThanOrEqual(5);
    expect(errors).toEqual([]);
    await live.close();
  }
});

test('wall mode: a resize keeps the view an operator chose, and fits the city again only if it was in view', async ({ page }) => {
  await page.setViewportSize({ width: 1920, height: 1080 });
  const errors = await open(page, { query: '?mode=wall' });
  const view = () => page.evaluate(() => { const m = window.sccr.map(); const c = m.getCenter(); return { lat: c.lat, lng: c.lng, zoom: m.getZoom() }; });
  const fitted = await view();
  // The whole city in view: a resize fits it again to the new size.
  await page.setViewportSize({ width: 1600, height: 900 });
  await expect.poll(async () => (await view()).zoom).toBeLessThan(fitted.zoom);
  // Zoomed in on a street by the operator: a resize (a toolbar, a second screen) keeps it.
  await page.evaluate(() => { window.sccr.map().setView([43.7795, 11.2550], 17, { animate: false }); });
  // Resolved after the page's own resize handler and the fit it defers (a timeout) have run.
  const resized = page.evaluate(() => new Promise((r) => { window.addEventListener('resize', () => setTimeout(() => setTimeout(r, 0), 0), { once: true }); }));
  await page.setViewportSize({ width: 1920, height: 1080 });
  await resized;
  const kept = await view();
  expect(kept.zoom).toBe(17);
  expect(Math.abs(kept.lat - 43.7795)).toBeLessThan(1e-4);
  expect(errors).toEqual([]);
});

// ---------- 10. worst segments by relative speed, one rule ----------
test('worst segments are ordered by speed relative to free flow, whatever order the server sends', async ({ page }) => {
  await page.routeWebSocket(/\/api\/v1\/live/, (ws) => {
    ws.onMessage((m) => {
      if (JSON.parse(String(m)).type !== 'subscribe') return;
      ws.send(JSON.stringify({ type: 'snapshot', values: [], segments: [], alerts: [] }));
      ws.send(JSON.stringify({ type: 'kpi', kpi: { devices_online: 1, devices_offline: 0, readings_per_s: 1, alerts_open: { critical: 0, warning: 0, info: 0 }, city_speed_kmh: 30,
        worst_segments: [
          { segment: 'a-slow-lane', name: 'Slow but free', los: 'A', speed_kmh: 25, free_flow_kmh: 27 },
          { segment: 'b-jam', name: 'Fast road, jammed', los: 'E', speed_kmh: 28, free_flow_kmh: 80 },
          { segment: 'c-mid', name: 'Middling', los: 'C', speed_kmh: 30, free_flow_kmh: 50 },
        ] } }));
    });
  });
  await open(page);
  await expect(page.locator('#worst-list li').first()).toHaveAttribute('data-segment', 'b-jam', { timeout: 5_000 });
  expect(await page.locator('#worst-list li').evaluateAll((els) => els.map((e) => e.dataset.segment))).toEqual(['b-jam', 'c-mid', 'a-slow-lane']);
});

// ---------- forecasts: a segment predicted to degrade is marked on the wall ----------
test('a segment predicted to degrade is marked on the map; its panel and tooltip give the forecast', async ({ browser }) => {
  const now = Date.now();
  const win = (segment, speed, los, forecast) => ({ segment, start: now - 60_000, end: now, flow_vph: 900, speed_kmh: speed, occupancy_pct: 20, los, detectors: 2, revision: 0, ...(forecast ? { forecast } : {}) });
  const horizons = (a, la, b, lb, usual) => [
    { minutes: 15, at: now + 15 * 60_000, speed_kmh: a, usual_kmh: usual, los: la },
    { minutes: 30, at: now + 30 * 60_000, speed_kmh: b, usual_kmh: usual, los: lb },
  ];
  for (const [width, height] of SIZES) {
    const page = await browser.newPage({ viewport: { width, height } });
    let socket = null;
    await page.routeWebSocket(/\/api\/v1\/live/, (ws) => {
      socket = ws;
      ws.onMessage((m) => {
        if (JSON.parse(String(m)).type === 'subscribe') ws.send(JSON.stringify({ type: 'snapshot', values: [], alerts: [], segments: [] }));
      });
    });
    const errors = await open(page, { query: '?mode=wall' });
    // Two segments whose middle is clear on the map (no operation or alert icon over it).
    const [worse, steady] = await page.evaluate(() => {
      const clear = [];
      for (const id of window.sccr.state.segments.keys()) {
        const p = window.sccr.segmentPoint(id);
        const el = p && document.elementFromPoint(p.x, p.y);
        if (el && !el.closest('.leaflet-marker-pane, .leaflet-operations-pane, .leaflet-control-container') && el.closest('#map') && window.sccr.segmentAt(p.x, p.y) === id) clear.push(id);
        if (clear.length === 2) break;
      }
      return clear;
    });
    expect(steady, 'two segments clear of icons').toBeTruthy();
    socket.send(JSON.stringify({ type: 'segment', segment: win(worse, 30, 'C', { ratio: 0.7, horizons: horizons(22, 'D', 17, 'E', 40), degrading: true }) }));
    socket.send(JSON.stringify({ type: 'segment', segment: win(steady, 45, 'B', { ratio: 1.0, horizons: horizons(44, 'B', 46, 'B', 45), degrading: false }) }));
    const mark = page.locator(`[data-forecast-mark="${worse}"]`);
    await expect(mark).toBeVisible();
    await expect(mark).toHaveText('↘E');
    await expect(page.locator(`[data-forecast-mark="${steady}"]`)).toHaveCount(0);
    // The mark sits beside its segment, and the segment itself still answers the pointer.
    const pt = await page.evaluate((id) => window.sccr.segmentPoint(id), worse);
    const box = await mark.boundingBox();
    expect(Math.hypot(box.x - pt.x, box.y + box.height - pt.y)).toBeLessThan(width / 10);
    await shot(page, `forecast-mark-${width}x${height}.png`);
    await page.mouse.move(pt.x, pt.y);
    await expect(page.locator('.seg-tip')).toContainText('+30′ E');
    await page.mouse.click(pt.x, pt.y);
    await expect(page.locator('#detail')).toHaveAttribute('data-segment', worse);
    await expect(page.locator('#detail-figures')).toContainText('Forecast in 30 min');
    await expect(page.locator('#detail-figures')).toContainText('17 km/h · E');
    await page.mouse.move(0, height - 1);
    await shot(page, `forecast-panel-${width}x${height}.png`);
    // The forecast recovers: the mark goes.
    socket.send(JSON.stringify({ type: 'segment', segment: { ...win(worse, 38, 'B', { ratio: 0.95, horizons: horizons(39, 'B', 40, 'B', 40), degrading: false }), start: now, end: now + 60_000 } }));
    await expect(page.locator(`[data-forecast-mark="${worse}"]`)).toHaveCount(0);
    expect(errors).toEqual([]);
    await page.close();
  }
});

// ---------- 11. a real day in the demo ----------
test('the demo has history: the planner shows a week of city speed', async ({ page }) => {
  const errors = await open(page, { hash: '#planner' });
  await page.locator('#p-range').selectOption('7d');
  await page.locator('#planner-form button[type="submit"]').click();
  // The week's chart (not the day's drawn when the view opened).
  const span = () => page.evaluate(() => { const u = window.sccr.charts.planner; return u ? (u.scales.x.max - u.scales.x.min) / 86400 : 0; });
  await expect.poll(span, { timeout: 10_000 }).toBeGreaterThan(6.9);
  await expect(page.locator('#planner-info')).toContainText(/\d+ points/, { timeout: 10_000 });
  const n = Number((await page.locator('#planner-info').textContent()).match(/(\d+) points/)[1]);
  expect(n).toBeGreaterThan(24);
  await shot(page, 'planner-7d-1920x1080.png');
  expect(errors).toEqual([]);
});

test('the planner shows a detector\'s data quality and leaves flagged data out on request', async ({ page }) => {
  const errors = await open(page, { hash: '#planner' });
  await page.locator('#p-kind').selectOption('device');
  await expect(page.locator('#p-unflagged-wrap')).toBeVisible();
  const device = await page.locator('#p-subject').inputValue();
  await page.locator('#p-metric').selectOption('speed_kmh');
  await page.locator('#planner-form button[type="submit"]').click();
  // The demo runs no health rule: a clean score from the server.
  await expect(page.locator('#planner-quality')).toHaveText('Data quality 1.00', { timeout: 10_000 });
  await expect(page.locator('#planner-quality')).not.toHaveClass(/poor/);
  // A detector with a flag holding (the quality answer stubbed): the badge names it, and
  // the history asked for leaves flagged readings out (the server's real answer).
  await page.route('**/api/v1/devices/*/quality', (r) => r.fulfill({ status: 200, contentType: 'application/json',
    body: JSON.stringify({ device, kind: 'traffic_loop', segment: null, from: 0, to: 1, score: 0.8125, active: ['stuck'], flags: [] }) }));
  await page.locator('#p-unflagged').check();
  const asked = page.waitForRequest((req) => req.url().includes('/api/v1/history') && req.url().includes('exclude_flagged=true'));
  await page.locator('#planner-form button[type="submit"]').click();
  await asked;
  await expect(page.locator('#planner-quality')).toHaveText('Data quality 0.81 · stuck');
  await expect(page.locator('#planner-quality')).toHaveClass(/poor/);
  await expect(page.locator('#planner-info')).toContainText('0 flagged readings left out', { timeout: 10_000 });
  await shot(page, 'planner-quality-1920x1080.png');
  // The choice is a device's only.
  await page.locator('#p-kind').selectOption('segment');
  await expect(page.locator('#p-unflagged-wrap')).toBeHidden();
  expect(errors).toEqual([]);
});

// ---------- existing behaviour ----------
test('a reading published to the broker recolours its segment on the map', async ({ page, request }) => {
  const errors = await open(page);
  const { segment, device } = await longSegmentWithDetector(page, request);
  await expect.poll(() => page.evaluate((id) => window.sccr.losOf(id), segment), { timeout: 15_000 }).not.toBe(null);
  await speed(device, 60);
  await speed(device, 1);
  const started = Date.now();
  // The canvas itself shows LOS F's colour on the line, not only the model's grade.
  await page.waitForFunction(
    async ([id, colour]) => {
      const s = window.sccr.segmentStyle(id);
      const pt = window.sccr.segmentPoint(id);
      if (!s || s.los !== 'F' || s.colour !== colour || !pt) return false;
      const [r, g, b, a] = await window.sccr.segmentPixel(pt.x, pt.y);
      const want = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
      return a > 200 && Math.abs(r - want[0]) <= 6 && Math.abs(g - want[1]) <= 6 && Math.abs(b - want[2]) <= 6;
    },
    [segment, LOS_F_COLOUR],
    // A deadline against a hang, not the latency goal: that is measured by the benchmark
    // (publish to websocket) and logged here; under a loaded CI machine frames are late.
    { timeout: 10_000, polling: 'raf' },
  );
  console.log(`segment ${segment} turned F ${Date.now() - started} ms after the reading was acknowledged by the broker`);
  expect(errors).toEqual([]);
});

test('login with a token; the UI hides what the role cannot do; the token stays out of the console', async ({ page, browser, request }) => {
  test.skip(!TOKEN, 'the server has no authentication');
  const logged = [];
  page.on('console', (m) => logged.push(m.text()));
  page.on('request', (r) => logged.push(r.url()));
  await page.addInitScript(() => localStorage.setItem('sccr.lang', 'en'));
  await page.goto('/');
  await expect(page.locator('#login')).toBeVisible();
  await shot(page, 'login-1920x1080.png');
  await page.locator('#login-token').fill(TOKEN);
  await page.locator('#login button[type="submit"]').click();
  await expect(page.locator('body')).toHaveAttribute('data-ready', 'true', { timeout: 20_000 });
  await expect(page.locator('#user')).toContainText('admin');
  expect(logged.filter((l) => l.includes(TOKEN))).toEqual([]);
  const token = async (role) => {
    const res = await request.post('/api/v1/tokens', { headers: { ...auth(), 'Content-Type': 'application/json' }, data: { name: `wall-${role}-${Date.now()}`, role } });
    expect(res.status(), await res.text()).toBe(201);
    return (await res.json()).token;
  };
  for (const [role, actions, downloads] of [['planner', false, true], ['operator', true, false]]) {
    const ctx = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
    const p = await ctx.newPage();
    await p.addInitScript((t) => { localStorage.setItem('sccr.token', t); localStorage.removeItem('sccr.mode'); }, await token(role));
    await p.goto('/');
    await expect(p.locator('body')).toHaveAttribute('data-ready', 'true', { timeout: 20_000 });
    await expect(p.locator('body')).toHaveAttribute('data-role', role);
    await expect(p.locator('li.alert').first()).toBeVisible({ timeout: 10_000 });
    expect(await p.locator('li.alert button[data-act]').count() > 0).toBe(actions);
    await p.locator('.tab[data-tab="planner"]').click();
    expect(await p.locator('#downloads').isVisible()).toBe(downloads);
    await ctx.close();
  }
});

test('screenshots of each view at 1920×1080 and 3840×2160, in both languages', async ({ browser }) => {
  for (const [width, height] of SIZES) {
    const page = await browser.newPage({ viewport: { width, height } });
    const errors = await open(page);
    await expect.poll(() => page.evaluate(() => [...window.sccr.state.segments.values()].filter((s) => s.los).length), { timeout: 15_000 }).toBeGreaterThan(5);
    await expect(page.locator('#kpi-city-speed')).not.toHaveText('–', { timeout: 10_000 });
    await shot(page, `live-${width}x${height}.png`);
    await page.locator('#worst-list li').first().click();
    await expect(page.locator('#detail-chart canvas')).toBeVisible({ timeout: 10_000 });
    await shot(page, `segment-${width}x${height}.png`);
    await page.locator('.lang button[data-lang="it"]').click();
    await expect(page.locator('[data-i18n="kpi_alerts"]')).toHaveText('Allarmi aperti');
    await shot(page, `segment-it-${width}x${height}.png`);
    await page.locator('#detail-close').click();
    await page.locator('#mode').click();
    await expect(page.locator('body')).toHaveAttribute('data-mode', 'wall');
    await shot(page, `wall-it-${width}x${height}.png`);
    await page.locator('#mode').click();
    await page.locator('.lang button[data-lang="en"]').click();
    await page.locator('.tab[data-tab="planner"]').click();
    await page.locator('#p-kind').selectOption('segment');
    await page.locator('#p-metric').selectOption('vehicle_count');
    await page.locator('#planner-form button[type="submit"]').click();
    await expect(page.locator('#planner-chart canvas')).toBeVisible({ timeout: 10_000 });
    await expect(page.locator('#planner-info')).toContainText(/points|No data/);
    const yMin = await page.evaluate(() => window.sccr.charts.planner.scales.y.min);
    expect(yMin).toBe(0);
    await shot(page, `planner-${width}x${height}.png`);
    expect(errors).toEqual([]);
    await page.close();
  }
});

// ---------- 12. a city's whole road graph at 4K ----------
// 25,000 segments (Florence's order of magnitude: a generated street grid over the city,
// imported with `sccr segments import` into a server of their own, SCCR_CITY_URL; see
// tests/tests/browser.rs) and 5,000 detectors reporting every second, on a 3840×2160 wall.
// The wall asks that server for the segments by bbox= and zoom=; the devices' positions and
// the live socket are the test's, sending what the server sends under that load: every
// detector's speed each second, 25 closed segment windows a second and the KPI frame.
// The page reaches the server through a small proxy here that answers /api/v1/live itself
// on a real WebSocket: Playwright's routeWebSocket would deliver each frame through script
// injected into the page, and its cost would be counted as the wall's.
// Measured over fixed intervals, first with live updates only, then while a person pans and
// zooms: main-thread busy time (Chromium's task time, and long tasks) and the intervals
// between animation frames.
const CITY = process.env.SCCR_CITY_URL || '';
test('load: 25,000 segments and 5,000 devices at 4K, live and while panning and zooming', async ({ browser, playwright }) => {
  test.skip(!CITY, 'SKIPPED: no SCCR_CITY_URL (a server with the imported city; tests/tests/browser.rs starts one)');
  test.setTimeout(240_000);
  const SEGMENTS = Number(process.env.SCCR_CITY_SEGMENTS || 25_000);
  const DEVICES = 5_000;
  const cityToken = process.env.SCCR_CITY_TOKEN || '';
  const api = await playwright.request.newContext({ baseURL: CITY });
  const res = await api.get('/api/v1/segments', { headers: cityToken ? { Authorization: `Bearer ${cityToken}` } : {} });
  expect(res.ok(), `the city's segments: ${res.status()}`).toBeTruthy();
  const { features } = await res.json();
  await api.dispose();
  expect(features.length, 'the imported city').toBe(SEGMENTS);
  const segId = (i) => String(features[i].properties.id ?? features[i].id);
  const wss = new WebSocketServer({ noServer: true });
  const proxy = http.createServer((req, res) => {
    const up = http.request(new URL(req.url, CITY), { method: req.method, headers: { ...req.headers, host: new URL(CITY).host } }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => { res.writeHead(502); res.end(); });
    req.pipe(up);
  });
  proxy.on('upgrade', (req, socket, head) => {
    if (!req.url.startsWith('/api/v1/live')) { socket.destroy(); return; }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws));
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
  const page = await browser.newPage({ viewport: { width: 3840, height: 2160 }, baseURL: proxyUrl });
  const segAsks = [];
  const json = (body, status = 200) => ({ status, contentType: 'application/json', body: JSON.stringify(body) });
  page.on('request', (r) => { if (r.url().includes('/api/v1/segments')) segAsks.push(new URL(r.url()).search); });
  const rows = Array.from({ length: DEVICES }, (_, i) => {
    const s = (i * 5) % SEGMENTS;
    const line = features[s].geometry.coordinates;
    const c = line[Math.floor(line.length / 2)];
    return [`grid-loop-${i}`, 'traffic_loop', segId(s), c[0], c[1], true, Date.now()];
  });
  await page.route('**/api/v1/map/devices**', (r) => r.fulfill(json({ columns: ['id', 'kind', 'segment', 'lon', 'lat', 'online', 'last_seen'], rows, next_cursor: null })));
  let tick = 0;
  let timer = null;
  const values = () => rows.map((d, i) => ({ device: d[0], metric: 'speed_kmh', time: Date.now(), value: 5 + ((i * 7 + tick * 13) % 50) }));
  const windows = (now) => features.map((f, i) => ({ segment: segId(i), start: now - 60_000, end: now, flow_vph: 600, speed_kmh: 10 + (i % 40), occupancy_pct: 20, los: 'ABCDEF'[i % 6], detectors: 1, revision: 0 }));
  wss.on('connection', (ws) => {
    ws.on('message', (m) => {
      const msg = JSON.parse(String(m));
      if (msg.type !== 'subscribe') return;
      ws.send(JSON.stringify({ type: 'snapshot', values: values(), segments: windows(Date.now()), alerts: [] }));
      clearInterval(timer);
      timer = setInterval(() => {
        tick += 1;
        const now = Date.now();
        ws.send(JSON.stringify({ type: 'delta', values: values() }));
        for (let k = 0; k < 25; k += 1) {
          const s = (tick * 25 + k) % SEGMENTS;
          ws.send(JSON.stringify({ type: 'segment', segment: { segment: segId(s), start: now - 60_000, end: now, flow_vph: 900, speed_kmh: 30, occupancy_pct: 20, los: 'C', detectors: 4, revision: 0 } }));
        }
        ws.send(JSON.stringify({ type: 'kpi', kpi: { devices_online: DEVICES, devices_offline: 0, readings_per_s: DEVICES, alerts_open: { critical: 0, warning: 0, info: 0 }, city_speed_kmh: 30, worst_segments: [] } }));
      }, 1000);
    });
    ws.on('close', () => clearInterval(timer));
  });
  const loadStart = Date.now();
  // A whole city to load first: a loaded machine takes longer than the usual 20 s.
  const errors = await open(page, { query: '?mode=wall', token: cityToken, readyTimeout: 60_000 });
  await expect.poll(() => page.evaluate(() => window.sccr.state.segments.size), { timeout: 60_000 }).toBe(SEGMENTS);
  await expect.poll(() => page.evaluate(() => [...window.sccr.state.segments.values()].filter((s) => s.los).length), { timeout: 60_000 }).toBe(SEGMENTS);
  const firstColours = Date.now() - loadStart;
  // The whole network is in view and drawn.
  await expect.poll(() => page.evaluate(() => window.sccr.segmentDraws().drawn), { timeout: 10_000 }).toBeGreaterThan(SEGMENTS * 0.9);
  await shot(page, 'load-25000-segments-city-3840x2160.png');

  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.__perf = { longtasks: [], frames: [], on: false };
    new PerformanceObserver((list) => { for (const e of list.getEntries()) if (w.__perf.on) w.__perf.longtasks.push(e.duration); }).observe({ type: 'longtask' });
    let last = 0;
    const loop = (t) => { if (w.__perf.on && last) w.__perf.frames.push(t - last); last = t; requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
  });
  const metric = (m, name) => m.metrics.find((x) => x.name === name)?.value ?? 0;
  const pct = (xs, p) => { if (!xs.length) return null; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
  /** Measure `seconds` of what `act` does (a fixed interval: the measurement, not synchronisation). */
  async function measure(name, seconds, act) {
    await page.evaluate(() => { const w = /** @type {any} */ (window); w.__perf.longtasks = []; w.__perf.frames = []; w.__perf.on = true; });
    const draws0 = await page.evaluate(() => window.sccr.segmentDraws());
    const before = await cdp.send('Performance.getMetrics');
    const t0 = Date.now();
    await act(t0 + seconds * 1000);
    const rest = t0 + seconds * 1000 - Date.now();
    if (rest > 0) await page.waitForTimeout(rest);
    const after = await cdp.send('Performance.getMetrics');
    const wall = (Date.now() - t0) / 1000;
    const { longtasks, frames } = await page.evaluate(() => { const w = /** @type {any} */ (window); w.__perf.on = false; return w.__perf; });
    const draws1 = await page.evaluate(() => window.sccr.segmentDraws());
    const busy = metric(after, 'TaskDuration') - metric(before, 'TaskDuration');
    const script = metric(after, 'ScriptDuration') - metric(before, 'ScriptDuration');
    const layout = (metric(after, 'LayoutDuration') - metric(before, 'LayoutDuration')) + (metric(after, 'RecalcStyleDuration') - metric(before, 'RecalcStyleDuration'));
    const r1 = (v) => Number(v.toFixed(1));
    return {
      phase: name, seconds: r1(wall),
      busy_fraction: Number((busy / wall).toFixed(4)), busy_ms_per_s: r1((busy / wall) * 1000),
      script_ms_per_s: r1((script / wall) * 1000), layout_style_ms_per_s: r1((layout / wall) * 1000),
      longtasks: longtasks.length, longtask_ms_per_s: r1(longtasks.reduce((a, b) => a + b, 0) / wall), longest_task_ms: Math.round(Math.max(0, ...longtasks)),
      frames: frames.length, fps: r1(frames.length / wall),
      frame_ms_p50: r1(pct(frames, 0.5) ?? 0), frame_ms_p95: r1(pct(frames, 0.95) ?? 0), frame_ms_p99: r1(pct(frames, 0.99) ?? 0), frame_ms_max: r1(Math.max(0, ...frames)),
      frames_over_50ms: frames.filter((f) => f > 50).length,
      segment_draws: draws1.draws - draws0.draws, segment_draw_ms_mean: r1((draws1.totalMs - draws0.totalMs) / Math.max(1, draws1.draws - draws0.draws)),
      segment_repaints: draws1.repaints - draws0.repaints, segment_repaint_ms_mean: r1((draws1.repaintMs - draws0.repaintMs) / Math.max(1, draws1.repaints - draws0.repaints)),
      js_heap_mb: r1(metric(after, 'JSHeapUsedSize') / 1048576),
    };
  }
  // SCCR_TRACE_OUT=<file>: a Chromium trace of one phase (SCCR_TRACE_PHASE: live, the
  // default, or pan_zoom) with the devtools timeline and the JavaScript sampling profiler,
  // for tests/browser/tracesum.mjs to break the busy time down.
  const traced = async (phase, run) => {
    const on = process.env.SCCR_TRACE_OUT && (process.env.SCCR_TRACE_PHASE || 'live') === phase;
    if (on) await browser.startTracing(page, { categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'v8.execute', 'disabled-by-default-v8.cpu_profiler', 'blink', 'cc', 'gpu', 'toplevel'] });
    const r = await run();
    if (on) fs.writeFileSync(process.env.SCCR_TRACE_OUT, await browser.stopTracing());
    return r;
  };
  const live = await traced('live', () => measure('live', 20, async () => {}));
  // A person at the wall's desk: drags the map about and zooms in and out with the wheel.
  const box = await page.locator('#map').boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const interact = await traced('pan_zoom', () => measure('pan_zoom', 20, async (until) => {
    let k = 0;
    while (Date.now() < until - 1500) {
      k += 1;
      if (k % 3 === 0) {
        await page.mouse.move(cx, cy);
        await page.mouse.wheel(0, k % 6 === 0 ? 300 : -300);
        await page.waitForTimeout(600); // let the zoom animation run, as a person would
      } else {
        const dx = (k % 2 ? 1 : -1) * 600;
        await page.mouse.move(cx, cy);
        await page.mouse.down();
        for (let i = 1; i <= 15; i += 1) await page.mouse.move(cx + (dx * i) / 15, cy + (dx * i) / 30);
        await page.mouse.up();
        await page.waitForTimeout(200);
      }
    }
  }));
  const result = {
    viewport: '3840x2160', segments: SEGMENTS, devices: DEVICES, updates: '5,000 speeds + 25 segment windows + KPI per second',
    first_los_colours_ms: firstColours, segment_requests: segAsks.length, segment_requests_by_bbox: segAsks.filter((q) => q.includes('bbox=')).length,
    goal_busy_fraction: 0.1, drawing_in: await page.evaluate(() => window.sccr.segmentDraws().mode), live, pan_zoom: interact,
  };
  console.log(`wall at 4K, 25,000 segments, 5,000 devices: ${JSON.stringify(result)}`);
  if (process.env.SCCR_PERF_OUT) fs.writeFileSync(process.env.SCCR_PERF_OUT, JSON.stringify(result, null, 2));
  // As the wall shows it: no pointer over the map.
  await page.mouse.move(box.x + box.width + 10, 10);
  await shot(page, 'load-25000-segments-3840x2160.png');
  // The map still answers the pointer at this scale: the segment under a click opens.
  await page.evaluate(() => { window.sccr.map().setView([43.7795, 11.2550], 17, { animate: false }); });
  await expect.poll(() => page.evaluate(() => window.sccr.segmentDraws().drawn), { timeout: 10_000 }).toBeGreaterThan(0);
  const target = await page.evaluate(() => {
    const m = window.sccr.map();
    const c = m.getCenter();
    let best = null;
    let bestD = Infinity;
    for (const s of window.sccr.state.segments.values()) {
      const d = Math.hypot(s.mid[0] - c.lat, s.mid[1] - c.lng);
      if (d < bestD) { bestD = d; best = s.id; }
    }
    return { id: best, pt: window.sccr.segmentPoint(best) };
  });
  await page.mouse.click(target.pt.x, target.pt.y);
  await expect(page.locator('#detail')).toHaveAttribute('data-segment', target.id);
  expect(errors).toEqual([]);
  await page.close();
  clearInterval(timer);
  wss.close();
  proxy.closeAllConnections();
  await new Promise((resolve) => proxy.close(resolve));
  // The goal is under 10 % busy (reported above, not asserted: the figure depends on the
  // machine and on what else runs on it). These ceilings only catch a regression by an
  // order of magnitude: a main thread never idle while only live updates arrive, a task of
  // seconds, a median frame ten times the display's.
  expect(live.busy_fraction, 'live: main thread busy').toBeLessThan(0.95);
  for (const r of [live, interact]) {
    expect(r.longest_task_ms, `${r.phase}: longest task`).toBeLessThan(3000);
    expect(r.frame_ms_p50, `${r.phase}: median frame interval`).toBeLessThan(250);
  }
});
