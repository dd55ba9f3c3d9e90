// One reconnecting stream over the transport ladder: WebSocket → SSE → long-polling.
//
// - WebSocket first (skipped when the platform has none and none was injected); when it
//   cannot open (refused, closed before opening, or no open within ``openTimeoutMs``) the
//   stream falls back to SSE, read with fetch so that a refusal's status and Retry-After
//   are visible.
// - SSE whose first event does not come within ``sseFirstEventMs`` is held back by a
//   buffering proxy: the stream long-polls instead, and remembers it (``heldBack`` store).
// - Stall detection: no byte for ``stallMs`` (the server pings SSE every 15 s; the client
//   pings a WebSocket every ``pingIntervalMs``) closes the stream and reconnects.
// - Reconnects with full-jitter backoff, never sooner than a Retry-After (HTTP refusals of
//   the handshake, the SSE request or a poll); a 401 gets a fresh token from ``getToken``
//   first, and a 401 right after a fresh token stops the client (``unauthorized``).

import { reconnectDelay, retryAfterMs } from "./backoff.js";
import { readEventStream } from "./sse.js";
import { UnauthorizedError } from "./tokens.js";

export const DEFAULTS = Object.freeze({
  openTimeoutMs: 3000,
  sseFirstEventMs: 5000,
  stallMs: 45_000,
  pingIntervalMs: 20_000,
  wsRetryAfterMs: 60_000,
  sseProvenMs: 10_000,
  pollTimeoutS: null,
  backoffBaseMs: 500,
  backoffCapMs: 8000,
});

function parse(text) {
  try { return JSON.parse(text); } catch { return null; }
}

function withQuery(path, params) {
  const q = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
  if (!q) return path;
  return `${path}${path.includes("?") ? "&" : "?"}${q}`;
}

/** A watchdog: ``touch()`` on activity; ``onStall`` after ``ms`` without any. */
function watchdog(ms, onStall) {
  let last = Date.now();
  const timer = ms > 0 ? setInterval(() => { if (Date.now() - last >= ms) { clearInterval(timer); onStall(); } },
                                     Math.max(50, Math.min(1000, ms / 4))) : null;
  return { touch() { last = Date.now(); }, stop() { if (timer) clearInterval(timer); } };
}

/**
 * Open one stream. ``paths``: ``{ws(), sse(), poll()}`` each returning a path with its
 * resume query (or null when that rung does not exist), ``preferSse``. ``handlers``:
 * ``open(transport, {wsFailed, pollRttMs})``, ``frame(obj, eventId)``,
 * ``closed(wasOpen, {status, retryAfterMs, authExpired, code})``. ``ctx``: ``{http,
 * tokens, WebSocket, options, heldBack: {get(), set()}}``. Returns ``{close(), send(obj)}``.
 */
