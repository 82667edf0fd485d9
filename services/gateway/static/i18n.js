// English and Korean. The locale comes from the account (once signed in), else the last choice
// in this browser, else the browser's languages.
import en from "./locales/en.js";
import ko from "./locales/ko.js";

const MESSAGES = { en, ko };
const STORE_KEY = "ps.locale";
let current = "en";
const listeners = [];

export const LOCALES = Object.keys(MESSAGES);

export function locale() {
  return current;
}

function supported(tag) {
  const base = String(tag || "").toLowerCase().split("-")[0];
  return LOCALES.includes(base) ? base : null;
}

export function initLocale() {
  const stored = supported(localStorage.getItem(STORE_KEY));
  const browser = (navigator.languages || [navigator.language]).map(supported).find(Boolean);
  current = stored || browser || "en";
  document.documentElement.lang = current;
}

/** Switch language; `silent` skips re-rendering (used while a render is already running). */
export function setLocale(tag, { silent = false } = {}) {
  const next = supported(tag);
  if (!next) return;
  localStorage.setItem(STORE_KEY, next);
  if (next === current) return;
  current = next;
  document.documentElement.lang = current;
  if (!silent) listeners.forEach((fn) => fn(current));
}

export function onLocaleChange(fn) {
  listeners.push(fn);
}

/** A message by key with {name} placeholders; falls back to English, then to the key. */
export function t(key, vars = {}) {
  const text = MESSAGES[current][key] ?? MESSAGES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** t() if the key exists, else the fallback (e.g. the server's own sentence). */
export function tOr(key, fallback) {
  return key in MESSAGES[current] || key in MESSAGES.en ? t(key) : fallback;
}

/** A server text that comes as a string or as {en, ko, ...}: the current locale's, else English. */
export function localized(value) {
  if (value && typeof value === "object") return value[current] || value.en || "";
  return value || "";
}

export function formatDate(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(current, { dateStyle: "medium", timeStyle: "short" }).format(
    new Date(iso),
  );
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return null;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("time.seconds", { n: s });
  const m = Math.round(s / 60);
  if (m < 60) return t("time.minutes", { n: m });
  return t("time.hours", { h: Math.floor(m / 60), m: m % 60 });
}

export function formatPercent(fraction) {
  return new Intl.NumberFormat(current, { style: "percent", maximumFractionDigits: 0 }).format(
    Math.max(0, Math.min(1, Number(fraction) || 0)),
  );
}
