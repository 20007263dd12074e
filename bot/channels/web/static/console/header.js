/* The top bar once signed in: who is signed in, their presence, and the console socket's state. */

import { api } from './api.js';
import { el } from './dom.js';
import { toastError } from './feedback.js';
import { nodes } from './page.js';
import { me, PRESENCES, signedIn } from './session.js';
import { tm } from './texts.js';

export function renderHeader() {
  const agent = me();
  nodes.agentName.textContent = agent.name || agent.id;
  nodes.agentRole.textContent = tm('role', agent.role);
  renderPresence();
  showConnection(nodes.conn.dataset.state || 'closed');
}

/** state: 'connecting' | 'open' | 'closed'. */
export function showConnection(state) {
  nodes.conn.dataset.state = state;
  nodes.conn.textContent = tm('conn', state);
}

function renderPresence() {
  const current = me().presence;
  const values = PRESENCES.includes(current) ? PRESENCES : [current || 'offline', ...PRESENCES];
  nodes.presence.replaceChildren(...values.map((p) => el('option',
    { value: p, disabled: !PRESENCES.includes(p), selected: p === current }, tm('presence', p))));
  nodes.presence.value = current;
}

export async function changePresence() {
  const presence = nodes.presence.value;
  if (!PRESENCES.includes(presence)) return;
  try {
    const r = await api('PUT', '/api/agents/me/presence', { presence });
    if (signedIn()) me().presence = (r && r.presence) || presence;
  } catch (e) { toastError(e); }
  if (signedIn()) renderPresence();
}
