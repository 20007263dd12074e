/*
 * Triage agent console: plain JavaScript, no build step, no dependencies.
 * API: docs/agent-api.md (REST under /api/, server-to-console WebSocket /agent/ws).
 * Runs under a strict CSP: no inline script or style, no eval, no innerHTML anywhere; every string
 * from the server (customer text above all) reaches the DOM through textContent or setAttribute.
 * The DOM contract the browser tests rely on is listed at the top of console.html.
 */
(function () {
  'use strict';

  const POLL_QUEUES_MS = 15000;
  const POLL_METRICS_MS = 10000;
  const METRICS_MIN_GAP_MS = 3000;      // queues_changed bursts refresh the metrics at most this often
  const TYPING_REFRESH_MS = 3000;       // "typing on" at most this often
  const TYPING_IDLE_MS = 4000;          // "typing off" after this much idle time
  const CUSTOMER_TYPING_TTL_MS = 10000; // hide a customer typing indicator whose "off" was lost
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const LANG_KEY = 'triage-console-lang';
  const PRESENCES = ['available', 'away'];
  const DISPOSITIONS = ['resolved', 'not_resolved', 'follow_up', 'wrong_queue', 'spam'];
  const SENDERS = ['user', 'bot', 'agent', 'system'];

  // UI strings live in console.html (script#console-texts, JSON): key -> [English, Italian]. "{0}" is an
  // argument; "key.one" is the form for a count of 1; "group.key" entries are read with tm(group, key).
  let TEXTS = {};

  const S = {
    lang: pickLang(), me: null, csrf: null, skewMs: 0, timers: [],
    queues: [], mine: [], fetchedAt: performance.now(), knownWaiting: null,
    queuesFlight: null, queuesPending: false,
    touched: new Map(),   // handoff id -> {at, present}: a local change newer than a fetch wins over it
    offers: new Map(),    // handoff id -> {id, until, at, refreshed}
    offerGone: new Map(), // handoff id -> when the offer was answered here
    announcedOffers: new Set(),
    convs: new Map(),     // handoff id -> {id, summary, detail, messages: Map(seq -> Message), unread, typing, draft}
    ended: new Map(),     // handoff id -> {reason, summary}: stays in "mine" until dismissed
    selected: null, sending: false, busy: false, typingFor: null, typingSentAt: 0, typingIdle: null,
    ws: null, wsTimer: null, wsAttempt: 0, wsOpened: false,
    metrics: null, metricsAt: 0, metricsBusy: false, metricsLast: 0, metricsTimer: null,
  };
  const D = {};

  // ---------- small helpers

  function pickLang() {
    let saved = null;
    try { saved = localStorage.getItem(LANG_KEY); } catch (e) { /* storage may be blocked */ }
    if (saved === 'it' || saved === 'en') return saved;
    return /^it\b/i.test(navigator.language || '') ? 'it' : 'en';
  }

  function t(key, ...args) {
    const k = args[0] === 1 && Object.hasOwn(TEXTS, key + '.one') ? key + '.one' : key;
    if (!Object.hasOwn(TEXTS, k)) return key;
    return String(TEXTS[k][S.lang === 'it' ? 1 : 0]).replace(/\{(\d)\}/g, (_, i) => String(args[i] ?? ''));
  }

  const tm = (group, key) => (Object.hasOwn(TEXTS, group + '.' + key) ? t(group + '.' + key) : String(key ?? '–'));

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
  function el(tag, attrs, ...children) { return append(setAttrs(document.createElement(tag), attrs), children); }
  function svg(tag, attrs, ...children) {
    return append(setAttrs(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs), children);
  }

  const enc = encodeURIComponent;
  const pad2 = (n) => String(n).padStart(2, '0');
  const locale = () => (S.lang === 'it' ? 'it-IT' : 'en-GB');
  const serverNow = () => Date.now() + S.skewMs;
  const truncate = (s, n) => { s = String(s ?? ''); return s.length > n ? s.slice(0, n - 1) + '…' : s; };
  const isSupervisor = () => !!(S.me && S.me.role === 'supervisor');
  const byId = (list, id) => list.find((h) => h && h.id === id);
  const first = (...vals) => vals.find((v) => v !== null && v !== undefined && v !== '');
  const mmss = (sec) => { const s = Math.max(0, Math.floor(Number(sec) || 0)); return pad2(Math.floor(s / 60)) + ':' + pad2(s % 60); };

  /** ISO 8601 (a time without a zone is taken as UTC) or Unix seconds / milliseconds. */
  function parseTime(v) {
    if (v === null || v === undefined || v === '') return NaN;
    if (typeof v === 'number') return v > 1e12 ? v : v * 1000;
    const s = String(v);
    return Date.parse(/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s) ? s + 'Z' : s);
  }

  function fmtWhen(v, long) {
    const ms = parseTime(v);
    if (Number.isNaN(ms)) return v ? String(v) : '';
    const today = new Date(ms).toDateString() === new Date().toDateString();
    const opts = long ? { dateStyle: 'medium', timeStyle: 'short' } : today ? { hour: '2-digit', minute: '2-digit' }
      : { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' };
    return new Intl.DateTimeFormat(locale(), opts).format(ms);
  }

  function pct(x) {
    const n = Number(x);
    if (x === null || x === undefined || Number.isNaN(n)) return '–';
    return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 }).format(n);
  }

  function fmtValue(v) {
    if (v === null || v === undefined || v === '') return '–';
    if (typeof v === 'boolean') return t(v ? 'yes' : 'no');
    return typeof v === 'object' ? JSON.stringify(v) : String(v);
  }

  function queueLabel(name) {
    const known = S.queues.find((q) => q.name === name) ||
      (S.transferQueues || []).find((q) => q.name === name) || {};
    const label = known.label;
    if (label && typeof label === 'object') return label[S.lang] || label.en || label.it || String(name);
    return typeof label === 'string' ? label : String(name ?? '–');
  }

  const customerName = (c) => (c && (c.name || (c.verified && c.id))) || null;
  const whoLabel = (h) => customerName(h && h.customer) || t('anonymous');
  const topicText = (h) => [...new Set([h && h.topic, h && h.intent].filter(Boolean))].join(' · ') || '–';

  // ---------- API

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  /** JSON in and out, the CSRF header on every state change, errors as ApiError. */
  async function api(method, path, body, retried) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    if (method !== 'GET' && S.csrf) headers['X-CSRF-Token'] = S.csrf;
    let res;
    try { res = await fetch(path, init); } catch (e) { throw new ApiError(0, 'network', t('networkError')); }
    const date = Date.parse(res.headers.get('Date') || '');
    if (!Number.isNaN(date)) S.skewMs = date - Date.now();  // offer countdowns use the server's clock
    let data = null;
    if (res.status !== 204) { try { data = await res.json(); } catch (e) { data = null; } }
    if (res.ok) return data;
    const code = (data && data.error) || 'http_' + res.status;
    if (res.status === 403 && code === 'csrf' && !retried && S.me) {  // the token rotated: fetch it, retry once
      S.csrf = (await api('GET', '/api/session')).csrf_token;
      return api(method, path, body, true);
    }
    if (res.status === 401 && S.me) signedOut(t('sessionExpired'));
    throw new ApiError(res.status, code, (data && data.message) || res.statusText || code);
  }

  function errorText(e) {
    if (!e || !e.status) return t(e && e.code === 'network' ? 'networkError' : 'genericError');
    const known = { 429: 'rateLimited', 403: 'forbidden', 404: 'notFound' }[e.status];
    return known ? t(known) : e.message || t('genericError');
  }

  // ---------- feedback: toasts and the screen-reader announcer

  function toast(text, kind) {
    const node = el('div', { class: 'toast' + (kind ? ' toast-' + kind : ''), role: kind === 'error' ? 'alert' : null },
      el('span', { class: 'toast-text' }, text),
      el('button', { type: 'button', class: 'toast-close', 'aria-label': t('closeToast') }, '×'));
    D.toasts.append(node);
    while (D.toasts.children.length > 4) D.toasts.firstElementChild.remove();
    setTimeout(() => node.remove(), kind === 'error' ? 10000 : 6000);
  }

  function toastError(e, prefix) {
    if (S.me) toast((prefix ? prefix + ' ' : '') + errorText(e), 'error');  // signed out: the form says why
  }

  function announce(text) {
    const p = el('p', {}, text);
    D.announcer.append(p);
    while (D.announcer.children.length > 5) D.announcer.firstElementChild.remove();
    setTimeout(() => p.remove(), 8000);
  }

  // ---------- sign-in, session, sign-out, presence

  function showSignIn(message) {
    D.boot.hidden = D.console.hidden = D.who.hidden = true;
    D.signin.hidden = false;
    showLoginError(message);
    updateTitle();
    D.loginAgent.focus();
  }

  function showLoginError(text) {
    D.loginError.textContent = text || '';
    D.loginError.hidden = !text;
  }

  async function login(body) {
    showLoginError('');
    const buttons = D.signin.querySelectorAll('button[type=submit]');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      startConsole(await api('POST', '/api/session', body));
    } catch (e) {
      showLoginError(e.status === 401 ? t('badCredentials') : errorText(e));
    } finally {
      D.loginPassword.value = D.loginToken.value = '';
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function onLoginSubmit() {
    const agentId = D.loginAgent.value.trim();
    if (!agentId || !D.loginPassword.value) showLoginError(t('missingCredentials'));
    else login({ agent_id: agentId, password: D.loginPassword.value });
  }

  function onTokenSubmit() {
    const token = D.loginToken.value.trim();
    if (!token) showLoginError(t('missingToken'));
    else login({ token });
  }

  function startConsole(session) {
    S.timers.forEach(clearInterval);
    S.me = session.agent;
    S.csrf = session.csrf_token;
    D.boot.hidden = D.signin.hidden = true;
    D.console.hidden = D.who.hidden = false;
    D.supervisor.hidden = !isSupervisor();
    D.console.classList.toggle('has-supervisor', isSupervisor());
    renderAll();
    refreshQueues();
    connectWs();
    S.timers = [setInterval(refreshQueues, POLL_QUEUES_MS), setInterval(tick, 1000)];
    if (isSupervisor()) { loadMetrics(); S.timers.push(setInterval(loadMetrics, POLL_METRICS_MS)); }
  }

  function signedOut(message) {
    const ws = S.ws;
    S.timers.forEach(clearInterval);
    [S.wsTimer, S.metricsTimer, S.typingIdle].forEach(clearTimeout);
    Object.assign(S, { me: null, csrf: null, timers: [], ws: null, wsTimer: null, wsAttempt: 0, wsOpened: false,
      metricsTimer: null, typingFor: null, typingIdle: null, queues: [], mine: [], knownWaiting: null,
      selected: null, metrics: null });
    [S.touched, S.offers, S.offerGone, S.announcedOffers, S.convs, S.ended].forEach((m) => m.clear());
    if (ws) ws.close(1000);
    D.workspace.hidden = D.supervisor.hidden = true;
    D.replyInput.value = '';
    D.toasts.replaceChildren();
    showSignIn(message);
  }

  async function signOut() {
    try { await api('DELETE', '/api/session'); } catch (e) { /* signed out here anyway */ }
    if (S.me) signedOut('');
  }

  async function changePresence() {
    const presence = D.presence.value;
    if (!PRESENCES.includes(presence)) return;
    try {
      const r = await api('PUT', '/api/agents/me/presence', { presence });
      if (S.me) S.me.presence = (r && r.presence) || presence;
    } catch (e) { toastError(e); }
    if (S.me) renderPresence();
  }

  // ---------- queues: fetch (one in flight, one pending) and reconcile

  function refreshQueues() {
    if (!S.me) return Promise.resolve();
    if (S.queuesFlight) { S.queuesPending = true; return S.queuesFlight; }
    S.queuesFlight = (async () => {
      do {
        S.queuesPending = false;
        const started = Date.now();
        try {
          const data = await api('GET', '/api/queues');
          if (S.me) applyQueues(data || {}, started);
          D.queuesError.hidden = true;
        } catch (e) {
          if (!(e instanceof ApiError)) console.error(e);  // a bug here, not the network
          if (S.me) { D.queuesError.textContent = errorText(e); D.queuesError.hidden = false; }
        }
      } while (S.queuesPending && S.me);
      S.queuesFlight = null;
    })();
    return S.queuesFlight;
  }

  const touch = (id, present) => S.touched.set(id, { at: Date.now(), present });
  const allWaiting = () => S.queues.flatMap((q) => (Array.isArray(q.waiting) ? q.waiting : []));
  const accepted = () => S.mine.filter((h) => h.state === 'accepted');

  function applyQueues(data, started) {
    S.queues = Array.isArray(data.queues) ? data.queues : [];
    // every queue may receive a transfer, not only the ones this agent serves
    S.transferQueues = Array.isArray(data.transfer_queues) ? data.transfer_queues : S.queues;
    S.fetchedAt = performance.now();
    const mine = Array.isArray(data.mine) ? data.mine.slice() : [];
    for (const [id, change] of S.touched) {   // accepted or dropped here after this fetch started
      if (change.at <= started) { S.touched.delete(id); continue; }
      const i = mine.findIndex((h) => h.id === id);
      if (!change.present && i >= 0) mine.splice(i, 1);
      if (change.present && i < 0 && byId(S.mine, id)) mine.push(byId(S.mine, id));
    }
    S.mine = mine;
    reconcileOffers(started);
    reconcileConversations();
    announceNewWaiting();
    renderQueues();
    renderOffers();
    renderMine();
    renderWorkspace();
  }

  function findSummary(id) {
    const ended = S.ended.get(id);
    const conv = S.convs.get(id);
    return byId(S.mine, id) || byId(allWaiting(), id) || (ended && ended.summary) || (conv && conv.summary) || null;
  }

  function reconcileOffers(started) {
    const live = [...S.mine, ...allWaiting()].filter((h) => h.state === 'offered' && h.offered_to === S.me.id);
    for (const [id, at] of S.offerGone) if (at <= started) S.offerGone.delete(id);
    for (const h of live) {
      if (S.offerGone.has(h.id)) continue;
      const old = S.offers.get(h.id) || {};
      const until = parseTime(h.offer_expires_at);
      S.offers.set(h.id, { id: h.id, until: Number.isNaN(until) ? old.until : until, at: Date.now(), refreshed: !!old.refreshed });
    }
    const ids = new Set(live.map((h) => h.id));
    for (const [id, o] of S.offers) if (!ids.has(id) && o.at <= started) S.offers.delete(id);
    for (const id of S.offers.keys()) {
      if (!S.announcedOffers.has(id)) { S.announcedOffers.add(id); announce(t('newOffer', whoLabel(findSummary(id)))); }
    }
  }

  function reconcileConversations() {
    const ids = new Set(accepted().map((h) => h.id));
    for (const id of S.convs.keys()) {
      if (ids.has(id) || S.ended.has(id)) continue;
      if (id === S.selected) { stopTyping(); S.selected = null; D.replyInput.value = ''; toast(t('notAssigned')); }
      S.convs.delete(id);
    }
  }

  function announceNewWaiting() {
    const waiting = allWaiting();
    const fresh = S.knownWaiting ? waiting.filter((h) => !S.knownWaiting.has(h.id)) : [];
    if (fresh.length) announce(t('newWaiting', fresh.length, queueLabel(fresh[0].queue)));
    S.knownWaiting = new Set(waiting.map((h) => h.id));
  }

  // ---------- accept, decline, select

  async function accept(id) {
    try {
      const data = await api('POST', `/api/handoffs/${enc(id)}/accept`);
      forgetOffer(id);
      const h = (data && data.handoff) || Object.assign({}, findSummary(id), { state: 'accepted' });
      S.mine = S.mine.filter((x) => x.id !== id).concat([h]);
      touch(id, true);
      selectHandoff(id);
      D.replyInput.focus();
    } catch (e) {
      if (e.status === 409) { forgetOffer(id); if (S.me) toast(t('taken'), 'error'); } else toastError(e);
    }
    refreshQueues();
  }

  async function decline(id) {
    try { await api('POST', `/api/handoffs/${enc(id)}/decline`); } catch (e) { if (e.status !== 409) toastError(e); }
    forgetOffer(id);
    refreshQueues();
  }

  function forgetOffer(id) {
    S.offers.delete(id);
    S.offerGone.set(id, Date.now());
    renderOffers();
  }

  function ensureConv(id) {
    if (!S.convs.has(id)) {
      S.convs.set(id, { id, summary: findSummary(id), detail: null, messages: new Map(), unread: 0,
        typing: false, typingTimer: null, draft: '' });
    }
    return S.convs.get(id);
  }

  function selectHandoff(id) {
    const prev = S.selected && S.selected !== id ? S.convs.get(S.selected) : null;
    if (prev) { prev.draft = D.replyInput.value; stopTyping(); }
    const conv = ensureConv(id);
    if (S.selected !== id) D.replyInput.value = conv.draft || '';
    S.selected = id;
    conv.unread = 0;
    renderMine();
    renderWorkspace(true);
    loadDetail(id);
  }

  async function loadDetail(id) {
    const conv = S.convs.get(id);
    if (!conv) return;
    try {
      const data = await api('GET', `/api/handoffs/${enc(id)}`);
      if (S.convs.get(id) !== conv || !data) return;
      conv.detail = data;
      if (data.handoff) conv.summary = data.handoff;
      for (const m of data.messages || []) if (m && !conv.messages.has(m.seq)) conv.messages.set(m.seq, m);
      if (S.selected === id) renderWorkspace(true);
    } catch (e) {
      toastError(e);
      if (S.me && (e.status === 404 || e.status === 403)) dropHandoff(id);
    }
  }

  /** The handoff leaves "mine": transferred, closed, released, dismissed or gone. */
  function dropHandoff(id) {
    if (S.typingFor === id) { clearTimeout(S.typingIdle); S.typingFor = null; }
    S.mine = S.mine.filter((h) => h.id !== id);
    touch(id, false);
    S.convs.delete(id);
    S.ended.delete(id);
    if (S.selected === id) { S.selected = null; D.replyInput.value = ''; }
    renderMine();
    renderWorkspace();
    if (D.mine.contains(document.activeElement) || document.activeElement === document.body) D.mineTitle.focus();
  }

  // ---------- the workspace: messages, typing, actions

  function addMessage(conv, m) {
    if (!m || typeof m.seq !== 'number' || conv.messages.has(m.seq)) return false;
    conv.messages.set(m.seq, m);
    if (S.selected !== conv.id) return true;
    const stick = m.sender === 'agent' || D.transcript.scrollHeight - D.transcript.scrollTop - D.transcript.clientHeight < 60;
    const next = [...D.transcript.children].find((li) => Number(li.dataset.seq) > m.seq);
    D.transcript.insertBefore(msgNode(conv, m), next || null);
    if (stick) D.transcript.scrollTop = D.transcript.scrollHeight;
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

  async function sendReply() {
    const id = S.selected;
    const raw = D.replyInput.value;
    const text = raw.trim();
    if (!id || !text || S.sending || S.ended.has(id)) return;
    S.sending = D.replySend.disabled = true;
    stopTyping();
    try {
      const data = await api('POST', `/api/handoffs/${enc(id)}/messages`, { text });
      if (S.selected === id && D.replyInput.value.startsWith(raw)) D.replyInput.value = D.replyInput.value.slice(raw.length);
      const conv = S.convs.get(id);
      if (conv && data && data.message) addMessage(conv, data.message);
    } catch (e) {
      toastError(e, t('sendFailed'));  // the text stays in the box
      if (e.status === 409 || e.status === 404) refreshQueues();
    } finally {
      S.sending = false;
      D.replySend.disabled = !!(S.selected && S.ended.has(S.selected));
    }
  }

  function onReplyKey(e) {
    if (e.key !== 'Enter' || e.shiftKey || e.altKey || e.ctrlKey || e.metaKey || e.isComposing) return;
    e.preventDefault();
    sendReply();
  }

  function noteTyping() {
    const id = S.selected;
    if (!id || S.ended.has(id)) return;
    if (!D.replyInput.value.trim() || S.typingFor !== id) stopTyping();
    if (!D.replyInput.value.trim()) return;
    if (Date.now() - S.typingSentAt >= TYPING_REFRESH_MS) {
      S.typingFor = id;
      S.typingSentAt = Date.now();
      postTyping(id, true);
    }
    clearTimeout(S.typingIdle);
    S.typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(S.typingIdle);
    const id = S.typingFor;
    Object.assign(S, { typingIdle: null, typingSentAt: 0, typingFor: null });
    if (id && !S.ended.has(id)) postTyping(id, false);
  }

  function postTyping(id, on) {
    api('POST', `/api/handoffs/${enc(id)}/typing`, { on }).catch(() => { /* cosmetic only */ });
  }

  function actionBody(kind) {
    if (kind === 'transfer') {
      if (D.transferQueue.value) return { queue: D.transferQueue.value, note: D.transferNote.value.trim() };
      toast(t('pickQueue'), 'error');
      D.transferQueue.focus();
    } else if (kind === 'close') {
      if (D.disposition.value) return { disposition: D.disposition.value };
      toast(t('pickDisposition'), 'error');
      D.disposition.focus();
    } else {
      return { note: D.releaseNote.value.trim() };
    }
    return null;
  }

  async function doAction(kind) {
    const id = S.selected;
    const body = id && !S.busy && !S.ended.has(id) ? actionBody(kind) : null;
    if (!body) return;
    S.busy = true;
    D.actions.setAttribute('aria-busy', 'true');
    try {
      stopTyping();
      await api('POST', `/api/handoffs/${enc(id)}/${kind}`, body);
      D.transferNote.value = D.releaseNote.value = D.transferQueue.value = D.disposition.value = '';
      dropHandoff(id);
      toast(t({ transfer: 'transferredOk', close: 'closedOk', release: 'releasedOk' }[kind]));
    } catch (e) {
      toastError(e);
    } finally {
      S.busy = false;
      D.actions.removeAttribute('aria-busy');
      refreshQueues();
    }
  }

  // ---------- WebSocket frames

  function onFrame(f) {
    if (f.type === 'queues_changed') { refreshQueues(); metricsSoon(); }
    else if (f.type === 'offer') onOfferFrame(f);
    else if (f.type === 'message') onMessageFrame(f);
    else if (f.type === 'typing') onTypingFrame(f);
    else if (f.type === 'handoff_ended') onEndedFrame(f);
    // other types are ignored: a newer server may send more
  }

  function onOfferFrame(f) {
    if (typeof f.handoff_id !== 'string') return;
    const until = parseTime(f.expires_at);
    S.offerGone.delete(f.handoff_id);
    S.offers.set(f.handoff_id, { id: f.handoff_id, until: Number.isNaN(until) ? undefined : until, at: Date.now(), refreshed: false });
    renderOffers();
    refreshQueues();
  }

  function onMessageFrame(f) {
    const id = f.handoff_id;
    const conv = S.convs.get(id) || (byId(accepted(), id) ? ensureConv(id) : null);
    const m = { seq: f.seq, sender: f.sender, text: f.text, at: f.at };
    if (!conv || !addMessage(conv, m) || m.sender !== 'user') return;
    conv.typing = false;
    renderTyping();
    if (S.selected !== id) { conv.unread += 1; renderMine(); }
    announce(t('newMessage', whoLabel(conv.summary || findSummary(id)), truncate(m.text, 140)));
  }

  function onTypingFrame(f) {
    const conv = S.convs.get(f.handoff_id);
    if (!conv) return;
    conv.typing = !!f.on;
    clearTimeout(conv.typingTimer);
    if (conv.typing) conv.typingTimer = setTimeout(() => { conv.typing = false; renderTyping(); }, CUSTOMER_TYPING_TTL_MS);
    renderTyping();
  }

  function onEndedFrame(f) {
    const id = f.handoff_id;
    const summary = findSummary(id);
    if (S.convs.has(id) || byId(S.mine, id)) {
      S.ended.set(id, { reason: f.reason, summary });
      if (S.typingFor === id) { clearTimeout(S.typingIdle); S.typingFor = null; }
      if (S.convs.has(id)) S.convs.get(id).typing = false;
      announce(whoLabel(summary) + ': ' + endedText(f.reason));
      renderMine();
      if (S.selected === id) renderWorkspace();
    }
    refreshQueues();
  }

  const endedText = (reason) => (Object.hasOwn(TEXTS, 'endReasons.' + reason) ? t('endReasons.' + reason) : t('endedOther'));

  // ---------- WebSocket connection: reconnect with backoff, re-fetch everything after a gap

  function connectWs() {
    clearTimeout(S.wsTimer);
    S.wsTimer = null;
    if (!S.me || S.ws) return;
    setConn('connecting');
    let ws;
    try {
      ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/agent/ws');
    } catch (e) { scheduleReconnect(); return; }
    S.ws = ws;
    ws.addEventListener('open', () => {
      if (S.ws !== ws) return;
      const again = S.wsOpened;
      Object.assign(S, { wsOpened: true, wsAttempt: 0 });
      setConn('open');
      if (again) refreshAll(); else refreshQueues();  // also covers the gap before the first open
    });
    ws.addEventListener('message', (ev) => {
      if (S.ws !== ws || typeof ev.data !== 'string') return;
      let frame = null;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame && typeof frame === 'object' && !Array.isArray(frame)) onFrame(frame);
    });
    ws.addEventListener('close', () => {
      if (S.ws !== ws) return;
      S.ws = null;
      setConn('closed');
      if (S.me) scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** S.wsAttempt);
    S.wsAttempt += 1;
    clearTimeout(S.wsTimer);
    S.wsTimer = setTimeout(reconnect, base / 2 + Math.random() * base / 2);
  }

  async function reconnect() {
    S.wsTimer = null;
    if (!S.me || S.ws) return;
    try {  // a 401 signs out instead of reconnecting for ever
      const session = await api('GET', '/api/session');
      if (session && session.csrf_token) S.csrf = session.csrf_token;
    } catch (e) { /* network down: the socket fails too and backs off */ }
    connectWs();
  }

  function refreshAll() {
    refreshQueues();
    if (S.selected) loadDetail(S.selected);
    loadMetrics();
  }

  // ---------- supervisor metrics

  function metricsSoon() {
    if (!isSupervisor() || S.metricsTimer) return;
    const wait = Math.max(0, S.metricsLast + METRICS_MIN_GAP_MS - Date.now());
    S.metricsTimer = setTimeout(() => { S.metricsTimer = null; loadMetrics(); }, wait);
  }

  async function loadMetrics() {
    if (!isSupervisor() || S.metricsBusy) return;
    S.metricsBusy = true;
    S.metricsLast = Date.now();
    try {
      const data = await api('GET', '/api/metrics?hours=24');
      if (!isSupervisor()) return;
      S.metrics = data || {};
      S.metricsAt = Date.now();
      D.metricsError.hidden = true;
      renderMetrics();
    } catch (e) {
      if (isSupervisor()) { D.metricsError.textContent = errorText(e); D.metricsError.hidden = false; }
    } finally {
      S.metricsBusy = false;
    }
  }

  // ---------- rendering: header and language

  function setConn(state) {
    D.conn.dataset.state = state;
    D.conn.textContent = tm('conn', state);
  }

  function renderPresence() {
    const current = S.me.presence;
    const values = PRESENCES.includes(current) ? PRESENCES : [current || 'offline', ...PRESENCES];
    D.presence.replaceChildren(...values.map((p) => el('option',
      { value: p, disabled: !PRESENCES.includes(p), selected: p === current }, tm('presence', p))));
    D.presence.value = current;
  }

  function updateTitle() {
    const n = S.me ? allWaiting().length : 0;
    document.title = (n ? `(${n}) ` : '') + t('appTitle');
  }

  function applyLang() {
    document.documentElement.lang = D.uiLang.value = S.lang;
    document.querySelectorAll('[data-i18n]').forEach((n) => { n.textContent = t(n.dataset.i18n); });
    document.querySelectorAll('[data-i18n-aria-label]').forEach((n) => n.setAttribute('aria-label', t(n.dataset.i18nAriaLabel)));
    D.replyInput.placeholder = t('replyPlaceholder');
    renderDispositions();
    if (S.me) renderAll(); else updateTitle();
  }

  function renderAll() {
    D.agentName.textContent = S.me.name || S.me.id;
    D.agentRole.textContent = tm('role', S.me.role);
    renderPresence();
    setConn(D.conn.dataset.state || 'closed');
    renderQueues();
    renderOffers();
    renderMine();
    renderWorkspace(true);
    if (S.metrics) renderMetrics();
  }

  // ---------- rendering: queues and offers

  /** Lists are rebuilt on every change: keep the keyboard focus on the same row's control. */
  function keepFocus(root, render, fallback) {
    const a = document.activeElement;
    const row = a && root.contains(a) ? a.closest('[data-handoff-id]') : null;
    const cls = row && a.classList[0];
    render();
    if (!row) return;
    const again = root.querySelector(`[data-handoff-id="${CSS.escape(row.dataset.handoffId)}"]`);
    const target = again && ((cls && again.querySelector('.' + CSS.escape(cls))) || again.querySelector('button'));
    (target || fallback || D.queuesTitle).focus();
  }

  function renderQueues() {
    keepFocus(D.queueList, () => D.queueList.replaceChildren(...S.queues.map(queueNode)));
    updateTitle();
    tick();
  }

  function queueNode(q) {
    const waiting = Array.isArray(q.waiting) ? q.waiting : [];
    return el('div', { class: 'queue', 'data-queue': q.name, 'data-open': String(!!q.open) },
      el('div', { class: 'queue-head' },
        el('h3', { class: 'queue-label' }, queueLabel(q.name)),
        el('span', { class: 'badge queue-state ' + (q.open ? 'is-open' : 'is-closed') }, t(q.open ? 'open' : 'closed')),
        el('span', { class: 'queue-agents' }, t('agentsAvailable', Number(q.agents_available) || 0)),
        waiting.length ? el('span', { class: 'queue-longest' }, t('longestWait') + ' ',
          el('span', { class: 'clock', 'data-base-s': Number(q.longest_wait_s) || 0 })) : null),
      waiting.length
        ? el('ul', { class: 'waiting-list', 'aria-label': t('waitingIn', queueLabel(q.name)) }, waiting.map(waitingRow))
        : el('p', { class: 'queue-empty' }, t('noneWaiting')));
  }

  function customerNode(c) {
    const name = customerName(c);
    if (!name) return el('span', { class: 'customer anonymous' }, t('anonymous'));
    const v = c.verified ? 'verified' : 'unverified';
    return el('span', { class: 'customer ' + v }, name, ' ', el('span', { class: 'badge badge-' + v }, t(v)));
  }

  function waitingRow(h) {
    const offered = h.state === 'offered';
    const toMe = offered && h.offered_to === S.me.id;
    return el('li', { class: 'waiting-row' + (offered ? ' is-offered' : ''), 'data-handoff-id': h.id,
      'data-state': h.state, 'data-priority': h.priority },
    el('span', { class: 'clock wait', 'data-base-s': Number(h.waited_s) || 0, title: t('waited') }),
    el('span', { class: 'badge priority', title: t('priority') }, 'P' + (h.priority ?? '–')),
    el('span', { class: 'badge channel', 'data-channel': h.channel }, tm('channels', h.channel)),
    el('span', { class: 'badge lang', title: t('language') }, String(h.language || '–').toUpperCase()),
    el('span', { class: 'topic' }, topicText(h)),
    customerNode(h.customer),
    h.mode === 'callback' ? el('span', { class: 'badge callback' }, t('callback')) : null,
    offered ? el('span', { class: 'badge offered' + (toMe ? ' offered-me' : '') }, t(toMe ? 'offeredToYou' : 'offered')) : null,
    el('button', { type: 'button', class: 'accept', 'aria-label': t('acceptLabel', whoLabel(h), topicText(h)) }, t('accept')));
  }

  function renderOffers() {
    keepFocus(D.offers, () => D.offers.replaceChildren(...[...S.offers.values()].map(offerNode)));
    tick();
  }

  function offerNode(o) {
    const h = findSummary(o.id) || {};
    return el('div', { class: 'offer', 'data-handoff-id': o.id, role: 'group', 'aria-label': t('offerTitle') },
      el('strong', { class: 'offer-title' }, t('offerTitle')),
      customerNode(h.customer),
      h.queue ? el('span', { class: 'offer-queue' }, queueLabel(h.queue)) : null,
      el('span', { class: 'offer-topic' }, topicText(h)),
      h.priority !== undefined ? el('span', { class: 'badge priority' }, 'P' + h.priority) : null,
      el('span', { class: 'countdown', role: 'timer', 'data-until': o.until || '' }),
      el('span', { class: 'offer-buttons' },
        el('button', { type: 'button', class: 'accept-offer primary' }, t('acceptOffer')),
        el('button', { type: 'button', class: 'decline-offer' }, t('declineOffer'))));
  }

  /** Every second: the waiting clocks and the offer countdowns. */
  function tick() {
    const elapsed = (performance.now() - S.fetchedAt) / 1000;
    D.queueList.querySelectorAll('.clock').forEach((c) => { c.textContent = mmss(Number(c.dataset.baseS) + elapsed); });
    for (const c of D.offers.querySelectorAll('.countdown')) {
      const offer = S.offers.get(c.closest('.offer').dataset.handoffId);
      const left = c.dataset.until ? Math.ceil((Number(c.dataset.until) - serverNow()) / 1000) : null;
      c.textContent = left === null ? '' : left > 0 ? t('offerExpires', left) : t('offerExpiring');
      if (left !== null && left <= 0 && offer && !offer.refreshed) { offer.refreshed = true; refreshQueues(); }
    }
  }

  // ---------- rendering: my conversations and the workspace

  function renderMine() {
    const items = accepted();
    for (const [id, e] of S.ended) if (!byId(items, id) && e.summary) items.push(e.summary);
    keepFocus(D.mineList, () => D.mineList.replaceChildren(...items.map(mineItem)), D.mineTitle);
    D.mineEmpty.hidden = items.length > 0;
  }

  function mineItem(h) {
    const conv = S.convs.get(h.id);
    const ended = S.ended.has(h.id);
    const selected = S.selected === h.id;
    return el('li', { class: 'mine-item' + (selected ? ' is-selected' : '') + (ended ? ' is-ended' : ''), 'data-handoff-id': h.id },
      el('button', { type: 'button', class: 'mine-select', 'aria-pressed': String(selected) },
        el('span', { class: 'mine-who' }, whoLabel(h)),
        el('span', { class: 'mine-meta' }, queueLabel(h.queue) + ' · ' + topicText(h)),
        conv && conv.unread ? el('span', { class: 'badge unread' }, t('unread', conv.unread)) : null,
        ended ? el('span', { class: 'badge ended-badge' }, t('endedBadge')) : null));
  }

  function renderWorkspace(full) {
    const conv = S.selected ? S.convs.get(S.selected) : null;
    D.workspace.hidden = !conv;
    if (!conv) { delete D.workspace.dataset.handoffId; return; }
    const switched = D.workspace.dataset.handoffId !== conv.id;
    D.workspace.dataset.handoffId = conv.id;
    const ended = S.ended.get(conv.id);
    D.endedNotice.hidden = !ended;
    D.endedText.textContent = ended ? endedText(ended.reason) : '';
    if (full || switched) { renderContext(conv); renderTranscript(conv); }  // not on every poll: a reader may be in it
    renderTyping();
    renderTransferOptions(conv);
    D.replyInput.disabled = !!ended;
    D.replySend.disabled = !!ended || S.sending;
    D.actions.querySelectorAll('fieldset').forEach((fs) => { fs.disabled = !!ended; });
  }

  function renderTranscript(conv) {
    const msgs = [...conv.messages.values()].sort((a, b) => a.seq - b.seq);
    D.transcript.replaceChildren(...msgs.map((m) => msgNode(conv, m)));
    D.transcript.scrollTop = D.transcript.scrollHeight;
  }

  function renderTyping() {
    const conv = S.selected ? S.convs.get(S.selected) : null;
    D.customerTyping.hidden = !(conv && conv.typing && !S.ended.has(conv.id));
  }

  function renderTransferOptions(conv) {
    const current = conv.summary && conv.summary.queue;
    const names = (S.transferQueues || S.queues).map((q) => q.name).filter((n) => n !== current);
    const key = S.lang + '|' + names.join('|');
    if (D.transferQueue.dataset.key === key) return;  // rebuilding an open <select> would close it
    const keep = D.transferQueue.value;
    D.transferQueue.dataset.key = key;
    D.transferQueue.replaceChildren(el('option', { value: '' }, t('chooseQueue')),
      ...names.map((n) => el('option', { value: n }, queueLabel(n))));
    D.transferQueue.value = names.includes(keep) ? keep : '';
  }

  function renderDispositions() {
    const keep = D.disposition.value;
    D.disposition.replaceChildren(el('option', { value: '' }, t('chooseDisposition')),
      ...DISPOSITIONS.map((d) => el('option', { value: d }, tm('dispositions', d))));
    D.disposition.value = DISPOSITIONS.includes(keep) ? keep : '';
  }

  const block = (key, cls, content) => el('div', { class: 'ctx-block ' + cls }, el('h4', {}, t(key)), content);
  const dl = (pairs) => el('dl', { class: 'kv' },
    pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v instanceof Node ? v : fmtValue(v))]));

  function list(items, format) {
    const rows = Array.isArray(items) ? items.filter(Boolean) : [];
    if (!rows.length) return el('p', { class: 'none' }, t('none'));
    return el('ul', { class: 'ctx-list' }, rows.map((x) => el('li', {}, format(x))));
  }

  function renderContext(conv) {
    if (!conv.detail) { D.contextBody.replaceChildren(el('p', { class: 'loading' }, t('loadingConv'))); return; }
    const h = conv.detail.handoff || conv.summary || {};
    const env = conv.detail.envelope && typeof conv.detail.envelope === 'object' ? conv.detail.envelope : {};
    const ec = env.customer || {};
    const hc = h.customer || {};
    const v = first(hc.verified, ec.verified) ? 'verified' : 'unverified';
    const slots = env.slots && typeof env.slots === 'object' ? Object.entries(env.slots) : [];
    D.contextBody.replaceChildren(
      block('customerH', 'ctx-customer', dl([[t('id'), first(hc.id, ec.id)],
        [t('name'), first(hc.name, ec.name) || t('anonymous')], [t('phone'), ec.phone],
        [t('identity'), el('span', { class: 'badge badge-' + v }, t(v))]])),
      block('handoffH', 'ctx-handoff', dl([[t('reason'), tm('reasons', first(h.reason, env.reason))],
        [t('queue'), queueLabel(first(h.queue, env.queue))], [t('priority'), first(h.priority, env.priority)],
        [t('channel'), tm('channels', first(h.channel, env.channel))], [t('language'), first(h.language, env.language)],
        [t('topic'), topicText(h)], [t('mode'), tm('modes', first(h.mode, env.mode))]])),
      block('summary', 'ctx-summary', el('p', { class: 'summary' }, env.summary || '–')),
      block('intents', 'ctx-intents', list(env.intents, (i) => `${i.intent || '?'} — ${pct(i.confidence)}`)),
      block('slots', 'ctx-slots', slots.length ? dl(slots) : list([])),
      block('selfService', 'ctx-self-service', list(env.self_service,
        (f) => [f.flow, f.outcome, f.detail ? fmtValue(f.detail) : null].filter(Boolean).join(' · '))),
      block('previous', 'ctx-previous', list(env.previous_conversations,
        (p) => `${tm('channels', p.channel)} · ${fmtWhen(p.created_at, true)} · ${p.state || '–'}`)),
      block('history', 'ctx-history', list(conv.detail.events, eventText)));
  }

  function eventText(ev) {
    const note = ev.detail && typeof ev.detail === 'object' ? ev.detail.note : null;
    return [fmtWhen(ev.at), ev.state, ev.queue ? queueLabel(ev.queue) : null, ev.agent_id].filter(Boolean).join(' · ') +
      (note ? ' — ' + note : '');
  }

  // ---------- rendering: supervisor

  const tile = (metric, label, value, queue) => el('div', { class: 'tile', 'data-metric': metric, 'data-queue': queue || null },
    el('span', { class: 'tile-label' }, label), el('span', { class: 'tile-value' }, value));

  function renderMetrics() {
    const m = S.metrics || {};
    const queues = Array.isArray(m.queues) ? m.queues : [];
    const agents = Array.isArray(m.agents) ? m.agents : [];
    const health = m.health || {};
    const longest = Math.max(0, ...queues.map((q) => Number(q.longest_wait_s) || 0));
    const available = agents.length ? agents.filter((a) => a.presence === 'available').length
      : Math.max(0, ...queues.map((q) => Number(q.agents_available) || 0));
    D.tiles.replaceChildren(
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
    D.agentsBody.replaceChildren(...agents.map((a) => el('tr', { 'data-agent-id': a.id },
      el('td', {}, a.name || a.id, a.name && a.id ? el('span', { class: 'agent-id' }, ` (${a.id})`) : null),
      el('td', { class: 'presence-' + (PRESENCES.includes(a.presence) ? a.presence : 'offline') }, tm('presence', a.presence)),
      el('td', {}, String(a.active ?? 0)))));
    const rows = (Array.isArray(m.handoff_rate_by_intent) ? m.handoff_rate_by_intent : []).map(rateRow)
      .sort((a, b) => b.rate - a.rate);
    renderChart(rows);
    D.rateBody.replaceChildren(...rows.map((r) => el('tr', { 'data-intent': r.intent },
      el('th', { scope: 'row' }, r.intent), el('td', {}, String(r.conversations)),
      el('td', {}, String(r.handoffs)), el('td', {}, pct(r.rate)))));
    D.metricsUpdated.textContent = t('updatedAt', fmtWhen(S.metricsAt), m.window_h ?? 24);
  }

  function rateRow(r) {
    const conversations = Number(r.conversations) || 0;
    const handoffs = Number(r.handoffs) || 0;
    const given = r.rate === null || r.rate === undefined ? NaN : Number(r.rate);
    const rate = Number.isFinite(given) ? given : conversations ? handoffs / conversations : 0;
    return { intent: String(r.intent ?? '?'), conversations, handoffs, rate: Math.min(1, Math.max(0, rate)) };
  }

  function renderChart(rows) {
    if (!rows.length) { D.chartBox.replaceChildren(el('p', { class: 'none' }, t('noData'))); return; }
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
    D.chartBox.replaceChildren(chart);
  }

  // ---------- wiring

  function cacheDom() {
    const q = (sel) => document.querySelector(sel);
    Object.assign(D, {
      boot: q('.boot'), signin: q('section.signin'), login: q('form.login'), tokenForm: q('form.login-token-form'),
      loginAgent: q('#login-agent'), loginPassword: q('#login-password'), loginToken: q('#login-token'),
      loginError: q('.login-error'), who: q('.who'), agentName: q('.agent-name'), agentRole: q('.agent-role'),
      presence: q('select.presence'), conn: q('.connection'), signOut: q('button.sign-out'), uiLang: q('select.ui-lang'),
      toasts: q('.toasts'), announcer: q('.announcer'), console: q('.console'), offers: q('.offers'),
      queuesTitle: q('#queues-title'), queueList: q('.queue-list'), queuesError: q('.queues-error'),
      mine: q('section.mine'), mineTitle: q('#mine-title'), mineList: q('.mine-list'), mineEmpty: q('.mine-empty'),
      workspace: q('.workspace'), endedNotice: q('.ended-notice'), endedText: q('.ended-text'),
      dismissEnded: q('button.dismiss-ended'), contextBody: q('.context-body'), transcript: q('.transcript'),
      customerTyping: q('.customer-typing'), composer: q('form.composer'), replyInput: q('textarea.reply-input'),
      replySend: q('button.reply-send'), actions: q('.actions'), transferForm: q('form.transfer-form'),
      transferQueue: q('select.transfer-queue'), transferNote: q('input.transfer-note'), closeForm: q('form.close-form'),
      disposition: q('select.disposition'), releaseForm: q('form.release-form'), releaseNote: q('input.release-note'),
      supervisor: q('section.supervisor'), tiles: q('.tiles'), agentsBody: q('.agents-table tbody'),
      chartBox: q('.chart-box'), rateBody: q('.handoff-rate-table tbody'), metricsUpdated: q('.metrics-updated'),
      metricsError: q('.metrics-error'),
    });
  }

  /** Delegated clicks: the button matching selector and the handoff id of its row. */
  function hit(e, selector) {
    const btn = e.target.closest(selector);
    const row = btn && btn.closest('[data-handoff-id]');
    return row ? { btn, id: row.dataset.handoffId } : null;
  }

  /** aria-disabled rather than disabled while a request runs: a disabled button would lose the focus. */
  function pending(btn, fn) {
    if (btn.getAttribute('aria-disabled') === 'true') return;
    btn.setAttribute('aria-disabled', 'true');
    fn().finally(() => btn.removeAttribute('aria-disabled'));
  }

  function bindEvents() {
    const submit = (form, fn) => form.addEventListener('submit', (e) => { e.preventDefault(); fn(); });
    submit(D.login, onLoginSubmit);
    submit(D.tokenForm, onTokenSubmit);
    D.signOut.addEventListener('click', signOut);
    D.presence.addEventListener('change', changePresence);
    D.uiLang.addEventListener('change', () => {
      S.lang = D.uiLang.value === 'it' ? 'it' : 'en';
      try { localStorage.setItem(LANG_KEY, S.lang); } catch (e) { /* not kept */ }
      applyLang();
    });
    D.toasts.addEventListener('click', (e) => { const b = e.target.closest('.toast-close'); if (b) b.closest('.toast').remove(); });
    D.queueList.addEventListener('click', (e) => { const h = hit(e, 'button.accept'); if (h) pending(h.btn, () => accept(h.id)); });
    D.offers.addEventListener('click', (e) => {
      const yes = hit(e, 'button.accept-offer');
      const no = hit(e, 'button.decline-offer');
      if (yes) pending(yes.btn, () => accept(yes.id)); else if (no) pending(no.btn, () => decline(no.id));
    });
    D.mineList.addEventListener('click', (e) => { const h = hit(e, 'button.mine-select'); if (h) selectHandoff(h.id); });
    D.dismissEnded.addEventListener('click', () => { if (S.selected) dropHandoff(S.selected); });
    submit(D.composer, sendReply);
    D.replyInput.addEventListener('keydown', onReplyKey);
    D.replyInput.addEventListener('input', noteTyping);
    submit(D.transferForm, () => doAction('transfer'));
    submit(D.closeForm, () => doAction('close'));
    submit(D.releaseForm, () => doAction('release'));
    window.addEventListener('online', () => { if (S.me && !S.ws) connectWs(); });
    document.addEventListener('visibilitychange', () => { if (!document.hidden && S.me) refreshQueues(); });
  }

  async function boot() {
    try { TEXTS = JSON.parse(document.getElementById('console-texts').textContent); } catch (e) { console.error(e); }
    cacheDom();
    bindEvents();
    applyLang();
    let session;
    try {
      session = await api('GET', '/api/session');
    } catch (e) {
      showSignIn(e.status === 401 ? '' : errorText(e));
      return;
    }
    startConsole(session);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot); else boot();
})();
