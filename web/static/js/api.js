// HTTP for the pages: @squall/client's Http (JSON in and out, one error type), the login
// cookies riding along (same origin), plus the session's refresh.
//
// Sessions (docs/security.md): the access token lives minutes, in an HttpOnly cookie the
// pages send on every same-origin request; the refresh token lives in another HttpOnly
// cookie that only /api/auth/* sees. ``refreshSession()`` rotates both, before the access
// token expires (a timer) and when a request answers 401 (once, then the request is retried).
// Only when the refresh itself is refused does a 401 reach the caller (which goes to /login).

import { Http, SquallError as ApiError } from "/static/squall-client/http.js";
import { TokenSource } from "/static/squall-client/tokens.js";

const EXPIRES_KEY = "squall.accessExpiresAt";  // ms epoch; not a secret, shared by the tabs
const REFRESH_LOCK = "squall-refresh";

/** An HTTP error with the server's ``{error: {code, message}}`` fields (the client package's). */
export { ApiError };

// The client package's HTTP (clients/js/src/http.js): JSON in and out, one error type. No
// token: ``getToken`` answers null, so the login cookie (same origin) is the credential.
const http = new Http({ url: "", credentials: "same-origin", tokens: new TokenSource(() => null) });

/** One request, no retry; every state-changing route takes JSON (no CSRF by form). */
function request(method, path, body) {
  return http.once(method, path, body);
}

/** ``method path`` with an optional JSON body; resolves with the parsed JSON answer. */
export async function api(method, path, body) {
  try {
    return await request(method, path, body);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401 || path.startsWith("/api/auth/")) throw err;
    try {
      await refreshSession();
    } catch {
      throw err;  // the refresh was refused: the caller sends the user to /login
    }
    return request(method, path, body);
  }
}

/**
 * True while the browser holds a session: the server sets the ``squall_session`` marker
 * (no secret, not HttpOnly) with the login cookies and clears it with them. Without it a
 * page goes to /login at once instead of asking /api/me for a 401.
 */
export function hasSession() {
  return document.cookie.split(";").some((part) => part.trim() === "squall_session=1");
}

let inFlight = null;
let timer = null;

/**
 * Rotate the session's tokens (the refresh cookie is sent by the browser); resolves with the
 * new access token (for a WebSocket's ``refresh`` frame). One at a time in this tab, and one
 * at a time across tabs (Web Locks): two tabs presenting the same refresh token at once
 * would look like theft and end the session.
 */
export function refreshSession() {
  if (!inFlight) {
    const run = () => request("POST", "/api/auth/refresh", {});
    const locked = navigator.locks ? navigator.locks.request(REFRESH_LOCK, run) : run();
    inFlight = locked.then((data) => {
      noteSession(data);
      return data.access_token;
    }).finally(() => { inFlight = null; });
  }
  return inFlight;
}

/** Remember when the access token of a login/refresh answer expires; refresh before then. */
export function noteSession(data) {
  if (!data || !data.expires_in) return;
  const expiry = { at: Date.now() + data.expires_in * 1000, life: data.expires_in * 1000 };
  try { localStorage.setItem(EXPIRES_KEY, JSON.stringify(expiry)); } catch { /* storage disabled */ }
  schedule(expiry);
}

// Refresh when a third of the token's life is left (at most a minute before it ends).
const refreshAt = ({ at, life }) => at - Math.min(60_000, life / 3);

function storedExpiry() {
  try {
    const value = JSON.parse(localStorage.getItem(EXPIRES_KEY) || "null");
    return value && value.at && value.life ? value : null;
  } catch { return null; }
}

function schedule(expiry) {
  if (timer) clearTimeout(timer);
  timer = setTimeout(onTimer, Math.max(1000, refreshAt(expiry) - Date.now()));
}

function onTimer() {
  timer = null;
  // Another tab may have refreshed meanwhile (the cookies are shared): then wait for its expiry.
  const expiry = storedExpiry();
  if (expiry && refreshAt(expiry) > Date.now() + 500) { schedule(expiry); return; }
  refreshSession().catch(() => { /* the next request finds out (401 → /login) */ });
}

// A page that opens with a known session keeps it fresh from the start.
if (location.pathname !== "/login") {
  const expiry = storedExpiry();
  if (expiry) schedule(expiry);
}
