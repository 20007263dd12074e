/*
 * Small rendering helpers. Every string from the server (customer text above all) reaches the DOM
 * as a text node or an attribute value: nothing here, nor anywhere in the console, uses innerHTML.
 */

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? '' : String(v));
  }
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** DOM builder: strings always become text nodes, never markup. */
export function el(tag, attrs, ...children) { return append(setAttrs(document.createElement(tag), attrs), children); }

export function svg(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs), children);
}

/** Lists are rebuilt on every change: keep the keyboard focus on the same row's control. */
export function keepFocus(root, render, fallback) {
  const a = document.activeElement;
  const row = a && root.contains(a) ? a.closest('[data-handoff-id]') : null;
  const cls = row && a.classList[0];
  render();
  if (!row) return;
  const again = root.querySelector(`[data-handoff-id="${CSS.escape(row.dataset.handoffId)}"]`);
  const target = again && ((cls && again.querySelector('.' + CSS.escape(cls))) || again.querySelector('button'));
  (target || fallback).focus();
}

/** Delegated clicks: the button matching selector and the handoff id of its row. */
export function hit(e, selector) {
  const btn = e.target.closest(selector);
  const row = btn && btn.closest('[data-handoff-id]');
  return row ? { btn, id: row.dataset.handoffId } : null;
}

/** aria-disabled rather than disabled while a request runs: a disabled button would lose the focus. */
export function pending(btn, fn) {
  if (btn.getAttribute('aria-disabled') === 'true') return;
  btn.setAttribute('aria-disabled', 'true');
  fn().finally(() => btn.removeAttribute('aria-disabled'));
}
