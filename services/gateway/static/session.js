// Where the tokens live, and why.
//
// - The access token (short-lived, 15 min) is kept in memory and mirrored to sessionStorage, so a
//   reload of the same tab keeps working without a refresh round-trip; it dies with the tab.
// - The refresh token must survive a closed tab (the issue asks for a training job to be found
//   again after one), so it lives in localStorage. The trade-off: any script running on this
//   origin could read it, so an XSS bug would leak a long-lived credential. We limit that risk:
//   the page runs no inline or third-party script (CSP in index.html), every text from the server
//   is set with textContent, the gateway rotates refresh tokens (a reused one revokes the whole
//   family), and logging out revokes it. An HttpOnly cookie would hide it from scripts, but needs
//   CSRF protection and a cookie-based refresh route on the gateway.

const ACCESS_KEY = "ps.access";
const REFRESH_KEY = "ps.refresh";

let access = sessionStorage.getItem(ACCESS_KEY);

export function accessToken() {
  return access;
}

export function refreshToken() {
  return localStorage.getItem(REFRESH_KEY);
}

export function loggedIn() {
  return Boolean(access || refreshToken());
}

export function save({ access_token, refresh_token }) {
  access = access_token;
  sessionStorage.setItem(ACCESS_KEY, access_token);
  if (refresh_token) localStorage.setItem(REFRESH_KEY, refresh_token);
}

export function clear() {
  access = null;
  sessionStorage.removeItem(ACCESS_KEY);
  localStorage.removeItem(REFRESH_KEY);
}

// Another tab logged out (or in): follow it.
window.addEventListener("storage", (event) => {
  if (event.key === REFRESH_KEY && !event.newValue) {
    access = null;
    sessionStorage.removeItem(ACCESS_KEY);
    window.dispatchEvent(new CustomEvent("session-ended"));
  }
});
