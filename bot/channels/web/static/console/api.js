/* The REST API (docs/agent-api.md): JSON in and out, the CSRF header on every state change. */

import { csrfToken, renewCsrf, signedIn } from './session.js';
import { t } from './texts.js';

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

let skewMs = 0;
let sessionExpired = () => {};

/** The server's clock, as of its last Date header: offer countdowns use it. */
export const serverNow = () => Date.now() + skewMs;

/** fn(message) runs when an answer says the session has ended while signed in. */
export function onSessionExpired(fn) { sessionExpired = fn; }

export const handoffPath = (id, action) => `/api/handoffs/${encodeURIComponent(id)}` + (action ? '/' + action : '');

/** Errors are thrown as ApiError; a rotated CSRF token is fetched and the request retried once. */
export async function api(method, path, body, retried) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  if (method !== 'GET' && csrfToken()) headers['X-CSRF-Token'] = csrfToken();
  let res;
  try { res = await fetch(path, init); } catch (e) { throw new ApiError(0, 'network', t('networkError')); }
  const date = Date.parse(res.headers.get('Date') || '');
  if (!Number.isNaN(date)) skewMs = date - Date.now();
  let data = null;
  if (res.status !== 204) { try { data = await res.json(); } catch (e) { data = null; } }
  if (res.ok) return data;
  const code = (data && data.error) || 'http_' + res.status;
  if (res.status === 403 && code === 'csrf' && !retried && signedIn()) {
    renewCsrf((await api('GET', '/api/session')).csrf_token);
    return api(method, path, body, true);
  }
  if (res.status === 401 && signedIn()) sessionExpired(t('sessionExpired'));
  throw new ApiError(res.status, code, (data && data.message) || res.statusText || code);
}

export function errorText(e) {
  if (!e || !e.status) return t(e && e.code === 'network' ? 'networkError' : 'genericError');
  const known = { 429: 'rateLimited', 403: 'forbidden', 404: 'notFound' }[e.status];
  return known ? t(known) : e.message || t('genericError');
}
