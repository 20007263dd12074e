/*
 * Triage chat widget: plain JavaScript, no build step, no dependencies.
 * Protocol: docs/chat-protocol.md (WebSocket /chat/ws, version 1).
 *
 * Embedding (one tag, nothing else):
 *   <script src="https://gateway.example/chat/widget.js" data-lang="it" data-title="Assistenza"
 *           data-color="#0b5cad" data-text-color="#ffffff" data-open="false"
 *           data-identity="<optional signed JWT>" defer></script>
 * widget.css is loaded from the script's directory; the socket is ws(s)://<script host>/chat/ws.
 * A host page with a Content-Security-Policy must allow the gateway origin in script-src,
 * style-src and connect-src. This file never uses innerHTML, eval or inline style attributes.
 *
 * DOM contract (the browser tests rely on these names):
 *   div#triage-chat                         root, appended to <body> (hidden until widget.css loads)
 *     button.triage-launcher                aria-expanded, aria-controls="triage-chat-panel";
 *                                           class triage-unread while new messages are unseen
 *     div.triage-panel#triage-chat-panel    role="dialog", aria-label = title, [hidden] when closed
 *       .triage-title  button.triage-leave  button.triage-close
 *       div.triage-confirm                  inline "end chat?" confirmation, [hidden] unless asked:
 *                                           button.triage-confirm-yes, button.triage-confirm-no
 *       div.triage-messages                 role="log", aria-live="polite"; children:
 *         div.triage-msg[data-sender=user|bot|agent|system][data-seq]
 *             pending customer message: [data-client-id].triage-pending (no data-seq until acked);
 *             one refused by the server (too_long, empty...): .triage-failed
 *         div.triage-notice                 agent joined/left, reconnecting, ended, errors
 *                                           (errors also have .triage-notice-error)
 *         div.triage-quick-replies > button one per quick reply, right after the latest bot
 *                                           message with buttons, until answered
 *         div.triage-rating > button[data-score="1".."5"], then p.triage-rating-thanks
 *       div.triage-typing                   [hidden] when nobody is typing
 *       div.triage-queue                    role="status", [hidden] unless queued
 *       textarea.triage-input (label)  button.triage-send  button.triage-restart ([hidden] until closed)
 *     div.triage-live.triage-visually-hidden   aria-live="assertive" announcements
 * Global: window.TriageChat = { open(), close(), state: { conversationId, connected } } (read-only).
 */
