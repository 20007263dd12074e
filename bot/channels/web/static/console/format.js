/* How values read on screen: times, durations, percentages, customers and topics. */

import { locale, t } from './texts.js';

const pad2 = (n) => String(n).padStart(2, '0');

export const mmss = (sec) => {
  const s = Math.max(0, Math.floor(Number(sec) || 0));
  return pad2(Math.floor(s / 60)) + ':' + pad2(s % 60);
};

export const truncate = (s, n) => { s = String(s ?? ''); return s.length > n ? s.slice(0, n - 1) + '…' : s; };

/** The first value that is neither null, undefined nor empty. */
export const first = (...vals) => vals.find((v) => v !== null && v !== undefined && v !== '');

/** ISO 8601 (a time without a zone is taken as UTC) or Unix seconds / milliseconds. */
export function parseTime(v) {
  if (v === null || v === undefined || v === '') return NaN;
  if (typeof v === 'number') return v > 1e12 ? v : v * 1000;
  const s = String(v);
  return Date.parse(/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s) ? s + 'Z' : s);
}

export function fmtWhen(v, long) {
  const ms = parseTime(v);
  if (Number.isNaN(ms)) return v ? String(v) : '';
  const today = new Date(ms).toDateString() === new Date().toDateString();
  const opts = long ? { dateStyle: 'medium', timeStyle: 'short' } : today ? { hour: '2-digit', minute: '2-digit' }
    : { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' };
  return new Intl.DateTimeFormat(locale(), opts).format(ms);
}

export function pct(x) {
  const n = Number(x);
  if (x === null || x === undefined || Number.isNaN(n)) return '–';
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 }).format(n);
}

export function fmtValue(v) {
  if (v === null || v === undefined || v === '') return '–';
  if (typeof v === 'boolean') return t(v ? 'yes' : 'no');
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

export const customerName = (c) => (c && (c.name || (c.verified && c.id))) || null;
export const whoLabel = (h) => customerName(h && h.customer) || t('anonymous');
export const topicText = (h) => [...new Set([h && h.topic, h && h.intent].filter(Boolean))].join(' · ') || '–';
