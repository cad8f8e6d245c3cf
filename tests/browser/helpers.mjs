// What the browser suites share: the server's address and token from the environment
// (see dashboard.spec.mjs), opening the dashboard as a person would, screenshots.
import fs from 'node:fs';
import path from 'node:path';
import { expect } from '@playwright/test';

export const TOKEN = process.env.SCCR_TOKEN || '';
export const SHOTS = process.env.SCCR_SCREENSHOTS || path.resolve('../../target/screenshots');
export const SIZES = [[1920, 1080], [3840, 2160]];
// A server without road operations answers 404, and one without segments by viewport
// refuses bbox= (400): the wall then hides the panel or asks for the full list.
const SERVER_GAPS = [/\/api\/v1\/operations(\?|$)/, /\/api\/v1\/segments\?bbox=/];

export const auth = () => (TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {});
export const shot = (page, name) => { fs.mkdirSync(SHOTS, { recursive: true }); return page.screenshot({ path: path.join(SHOTS, name) }); };

export async function getJson(request, url) {
  const res = await request.get(url, { headers: auth() });
  expect(res.ok(), `${url}: ${res.status()}`).toBeTruthy();
  return res.json();
}

/** Open the dashboard, logged in with `token` when the server has authentication; collect errors. */
export async function open(page, { hash = '', query = '', lang = 'en', ready = true, token = TOKEN, readyTimeout = 20_000 } = {}) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Without authentication on the server, /api/v1/me answers 404 by design.
    if (!token && (m.location()?.url || '').endsWith('/api/v1/me')) return;
    if (SERVER_GAPS.some((re) => re.test(m.location()?.url || '')) && /status of (400|404)/.test(m.text())) return;
    // The browser reports a refused websocket itself while the server is down.
    if (/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/.test(m.text())) return;
    errors.push(`console: ${m.text()} (${m.location()?.url})`);
  });
  if (token) await page.addInitScript((t) => localStorage.setItem('sccr.token', t), token);
  await page.addInitScript((l) => { localStorage.setItem('sccr.lang', l); localStorage.removeItem('sccr.mode'); }, lang);
  await page.goto(`/${query}${hash}`);
  if (ready) await expect(page.locator('body')).toHaveAttribute('data-ready', 'true', { timeout: readyTimeout });
  return errors;
}