export function openStream(paths, handlers, ctx) {
  const { http, tokens, options } = ctx;
  let closed = false;
  let current = null;
  let wsFailed = false;

  const finish = (wasOpen, info = {}) => {
    if (closed) return;
    closed = true;
    if (current) { try { current.close(); } catch { /* closing */ } }
    handlers.closed(wasOpen, info);
  };

  const tryPoll = () => {
    if (closed) return;
    if (!paths.poll) { finish(false); return; }
    const abort = new AbortController();
    current = { close: () => abort.abort() };
    (async () => {
      let cursor = null;
      let tag = null;
      let opened = false;
      while (!closed) {
        const path = withQuery(paths.poll(cursor), { last_event_id: cursor, unread_tag: tag,
                                                   timeout: options.pollTimeoutS });
        const started = Date.now();
        // A poll waits at most POLL_MAX_TIMEOUT (55 s): longer than that plus the stall margin is a dead path.
        const stall = setTimeout(() => abort.abort(), 55_000 + options.stallMs);
        let resp;
        let body;
        try {
          resp = await http.fetch(http.url(path), { cache: "no-store", credentials: http.credentials, signal: abort.signal,
                                                   headers: { Accept: "application/json", ...http.authHeaders() } });
          if (!resp.ok) {
            clearTimeout(stall);
            finish(opened, { status: resp.status, retryAfterMs: retryAfterMs(resp.headers.get("Retry-After")) });
            return;
          }
          body = await resp.json();
        } catch {
          clearTimeout(stall);
          finish(opened, {});
          return;
        } finally {
          clearTimeout(stall);
        }
        if (closed) return;
        cursor = body.last_event_id ?? cursor;
        tag = body.unread_tag || null;
        if (!opened) { opened = true; handlers.open("poll", { wsFailed, pollRttMs: Date.now() - started }); }
        for (const data of body.events || []) {
          if (closed) return;
          if (data && data.type === "auth_expired") { finish(true, { authExpired: true }); return; }
          handlers.frame(data, data && data.id != null ? String(data.id) : null);
        }
        if (handlers.position && body.last_event_id != null) handlers.position(String(body.last_event_id));
      }
    })();
  };

  const trySse = async () => {
    if (closed) return;
    if (paths.poll && ctx.heldBack.get()) { tryPoll(); return; }
    const abort = new AbortController();
    current = { close: () => abort.abort() };
    let heard = false;
    let heldBackSwitch = false;
    // The server's first event comes at once; without it in time (not even the headers, or
    // headers and no body), a proxy holds the stream back: long-poll instead.
    const heldBack = paths.poll ? setTimeout(() => {
      if (heard || closed) return;
      heldBackSwitch = true;
      abort.abort();
      ctx.heldBack.set();
      tryPoll();
    }, options.sseFirstEventMs) : null;
    // A single-use ticket in the URL, as for the WebSocket: the stream request carries no
    // token (and no cookie needs to authenticate it).
    let url;
    try {
      url = withQuery(paths.sse(), { ticket: await http.ticket() });
    } catch (err) {
      clearTimeout(heldBack);
      if (closed || heldBackSwitch) return;
      finish(false, err && err.status ? { status: err.status, retryAfterMs: err.retryAfterMs || 0 } : {});
      return;
    }
    if (closed || heldBackSwitch) return;
    let resp;
    try {
      resp = await http.fetch(http.url(url), { cache: "no-store", credentials: http.credentials, signal: abort.signal,
                                              headers: { Accept: "text/event-stream" } });
    } catch {
      clearTimeout(heldBack);
      if (!closed && !heldBackSwitch) finish(false, {});
      return;
    }
    if (closed || heldBackSwitch) { abort.abort(); return; }
    if (!resp.ok) {
      clearTimeout(heldBack);
      const info = { status: resp.status, retryAfterMs: retryAfterMs(resp.headers.get("Retry-After")) };
      try { await resp.body?.cancel(); } catch { /* gone */ }
      finish(false, info);
      return;
    }
    const dog = watchdog(options.stallMs, () => { abort.abort(); finish(heard, { stalled: true }); });
    let ended = {};
    try {
      await readEventStream(resp, {
        signal: abort.signal,
        onActivity: () => dog.touch(),
        onEvent: (event) => {
          if (closed || heldBackSwitch) return;
          if (!heard) {
            heard = true;
            clearTimeout(heldBack);
            handlers.open("sse", { wsFailed });
          }
          const data = parse(event.data);
          if (!data) return;
          if (data.type === "auth_expired") { ended = { authExpired: true }; abort.abort(); return; }
          handlers.frame(data, event.id);
        },
      });
    } catch { /* aborted or the connection broke */ }
    dog.stop();
    clearTimeout(heldBack);
    if (!heldBackSwitch) finish(heard, ended);
  };

  const tryWs = async () => {
    const WS = ctx.WebSocket;
    let url;
    try {
      url = withQuery(paths.ws(), { ticket: await http.ticket() });
    } catch (err) {
      if (closed) return;
      if (err && err.status === 401) { finish(false, { status: 401 }); return; }
      if (err && err.status) { finish(false, { status: err.status, retryAfterMs: err.retryAfterMs || 0 }); return; }
      wsFailed = true;
      trySse();
      return;
    }
    if (closed) return;
    let opened = false;
    let failedOver = false;
    let endInfo = {};
    let ws;
    try { ws = new WS(http.wsUrl(url)); } catch { wsFailed = true; trySse(); return; }
    let ping = null;
    let stallDog = null;
    const send = (obj) => ws.send(JSON.stringify(obj));
    current = { close: () => { try { ws.close(1000); } catch { /* closing */ } }, send };
    const fallBack = () => {
      if (failedOver || closed) return;
      failedOver = true;
      wsFailed = true;
      try { ws.close(); } catch { /* already closing */ }
      trySse();
    };
    const timer = setTimeout(() => { if (!opened) fallBack(); }, options.openTimeoutMs);
    ws.onopen = () => {
      if (failedOver || closed) { try { ws.close(); } catch { /* closing */ } return; }
      opened = true;
      clearTimeout(timer);
      stallDog = watchdog(options.stallMs, () => { endInfo = { stalled: true }; try { ws.close(); } catch { /* */ } finish(true, endInfo); });
      ping = setInterval(() => { try { send({ type: "ping" }); } catch { /* closing */ } }, options.pingIntervalMs);
      handlers.open("websocket", { wsFailed: false, send });
    };
    ws.onmessage = (e) => {
      if (stallDog) stallDog.touch();
      const data = parse(typeof e.data === "string" ? e.data : String(e.data));
      if (!data) return;
      if (data.type === "token_expiring") {
        const generation = tokens.generation;
        tokens.refresh("token_expiring", generation).then((token) => {
          if (token && ws.readyState === 1) send({ type: "refresh", access_token: token });
        }).catch((err) => {
          if (err instanceof UnauthorizedError && handlers.unauthorized) handlers.unauthorized(err);
        });
        return;
      }
      if (data.type === "refreshed" || data.type === "pong") return;
      handlers.frame(data, data.id != null ? String(data.id) : null);
    };
    ws.onclose = (e) => {
      clearTimeout(timer);
      if (ping) clearInterval(ping);
      if (stallDog) stallDog.stop();
      if (!opened) { fallBack(); return; }
      finish(true, { ...endInfo, code: e.code, authExpired: e.code === 4001 });
    };
    ws.onerror = () => { /* onclose follows */ };
  };

  if (paths.preferSse || !ctx.WebSocket || !paths.ws) { wsFailed = Boolean(paths.preferSse); trySse(); } else tryWs();
  return {
    close() { closed = true; if (current) current.close(); },
    send(obj) { if (!closed && current && current.send) current.send(obj); else throw new Error("not a WebSocket"); },
  };
}

