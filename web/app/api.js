// @ts-check
// The REST API: bearer token from the sign-in dialog (kept in localStorage), JSON errors.

export const auth = {
  token: localStorage.getItem('sccr.token') || '',
  /** @type {(bad: boolean) => void} */
  onUnauthorized: () => {},
};

export function authHeaders() {
  /** @type {Record<string, string>} */
  const h = {};
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return h;
}

/** @param {string} path @param {RequestInit} [opts] */
export async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: { ...authHeaders(), ...(opts.headers || {}) } });
  if (res.status === 401) {
    auth.onUnauthorized(true);
    throw new Error('unauthorized');
  }
  return res;
}

/** @param {string} path @param {RequestInit} [opts] @returns {Promise<any>} */
export async function apiJson(path, opts) {
  const res = await api(path, opts);
  const body = await res.json().catch(() => null);
  if (!res.ok) throw Object.assign(new Error(body?.error?.message || `${res.status}`), { status: res.status });
  return body;
}

/** POST a JSON body; the answer's JSON. @param {string} path @param {any} body */
export const postJson = (path, body) => apiJson(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

/** Who the token belongs to; {role: 'none'} on a server without authentication; null when refused. */
export async function whoAmI() {
  const res = await fetch('/api/v1/me', { headers: authHeaders() });
  if (res.status === 404) return { name: 'operator', role: 'none' };
  if (res.status === 401 || res.status === 403) return null;
  if (!res.ok) throw new Error(`/api/v1/me: ${res.status}`);
  return res.json();
}

/**
 * Every row of a compact paged answer ({columns, rows, next_cursor}), as objects.
 * @param {string} path
 * @returns {Promise<Record<string, any>[]>}
 */
export async function allRows(path) {
  const out = [];
  let cursor = null;
  for (let page = 0; page < 1000; page += 1) {
    const sep = path.includes('?') ? '&' : '?';
    const body = await apiJson(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    const cols = body.columns || [];
    for (const r of body.rows || []) {
      /** @type {Record<string, any>} */
      const o = {};
      cols.forEach((c, i) => { o[c] = r[i]; });
      out.push(o);
    }
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return out;
}

/** @param {Record<string, any>} params */
export const history = (params) => apiJson(`/api/v1/history?${new URLSearchParams(params)}`);
/** A learned baseline as 15-minute points (GET /api/v1/baselines). @param {Record<string, any>} params */
export const baselines = (params) => apiJson(`/api/v1/baselines?${new URLSearchParams(params)}`);
