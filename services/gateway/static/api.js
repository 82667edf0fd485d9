// fetch wrapper for the public /v1 API: Bearer token, one transparent refresh on 401,
// errors raised as ApiError with the sentence from the JSON `detail`.
import { locale } from "./i18n.js";
import * as session from "./session.js";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The sentence in `detail`: every gateway error has one, 422 validation errors included. */
function detailText(body, fallback) {
  const detail = body && body.detail;
  return typeof detail === "string" ? detail : fallback;
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: use the status text */
  }
  const fallback = `${response.status} ${response.statusText || "error"}`.trim();
  return new ApiError(response.status, detailText(body, fallback));
}

let refreshing = null;

async function rotate() {
  // Read the token inside the lock: another tab may have rotated it while we waited.
  const token = session.refreshToken();
  if (!token) return false;
  const response = await fetch("/v1/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: token }),
  });
  if (response.ok) {
    session.save(await response.json());
    return true;
  }
  if (response.status === 401 || response.status === 403) {
    // The refresh token is spent, expired or revoked: the session is over.
    session.clear();
    window.dispatchEvent(new CustomEvent("session-ended"));
  }
  return false;
}

/**
 * Trade the refresh token for a new pair; callers in this tab share one request, and tabs take
 * turns (Web Locks): the gateway revokes the whole session when a spent token comes back, so
 * two tabs must never send the same refresh token.
 */
export function refresh() {
  if (!session.refreshToken()) return Promise.resolve(false);
  refreshing ||= (navigator.locks ? navigator.locks.request("ps-refresh", rotate) : rotate())
    .catch(() => false)
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/**
 * Call the API.
 * @param {string} path  e.g. "/v1/me"
 * @param {{method?: string, json?: any, form?: FormData, headers?: object, auth?: boolean,
 *          raw?: boolean, signal?: AbortSignal}} options  raw: return the Response (for blobs).
 */
export async function api(path, options = {}) {
  const { method = "GET", json, form, headers = {}, auth = true, raw = false, signal } = options;
  const send = () => {
    const h = { Accept: "application/json", "Accept-Language": locale(), ...headers };
    let body;
    if (json !== undefined) {
      h["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form; // the browser sets the multipart boundary
    }
    const token = session.accessToken();
    if (auth && token) h.Authorization = `Bearer ${token}`;
    return fetch(path, { method, headers: h, body, signal });
  };

  let response;
  try {
    if (auth && !session.accessToken() && session.refreshToken()) await refresh();
    response = await send();
    if (response.status === 401 && auth && (await refresh())) response = await send();
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network");
  }
  if (!response.ok) throw await errorFrom(response);
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** A list from a response that is either an array or {key: [...]}. */
export function listOf(body, key) {
  if (Array.isArray(body)) return body;
  return (body && body[key]) || [];
}

/** GET a list: `getList("/v1/photos", "photos")` -> the photos. */
export async function getList(path, key) {
  return listOf(await api(path), key);
}

/** Compare API records by `created_at`, newest first (for Array.sort). */
export function byNewest(a, b) {
  return Date.parse(b.created_at) - Date.parse(a.created_at);
}

/** A random Idempotency-Key, so a double click or a retried request starts one job. */
export function idempotencyKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}
