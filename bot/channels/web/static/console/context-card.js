/* The context card: who the customer is, why they were handed over, and what the bot learnt. */

import { el } from './dom.js';
import { first, fmtValue, fmtWhen, pct, topicText } from './format.js';
import { nodes } from './page.js';
import { queueLabel } from './queues.js';
import { t, tm } from './texts.js';

const block = (key, cls, content) => el('div', { class: 'ctx-block ' + cls }, el('h4', {}, t(key)), content);

const dl = (pairs) => el('dl', { class: 'kv' },
  pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v instanceof Node ? v : fmtValue(v))]));

function list(items, format) {
  const rows = Array.isArray(items) ? items.filter(Boolean) : [];
  if (!rows.length) return el('p', { class: 'none' }, t('none'));
  return el('ul', { class: 'ctx-list' }, rows.map((x) => el('li', {}, format(x))));
}

function eventText(ev) {
  const note = ev.detail && typeof ev.detail === 'object' ? ev.detail.note : null;
  return [fmtWhen(ev.at), ev.state, ev.queue ? queueLabel(ev.queue) : null, ev.agent_id].filter(Boolean).join(' · ') +
    (note ? ' — ' + note : '');
}

/** conv.detail is GET /api/handoffs/{id}: the handoff, its envelope from the bot, and its events. */
export function renderContext(conv) {
  if (!conv.detail) { nodes.contextBody.replaceChildren(el('p', { class: 'loading' }, t('loadingConv'))); return; }
  const h = conv.detail.handoff || conv.summary || {};
  const env = conv.detail.envelope && typeof conv.detail.envelope === 'object' ? conv.detail.envelope : {};
  const ec = env.customer || {};
  const hc = h.customer || {};
  const v = first(hc.verified, ec.verified) ? 'verified' : 'unverified';
  const slots = env.slots && typeof env.slots === 'object' ? Object.entries(env.slots) : [];
  nodes.contextBody.replaceChildren(
    block('customerH', 'ctx-customer', dl([[t('id'), first(hc.id, ec.id)],
      [t('name'), first(hc.name, ec.name) || t('anonymous')], [t('phone'), ec.phone],
      [t('identity'), el('span', { class: 'badge badge-' + v }, t(v))]])),
    block('handoffH', 'ctx-handoff', dl([[t('reason'), tm('reasons', first(h.reason, env.reason))],
      [t('queue'), queueLabel(first(h.queue, env.queue))], [t('priority'), first(h.priority, env.priority)],
      [t('channel'), tm('channels', first(h.channel, env.channel))], [t('language'), first(h.language, env.language)],
      [t('topic'), topicText(h)], [t('mode'), tm('modes', first(h.mode, env.mode))]])),
    block('summary', 'ctx-summary', el('p', { class: 'summary' }, env.summary || '–')),
    block('intents', 'ctx-intents', list(env.intents, (i) => `${i.intent || '?'} — ${pct(i.confidence)}`)),
    block('slots', 'ctx-slots', slots.length ? dl(slots) : list([])),
    block('selfService', 'ctx-self-service', list(env.self_service,
      (f) => [f.flow, f.outcome, f.detail ? fmtValue(f.detail) : null].filter(Boolean).join(' · '))),
    block('previous', 'ctx-previous', list(env.previous_conversations,
      (p) => `${tm('channels', p.channel)} · ${fmtWhen(p.created_at, true)} · ${p.state || '–'}`)),
    block('history', 'ctx-history', list(conv.detail.events, eventText)));
}
