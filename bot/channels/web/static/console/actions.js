/* The actions on the selected conversation: transfer to a queue, close with an outcome, hand back to the bot. */

import { api, handoffPath } from './api.js';
import { dropHandoff, isEnded, selectedId } from './conversation.js';
import { el } from './dom.js';
import { toast, toastError } from './feedback.js';
import { nodes } from './page.js';
import { refreshQueues } from './queues.js';
import { t, tm } from './texts.js';
import { stopTyping } from './typing.js';

const DISPOSITIONS = ['resolved', 'not_resolved', 'follow_up', 'wrong_queue', 'spam'];
const DONE_TEXT = { transfer: 'transferredOk', close: 'closedOk', release: 'releasedOk' };

let busy = false;

export function renderDispositions() {
  const keep = nodes.disposition.value;
  nodes.disposition.replaceChildren(el('option', { value: '' }, t('chooseDisposition')),
    ...DISPOSITIONS.map((d) => el('option', { value: d }, tm('dispositions', d))));
  nodes.disposition.value = DISPOSITIONS.includes(keep) ? keep : '';
}

/** The request body from the form of kind, or null (and a hint) when a required choice is missing. */
function actionBody(kind) {
  if (kind === 'transfer') {
    if (nodes.transferQueue.value) return { queue: nodes.transferQueue.value, note: nodes.transferNote.value.trim() };
    toast(t('pickQueue'), 'error');
    nodes.transferQueue.focus();
  } else if (kind === 'close') {
    if (nodes.disposition.value) return { disposition: nodes.disposition.value };
    toast(t('pickDisposition'), 'error');
    nodes.disposition.focus();
  } else {
    return { note: nodes.releaseNote.value.trim() };
  }
  return null;
}

/** kind: 'transfer' | 'close' | 'release', on the selected conversation. */
export async function doAction(kind) {
  const id = selectedId();
  const body = id && !busy && !isEnded(id) ? actionBody(kind) : null;
  if (!body) return;
  busy = true;
  nodes.actions.setAttribute('aria-busy', 'true');
  try {
    stopTyping();
    await api('POST', handoffPath(id, kind), body);
    nodes.transferNote.value = nodes.releaseNote.value = nodes.transferQueue.value = nodes.disposition.value = '';
    dropHandoff(id);
    toast(t(DONE_TEXT[kind]));
  } catch (e) {
    toastError(e);
  } finally {
    busy = false;
    nodes.actions.removeAttribute('aria-busy');
    refreshQueues();
  }
}
