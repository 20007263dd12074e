/* The signed-in agent and the session's CSRF token; nobody is signed in until begin(). */

export const PRESENCES = ['available', 'away'];

let agent = null;
let csrf = null;

export const me = () => agent;
export const signedIn = () => !!agent;
export const isSupervisor = () => !!(agent && agent.role === 'supervisor');
export const csrfToken = () => csrf;

/** A session answer from the API: {agent, csrf_token}. */
export function begin(session) {
  agent = session.agent;
  csrf = session.csrf_token;
}

export function end() {
  agent = null;
  csrf = null;
}

export function renewCsrf(token) { csrf = token; }
