// Squall's real-time client: one notification stream per browser, shared by every tab.
//
// Transport: a WebSocket to /ws/notifications first; when it cannot open (the handshake
// fails, it closes before opening, or no open within OPEN_TIMEOUT_MS) the client falls back
// to /sse/notifications. The client owns reconnection (exponential backoff with jitter) and
// resumes from the last event id it saw, so nothing is missed and nothing is shown twice.
// When a stream fails and GET /api/me answers 401 (the session could not be refreshed), it
// stops and sends the user to /login.
//
// Credentials: every stream URL carries a single-use ticket from POST /api/stream-ticket,
// never the access token. A WebSocket answers the server's ``token_expiring`` with a
// ``refresh`` frame (a freshly rotated access token); an SSE stream that ends with
// ``auth_expired`` (or a WebSocket closed with 4001) reconnects at once with a new ticket and
// resumes from the last event id.
//
// Tabs: the tabs of a browser elect one leader with the Web Locks API; only the leader
// holds the stream and it forwards every frame to the other tabs over a BroadcastChannel.
// When the leader tab closes, its lock is released, the next tab takes it and resumes from
// the last event id it had received, so the handover loses no event.
//
// Third rung: some proxies buffer every answer whatever the server says, so an event
// stream never shows up (not even its headers). The server sends a first event on every
// new stream at once (the ``unread`` state); when an SSE stream has not delivered it within
// SSE_FIRST_EVENT_MS, the client decides the path buffers, closes it and long-polls
// /poll/* instead (one complete JSON answer per request, which no proxy holds back). The
// decision is kept for the browser session (sessionStorage), as a blocked WebSocket is.
//
// ChatConnection (below) is the chat view's own connection: /ws/chat, or /sse/chat (or
// /poll/chat) plus HTTP for sending, with the same fallback and reconnection rules.

import { api, ApiError, refreshSession } from "./api.js";

const LOCK_NAME = "squall-notification-stream";
const CHANNEL_NAME = "squall-notification-events";
export const OPEN_TIMEOUT_MS = 3000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 8000;
const MAX_NOTIFICATIONS = 200;
const WS_RETRY_AFTER_MS = 60_000;
const SSE_PROVEN_MS = 10_000;
export const SSE_FIRST_EVENT_MS = 5000;
const HELD_BACK_KEY = "squall.eventStreamHeldBack";

/**
 * Delay before reconnect attempt ``attempt`` (0-based): full jitter, a random delay between 0
 * and the capped exponential backoff, so clients dropped together do not return together.
 */
export function backoffDelay(attempt) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return Math.round(Math.random() * ceiling);
}

/** Milliseconds asked for by a ``Retry-After`` header (seconds or an HTTP date); 0 if none. */
export function retryAfterMs(value) {
  if (!value) return 0;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : 0;
}

/**
 * Why a stream did not open: a browser cannot read the status of a refused WebSocket or
 * EventSource, so GET the SSE URL once and report its status and ``Retry-After``.
 */
async function probeStream(path) {
  const ctrl = new AbortController();
  try {
    const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "text/event-stream" },
                                     signal: ctrl.signal });
    const result = { status: resp.status, retryAfterMs: retryAfterMs(resp.headers.get("Retry-After")) };
    ctrl.abort();
    return result;
  } catch {
    return { status: 0, retryAfterMs: 0 };
  }
}

/** ws:// or wss:// URL of ``path`` on this origin. */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** ``path`` with a fresh single-use stream ticket in its query (refreshing the session if needed). */
export async function withTicket(path) {
  const { ticket } = await api("POST", "/api/stream-ticket", {});
  return `${path}${path.includes("?") ? "&" : "?"}ticket=${encodeURIComponent(ticket)}`;
}

