/*
 * UI strings and the UI language. The strings live in console.html (script#console-texts, JSON):
 * key -> [English, Italian]; "{0}" is an argument; "key.one" is the form for a count of 1;
 * "group.key" entries are read with tm(group, key).
 */

const LANG_KEY = 'triage-console-lang';

let texts = {};
let lang = 'en';

function savedOrBrowserLang() {
  let saved = null;
  try { saved = localStorage.getItem(LANG_KEY); } catch (e) { /* storage may be blocked */ }
  if (saved === 'it' || saved === 'en') return saved;
  return /^it\b/i.test(navigator.language || '') ? 'it' : 'en';
}

/** Reads the strings from the page and picks the language: the saved choice, else the browser's. */
export function loadTexts() {
  lang = savedOrBrowserLang();
  try { texts = JSON.parse(document.getElementById('console-texts').textContent); } catch (e) { console.error(e); }
}

export const currentLang = () => lang;

/** The agent picked a language: kept for the next visit when storage allows. */
export function chooseLang(value) {
  lang = value === 'it' ? 'it' : 'en';
  try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* not kept */ }
}

export const hasText = (key) => Object.hasOwn(texts, key);

export function t(key, ...args) {
  const k = args[0] === 1 && hasText(key + '.one') ? key + '.one' : key;
  if (!hasText(k)) return key;
  return String(texts[k][lang === 'it' ? 1 : 0]).replace(/\{(\d)\}/g, (_, i) => String(args[i] ?? ''));
}

/** A value from a group of strings ("channels", "modes"…); an unknown value is shown as it is. */
export const tm = (group, key) => (hasText(group + '.' + key) ? t(group + '.' + key) : String(key ?? '–'));

export const locale = () => (lang === 'it' ? 'it-IT' : 'en-GB');

/** The page's fixed strings: elements marked data-i18n (text) and data-i18n-aria-label. */
export function translatePage() {
  document.documentElement.lang = lang;
  document.querySelectorAll('[data-i18n]').forEach((n) => { n.textContent = t(n.dataset.i18n); });
  document.querySelectorAll('[data-i18n-aria-label]').forEach((n) => n.setAttribute('aria-label', t(n.dataset.i18nAriaLabel)));
}
