/*
 * Customers offered to this agent, with their countdowns; and taking a customer, from an offer or
 * a waiting row (accept), or turning an offer down (decline).
 */

import { api, handoffPath, serverNow } from './api.js';
import { findSummary, selectHandoff } from './conversation.js';
import { el, keepFocus } from './dom.js';
import { announce, toast, toastError } from './feedback.js';
import { parseTime, topicText, whoLabel } from './format.js';
import { nodes } from './page.js';
import { allWaiting, assigned, customerNode, keepMine, queueLabel, refreshQueues } from './queues.js';
import { me, signedIn } from './session.js';
import { t } from './texts.js';

const offers = new Map();    // handoff id -> {id, until, at, refreshed}
const answered = new Map();  // handoff id -> when the offer was answered here
const announced = new Set();

/** After a queues fetch that began at started: offers to me come and go, unless changed here since. */
export function reconcileOffers(started) {
  const live = [...assigned(), ...allWaiting()].filter((h) => h.state === 'offered' && h.offered_to === me().id);
  for (const [id, at] of answered) if (at <= started) answered.delete(id);
  for (const h of live) {
    if (answered.has(h.id)) continue;
    const old = offers.get(h.id) || {};
    const until = parseTime(h.offer_expires_at);
    offers.set(h.id, { id: h.id, until: Number.isNaN(until) ? old.until : until, at: Date.now(), refreshed: !!old.refreshed });
  }
  const ids = new Set(live.map((h) => h.id));
  for (const [id, o] of offers) if (!ids.has(id) && o.at <= started) offers.delete(id);
  for (const id of offers.keys()) {
    if (!announced.has(id)) { announced.add(id); announce(t('newOffer', whoLabel(findSummary(id)))); }
  }
}

export function resetOffers() {
  offers.clear();
  answered.clear();
  announced.clear();
}

export function onOfferFrame(f) {
  if (typeof f.handoff_id !== 'string') return;
  const until = parseTime(f.expires_at);
  answered.delete(f.handoff_id);
  offers.set(f.handoff_id, { id: f.handoff_id, until: Number.isNaN(until) ? undefined : until, at: Date.now(), refreshed: false });
  renderOffers();
  refreshQueues();
}

export async function accept(id) {
  try {
    const data = await api('POST', handoffPath(id, 'accept'));
    forgetOffer(id);
    keepMine(id, (data && data.handoff) || Object.assign({}, findSummary(id), { state: 'accepted' }));
    selectHandoff(id);
    nodes.replyInput.focus();
  } catch (e) {
    if (e.status === 409) { forgetOffer(id); if (signedIn()) toast(t('taken'), 'error'); } else toastError(e);
  }
  refreshQueues();
}

export async function decline(id) {
  try { await api('POST', handoffPath(id, 'decline')); } catch (e) { if (e.status !== 409) toastError(e); }
  forgetOffer(id);
  refreshQueues();
}

function forgetOffer(id) {
  offers.delete(id);
  answered.set(id, Date.now());
  renderOffers();
}

export function renderOffers() {
  keepFocus(nodes.offers, () => nodes.offers.replaceChildren(...[...offers.values()].map(offerNode)), nodes.queuesTitle);
  tickCountdowns();
}

function offerNode(o) {
  const h = findSummary(o.id) || {};
  return el('div', { class: 'offer', 'data-handoff-id': o.id, role: 'group', 'aria-label': t('offerTitle') },
    el('strong', { class: 'offer-title' }, t('offerTitle')),
    customerNode(h.customer),
    h.queue ? el('span', { class: 'offer-queue' }, queueLabel(h.queue)) : null,
    el('span', { class: 'offer-topic' }, topicText(h)),
    h.priority !== undefined ? el('span', { class: 'badge priority' }, 'P' + h.priority) : null,
    el('span', { class: 'countdown', role: 'timer', 'data-until': o.until || '' }),
    el('span', { class: 'offer-buttons' },
      el('button', { type: 'button', class: 'accept-offer primary' }, t('acceptOffer')),
      el('button', { type: 'button', class: 'decline-offer' }, t('declineOffer'))));
}

/** The countdowns run on the server's clock; an expired offer triggers one queues fetch. */
export function tickCountdowns() {
  for (const c of nodes.offers.querySelectorAll('.countdown')) {
    const offer = offers.get(c.closest('.offer').dataset.handoffId);
    const left = c.dataset.until ? Math.ceil((Number(c.dataset.until) - serverNow()) / 1000) : null;
    c.textContent = left === null ? '' : left > 0 ? t('offerExpires', left) : t('offerExpiring');
    if (left !== null && left <= 0 && offer && !offer.refreshed) { offer.refreshed = true; refreshQueues(); }
  }
}