/** Send the browser to the login page, coming back here afterwards. */
export function goToLogin() {
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

/** How a transport is named to the user ("" for none). */
export function transportLabel(transport) {
  return { websocket: "WebSocket", sse: "SSE", poll: "Long-polling" }[transport] || "";
}

/** True when this browser session found that the path holds event streams back. */
export function eventStreamHeldBack() {
  try { return sessionStorage.getItem(HELD_BACK_KEY) === "1"; } catch { return false; }
}

function rememberEventStreamHeldBack() {
  try { sessionStorage.setItem(HELD_BACK_KEY, "1"); } catch { /* storage disabled: decide again next time */ }
}

/**
 * Long-poll ``pollPath()`` until closed: each answer's events go to ``frame``; the next poll
 * resumes from its ``last_event_id`` and shows its ``unread_tag``. ``opened(rttMs)`` after the
 * first answer (which comes at once: it carries the unread state), ``failed()`` when a poll
 * fails. Returns ``{close()}``.
 */
function longPoll(pollPath, { opened, frame, failed }) {
  const abort = new AbortController();
  let stopped = false;
  (async () => {
    let cursor = null;
    let tag = null;
    let first = true;
    while (!stopped) {
      const url = new URL(pollPath(), location.origin);
      if (cursor !== null) url.searchParams.set("last_event_id", cursor);
      if (tag) url.searchParams.set("unread_tag", tag);
      const started = performance.now();
      let body;
      try {
        const resp = await fetch(url.pathname + url.search, {
          cache: "no-store", signal: abort.signal, headers: { Accept: "application/json" } });
        if (!resp.ok) throw new Error(`poll answered ${resp.status}`);
        body = await resp.json();
      } catch {
        if (!stopped) failed();
        return;
      }
      if (stopped) return;
      cursor = body.last_event_id;
      tag = body.unread_tag || null;
      if (first) { first = false; opened(Math.round(performance.now() - started)); }
      for (const data of body.events || []) {
        // Logged out or expired while waiting: reconnect with fresh credentials (and resume).
        if (data && data.type === "auth_expired") { failed(); return; }
        frame(data, data && data.id != null ? String(data.id) : null);
      }
    }
  })();
  return { close() { stopped = true; abort.abort(); } };
}

/**
 * Open one stream: WebSocket first, then SSE, then long-polling (when ``pollPath`` is given).
 * Calls ``handlers.frame(obj, eventId)`` for each frame, ``handlers.open(transport, wsFailed,
 * pollRttMs)`` once open, ``handlers.closed(wasOpen, wsFailed)`` once it ends. Returns an
 * object with ``close()``.
 */
function openStream({ wsPath, ssePath, pollPath, preferSse }, handlers) {
  let closed = false;
  let current = null;
  let wsFailed = false;

  const finish = (wasOpen) => {
    if (closed) return;
    closed = true;
    handlers.closed(wasOpen, wsFailed);
  };

  const tryPoll = () => {
    if (closed) return;
    let opened = false;
    current = longPoll(pollPath, {
      opened: (rttMs) => { opened = true; handlers.open("poll", wsFailed, rttMs); },
      frame: (data, id) => handlers.frame(data, id),
      failed: () => finish(opened),
    });
  };

  const trySse = async () => {
    if (closed) return;
    if (pollPath && eventStreamHeldBack()) { tryPoll(); return; }
    let opened = false;
    let heard = false;
    let url;
    try { url = await withTicket(ssePath()); } catch { finish(false); return; }
    if (closed) return;
    const es = new EventSource(url);
    current = { close: () => es.close() };
    // The server's first event comes at once; without it in time, a proxy holds the stream back.
    const heldBack = pollPath ? setTimeout(() => {
      if (heard || closed) return;
      es.close();
      rememberEventStreamHeldBack();
      tryPoll();
    }, SSE_FIRST_EVENT_MS) : null;
    es.onopen = () => { opened = true; };
    es.onmessage = (e) => {
      if (!heard) {
        // Open once events flow (not at the headers: a buffering proxy may pass those alone).
        heard = true;
        clearTimeout(heldBack);
        handlers.open("sse", wsFailed);
      }
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      if (data && data.type === "auth_expired") {
        // The session's token expired (or it was logged out): reconnect with new credentials.
        es.close();
        finish(opened);
        return;
      }
      handlers.frame(data, e.lastEventId || null);
    };
    // The browser's EventSource would retry by itself (or give up for good after a 503):
    // close it and let the client reconnect with its own backoff and resume position.
    es.onerror = () => { clearTimeout(heldBack); es.close(); finish(opened); };
  };

  const tryWs = async () => {
    let opened = false;
    let failedOver = false;
    let url;
    try { url = await withTicket(wsPath()); } catch { finish(false); return; }
    if (closed) return;
    const ws = new WebSocket(wsUrl(url));
    current = { close: () => ws.close(1000), send: (obj) => ws.send(JSON.stringify(obj)) };
    const fallBack = () => {
      if (failedOver || closed) return;
      failedOver = true;
      wsFailed = true;
      try { ws.close(); } catch { /* already closing */ }
      trySse();
    };
    const timer = setTimeout(() => { if (!opened) fallBack(); }, OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      if (failedOver) { ws.close(); return; }
      opened = true;
      clearTimeout(timer);
      handlers.open("websocket", false);
    };
    ws.onmessage = (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      if (data && data.type === "token_expiring") {
        // Rotate the session and hand the new access token to this socket, which stays open.
        refreshSession().then((token) => {
          if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "refresh", access_token: token }));
        }).catch(() => { /* closed with 4001 at expiry; the reconnect finds out about the session */ });
        return;
      }
      if (data && data.type === "refreshed") return;
      handlers.frame(data, data && data.id != null ? String(data.id) : null);
    };
    ws.onclose = () => {
      clearTimeout(timer);
      if (!opened) fallBack();
      else finish(true);
    };
  };

  if (preferSse) { wsFailed = true; trySse(); } else tryWs();
  return {
    close() { closed = true; if (current) current.close(); },
    send(obj) { if (current && current.send) current.send(obj); else throw new Error("not a WebSocket"); },
  };
}