/**
 * A stream that reconnects: backoff with full jitter and Retry-After, token refresh on
 * 401/4001/auth_expired, ``unauthorized`` when a fresh token is refused too.
 * ``handlers``: ``status(s)``, ``open(transport, info)``, ``frame(obj, id)``,
 * ``position(id)``, ``unauthorized(err)``.
 */
export class Reconnector {
  constructor(paths, handlers, ctx) {
    this.paths = paths;
    this.handlers = handlers;
    this.ctx = ctx;
    this.options = ctx.options;
    this.attempt = 0;
    this.stream = null;
    this.timer = null;
    this.stopped = false;
    this.everOpened = false;
    this.wsFailedAt = null;
    this.fellBack = false;
    this.openedAt = 0;
    this.freshAfter401 = false;   // the token in use came from a refresh after a 401
  }

  start() { this.connect(); }

  connect() {
    if (this.stopped) return;
    this.timer = null;
    this.handlers.status({ state: this.everOpened ? "reconnecting" : "connecting" });
    this.usedGeneration = this.ctx.tokens.generation;
    const preferSse = this.wsFailedAt !== null && Date.now() - this.wsFailedAt < this.options.wsRetryAfterMs;
    this.stream = openStream({ ...this.paths, preferSse }, {
      open: (transport, info) => {
        this.attempt = 0;
        this.everOpened = true;
        this.freshAfter401 = false;
        this.openedAt = Date.now();
        this.fellBack = transport !== "websocket" && info.wsFailed && !preferSse;
        if (transport === "websocket") this.wsFailedAt = null;
        this.transport = transport;
        this.handlers.status({ state: "open", transport, wsBlocked: Boolean(info.wsFailed),
                               sseHeldBack: transport === "poll", pollRttMs: info.pollRttMs ?? null, retryInMs: null });
        if (this.handlers.open) this.handlers.open(transport, info);
      },
      frame: (data, id) => this.handlers.frame(data, id),
      position: (id) => this.handlers.position && this.handlers.position(id),
      closed: (wasOpen, info) => this.lost(wasOpen, info),
      unauthorized: (err) => this.unauthorized(err),
    }, this.ctx);
  }

  unauthorized(err) {
    if (this.stopped) return;
    this.stop();
    // The owner first (it reports ``unauthorized`` once), then the status.
    if (this.handlers.unauthorized) this.handlers.unauthorized(err);
    this.handlers.status({ state: "unauthorized", transport: null });
  }

  async lost(wasOpen, info = {}) {
    if (this.stopped) return;
    this.stream = null;
    this.transport = null;
    if (wasOpen && this.fellBack && Date.now() - this.openedAt >= this.options.sseProvenMs) this.wsFailedAt = Date.now();
    this.fellBack = false;
    this.handlers.status({ state: "reconnecting", transport: null });
    const tokens = this.ctx.tokens;
    if (info.status === 401 || info.authExpired) {
      if (info.status === 401 && this.freshAfter401) {
        this.unauthorized(new UnauthorizedError("the fresh token was refused"));
        return;
      }
      try {
        await tokens.refresh(info.status === 401 ? "unauthorized" : "auth_expired", this.usedGeneration ?? null);
      } catch (err) {
        this.unauthorized(err);
        return;
      }
      if (this.stopped) return;
      this.freshAfter401 = info.status === 401;
    }
    let delay = reconnectDelay(wasOpen ? 0 : this.attempt, info.retryAfterMs || 0,
                               { baseMs: this.options.backoffBaseMs, capMs: this.options.backoffCapMs });
    if (info.authExpired && !info.retryAfterMs) delay = 0;   // new credentials: resume at once
    if (!wasOpen) this.attempt += 1;
    this.handlers.status({ state: "reconnecting", retryInMs: delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Reconnect now (the platform came back online) if waiting for a retry. */
  retryNow() {
    if (this.timer) { clearTimeout(this.timer); this.connect(); }
  }

  /** Close the current stream and connect again at once (new parameters). */
  restart() {
    if (this.stopped) return;
    if (this.fellBack && Date.now() - this.openedAt >= this.options.sseProvenMs) this.wsFailedAt = Date.now();
    if (this.timer) clearTimeout(this.timer);
    const old = this.stream;
    this.stream = null;
    if (old) old.close();
    this.connect();
  }

  send(obj) {
    if (!this.stream) throw new Error("not connected");
    this.stream.send(obj);
  }

  stop() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.stream) this.stream.close();
    this.stream = null;
  }
}
