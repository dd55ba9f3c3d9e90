// Squall's pages on @squall/client: a thin adapter over the npm package's own files
// (clients/js/src, served as /static/squall-client/*.js; see docs/client.md).
//
// The package does the hard parts: one notification stream per browser (a Web Locks
// leader tab, BroadcastChannel followers, lossless handover), the WebSocket → SSE →
// long-polling ladder with stall detection, exact resume by event id, full-jitter backoff
// with Retry-After, and one token refresh for concurrent expiries. This file adds what
// is particular to Squall's own pages:
//
// - credentials: the login cookies (``getToken`` answers null at the start: the cookie is
//   the credential); when the server asks for a new token (``token_expiring``, 4001,
//   ``auth_expired``, a 401) ``getToken`` rotates the session with api.js's
//   ``refreshSession()`` (one refresh across tabs) and hands back the new access token;
// - a refused refresh (the session is over) sends the browser to /login;
// - the "held back" decision of the long-polling rung is kept in sessionStorage;
// - the page's API: ``notificationClient()`` and ``ChatConnection`` as the pages use them.

import { ApiError, refreshSession } from "./api.js";
import { createSquall } from "/static/squall-client/index.js";

const HELD_BACK_KEY = "squall.eventStreamHeldBack";

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

const heldBack = {
  get: eventStreamHeldBack,
  set() { try { sessionStorage.setItem(HELD_BACK_KEY, "1"); } catch { /* storage disabled: decide again next time */ } },
};

/**
 * The page's credentials for @squall/client: the cookie at the start; a rotated session
 * (its new access token) whenever the server asks for a new one. A refused refresh throws,
 * which the client reports as ``unauthorized`` (and this adapter turns into /login).
 */
async function getToken({ reason }) {
  if (reason === "start") return null;
  try {
    return await refreshSession();
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) return null;  // not refused (busy, offline): keep the cookie
    throw err;
  }
}

let squall = null;
let signingOut = false;

/**
 * This tab logs out: stop the streams first, so that their end (4001, ``auth_expired``) and
 * the refused refresh after it do not race the logout's own navigation to /login.
 */
export function signingOutHere() {
  signingOut = true;
  if (squall) squall.stop();
  for (const conn of chatConnections) conn.stop();
}

const chatConnections = new Set();

/** The page's @squall/client instance (one per page; the tabs share one stream). */
export function squallClient() {
  if (!squall) {
    squall = createSquall({ getToken, heldBack, name: "squall", credentials: "same-origin", loadPreferences: false });
    squall.on("unauthorized", () => { if (!signingOut) goToLogin(); });
  }
  return squall;
}

/**
 * The app-wide notification client, as the pages use it: events (``on(type, fn)``)
 * ``notification``, ``new_message``, ``unread`` ({total, chats, muted}), ``status``,
 * ``cleared``, ``resync``, ``history``, ``preferences``, ``mute``, ``withdrawn`` and ``updated``; fields ``status``,
 * ``unread``, ``unreadKnown``, ``notifications``, ``lastEventId``, ``historyLoaded``.
 */
export class NotificationClient {
  constructor(client = squallClient()) {
    this.squall = client;
    this.onAlert = null;
    this.historyLoaded = new Promise((resolve) => { this.resolveHistory = resolve; });
    client.on("notification", (n) => {
      if (n.type !== "test" && this.onAlert) {
        try { this.onAlert(n); } catch (err) { console.error(err); }
      }
    });
    client.on("status", (s) => {
      if (s.role === "leader") document.documentElement.dataset.streamRole = "leader";
    });
  }

  get status() {
    const s = this.squall.getState().status;
    return s.state === "idle" ? { ...s, state: "connecting" } : s;
  }

  get unread() { return this.squall.getState().unread; }
  get unreadKnown() { return this.squall.getState().unreadKnown; }
  get notifications() { return this.squall.getState().notifications; }
  get lastEventId() { return this.squall.cursor.lastEventId; }

  /** Register the page's callback for notifications that may toast (not the test page's probes). */
  setOnAlert(fn) { this.onAlert = fn; }

  hasUnreadMessages() { return this.squall.hasUnreadMessages(); }

  on(type, fn) { return this.squall.on(type, fn); }

  clearNotifications(type = null) { return this.squall.clearNotifications(type); }

  /** Load the history, then join the leader election (the leader opens the stream). */
  async start() {
    if (this.started) return;
    this.started = true;
    const loaded = this.squall.historyLoaded.then(() => this.resolveHistory());
    window.addEventListener("online", () => this.squall.retryNow());
    window.addEventListener("pagehide", () => this.squall.stop());
    await this.squall.start();
    await loaded;
  }
}

let shared = null;

/** This page's NotificationClient (created on first use; call ``start()`` once). */
export function notificationClient() {
  if (!shared) shared = new NotificationClient();
  return shared;
}

/**
 * The chat view's connection (@squall/client's ChatConnection): /ws/chat, or /sse/chat
 * (or /poll/chat) plus HTTP. ``onFrame`` gets every chat frame (message, typing, read);
 * ``onStatus`` gets {state, transport}; ``onJoined`` the chat joined (or null).
 */
export class ChatConnection {
  constructor({ onFrame, onStatus, onJoined }) {
    this.onFrame = onFrame;
    this.onStatus = onStatus || (() => {});
    this.onJoined = onJoined || (() => {});
    this.conn = null;
  }

  get transport() { return this.conn ? this.conn.transport : null; }

  /** Start the connection, present in ``chatId`` (may be null) from ``lastMessageId`` on. */
  start(chatId, lastMessageId) {
    this.conn = squallClient().chat({ chatId, lastMessageId: lastMessageId || null });
    chatConnections.add(this.conn);
    this.conn.on("frame", (data) => this.onFrame(data));
    this.conn.on("status", (s) => this.onStatus({ ...s, transport: this.conn.transport }));
    this.conn.on("joined", (chatId) => this.onJoined(chatId));
    return this.conn.start(chatId);
  }

  setChat(chatId) { if (this.conn) this.conn.setChat(chatId); }

  /** Send a message (with upload ids); resolves with the stored message (ack over WS, 201 over HTTP). */
  send(chatId, content, attachments = [], replyTo = null) { return this.conn.send(chatId, content, { attachments, replyTo }); }

  typing(chatId) { this.conn.typing(chatId).catch(() => {}); }

  markRead(chatId, messageId) { this.conn.markRead(chatId, messageId).catch(() => {}); }
}