/** Reconnecting driver around ``openStream``: backoff, 401 detection, status reports. */
class Reconnector {
  constructor(options, handlers) {
    this.options = options;
    this.handlers = handlers;
    this.attempt = 0;
    this.stream = null;
    this.timer = null;
    this.stopped = false;
    this.everOpened = false;
    this.wsFailedAt = null;   // when the WebSocket last failed while SSE worked
    this.fellBack = false;    // the open stream is SSE after a WebSocket failure
    this.openedAt = 0;
  }

  start() { this.connect(); }

  connect() {
    if (this.stopped) return;
    this.timer = null;
    this.handlers.status({ state: this.everOpened ? "reconnecting" : "connecting" });
    // A WebSocket that failed while SSE then held for a while is not tried again for a
    // minute: reconnects behind a blocking proxy go straight to SSE instead of waiting for
    // the failure. (A short-lived SSE fallback, e.g. to a server that was shutting down,
    // proves nothing, so the next attempt tries the WebSocket first again.)
    const preferSse = this.wsFailedAt !== null && Date.now() - this.wsFailedAt < WS_RETRY_AFTER_MS;
    this.stream = openStream({ ...this.options, preferSse }, {
      open: (transport, wsFailed, pollRttMs) => {
        this.attempt = 0;
        this.everOpened = true;
        this.openedAt = Date.now();
        this.fellBack = transport !== "websocket" && wsFailed && !preferSse;
        if (transport === "websocket") this.wsFailedAt = null;
        this.handlers.status({ state: "open", transport, wsBlocked: wsFailed,
                               sseHeldBack: transport === "poll", pollRttMs: pollRttMs ?? null });
        if (this.handlers.open) this.handlers.open(transport);
      },
      frame: (data, id) => this.handlers.frame(data, id),
      closed: (wasOpen) => this.lost(wasOpen),
    });
  }

