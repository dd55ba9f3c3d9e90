// Reconnect delays: full jitter (a random delay between 0 and a capped exponential
// backoff, so clients dropped together do not return together), never sooner than a
// server's Retry-After.

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 8000;

/** Delay before reconnect attempt ``attempt`` (0-based), full jitter. */
export function backoffDelay(attempt, { baseMs = BACKOFF_BASE_MS, capMs = BACKOFF_CAP_MS, random = Math.random } = {}) {
  const n = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(n, 30));
  return Math.round(random() * ceiling);
}

/** Milliseconds asked for by a ``Retry-After`` value (seconds or an HTTP date); 0 if none or invalid. */
export function retryAfterMs(value, now = Date.now()) {
  if (value === null || value === undefined) return 0;
  const text = String(value).trim();
  if (!text) return 0;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  if (/^-/.test(text)) return 0;
  const at = Date.parse(text);
  return Number.isFinite(at) ? Math.max(0, at - now) : 0;
}

/**
 * The wait before the next attempt: the server's ``retryAfter`` (ms) plus a jittered
 * base step when it named one, else the full-jitter backoff of ``attempt``.
 */
export function reconnectDelay(attempt, retryAfter = 0, options = {}) {
  if (retryAfter > 0) return retryAfter + backoffDelay(0, options);
  return backoffDelay(attempt, options);
}
