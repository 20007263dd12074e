/* The page's fixed elements (the DOM contract at the top of console.html), found once at start-up. */

export const nodes = {};

export function findNodes() {
  const q = (sel) => document.querySelector(sel);
  Object.assign(nodes, {
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
