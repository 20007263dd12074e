/*
 * The console WebSocket (/agent/ws, server to console only): reconnects with a jittered exponential
 * backoff, and checks the session first so that a 401 signs out instead of retrying for ever.
 */

import { api } from './api.js';
import { renewCsrf, signedIn } from './session.js';

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

let ws = null;
let timer = null;
let attempt = 0;
let opened = false;
let handlers = { frame() {}, open() {}, state() {} };

/**
 * frame(object) for each JSON object received; open(again) on every open, again after a gap in
 * which frames may have been lost; state('connecting' | 'open' | 'closed').
 */
export function listen(given) { handlers = given; }

export const hasSocket = () => ws !== null;

export function connect() {
  clearTimeout(timer);
  timer = null;
  if (!signedIn() || ws) return;
  handlers.state('connecting');
  let socket;
  try {
    socket = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/agent/ws');
  } catch (e) { scheduleReconnect(); return; }
  ws = socket;
  socket.addEventListener('open', () => {
    if (ws !== socket) return;
    const again = opened;
    opened = true;
    attempt = 0;
    handlers.state('open');
    handlers.open(again);
  });
  socket.addEventListener('message', (ev) => {
    if (ws !== socket || typeof ev.data !== 'string') return;
    let frame = null;
    try { frame = JSON.parse(ev.data); } catch (e) { return; }
    if (frame && typeof frame === 'object' && !Array.isArray(frame)) handlers.frame(frame);
  });
  socket.addEventListener('close', () => {
    if (ws !== socket) return;
    ws = null;
    handlers.state('closed');
    if (signedIn()) scheduleReconnect();
  });
}

/** Signed out: close without reconnecting, and start afresh on the next connect(). */
export function disconnect() {
  const socket = ws;
  clearTimeout(timer);
  ws = null;
  timer = null;
  attempt = 0;
  opened = false;
  if (socket) socket.close(1000);
}

function scheduleReconnect() {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  attempt += 1;
  clearTimeout(timer);
  timer = setTimeout(reconnect, base / 2 + Math.random() * base / 2);
}

async function reconnect() {
  timer = null;
  if (!signedIn() || ws) return;
  try {
    const session = await api('GET', '/api/session');
    if (session && session.csrf_token) renewCsrf(session.csrf_token);
  } catch (e) { /* network down: the socket fails too and backs off */ }
  connect();
}
