/*
 * The conversations this agent holds ("my conversations"): which one is selected, its workspace
 * (context card, transcript, the transfer queues), and the live chat: replies out; customer
 * messages, typing and the end of a conversation in from the console socket.
 */

import { api, handoffPath } from './api.js';
import { renderContext } from './context-card.js';
import { el, keepFocus } from './dom.js';
import { announce, toast, toastError } from './feedback.js';
import { fmtWhen, topicText, truncate, whoLabel } from './format.js';
import { nodes } from './page.js';
import { accepted, allWaiting, assigned, byId, dropMine, queueLabel, refreshQueues, transferTargets } from './queues.js';
import { signedIn } from './session.js';
import { currentLang, hasText, t, tm } from './texts.js';
import { forgetTyping, noteTyping, stopTyping } from './typing.js';

const CUSTOMER_TYPING_TTL_MS = 10000;  // hide a customer typing indicator whose "off" was lost
const STICK_TO_BOTTOM_PX = 60;         // a reader this close to the end follows new messages
const SENDERS = ['user', 'bot', 'agent', 'system'];

const convs = new Map();  // handoff id -> {id, summary, detail, messages: Map(seq -> Message), unread, typing, typingTimer, draft}
const ended = new Map();  // handoff id -> {reason, summary}: stays in "mine" until dismissed
let selected = null;
let sending = false;

export const selectedId = () => selected;
export const isEnded = (id) => ended.has(id);

/** The latest summary of a handoff this console knows of, from wherever it is now. */
export function findSummary(id) {
  const gone = ended.get(id);
  const conv = convs.get(id);
  return byId(assigned(), id) || byId(allWaiting(), id) || (gone && gone.summary) || (conv && conv.summary) || null;
}

/** After a queues fetch: a conversation no longer accepted by this agent (and not ended) is dropped. */
export function reconcileConversations() {
  const ids = new Set(accepted().map((h) => h.id));
  for (const id of convs.keys()) {
    if (ids.has(id) || ended.has(id)) continue;
    if (id === selected) { stopTyping(); selected = null; nodes.replyInput.value = ''; toast(t('notAssigned')); }
    convs.delete(id);
  }
}

export function resetConversations() {
  selected = null;
  convs.clear();
  ended.clear();
}

function ensureConv(id) {
  if (!convs.has(id)) {
    convs.set(id, { id, summary: findSummary(id), detail: null, messages: new Map(), unread: 0,
      typing: false, typingTimer: null, draft: '' });
  }
  return convs.get(id);
}

export function selectHandoff(id) {
  const prev = selected && selected !== id ? convs.get(selected) : null;
  if (prev) { prev.draft = nodes.replyInput.value; stopTyping(); }
  const conv = ensureConv(id);
  if (selected !== id) nodes.replyInput.value = conv.draft || '';
  selected = id;
  conv.unread = 0;
  renderMine();
  renderWorkspace(true);
  loadDetail(id);
}

async function loadDetail(id) {
  const conv = convs.get(id);
  if (!conv) return;
  try {
    const data = await api('GET', handoffPath(id));
    if (convs.get(id) !== conv || !data) return;
    conv.detail = data;
    if (data.handoff) conv.summary = data.handoff;
    for (const m of data.messages || []) if (m && !conv.messages.has(m.seq)) conv.messages.set(m.seq, m);
    if (selected === id) renderWorkspace(true);
  } catch (e) {
    toastError(e);
    if (signedIn() && (e.status === 404 || e.status === 403)) dropHandoff(id);
  }
}

/** After a gap on the socket: the selected conversation's messages may have been missed. */
export function reloadSelected() { if (selected) loadDetail(selected); }

/** The handoff leaves "mine": transferred, closed, released, dismissed or gone. */
export function dropHandoff(id) {
  forgetTyping(id);
  dropMine(id);
  convs.delete(id);
  ended.delete(id);
  if (selected === id) { selected = null; nodes.replyInput.value = ''; }
  renderMine();
  renderWorkspace();
  if (nodes.mine.contains(document.activeElement) || document.activeElement === document.body) nodes.mineTitle.focus();
}

export function dismissSelected() { if (selected) dropHandoff(selected); }

// ---------- the live chat

function addMessage(conv, m) {
  if (!m || typeof m.seq !== 'number' || conv.messages.has(m.seq)) return false;
  conv.messages.set(m.seq, m);
  if (selected !== conv.id) return true;
  const list = nodes.transcript;
  const stick = m.sender === 'agent' || list.scrollHeight - list.scrollTop - list.clientHeight < STICK_TO_BOTTOM_PX;
  const next = [...list.children].find((li) => Number(li.dataset.seq) > m.seq);
  list.insertBefore(msgNode(conv, m), next || null);
  if (stick) list.scrollTop = list.scrollHeight;
  return true;
}

function msgNode(conv, m) {
  const sender = SENDERS.includes(m.sender) ? m.sender : 'system';
  return el('li', { class: 'msg msg-' + sender, 'data-sender': m.sender, 'data-seq': m.seq },
    el('div', { class: 'msg-meta' },
      el('span', { class: 'msg-sender' }, sender === 'user' ? whoLabel(conv.summary) : tm('senders', sender)), ' ',
      el('time', { class: 'msg-time', datetime: m.at || null }, fmtWhen(m.at))),
    el('p', { class: 'msg-text' }, m.text ?? ''));
}

