/* The supervisor's view: figures over the last METRICS_WINDOW_H hours, agents, and the handoff-rate chart. */

import { api, errorText } from './api.js';
import { el, svg } from './dom.js';
import { fmtWhen, mmss, pct, truncate } from './format.js';
import { nodes } from './page.js';
import { queueLabel } from './queues.js';
import { isSupervisor, PRESENCES } from './session.js';
import { t, tm } from './texts.js';

const METRICS_WINDOW_H = 24;
const METRICS_MIN_GAP_MS = 3000;  // queues_changed bursts refresh the metrics at most this often

let metrics = null;
let loadedAt = 0;
let loading = false;
let lastLoad = 0;
let soon = null;

/** Something changed: load again, but not more often than METRICS_MIN_GAP_MS. */
export function metricsSoon() {
  if (!isSupervisor() || soon) return;
  const wait = Math.max(0, lastLoad + METRICS_MIN_GAP_MS - Date.now());
  soon = setTimeout(() => { soon = null; loadMetrics(); }, wait);
}

export async function loadMetrics() {
  if (!isSupervisor() || loading) return;
  loading = true;
  lastLoad = Date.now();
  try {
    const data = await api('GET', `/api/metrics?hours=${METRICS_WINDOW_H}`);
    if (!isSupervisor()) return;
    metrics = data || {};
    loadedAt = Date.now();
    nodes.metricsError.hidden = true;
    renderMetrics();
  } catch (e) {
    if (isSupervisor()) { nodes.metricsError.textContent = errorText(e); nodes.metricsError.hidden = false; }
  } finally {
    loading = false;
  }
}

export function resetMetrics() {
  clearTimeout(soon);
  soon = null;
  metrics = null;
}

/** Render again (another language) what was loaded, if anything was. */
export function rerenderMetrics() { if (metrics) renderMetrics(); }

const tile = (metric, label, value, queue) => el('div', { class: 'tile', 'data-metric': metric, 'data-queue': queue || null },
  el('span', { class: 'tile-label' }, label), el('span', { class: 'tile-value' }, value));

function renderMetrics() {
  const m = metrics || {};
  const queues = Array.isArray(m.queues) ? m.queues : [];
  const agents = Array.isArray(m.agents) ? m.agents : [];
  const health = m.health || {};
  const longest = Math.max(0, ...queues.map((q) => Number(q.longest_wait_s) || 0));
  const available = agents.length ? agents.filter((a) => a.presence === 'available').length
    : Math.max(0, ...queues.map((q) => Number(q.agents_available) || 0));
  nodes.tiles.replaceChildren(
    ...queues.map((q) => tile('waiting', t('waitingIn', queueLabel(q.name)), String(q.waiting ?? 0), q.name)),
    tile('longest_wait', t('longestWaitTile'), mmss(longest)),
    tile('agents_available', t('agentsAvailableTile'), String(available)),
    tile('containment_rate', t('containment'), pct(m.containment_rate)),
    tile('abandonment_rate', t('abandonment'), pct(m.abandonment_rate)),
    tile('conversations', t('conversations'), String(m.conversations ?? '–')),
    tile('handoffs', t('handoffs'), String(m.handoffs ?? '–')),
    el('div', { class: 'tile tile-health', 'data-metric': 'health' }, el('span', { class: 'tile-label' }, t('health')),
      el('ul', { class: 'health-list' }, ['rasa', 'database'].map((k) => el('li',
        { class: 'health-item ' + (health[k] ? 'health-ok' : 'health-bad'), 'data-service': k },
        `${t(k)}: ${t(health[k] ? 'ok' : 'down')}`)))));
  nodes.agentsBody.replaceChildren(...agents.map((a) => el('tr', { 'data-agent-id': a.id },
    el('td', {}, a.name || a.id, a.name && a.id ? el('span', { class: 'agent-id' }, ` (${a.id})`) : null),
    el('td', { class: 'presence-' + (PRESENCES.includes(a.presence) ? a.presence : 'offline') }, tm('presence', a.presence)),
    el('td', {}, String(a.active ?? 0)))));
  const rows = (Array.isArray(m.handoff_rate_by_intent) ? m.handoff_rate_by_intent : []).map(rateRow)
    .sort((a, b) => b.rate - a.rate);
  renderChart(rows);
  nodes.rateBody.replaceChildren(...rows.map((r) => el('tr', { 'data-intent': r.intent },
    el('th', { scope: 'row' }, r.intent), el('td', {}, String(r.conversations)),
    el('td', {}, String(r.handoffs)), el('td', {}, pct(r.rate)))));
  nodes.metricsUpdated.textContent = t('updatedAt', fmtWhen(loadedAt), m.window_h ?? METRICS_WINDOW_H);
}

function rateRow(r) {
  const conversations = Number(r.conversations) || 0;
  const handoffs = Number(r.handoffs) || 0;
  const given = r.rate === null || r.rate === undefined ? NaN : Number(r.rate);
  const rate = Number.isFinite(given) ? given : conversations ? handoffs / conversations : 0;
  return { intent: String(r.intent ?? '?'), conversations, handoffs, rate: Math.min(1, Math.max(0, rate)) };
}

/** A horizontal bar chart in SVG user units (the viewBox scales it to the box). */
function renderChart(rows) {
  if (!rows.length) { nodes.chartBox.replaceChildren(el('p', { class: 'none' }, t('noData'))); return; }
  const W = 660, LABEL = 200, VALUE = 64, BAR = 22, GAP = 10, PAD = 6;
  const H = PAD * 2 + rows.length * (BAR + GAP) - GAP;
  const summary = t('chartTitle') + ': ' + rows.map((r) => `${r.intent} ${pct(r.rate)}`).join(', ');
  const chart = svg('svg', { class: 'chart-handoff-rate', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary,
    preserveAspectRatio: 'xMinYMin meet' }, svg('title', {}, t('chartTitle')));
  rows.forEach((r, i) => {
    const y = PAD + i * (BAR + GAP);
    const width = r.rate > 0 ? Math.max(2, r.rate * (W - LABEL - VALUE)) : 0;
    chart.append(svg('g', { class: 'chart-row', 'data-intent': r.intent },
      svg('text', { class: 'chart-label', x: LABEL - 8, y: y + BAR / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle' },
        truncate(r.intent, 24)),
      svg('rect', { class: 'chart-bar', x: LABEL, y, width: width.toFixed(1), height: BAR, rx: 3,
        'data-intent': r.intent, 'data-rate': r.rate },
      svg('title', {}, `${r.intent}: ${pct(r.rate)} (${r.handoffs}/${r.conversations})`)),
      svg('text', { class: 'chart-value', x: (LABEL + width + 6).toFixed(1), y: y + BAR / 2, 'dominant-baseline': 'middle' },
        pct(r.rate))));
  });
  nodes.chartBox.replaceChildren(chart);
}
