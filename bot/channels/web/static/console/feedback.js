/* Feedback to the agent: toasts, and the screen-reader announcer. */

import { errorText } from './api.js';
import { el } from './dom.js';
import { nodes } from './page.js';
import { signedIn } from './session.js';
import { t } from './texts.js';

const MAX_TOASTS = 4;
const MAX_ANNOUNCEMENTS = 5;
const TOAST_MS = 6000;
const ERROR_TOAST_MS = 10000;
const ANNOUNCEMENT_MS = 8000;

export function toast(text, kind) {
  const node = el('div', { class: 'toast' + (kind ? ' toast-' + kind : ''), role: kind === 'error' ? 'alert' : null },
    el('span', { class: 'toast-text' }, text),
    el('button', { type: 'button', class: 'toast-close', 'aria-label': t('closeToast') }, '×'));
  nodes.toasts.append(node);
  while (nodes.toasts.children.length > MAX_TOASTS) nodes.toasts.firstElementChild.remove();
  setTimeout(() => node.remove(), kind === 'error' ? ERROR_TOAST_MS : TOAST_MS);
}

export function toastError(e, prefix) {
  if (signedIn()) toast((prefix ? prefix + ' ' : '') + errorText(e), 'error');  // signed out: the form says why
}

export function clearToasts() { nodes.toasts.replaceChildren(); }

export function announce(text) {
  const p = el('p', {}, text);
  nodes.announcer.append(p);
  while (nodes.announcer.children.length > MAX_ANNOUNCEMENTS) nodes.announcer.firstElementChild.remove();
  setTimeout(() => p.remove(), ANNOUNCEMENT_MS);
}
