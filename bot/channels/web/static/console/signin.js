/* The sign-in form: agent ID and password, or a personal token. */

import { api, errorText } from './api.js';
import { nodes } from './page.js';
import { updateTitle } from './queues.js';
import { t } from './texts.js';

let signedInWith = () => {};

/** fn(session) runs with the API's answer once the agent is signed in. */
export function onSignedIn(fn) { signedInWith = fn; }

export function showSignIn(message) {
  nodes.boot.hidden = nodes.console.hidden = nodes.who.hidden = true;
  nodes.signin.hidden = false;
  showLoginError(message);
  updateTitle();
  nodes.loginAgent.focus();
}

function showLoginError(text) {
  nodes.loginError.textContent = text || '';
  nodes.loginError.hidden = !text;
}

async function login(body) {
  showLoginError('');
  const buttons = nodes.signin.querySelectorAll('button[type=submit]');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    signedInWith(await api('POST', '/api/session', body));
  } catch (e) {
    showLoginError(e.status === 401 ? t('badCredentials') : errorText(e));
  } finally {
    nodes.loginPassword.value = nodes.loginToken.value = '';
    buttons.forEach((b) => { b.disabled = false; });
  }
}

export function submitPassword() {
  const agentId = nodes.loginAgent.value.trim();
  if (!agentId || !nodes.loginPassword.value) showLoginError(t('missingCredentials'));
  else login({ agent_id: agentId, password: nodes.loginPassword.value });
}

export function submitToken() {
  const token = nodes.loginToken.value.trim();
  if (!token) showLoginError(t('missingToken'));
  else login({ token });
}