(function () {
  'use strict';

  // document.currentScript is only set while this script runs: capture it now.
  const SCRIPT = document.currentScript || document.querySelector('script[src*="widget.js"]');
  if (!SCRIPT || !SCRIPT.src || window.TriageChat) return; // no tag found, or loaded twice

  const MAX_FRAME_BYTES = 16 * 1024;              // server limit per text frame
  const FATAL_CLOSE_CODES = [1003, 1009, 4400, 4403]; // retrying would fail the same way
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const PING_EVERY_MS = 20000;                    // no frame for a whole interval after a ping: dead
  const TYPING_IDLE_MS = 4000;

  const SCRIPT_URL = new URL(SCRIPT.src, document.baseURI);
  const ORIGIN = SCRIPT_URL.origin;
  // Resolved against the script's directory: /chat/widget.js -> /chat/ws, /chat/widget.css.
  const WS_URL = (SCRIPT_URL.protocol === 'https:' ? 'wss://' : 'ws://') + SCRIPT_URL.host +
    new URL('ws', SCRIPT_URL).pathname;
  const CSS_URL = new URL('widget.css' + SCRIPT_URL.search, SCRIPT_URL).href; // keeps a ?v= cache buster
  const RESUME_KEY = 'triage-chat:' + ORIGIN;          // localStorage: {conversation_id, token, last_seq}
  const PENDING_KEY = 'triage-chat-pending:' + ORIGIN; // sessionStorage: unacked customer messages

  const TEXTS = {
    it: {
      title: 'Assistenza', unread: 'nuovi messaggi', close: 'Riduci la chat', send: 'Invia',
      leave: 'Termina', leaveLabel: 'Termina la conversazione', confirm: 'Vuole terminare la conversazione?',
      confirmYes: 'Sì, termina', confirmNo: 'Annulla', messages: 'Messaggi della conversazione',
      quickReplies: 'Risposte rapide', inputLabel: 'Scriva il suo messaggio', placeholder: 'Scriva un messaggio…',
      typingBot: 'L\'assistente sta scrivendo…', typingAgent: 'Un operatore sta scrivendo…',
      bot: 'Assistente', agent: 'Operatore',
      queue: (n, label) => n ? `Lei è il numero ${n} in coda per ${label}.` : `Lei è in coda per ${label}.`,
      wait: (m) => `Attesa stimata: circa ${m} ${m === 1 ? 'minuto' : 'minuti'}`,
      queueClosed: (label) => `La coda per ${label} è al momento chiusa.`,
      agentJoined: (name) => name ? `${name} (operatore) ha preso in carico la conversazione.`
        : 'Un operatore ha preso in carico la conversazione.',
      agentLeft: {
        transferred: 'La conversazione è stata trasferita a un altro collega.',
        returned_to_bot: 'L\'operatore ha lasciato la conversazione: può continuare con l\'assistente virtuale.',
        closed: 'L\'operatore ha chiuso la conversazione.', other: 'L\'operatore ha lasciato la conversazione.',
      },
      ended: 'La conversazione è terminata.', rate: 'Come valuta questa conversazione?',
      score: (n) => `${n} su 5`, thanks: 'Grazie per la sua valutazione!', restart: 'Nuova conversazione',
      newConversation: 'È iniziata una nuova conversazione.',
      reconnecting: 'Connessione interrotta. Riconnessione in corso…',
      connError: 'Impossibile collegarsi alla chat. Riprovi più tardi.',
      errors: {
        too_long: 'Il messaggio è troppo lungo: provi ad accorciarlo.', empty: 'Il messaggio è vuoto.',
        rate_limited: 'Troppi messaggi in poco tempo: il messaggio sarà inviato di nuovo tra qualche istante.',
      },
    },
    en: {
      title: 'Support', unread: 'new messages', close: 'Minimise chat', send: 'Send',
      leave: 'End chat', leaveLabel: 'End the conversation', confirm: 'Do you want to end the conversation?',
      confirmYes: 'Yes, end it', confirmNo: 'Cancel', messages: 'Conversation messages',
      quickReplies: 'Quick replies', inputLabel: 'Type your message', placeholder: 'Type a message…',
      typingBot: 'The assistant is typing…', typingAgent: 'An agent is typing…',
      bot: 'Assistant', agent: 'Agent',
      queue: (n, label) => n ? `You are number ${n} in the queue for ${label}.` : `You are in the queue for ${label}.`,
      wait: (m) => `Estimated wait: about ${m} ${m === 1 ? 'minute' : 'minutes'}`,
      queueClosed: (label) => `The queue for ${label} is currently closed.`,
      agentJoined: (name) => name ? `${name} (agent) has joined the conversation.`
        : 'An agent has joined the conversation.',
      agentLeft: {
        transferred: 'The conversation has been transferred to another colleague.',
        returned_to_bot: 'The agent has left the conversation: you can carry on with the virtual assistant.',
        closed: 'The agent has closed the conversation.', other: 'The agent has left the conversation.',
      },
      ended: 'The conversation has ended.', rate: 'How would you rate this conversation?',
      score: (n) => `${n} out of 5`, thanks: 'Thank you for your feedback!', restart: 'New conversation',
      newConversation: 'A new conversation has started.',
      reconnecting: 'Connection lost. Reconnecting…',
      connError: 'Unable to connect to the chat. Please try again later.',
      errors: {
        too_long: 'The message is too long: please shorten it.', empty: 'The message is empty.',
        rate_limited: 'Too many messages in a short time: the message will be sent again in a moment.',
      },
    },
  };

  // ---- configuration from the script tag ----
  const attr = (name) => (SCRIPT.getAttribute('data-' + name) || '').trim();
  const LANG = (() => {
    const own = attr('lang').toLowerCase();
    if (own === 'it' || own === 'en') return own;
    const page = (document.documentElement.lang || '').toLowerCase().split('-')[0];
    return page === 'en' || page === 'it' ? page : 'it';
  })();
  const T = TEXTS[LANG];
  const TITLE = attr('title') || T.title;
  const IDENTITY = attr('identity') || null;
  const START_OPEN = attr('open').toLowerCase() === 'true';

  // Accept hex, rgb()/hsl() and named colours that the browser also accepts; nothing else
  // (no var(), no CSS-wide keywords) reaches the custom properties.
  function colour(value) {
    if (!/^(#[0-9a-f]{3,8}|(rgb|hsl)a?\([\d\s.,%/+-]+\)|[a-z]{3,20})$/i.test(value)) return null;
    if (/^(inherit|initial|unset|revert|currentcolor)$/i.test(value)) return null;
    return !window.CSS || !CSS.supports || CSS.supports('color', value) ? value : null;
  }

  // ---- storage (may throw: private mode, sandboxed iframes, blocked cookies) ----
  function storage(name) { try { return window[name]; } catch (e) { return null; } }
  function readJSON(store, key) {
    try { return JSON.parse(store.getItem(key)); } catch (e) { return null; }
  }
  function writeJSON(store, key, value) {
    try {
      if (value == null) store.removeItem(key); else store.setItem(key, JSON.stringify(value));
    } catch (e) { /* storage unavailable: the widget still works for this page view */ }
  }
  const LOCAL = storage('localStorage');
  const SESSION = storage('sessionStorage');

  function newId() {
    const c = window.crypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID(); // secure contexts only
    const bytes = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(bytes);
    else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    return 'm-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // ---- state ----
  let sock = null;            // current WebSocket (handlers of older sockets are ignored)
  let ready = false;          // socket open and `welcome` received
  let fatal = false;          // closed with a code that makes retrying pointless
  let attempts = 0;           // consecutive reconnect attempts, for the backoff
  let reconnectTimer = 0, pingTimer = 0, awaitingPong = false;
  let conversationId = null, token = null;
  let closed = false;         // the conversation is over (`closed` frame or welcome.state "closed")
  let rated = false;
  let leaveWanted = false;    // `leave` confirmed, `closed` not received yet
  let pendingRating = 0;      // a score chosen while disconnected
  let typingSent = false, typingTimer = 0; // customer typing frames
  let lastRateNotice = 0;
  let pending = [];           // unacked customer messages {id, text, payload?, timer?}, oldest first
  const shown = new Set();    // every seq displayed
  let maxSeq = 0;
  const byClientId = new Map(); // client id -> message element
  let quick = null;           // {seq, el} of the quick replies on display
  let ratingEl = null, reconnectNotice = null;
  const typing = { bot: false, agent: false };

  const saved = readJSON(LOCAL, RESUME_KEY);
  if (saved && typeof saved.conversation_id === 'string' && typeof saved.token === 'string') {
    conversationId = saved.conversation_id;
    token = saved.token;
  }
  // The stored form of a pending message (no timer).
  const plain = (p) => (p.payload ? { id: p.id, text: p.text, payload: p.payload } : { id: p.id, text: p.text });
  const restored = readJSON(SESSION, PENDING_KEY);
  if (Array.isArray(restored)) {
    pending = restored.filter((p) => p && typeof p.id === 'string' && typeof p.text === 'string' &&
      (p.payload == null || typeof p.payload === 'string')).map(plain);
  }

  function saveResume() {
    writeJSON(LOCAL, RESUME_KEY, conversationId
      ? { conversation_id: conversationId, token: token, last_seq: maxSeq } : null);
  }
  function savePending() {
    writeJSON(SESSION, PENDING_KEY, pending.length ? pending.map(plain) : null);
  }

  // ---- DOM ----
  // Attributes are fixed names set here (never style or on* handlers); text via textContent.
  function h(tag, cls, attrs, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (attrs) Object.keys(attrs).forEach((k) => el.setAttribute(k, attrs[k]));
    if (text != null) el.textContent = text;
    return el;
  }

  // Hidden until widget.css has loaded: no flash of an unstyled widget.
  const root = h('div', null, { id: 'triage-chat', lang: LANG, hidden: '' });
  [['color', '--triage-color'], ['text-color', '--triage-text-color']].forEach(([name, prop]) => {
    const value = colour(attr(name));
    if (value) root.style.setProperty(prop, value); // CSSOM: allowed by style-src 'self'
  });

  const launcher = h('button', 'triage-launcher',
    { type: 'button', 'aria-expanded': 'false', 'aria-controls': 'triage-chat-panel' });
  const svg = (tag) => document.createElementNS('http://www.w3.org/2000/svg', tag);
  const icon = launcher.appendChild(svg('svg'));
  [['viewBox', '0 0 24 24'], ['aria-hidden', 'true'], ['focusable', 'false']].forEach((a) => icon.setAttribute(...a));
  icon.appendChild(svg('path')).setAttribute('d',
    'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z');

  const panel = h('div', 'triage-panel', { id: 'triage-chat-panel', role: 'dialog', 'aria-label': TITLE, hidden: '' });
  const header = h('div', 'triage-header');
  const leaveBtn = h('button', 'triage-leave', { type: 'button', 'aria-label': T.leaveLabel }, T.leave);
  const closeBtn = h('button', 'triage-close', { type: 'button', 'aria-label': T.close }, '×');
  leaveBtn.disabled = !conversationId; // enabled once there is a conversation to end
  header.append(h('div', 'triage-title', null, TITLE), leaveBtn, closeBtn);

  const confirmBox = h('div', 'triage-confirm', { role: 'group', 'aria-label': T.leaveLabel, hidden: '' });
  const confirmYes = h('button', 'triage-confirm-yes', { type: 'button' }, T.confirmYes);
  const confirmNo = h('button', 'triage-confirm-no', { type: 'button' }, T.confirmNo);
  confirmBox.append(h('p', 'triage-confirm-text', null, T.confirm), confirmYes, confirmNo);

  const list = h('div', 'triage-messages',
    { role: 'log', 'aria-live': 'polite', 'aria-label': T.messages, tabindex: '0' });
  const typingEl = h('div', 'triage-typing', { hidden: '' });
  const queueEl = h('div', 'triage-queue', { role: 'status', hidden: '' });

  const footer = h('div', 'triage-footer');
  const input = h('textarea', 'triage-input',
    { id: 'triage-chat-input', rows: '1', placeholder: T.placeholder });
  const sendBtn = h('button', 'triage-send', { type: 'button' }, T.send);
  const restartBtn = h('button', 'triage-restart', { type: 'button', hidden: '' }, T.restart);
  footer.append(h('label', 'triage-visually-hidden', { for: 'triage-chat-input' }, T.inputLabel),
    input, sendBtn, restartBtn);

  panel.append(header, confirmBox, list, typingEl, queueEl, footer);
  const live = h('div', 'triage-live triage-visually-hidden', { 'aria-live': 'assertive', 'aria-atomic': 'true' });
  root.append(launcher, panel, live);

  function setLauncherLabel(unread) {
    launcher.classList.toggle('triage-unread', unread);
    launcher.setAttribute('aria-label', unread ? `${TITLE} (${T.unread})` : TITLE);
  }
  setLauncherLabel(false);

  // Screen-reader announcement; emptied first so that the same text is read again.
  function announce(text) {
    live.textContent = '';
    setTimeout(() => { live.textContent = text; }, 50);
  }
  function scrollDown() { list.scrollTop = list.scrollHeight; }
  function notice(text, isError) {
    const el = h('div', isError ? 'triage-notice triage-notice-error' : 'triage-notice', null, text);
    list.appendChild(el);
    scrollDown();
    return el;
  }

  // Messages with a seq are kept in seq order; pending ones (no seq yet) stay at the end, and
  // so do the "ended" notice and the rating block (history may arrive after them on a resume).
  function place(el, seq) {
    let before = null;
    for (const child of list.children) {
      if (child === el) continue;
      if (child.classList.contains('triage-pending') || child.classList.contains('triage-end') ||
          (child.dataset.seq && Number(child.dataset.seq) > seq)) { before = child; break; }
    }
    list.insertBefore(el, before);
  }
  function setSeq(el, seq) {
    el.dataset.seq = String(seq);
    shown.add(seq);
    if (seq > maxSeq) { maxSeq = seq; saveResume(); }
    place(el, seq);
    if (quick && seq > quick.seq && el.dataset.sender !== 'bot' && el.dataset.sender !== 'system') hideQuickReplies();
  }

  function showQuickReplies(msgEl, seq, buttons) {
    hideQuickReplies();
    const box = h('div', 'triage-quick-replies', { role: 'group', 'aria-label': T.quickReplies });
    buttons.forEach((b) => {
      const btn = h('button', null, { type: 'button' }, b.title);
      btn.addEventListener('click', () => {
        if (sendText(b.title, typeof b.payload === 'string' ? b.payload : null)) input.focus();
      });
      box.appendChild(btn);
    });
    msgEl.after(box);
    quick = { seq: seq, el: box };
  }
  function hideQuickReplies() {
    if (quick) quick.el.remove();
    quick = null;
  }

  // One message object (a `message` frame or an entry of `history`).
  function addMessage(m, isLive) {
    const seq = Number(m.seq);
    if (!Number.isInteger(seq) || typeof m.text !== 'string' || shown.has(seq)) return;
    const sender = ['user', 'bot', 'agent', 'system'].indexOf(m.sender) >= 0 ? m.sender : 'system';
    const clientId = typeof m.client_id === 'string' ? m.client_id : null;
    // Our own message echoed back (another tab, or the ack was lost): it is the pending one.
    if (sender === 'user' && clientId && byClientId.has(clientId)) { acked(clientId, seq); return; }
    const el = h('div', 'triage-msg', { 'data-sender': sender }, m.text);
    if (clientId) {
      el.dataset.clientId = clientId;
      byClientId.set(clientId, el);
    }
    setSeq(el, seq);
    const buttons = Array.isArray(m.buttons)
      ? m.buttons.filter((b) => b && typeof b.title === 'string' && b.title) : [];
    if (sender === 'bot' && buttons.length && (!quick || seq > quick.seq)) showQuickReplies(el, seq, buttons);
    if (sender === 'bot' || sender === 'agent') setTyping(sender, false);
    if (isLive && (sender === 'bot' || sender === 'agent')) {
      announce(`${T[sender]}: ${m.text}`);
      if (panel.hidden) setLauncherLabel(true);
    }
    scrollDown();
  }

  function acked(id, seq) {
    seq = Number(seq);
    dropPending(id);
    const el = byClientId.get(id);
    if (!el || el.dataset.seq || !Number.isInteger(seq)) return;
    if (shown.has(seq)) { el.remove(); byClientId.delete(id); return; } // already shown (replay)
    el.classList.remove('triage-pending', 'triage-failed');
    setSeq(el, seq);
  }

  function showPending(item) {
    const el = h('div', 'triage-msg triage-pending', { 'data-sender': 'user', 'data-client-id': item.id }, item.text);
    byClientId.set(item.id, el);
    list.appendChild(el);
  }

  function dropPending(id) {
    const item = pending.find((p) => p.id === id);
    if (!item) return;
    clearTimeout(item.timer);
    pending = pending.filter((p) => p !== item);
    savePending();
  }

  function typingOff() { typing.bot = typing.agent = false; typingEl.hidden = true; }
  function setTyping(sender, on) {
    typing[sender] = !!on;
    typingEl.textContent = typing.agent ? T.typingAgent : T.typingBot;
    typingEl.hidden = !(typing.bot || typing.agent);
  }

  function setQueue(f) {
    if (!f) { queueEl.hidden = true; queueEl.textContent = ''; return; }
    const label = typeof f.label === 'string' && f.label ? f.label : String(f.queue || '');
    let text;
    if (f.open === false) {
      text = T.queueClosed(label);
    } else {
      const n = Number(f.position) >= 1 ? Math.floor(Number(f.position)) : 0;
      const eta = f.eta_s == null || !isFinite(Number(f.eta_s)) ? null
        : Math.max(1, Math.round(Number(f.eta_s) / 60));
      text = T.queue(n, label) + (eta ? ' ' + T.wait(eta) : '');
    }
    if (text !== queueEl.textContent) announce(text);
    queueEl.textContent = text;
    queueEl.hidden = false;
  }

  // ---- conversation lifecycle ----
  function enterClosed(askRating) {
    if (!closed) { closed = true; notice(T.ended).classList.add('triage-end'); announce(T.ended); }
    leaveWanted = false;
    setQueue(null); typingOff(); hideQuickReplies(); hideConfirm(); stopTyping();
    const hadFocus = document.activeElement === input || document.activeElement === sendBtn;
    input.disabled = sendBtn.disabled = leaveBtn.disabled = true;
    restartBtn.hidden = false;
    if (hadFocus) restartBtn.focus(); // focus would otherwise be lost on a disabled control
    if (askRating && !rated && !ratingEl) {
      ratingEl = h('div', 'triage-rating triage-end', { role: 'group', 'aria-labelledby': 'triage-chat-rate' });
      ratingEl.appendChild(h('p', 'triage-rating-question', { id: 'triage-chat-rate' }, T.rate));
      for (let n = 1; n <= 5; n++) {
        const btn = h('button', null, { type: 'button', 'data-score': String(n), 'aria-label': T.score(n) }, String(n));
        btn.addEventListener('click', () => rate(n));
        ratingEl.appendChild(btn);
      }
      list.appendChild(ratingEl);
      scrollDown();
    }
  }

  function reopenInput() {
    closed = false;
    input.disabled = sendBtn.disabled = false;
    leaveBtn.disabled = !conversationId;
    restartBtn.hidden = true;
  }

  // Empty the message list (a different conversation); pending messages are kept if asked.
  function clearConversation(keepPending) {
    for (const child of Array.from(list.children)) {
      if (!(keepPending && child.classList.contains('triage-pending'))) child.remove();
    }
    for (const [id, el] of Array.from(byClientId)) if (!el.isConnected) byClientId.delete(id);
    shown.clear();
    maxSeq = 0;
    quick = ratingEl = reconnectNotice = null;
  }

  function rate(score) {
    rated = true;
    if (ready) send({ type: 'rating', score: score });
    else { pendingRating = score; connect(); } // the socket may have closed after `closed`
    if (ratingEl) {
      ratingEl.textContent = '';
      ratingEl.appendChild(h('p', 'triage-rating-thanks', null, T.thanks));
    }
    announce(T.thanks);
    restartBtn.focus();
  }

  function restart() {
    pending.forEach((p) => clearTimeout(p.timer));
    pending = [];
    conversationId = token = null;
    writeJSON(LOCAL, RESUME_KEY, null);
    writeJSON(SESSION, PENDING_KEY, null);
    clearConversation(false);
    byClientId.clear();
    rated = leaveWanted = fatal = false;
    pendingRating = 0;
    reopenInput();
    setQueue(null);
    dropSocket();
    attempts = 0;
    connect();
    input.focus();
  }

  // ---- sending ----
  function send(frame) {
    if (!sock || sock.readyState !== WebSocket.OPEN) return false;
    sock.send(JSON.stringify(frame));
    return true;
  }
  const messageFrame = (item) => Object.assign({ type: 'message' }, plain(item));
  function transmit(item) { if (ready && !closed) send(messageFrame(item)); }

  function sendText(text, payload) {
    if (closed || !text) return false;
    const item = { id: newId(), text: text };
    if (payload) item.payload = payload;
    // A frame over the limit would make the server close the socket (1009): refuse it here.
    if (new TextEncoder().encode(JSON.stringify(messageFrame(item))).length > MAX_FRAME_BYTES) {
      notice(T.errors.too_long, true);
      return false;
    }
    pending.push(item);
    savePending();
    showPending(item);
    hideQuickReplies();
    stopTyping();
    scrollDown();
    transmit(item);
    if (!sock) connect();
    return true;
  }

  function sendInput() {
    const text = input.value.trim();
    if (!text || !sendText(text, null)) return;
    input.value = '';
    autosize();
  }

  // `typing` frames for an agent: on at the first keystroke, off after a pause or on send.
  function customerTyping() {
    if (!ready || closed) return;
    if (!typingSent) typingSent = send({ type: 'typing', on: true });
    clearTimeout(typingTimer);
    typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }
  function stopTyping() {
    clearTimeout(typingTimer);
    if (typingSent) send({ type: 'typing', on: false });
    typingSent = false;
  }

  function leave() {
    hideConfirm();
    if (closed || !conversationId) return;
    leaveWanted = true; // sent again after a reconnect until `closed` arrives
    if (ready) send({ type: 'leave' }); else connect();
    input.focus();
  }

  // ---- frames from the server ----
  function receive(data) {
    awaitingPong = false; // any frame proves the connection is alive
    let f;
    try { f = JSON.parse(data); } catch (e) { return; }
    if (!f || typeof f !== 'object' || Array.isArray(f)) return;
    switch (f.type) {
      case 'welcome': onWelcome(f); break;
      case 'history':
        (Array.isArray(f.messages) ? f.messages.slice() : [])
          .filter((m) => m && typeof m === 'object')
          .sort((a, b) => Number(a.seq) - Number(b.seq))
          .forEach((m) => addMessage(m, false));
        break;
      case 'message': addMessage(f, true); break;
      case 'ack': if (typeof f.id === 'string') acked(f.id, f.seq); break;
      case 'typing': if (f.sender === 'bot' || f.sender === 'agent') setTyping(f.sender, f.on); break;
      case 'queue': if (!closed) setQueue(f); break;
      case 'agent_joined': {
        const text = T.agentJoined(typeof f.name === 'string' ? f.name : '');
        setQueue(null); hideQuickReplies(); notice(text); announce(text);
        break;
      }
      case 'agent_left': {
        const text = T.agentLeft[f.reason] || T.agentLeft.other;
        setTyping('agent', false); notice(text); announce(text);
        break;
      }
      case 'closed': enterClosed(!!f.rating_requested); break;
      case 'error': onError(f); break;
      default: break; // pong, or a type this version does not know
    }
  }

  function onWelcome(f) {
    if (typeof f.conversation_id !== 'string' || typeof f.token !== 'string') return;
    if (reconnectNotice) { reconnectNotice.remove(); reconnectNotice = null; }
    const other = f.conversation_id !== conversationId;
    if (other && shown.size) { clearConversation(true); notice(T.newConversation); }
    conversationId = f.conversation_id;
    token = f.token;
    ready = true;
    attempts = 0;
    saveResume();
    setQueue(null); // a `queue` frame follows if still queued
    typingOff();
    if (f.state === 'closed') enterClosed(false);
    else if (closed && other) reopenInput();
    leaveBtn.disabled = closed;
    pending.forEach(transmit); // resent with the same ids: the server deduplicates
    if (leaveWanted && !closed) send({ type: 'leave' });
    if (pendingRating && f.resumed && !other) send({ type: 'rating', score: pendingRating });
    pendingRating = 0;
    startPing();
  }

  function onError(f) {
    const item = typeof f.id === 'string' ? pending.find((p) => p.id === f.id) : null;
    // rate_limited: too fast; busy: the service is still answering this conversation elsewhere.
    // Neither stored the message: it is sent again after the wait the server asks for.
    if (f.code === 'rate_limited' || f.code === 'busy') {
      if (f.code === 'rate_limited' && Date.now() - lastRateNotice > 5000) { notice(T.errors.rate_limited, true); lastRateNotice = Date.now(); }
      if (item) {
        const wait = Math.min(Math.max(Number(f.retry_after_ms) || 1000, 250), 60000);
        clearTimeout(item.timer);
        item.timer = setTimeout(() => { if (pending.indexOf(item) >= 0) transmit(item); }, wait);
      }
      return;
    }
    if (item) {
      // Refused for good (too_long, empty, bad_frame): resending would not help.
      dropPending(item.id);
      const el = byClientId.get(item.id);
      if (el && !el.dataset.seq) el.classList.replace('triage-pending', 'triage-failed');
    }
    if (Object.prototype.hasOwnProperty.call(T.errors, f.code)) notice(T.errors[f.code], true);
    else if (window.console) console.warn('triage-chat:', f.code, f.message);
  }

  // ---- connection ----
  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = 0;
    if (sock || fatal) return;
    let s;
    try { s = new WebSocket(WS_URL); } catch (e) { socketClosed(1006); return; }
    sock = s;
    s.onopen = () => {
      if (sock !== s) return;
      send({
        type: 'hello', v: 1, lang: LANG, identity: IDENTITY,
        // maxSeq is 0 after a page load (empty DOM: replay everything), else the highest seq shown.
        resume: conversationId && token
          ? { conversation_id: conversationId, token: token, last_seq: maxSeq } : null,
      });
    };
    s.onmessage = (e) => { if (sock === s && typeof e.data === 'string') receive(e.data); };
    s.onclose = (e) => { if (sock === s) socketClosed(e.code); };
  }

  // Forget the current socket without triggering a reconnect from its close event.
  function dropSocket() {
    const s = sock;
    sock = null;
    ready = false;
    stopPing();
    if (s) { s.onopen = s.onmessage = s.onclose = null; try { s.close(1000); } catch (e) { /* closing */ } }
  }

  function socketClosed(code) {
    sock = null;
    ready = false;
    typingSent = false;
    stopPing();
    typingOff();
    if (FATAL_CLOSE_CODES.indexOf(code) >= 0) {
      fatal = true;
      if (reconnectNotice) { reconnectNotice.remove(); reconnectNotice = null; }
      notice(T.connError, true);
      return;
    }
    if (closed) return; // conversation over: reconnect only on demand (rating, restart)
    if (!reconnectNotice) reconnectNotice = notice(T.reconnecting);
    // Exponential backoff with jitter: 0.5 s, 1 s, 2 s... up to 10 s, each scaled by 0.5-1.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, Math.min(attempts++, 10)));
    reconnectTimer = setTimeout(connect, Math.max(BACKOFF_MIN_MS, cap * (0.5 + Math.random() / 2)));
  }

  function startPing() {
    stopPing();
    awaitingPong = false;
    pingTimer = setInterval(() => {
      if (awaitingPong) { dropSocket(); socketClosed(1006); return; } // silent for a whole interval
      awaitingPong = true;
      send({ type: 'ping' });
    }, PING_EVERY_MS);
  }
  function stopPing() { clearInterval(pingTimer); pingTimer = 0; }

  // ---- opening and closing the panel ----
  function open() {
    if (panel.hidden) {
      panel.hidden = false;
      launcher.setAttribute('aria-expanded', 'true');
      setLauncherLabel(false);
      scrollDown();
    }
    if (!sock && !reconnectTimer && !closed) connect(); // first open starts the conversation
    styled.then(() => (closed ? restartBtn : input).focus());
  }
  function close() {
    if (panel.hidden) return;
    const hadFocus = panel.contains(document.activeElement);
    hideConfirm();
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    if (hadFocus) launcher.focus();
  }
  function hideConfirm() { confirmBox.hidden = true; }

  function autosize() {
    input.style.height = 'auto'; // CSSOM, not a style attribute string
    input.style.height = Math.min(input.scrollHeight, 120) + 'px';
  }

  launcher.addEventListener('click', () => (panel.hidden ? open() : close()));
  closeBtn.addEventListener('click', close);
  leaveBtn.addEventListener('click', () => { confirmBox.hidden = false; confirmNo.focus(); });
  confirmYes.addEventListener('click', leave);
  confirmNo.addEventListener('click', () => { hideConfirm(); leaveBtn.focus(); });
  sendBtn.addEventListener('click', () => { sendInput(); input.focus(); });
  restartBtn.addEventListener('click', restart);
  input.addEventListener('input', () => { autosize(); customerTyping(); });
  input.addEventListener('keydown', (e) => {
    // Enter sends, Shift+Enter is a newline; never while an IME composition is in progress.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      sendInput();
    }
  });
  panel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.stopPropagation(); close(); launcher.focus(); }
  });
  window.addEventListener('online', () => { if (reconnectTimer) { attempts = 0; connect(); } });

  // Messages typed before a reload and never acked: shown as pending, resent after `welcome`.
  pending.forEach(showPending);

  // ---- stylesheet, mounting, start ----
  const styled = new Promise((resolve) => {
    const head = document.head || document.documentElement;
    let link = Array.from(document.querySelectorAll('link[rel="stylesheet"]')).find((l) => l.href === CSS_URL);
    if (link && link.sheet) { resolve(); return; }
    if (!link) {
      link = h('link', null, { rel: 'stylesheet', href: CSS_URL });
      head.appendChild(link);
    }
    link.addEventListener('load', () => resolve());
    link.addEventListener('error', () => resolve());
    setTimeout(resolve, 4000); // never keep the widget invisible because of a stuck stylesheet
  });

  function start() {
    document.body.appendChild(root);
    styled.then(() => { root.hidden = false; });
    if (START_OPEN) open();
    // Without a conversation to resume, wait for the first open: no conversation per page view.
    else if (conversationId || pending.length) connect();
  }
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);

  window.TriageChat = Object.freeze({
    open: open,
    close: close,
    state: Object.freeze({
      get conversationId() { return conversationId; },
      get connected() { return ready; },
    }),
  });
})();