  async lost(wasOpen) {
    if (this.stopped) return;
    this.stream = null;
    if (wasOpen && this.fellBack && Date.now() - this.openedAt >= SSE_PROVEN_MS) this.wsFailedAt = Date.now();
    this.fellBack = false;
    this.handlers.status({ state: "reconnecting" });
    let delay = backoffDelay(wasOpen ? 0 : this.attempt);
    if (!wasOpen) {
      // Neither transport opened: a refused token means stop; a busy server (429/503) names
      // the least wait in Retry-After; anything else, retry after the backoff.
      const probe = await probeStream(this.options.ssePath());
      if (this.stopped) return;
      if (probe.status === 401) {
        // The access token was refused (expired, or the server's secret changed): renew the
        // session first; only a refused refresh (the session itself is over) means /login.
        let refused = false;
        try { await refreshSession(); } catch (err) { refused = err instanceof ApiError && err.status === 401; }
        if (this.stopped) return;
        if (refused) {
          this.stop();
          this.handlers.status({ state: "unauthorized", transport: null });
          if (this.handlers.unauthorized) this.handlers.unauthorized();
          return;
        }
      }
      if (probe.retryAfterMs > 0) delay = probe.retryAfterMs + backoffDelay(0);
    }
    this.attempt += wasOpen ? 0 : 1;
    this.handlers.status({ state: "reconnecting", retryInMs: delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Reconnect now (e.g. the browser came back online) if waiting for a retry. */
  retryNow() {
    if (this.timer) { clearTimeout(this.timer); this.connect(); }
  }

  /** Close the current stream and connect again at once (new parameters). */
  restart() {
    if (this.stopped) return;
    if (this.fellBack && Date.now() - this.openedAt >= SSE_PROVEN_MS) this.wsFailedAt = Date.now();
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

/**
 * The app-wide notification client. Events (``client.on(type, fn)``): ``notification``
 * (every stored notification), ``new_message``, ``unread`` ({total, chats, muted}), ``status``,
 * ``cleared``, ``resync``, ``preferences`` and ``mute`` (state events of the settings).
 */
export class NotificationClient {
  constructor() {
    this.listeners = new Map();
    this.notifications = [];            // newest first, de-duplicated by id
    this.seen = new Set();
    this.unread = { total: 0, chats: {}, muted: {} };
    this.unreadKnown = false;           // true once a server ``unread`` state arrived
    this.lastEventId = null;            // highest notification id handled (number)
    this.status = { state: "connecting", transport: null, role: "follower", wsBlocked: false,
                    lastEventId: null };
    this.onAlert = null;
    this.channel = null;
    this.reconnector = null;
    this.started = false;
    this.ready = false;
    // Resolves once the history is loaded and lastEventId is known.
    this.historyLoaded = new Promise((resolve) => { this.resolveHistory = resolve; });
  }

  // Public API ---------------------------------------------------------------------------

  /**
   * Register the page's callback for notifications that may toast (one per page): new
   * messages, announcements and the other published types; not the test page's probes.
   */
  setOnAlert(fn) { this.onAlert = fn; }

  /** True while any chat has unread messages (the server's ``unread`` state). */
  hasUnreadMessages() { return this.unread.total > 0; }

  /** Subscribe to an event type; returns an unsubscribe function. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  /** Clear every notification on the server and in every tab. */
  async clearNotifications(type = null) {
    await api("POST", "/api/notifications/clear", type ? { type } : {});
    this.applyCleared(type);
    this.post({ kind: "cleared", type });
  }

  /** Load the history, then join the leader election (the leader opens the stream). */
  async start() {
    if (this.started) return;
    this.started = true;
    // Listen before loading the history so that no frame falls between the two; frames
    // that arrive meanwhile wait, and the id cursor drops those the history already has.
    const early = [];
    if (typeof BroadcastChannel !== "undefined") {
      this.channel = new BroadcastChannel(CHANNEL_NAME);
      this.channel.onmessage = (e) => (this.ready ? this.onChannel(e.data) : early.push(e.data));
    }
    await this.loadHistory();
    this.ready = true;
    this.resolveHistory();
    for (const msg of early) this.onChannel(msg);
    if (navigator.locks && this.channel) {
      navigator.locks.request(LOCK_NAME, () => new Promise(() => {
        // Held until this tab goes away: the browser then releases it for the next tab.
        this.becomeLeader();
      }));
      this.post({ kind: "hello" });
    } else {
      this.becomeLeader();
    }
    window.addEventListener("online", () => this.reconnector && this.reconnector.retryNow());
    window.addEventListener("pagehide", () => this.reconnector && this.reconnector.stop());
  }

  // Internals ----------------------------------------------------------------------------

  emit(type, detail) {
    for (const fn of this.listeners.get(type) || []) {
      try { fn(detail); } catch (err) { console.error(err); }
    }
  }

  post(message) { if (this.channel) this.channel.postMessage(message); }

  setStatus(changes) {
    this.status = { ...this.status, ...changes, lastEventId: this.lastEventId };
    this.emit("status", this.status);
    if (this.status.role === "leader") this.post({ kind: "status", status: this.status });
  }

  async loadHistory() {
    try {
      const { notifications } = await api("GET", "/api/notifications?limit=50");
      for (const n of notifications.slice().reverse()) this.remember(n);
      if (this.lastEventId === null) {
        this.lastEventId = notifications.reduce((m, n) => Math.max(m, n.id), 0);
      }
      this.emit("history", this.notifications);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) goToLogin();
      else console.error("notification history", err);
    }
  }

  remember(n) {
    if (this.seen.has(n.id)) return false;
    this.seen.add(n.id);
    this.notifications.unshift(n);
    this.notifications.sort((a, b) => b.id - a.id);
    if (this.notifications.length > MAX_NOTIFICATIONS) this.notifications.length = MAX_NOTIFICATIONS;
    return true;
  }

  becomeLeader() {
    this.setStatus({ role: "leader" });
    document.documentElement.dataset.streamRole = "leader";
    this.reconnector = new Reconnector({
      wsPath: () => `/ws/notifications${this.resumeQuery()}`,
      ssePath: () => `/sse/notifications${this.resumeQuery()}`,
      pollPath: () => `/poll/notifications${this.resumeQuery()}`,
    }, {
      status: (s) => this.setStatus(s),
      frame: (data) => { this.post({ kind: "frame", data }); this.handleFrame(data); },
      unauthorized: () => { this.post({ kind: "unauthorized" }); goToLogin(); },
    });
    this.reconnector.start();
  }

  resumeQuery() {
    return this.lastEventId === null ? "" : `?last_event_id=${this.lastEventId}`;
  }

  onChannel(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.kind === "frame") this.handleFrame(msg.data);
    else if (msg.kind === "status" && this.status.role !== "leader") {
      this.status = { ...msg.status, role: "follower", lastEventId: this.lastEventId };
      this.emit("status", this.status);
    } else if (msg.kind === "hello" && this.status.role === "leader") {
      this.post({ kind: "snapshot", unread: this.unread, unreadKnown: this.unreadKnown, status: this.status });
    } else if (msg.kind === "snapshot" && this.status.role !== "leader") {
      if (msg.unreadKnown) {
        this.unread = msg.unread;
        this.unreadKnown = true;
        this.emit("unread", this.unread);
      }
      this.status = { ...msg.status, role: "follower", lastEventId: this.lastEventId };
      this.emit("status", this.status);
    } else if (msg.kind === "cleared") this.applyCleared(msg.type || null);
    else if (msg.kind === "unauthorized") goToLogin();
  }

  /** Forget the cleared notifications: all of them, or those of ``type``. */
  applyCleared(type = null) {
    this.notifications = type ? this.notifications.filter((n) => n.type !== type) : [];
    this.emit("cleared", type);
  }

  handleFrame(data) {
    if (!data || typeof data !== "object") return;
    if (data.id != null) {
      // Stored notification: ids only grow, so anything at or below the cursor was handled.
      if (this.lastEventId !== null && data.id <= this.lastEventId) return;
      this.lastEventId = data.id;
      this.status = { ...this.status, lastEventId: this.lastEventId };
      this.emit("status", this.status);
      if (!this.remember(data)) return;
      this.emit("notification", data);
      if (data.type === "new_message") this.emit("new_message", data);
      if (data.type !== "test" && this.onAlert) {
        try { this.onAlert(data); } catch (err) { console.error(err); }
      }
      return;
    }
    if (data.type === "unread") {
      // ``muted``: unread counts of muted chats (grey; not in ``total``, the red dot)
      this.unread = { total: data.total || 0, chats: data.chats || {}, muted: data.muted || {} };
      this.unreadKnown = true;
      this.emit("unread", this.unread);
    } else if (data.type === "resync") {
      // The server could not replay everything missed: refetch over HTTP.
      this.lastEventId = null;
      this.loadHistory().then(() => this.emit("resync", null));
    } else if (data.type === "preferences" || data.type === "mute") {
      this.emit(data.type, data);  // state events: every tab updates at once
    }
  }
}

let shared = null;

/** This page's NotificationClient (created on first use; call ``start()`` once). */
export function notificationClient() {
  if (!shared) shared = new NotificationClient();
  return shared;
}

/**
 * The chat view's connection: /ws/chat (join/leave, send with ack, typing, mark read) or,
 * when WebSockets are blocked, /sse/chat?chat_id=N plus HTTP. ``onFrame`` gets every chat
 * frame (message, typing, read); ``onStatus`` gets {state, transport, joined}.
 */
export class ChatConnection {
  constructor({ onFrame, onStatus, onJoined, lastNotificationId }) {
    this.onFrame = onFrame;
    this.onStatus = onStatus || (() => {});
    this.onJoined = onJoined || (() => {});
    this.lastNotificationId = lastNotificationId || (() => 0);
    this.chatId = null;
    this.transport = null;
    this.lastMessageId = null;
    this.pending = new Map();   // client_id -> {resolve, reject}
    this.wsBlocked = false;
    this.reconnector = null;
  }

  /** Start the connection, present in ``chatId`` (may be null) from ``lastMessageId`` on. */
  start(chatId, lastMessageId) {
    this.chatId = chatId;
    this.lastMessageId = lastMessageId || null;
    this.reconnector = new Reconnector({
      wsPath: () => `/ws/chat${this.lastMessageId ? `?last_event_id=${this.lastMessageId}` : ""}`,
      ssePath: () => {
        const q = new URLSearchParams();
        if (this.chatId) q.set("chat_id", this.chatId);
        if (this.lastMessageId) q.set("last_event_id", `${this.lastMessageId}-${this.lastNotificationId() || 0}`);
        return `/sse/chat?${q}`;
      },
      pollPath: () => this.pollPath(),
    }, {
      status: (s) => {
        if (s.transport) this.transport = s.transport;
        if (s.state !== "open") { this.failPending(); this.onJoined(null); }
        this.onStatus({ ...s, transport: this.transport });
      },
      open: (transport) => {
        this.transport = transport;
        if (transport === "websocket" && this.chatId) this.reconnector.send({ type: "join_chat", chat_id: this.chatId });
      },
      frame: (data) => this.handleFrame(data),
      unauthorized: goToLogin,
    });
    this.reconnector.start();
  }

  /** ``/poll/chat`` with this view's chat (presence while polls come) and resume position. */
  pollPath() {
    const q = new URLSearchParams();
    if (this.chatId) q.set("chat_id", this.chatId);
    if (this.lastMessageId) q.set("last_event_id", `${this.lastMessageId}-${this.lastNotificationId() || 0}`);
    return `/poll/chat?${q}`;
  }

  /** Switch presence to ``chatId`` (null: no chat open). */
  setChat(chatId) {
    const previous = this.chatId;
    if (previous === chatId) return;
    this.chatId = chatId;
    this.onJoined(null);
    if (this.transport === "websocket") {
      try {
        if (previous) this.reconnector.send({ type: "leave_chat", chat_id: previous });
        if (chatId) this.reconnector.send({ type: "join_chat", chat_id: chatId });
      } catch { /* reconnecting: open() joins the current chat */ }
    } else if (this.reconnector) {
      // /sse/chat carries presence in its URL: reopen it for the new chat, resuming.
      this.reconnector.restart();
    }
  }

  handleFrame(data) {
    if (!data || typeof data !== "object") return;
    if (data.type === "message" || data.type === "message_ack") {
      const m = data.message;
      if (m && m.id > (this.lastMessageId || 0)) this.lastMessageId = m.id;
      if (data.type === "message_ack") {
        const p = this.pending.get(data.client_id);
        if (p) { this.pending.delete(data.client_id); p.resolve(m); }
      }
    } else if (data.type === "error" && data.client_id && this.pending.has(data.client_id)) {
      const p = this.pending.get(data.client_id);
      this.pending.delete(data.client_id);
      p.reject(new ApiError(400, data.code, data.message));
      return;
    } else if (data.type === "unread" && (this.transport === "sse" || this.transport === "poll")) {
      // The first frame of /sse/chat or /poll/chat: subscribed; presence follows on the server at once.
      this.onJoined(this.chatId);
    } else if (data.type === "joined") {
      if (data.chat_id === this.chatId) this.onJoined(data.chat_id);
    }
    this.onFrame(data);
  }

  failPending() {
    for (const [, p] of this.pending) p.reject(new ApiError(0, "disconnected", "Connection lost"));
    this.pending.clear();
  }

  /** Send a message; resolves with the stored message (ack over WS, 201 over HTTP). */
  send(chatId, content) {
    const clientId = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random())).slice(0, 64);
    if (this.transport === "websocket") {
      return new Promise((resolve, reject) => {
        this.pending.set(clientId, { resolve, reject });
        try {
          this.reconnector.send({ type: "send_message", chat_id: chatId, content, client_id: clientId });
        } catch (err) {
          this.pending.delete(clientId);
          this.sendHttp(chatId, content, clientId).then(resolve, reject);
        }
      });
    }
    return this.sendHttp(chatId, content, clientId);
  }

  async sendHttp(chatId, content, clientId) {
    const { message } = await api("POST", `/api/chats/${chatId}/messages`, { content, client_id: clientId });
    return message;
  }

  /** Tell the others this user is typing in ``chatId``. */
  typing(chatId) {
    if (this.transport === "websocket") {
      try { this.reconnector.send({ type: "typing", chat_id: chatId }); return; } catch { /* fall through */ }
    }
    api("POST", `/api/chats/${chatId}/typing`, {}).catch(() => {});
  }

  /** Mark ``chatId`` read up to ``messageId``. */
  markRead(chatId, messageId) {
    if (this.transport === "websocket") {
      try { this.reconnector.send({ type: "mark_read", chat_id: chatId, message_id: messageId }); return; } catch { /* fall through */ }
    }
    api("POST", `/api/chats/${chatId}/read`, { message_id: messageId }).catch(() => {});
  }
}
