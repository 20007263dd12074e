/*
 * Triage agent console: plain JavaScript modules, no build step, no dependencies.
 * API: docs/agent-api.md (REST under /api/, server-to-console WebSocket /agent/ws).
 * Runs under a strict CSP: no inline script or style, no eval, no innerHTML anywhere; every string
 * from the server (customer text above all) reaches the DOM through textContent or setAttribute.
 * The DOM contract the browser tests rely on is listed at the top of console.html.
 *
 * This module wires the others together: start-up, signing in and out, socket frames, polling, events.
 */

import { doAction, renderDispositions } from './actions.js';
import { api, errorText, onSessionExpired } from './api.js';
import {
  dismissSelected, onEndedFrame, onMessageFrame, onReplyInput, onReplyKey, onTypingFrame, reconcileConversations,
  reloadSelected, renderMine, renderWorkspace, resetConversations, selectHandoff, sendReply,
} from './conversation.js';
import { hit, pending } from './dom.js';
import { clearToasts } from './feedback.js';
import { changePresence, renderHeader, showConnection } from './header.js';
import { accept, decline, onOfferFrame, reconcileOffers, renderOffers, resetOffers, tickCountdowns } from './offers.js';
import { findNodes, nodes } from './page.js';
import {
  announceNewWaiting, onQueuesFetched, refreshQueues, renderQueues, resetQueues, tickClocks, updateTitle,
} from './queues.js';
import { begin, end, isSupervisor, signedIn } from './session.js';
import { onSignedIn, showSignIn, submitPassword, submitToken } from './signin.js';
import { connect, disconnect, hasSocket, listen } from './socket.js';
import { loadMetrics, metricsSoon, rerenderMetrics, resetMetrics } from './supervisor.js';
import { chooseLang, currentLang, loadTexts, t, translatePage } from './texts.js';
import { resetTyping } from './typing.js';

const POLL_QUEUES_MS = 15000;
const POLL_METRICS_MS = 10000;
const TICK_MS = 1000;

let timers = [];

function startConsole(session) {
  timers.forEach(clearInterval);
  begin(session);
  nodes.boot.hidden = nodes.signin.hidden = true;
  nodes.console.hidden = nodes.who.hidden = false;
  nodes.supervisor.hidden = !isSupervisor();
  nodes.console.classList.toggle('has-supervisor', isSupervisor());
  renderAll();
  refreshQueues();
  connect();
  timers = [setInterval(refreshQueues, POLL_QUEUES_MS), setInterval(tick, TICK_MS)];
  if (isSupervisor()) { loadMetrics(); timers.push(setInterval(loadMetrics, POLL_METRICS_MS)); }
}

function signedOut(message) {
  timers.forEach(clearInterval);
  timers = [];
  end();
  resetMetrics();
  resetTyping();
  resetQueues();
  resetOffers();
  resetConversations();
  disconnect();
  nodes.workspace.hidden = nodes.supervisor.hidden = true;
  nodes.replyInput.value = '';
  clearToasts();
  showSignIn(message);
}

async function signOut() {
  try { await api('DELETE', '/api/session'); } catch (e) { /* signed out here anyway */ }
  if (signedIn()) signedOut('');
}

function renderAll() {
  renderHeader();
  renderQueues();
  renderOffers();
  renderMine();
  renderWorkspace(true);
  rerenderMetrics();
}

function applyLang() {
  translatePage();
  nodes.uiLang.value = currentLang();
  nodes.replyInput.placeholder = t('replyPlaceholder');
  renderDispositions();
  if (signedIn()) renderAll(); else updateTitle();
}

function afterQueuesFetched(started) {
  reconcileOffers(started);
  reconcileConversations();
  announceNewWaiting();
  renderQueues();
  renderOffers();
  renderMine();
  renderWorkspace();
}

/** Every second: the waiting clocks and the offer countdowns. */
function tick() {
  tickClocks();
  tickCountdowns();
}

function onFrame(f) {
  if (f.type === 'queues_changed') { refreshQueues(); metricsSoon(); }
  else if (f.type === 'offer') onOfferFrame(f);
  else if (f.type === 'message') onMessageFrame(f);
  else if (f.type === 'typing') onTypingFrame(f);
  else if (f.type === 'handoff_ended') onEndedFrame(f);
  // other types are ignored: a newer server may send more
}

/** The first open also covers the gap before it; a reopening re-fetches all that frames may have changed. */
function onSocketOpen(again) {
  refreshQueues();
  if (!again) return;
  reloadSelected();
  loadMetrics();
}

function bindEvents() {
  const submit = (form, fn) => form.addEventListener('submit', (e) => { e.preventDefault(); fn(); });
  submit(nodes.login, submitPassword);
  submit(nodes.tokenForm, submitToken);
  nodes.signOut.addEventListener('click', signOut);
  nodes.presence.addEventListener('change', changePresence);
  nodes.uiLang.addEventListener('change', () => { chooseLang(nodes.uiLang.value); applyLang(); });
  nodes.toasts.addEventListener('click', (e) => { const b = e.target.closest('.toast-close'); if (b) b.closest('.toast').remove(); });
  nodes.queueList.addEventListener('click', (e) => { const h = hit(e, 'button.accept'); if (h) pending(h.btn, () => accept(h.id)); });
  nodes.offers.addEventListener('click', (e) => {
    const yes = hit(e, 'button.accept-offer');
    const no = hit(e, 'button.decline-offer');
    if (yes) pending(yes.btn, () => accept(yes.id)); else if (no) pending(no.btn, () => decline(no.id));
  });
  nodes.mineList.addEventListener('click', (e) => { const h = hit(e, 'button.mine-select'); if (h) selectHandoff(h.id); });
  nodes.dismissEnded.addEventListener('click', dismissSelected);
  submit(nodes.composer, sendReply);
  nodes.replyInput.addEventListener('keydown', onReplyKey);
  nodes.replyInput.addEventListener('input', onReplyInput);
  submit(nodes.transferForm, () => doAction('transfer'));
  submit(nodes.closeForm, () => doAction('close'));
  submit(nodes.releaseForm, () => doAction('release'));
  window.addEventListener('online', () => { if (signedIn() && !hasSocket()) connect(); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden && signedIn()) refreshQueues(); });
}

async function boot() {
  loadTexts();
  findNodes();
  onSessionExpired(signedOut);
  onSignedIn(startConsole);
  onQueuesFetched(afterQueuesFetched);
  listen({ frame: onFrame, open: onSocketOpen, state: showConnection });
  bindEvents();
  applyLang();
  let session;
  try {
    session = await api('GET', '/api/session');
  } catch (e) {
    showSignIn(e.status === 401 ? '' : errorText(e));
    return;
  }
  startConsole(session);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot); else boot();