export async function sendReply() {
  const id = selected;
  const raw = nodes.replyInput.value;
  const text = raw.trim();
  if (!id || !text || sending || ended.has(id)) return;
  sending = nodes.replySend.disabled = true;
  stopTyping();
  try {
    const data = await api('POST', handoffPath(id, 'messages'), { text });
    if (selected === id && nodes.replyInput.value.startsWith(raw)) nodes.replyInput.value = nodes.replyInput.value.slice(raw.length);
    const conv = convs.get(id);
    if (conv && data && data.message) addMessage(conv, data.message);
  } catch (e) {
    toastError(e, t('sendFailed'));  // the text stays in the box
    if (e.status === 409 || e.status === 404) refreshQueues();
  } finally {
    sending = false;
    nodes.replySend.disabled = !!(selected && ended.has(selected));
  }
}

/** Enter sends; Shift+Enter (or an IME composing) adds a new line. */
export function onReplyKey(e) {
  if (e.key !== 'Enter' || e.shiftKey || e.altKey || e.ctrlKey || e.metaKey || e.isComposing) return;
  e.preventDefault();
  sendReply();
}

export function onReplyInput() {
  const id = selected;
  if (!id || ended.has(id)) return;
  noteTyping(id, !!nodes.replyInput.value.trim());
}

export function onMessageFrame(f) {
  const id = f.handoff_id;
  const conv = convs.get(id) || (byId(accepted(), id) ? ensureConv(id) : null);
  const m = { seq: f.seq, sender: f.sender, text: f.text, at: f.at };
  if (!conv || !addMessage(conv, m) || m.sender !== 'user') return;
  conv.typing = false;
  renderTyping();
  if (selected !== id) { conv.unread += 1; renderMine(); }
  announce(t('newMessage', whoLabel(conv.summary || findSummary(id)), truncate(m.text, 140)));
}

export function onTypingFrame(f) {
  const conv = convs.get(f.handoff_id);
  if (!conv) return;
  conv.typing = !!f.on;
  clearTimeout(conv.typingTimer);
  if (conv.typing) conv.typingTimer = setTimeout(() => { conv.typing = false; renderTyping(); }, CUSTOMER_TYPING_TTL_MS);
  renderTyping();
}

export function onEndedFrame(f) {
  const id = f.handoff_id;
  const summary = findSummary(id);
  if (convs.has(id) || byId(assigned(), id)) {
    ended.set(id, { reason: f.reason, summary });
    forgetTyping(id);
    if (convs.has(id)) convs.get(id).typing = false;
    announce(whoLabel(summary) + ': ' + endedText(f.reason));
    renderMine();
    if (selected === id) renderWorkspace();
  }
  refreshQueues();
}

const endedText = (reason) => (hasText('endReasons.' + reason) ? t('endReasons.' + reason) : t('endedOther'));

// ---------- rendering: my conversations and the workspace

export function renderMine() {
  const items = accepted();
  for (const [id, e] of ended) if (!byId(items, id) && e.summary) items.push(e.summary);
  keepFocus(nodes.mineList, () => nodes.mineList.replaceChildren(...items.map(mineItem)), nodes.mineTitle);
  nodes.mineEmpty.hidden = items.length > 0;
}

function mineItem(h) {
  const conv = convs.get(h.id);
  const isOver = ended.has(h.id);
  const isSelected = selected === h.id;
  return el('li', { class: 'mine-item' + (isSelected ? ' is-selected' : '') + (isOver ? ' is-ended' : ''), 'data-handoff-id': h.id },
    el('button', { type: 'button', class: 'mine-select', 'aria-pressed': String(isSelected) },
      el('span', { class: 'mine-who' }, whoLabel(h)),
      el('span', { class: 'mine-meta' }, queueLabel(h.queue) + ' · ' + topicText(h)),
      conv && conv.unread ? el('span', { class: 'badge unread' }, t('unread', conv.unread)) : null,
      isOver ? el('span', { class: 'badge ended-badge' }, t('endedBadge')) : null));
}

/** full: rebuild the context card and transcript too (not on every poll: a reader may be in them). */
export function renderWorkspace(full) {
  const conv = selected ? convs.get(selected) : null;
  nodes.workspace.hidden = !conv;
  if (!conv) { delete nodes.workspace.dataset.handoffId; return; }
  const switched = nodes.workspace.dataset.handoffId !== conv.id;
  nodes.workspace.dataset.handoffId = conv.id;
  const end = ended.get(conv.id);
  nodes.endedNotice.hidden = !end;
  nodes.endedText.textContent = end ? endedText(end.reason) : '';
  if (full || switched) { renderContext(conv); renderTranscript(conv); }
  renderTyping();
  renderTransferOptions(conv);
  nodes.replyInput.disabled = !!end;
  nodes.replySend.disabled = !!end || sending;
  nodes.actions.querySelectorAll('fieldset').forEach((fs) => { fs.disabled = !!end; });
}

function renderTranscript(conv) {
  const msgs = [...conv.messages.values()].sort((a, b) => a.seq - b.seq);
  nodes.transcript.replaceChildren(...msgs.map((m) => msgNode(conv, m)));
  nodes.transcript.scrollTop = nodes.transcript.scrollHeight;
}

function renderTyping() {
  const conv = selected ? convs.get(selected) : null;
  nodes.customerTyping.hidden = !(conv && conv.typing && !ended.has(conv.id));
}

function renderTransferOptions(conv) {
  const current = conv.summary && conv.summary.queue;
  const names = transferTargets().map((q) => q.name).filter((n) => n !== current);
  const key = currentLang() + '|' + names.join('|');
  if (nodes.transferQueue.dataset.key === key) return;  // rebuilding an open <select> would close it
  const keep = nodes.transferQueue.value;
  nodes.transferQueue.dataset.key = key;
  nodes.transferQueue.replaceChildren(el('option', { value: '' }, t('chooseQueue')),
    ...names.map((n) => el('option', { value: n }, queueLabel(n))));
  nodes.transferQueue.value = names.includes(keep) ? keep : '';
}
