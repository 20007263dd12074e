/*
 * The agent's typing signal to the customer: "on" at most every TYPING_REFRESH_MS while a reply is
 * being written, "off" after TYPING_IDLE_MS without typing or when stopped (sent, switched, acted).
 */

import { api, handoffPath } from './api.js';

const TYPING_REFRESH_MS = 3000;
const TYPING_IDLE_MS = 4000;

let typingFor = null;  // the handoff last told "on"
let sentAt = 0;
let idle = null;

/** The reply box for handoff id changed; hasText says whether it holds more than blanks. */
export function noteTyping(id, hasText) {
  if (!hasText || typingFor !== id) stopTyping();
  if (!hasText) return;
  if (Date.now() - sentAt >= TYPING_REFRESH_MS) {
    typingFor = id;
    sentAt = Date.now();
    post(id, true);
  }
  clearTimeout(idle);
  idle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

export function stopTyping() {
  clearTimeout(idle);
  const id = typingFor;
  idle = null;
  sentAt = 0;
  typingFor = null;
  if (id) post(id, false);
}

/** The conversation ended or left this agent: nobody is left to tell "off". */
export function forgetTyping(id) {
  if (typingFor !== id) return;
  clearTimeout(idle);
  typingFor = null;
}

export function resetTyping() {
  clearTimeout(idle);
  idle = null;
  typingFor = null;
}

function post(id, on) {
  api('POST', handoffPath(id, 'typing'), { on }).catch(() => { /* cosmetic only */ });
}
