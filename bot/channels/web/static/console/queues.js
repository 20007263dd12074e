/*
 * The queues and the handoffs assigned to this agent, as GET /api/queues reports them: one fetch in
 * flight and one pending at most; local changes newer than a fetch win over it. Renders the
 * waiting lists, their clocks and the page title.
 */

import { api, ApiError, errorText } from './api.js';
import { el, keepFocus } from './dom.js';
import { announce } from './feedback.js';
import { customerName, mmss, topicText, whoLabel } from './format.js';
import { nodes } from './page.js';
import { me, signedIn } from './session.js';
import { currentLang, t, tm } from './texts.js';

let queues = [];
let transferQueues = null;
let mine = [];
let fetchedAt = performance.now();
let knownWaiting = null;
let flight = null;
let again = false;
const touched = new Map();  // handoff id -> {at, present}: accepted or dropped here
let fetched = () => {};

export const byId = (list, id) => list.find((h) => h && h.id === id);
export const allWaiting = () => queues.flatMap((q) => (Array.isArray(q.waiting) ? q.waiting : []));
export const assigned = () => mine;
export const accepted = () => mine.filter((h) => h.state === 'accepted');
/** Every queue may receive a transfer, not only the ones this agent serves. */
export const transferTargets = () => transferQueues || queues;

/** fn(started) runs after each fetch is applied; started is when that fetch began (Date.now()). */
export function onQueuesFetched(fn) { fetched = fn; }

export function refreshQueues() {
  if (!signedIn()) return Promise.resolve();
  if (flight) { again = true; return flight; }
  flight = (async () => {
    do {
      again = false;
      const started = Date.now();
      try {
        const data = await api('GET', '/api/queues');
        if (signedIn()) applyQueues(data || {}, started);
        nodes.queuesError.hidden = true;
      } catch (e) {
        if (!(e instanceof ApiError)) console.error(e);  // a bug here, not the network
        if (signedIn()) { nodes.queuesError.textContent = errorText(e); nodes.queuesError.hidden = false; }
      }
    } while (again && signedIn());
    flight = null;
  })();
  return flight;
}

function applyQueues(data, started) {
  queues = Array.isArray(data.queues) ? data.queues : [];
  transferQueues = Array.isArray(data.transfer_queues) ? data.transfer_queues : queues;
  fetchedAt = performance.now();
  const fresh = Array.isArray(data.mine) ? data.mine.slice() : [];
  for (const [id, change] of touched) {  // accepted or dropped here after this fetch started
    if (change.at <= started) { touched.delete(id); continue; }
    const i = fresh.findIndex((h) => h.id === id);
    if (!change.present && i >= 0) fresh.splice(i, 1);
    if (change.present && i < 0 && byId(mine, id)) fresh.push(byId(mine, id));
  }
  mine = fresh;
  fetched(started);
}

/** Accepted here: handoff id (summary h) is assigned to this agent whatever a fetch under way says. */
export function keepMine(id, h) {
  mine = mine.filter((x) => x.id !== id).concat([h]);
  touched.set(id, { at: Date.now(), present: true });
}

/** Transferred, closed, released, dismissed or gone: no longer assigned, whatever a fetch under way says. */
export function dropMine(id) {
  mine = mine.filter((h) => h.id !== id);
  touched.set(id, { at: Date.now(), present: false });
}

export function resetQueues() {
  queues = [];
  mine = [];
  knownWaiting = null;
  touched.clear();
}

export function queueLabel(name) {
  const known = queues.find((q) => q.name === name) || (transferQueues || []).find((q) => q.name === name) || {};
  const label = known.label;
  if (label && typeof label === 'object') return label[currentLang()] || label.en || label.it || String(name);
  return typeof label === 'string' ? label : String(name ?? '–');
}

export function announceNewWaiting() {
  const waiting = allWaiting();
  const fresh = knownWaiting ? waiting.filter((h) => !knownWaiting.has(h.id)) : [];
  if (fresh.length) announce(t('newWaiting', fresh.length, queueLabel(fresh[0].queue)));
  knownWaiting = new Set(waiting.map((h) => h.id));
}

export function updateTitle() {
  const n = signedIn() ? allWaiting().length : 0;
  document.title = (n ? `(${n}) ` : '') + t('appTitle');
}

export function renderQueues() {
  keepFocus(nodes.queueList, () => nodes.queueList.replaceChildren(...queues.map(queueNode)), nodes.queuesTitle);
  updateTitle();
  tickClocks();
}

function queueNode(q) {
  const waiting = Array.isArray(q.waiting) ? q.waiting : [];
  return el('div', { class: 'queue', 'data-queue': q.name, 'data-open': String(!!q.open) },
    el('div', { class: 'queue-head' },
      el('h3', { class: 'queue-label' }, queueLabel(q.name)),
      el('span', { class: 'badge queue-state ' + (q.open ? 'is-open' : 'is-closed') }, t(q.open ? 'open' : 'closed')),
      el('span', { class: 'queue-agents' }, t('agentsAvailable', Number(q.agents_available) || 0)),
      waiting.length ? el('span', { class: 'queue-longest' }, t('longestWait') + ' ',
        el('span', { class: 'clock', 'data-base-s': Number(q.longest_wait_s) || 0 })) : null),
    waiting.length
      ? el('ul', { class: 'waiting-list', 'aria-label': t('waitingIn', queueLabel(q.name)) }, waiting.map(waitingRow))
      : el('p', { class: 'queue-empty' }, t('noneWaiting')));
}

export function customerNode(c) {
  const name = customerName(c);
  if (!name) return el('span', { class: 'customer anonymous' }, t('anonymous'));
  const v = c.verified ? 'verified' : 'unverified';
  return el('span', { class: 'customer ' + v }, name, ' ', el('span', { class: 'badge badge-' + v }, t(v)));
}

function waitingRow(h) {
  const offered = h.state === 'offered';
  const toMe = offered && h.offered_to === me().id;
  return el('li', { class: 'waiting-row' + (offered ? ' is-offered' : ''), 'data-handoff-id': h.id,
    'data-state': h.state, 'data-priority': h.priority },
  el('span', { class: 'clock wait', 'data-base-s': Number(h.waited_s) || 0, title: t('waited') }),
  el('span', { class: 'badge priority', title: t('priority') }, 'P' + (h.priority ?? '–')),
  el('span', { class: 'badge channel', 'data-channel': h.channel }, tm('channels', h.channel)),
  el('span', { class: 'badge lang', title: t('language') }, String(h.language || '–').toUpperCase()),
  el('span', { class: 'topic' }, topicText(h)),
  customerNode(h.customer),
  h.mode === 'callback' ? el('span', { class: 'badge callback' }, t('callback')) : null,
  offered ? el('span', { class: 'badge offered' + (toMe ? ' offered-me' : '') }, t(toMe ? 'offeredToYou' : 'offered')) : null,
  el('button', { type: 'button', class: 'accept', 'aria-label': t('acceptLabel', whoLabel(h), topicText(h)) }, t('accept')));
}

/** The waiting clocks count on from the last fetch. */
export function tickClocks() {
  const elapsed = (performance.now() - fetchedAt) / 1000;
  nodes.queueList.querySelectorAll('.clock').forEach((c) => { c.textContent = mmss(Number(c.dataset.baseS) + elapsed); });
}
