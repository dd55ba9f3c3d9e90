// createSquall(): the notification stream, unread state, recent notifications and
// preferences of one user, shared by the tabs of a browser.
//
// Tabs elect one leader with the Web Locks API; only the leader holds the stream and it
// forwards every frame to the other tabs over a BroadcastChannel. When the leader goes,
// its lock is released, the next tab takes it and resumes from the last event id it had
// received (followers track the forwarded frames), so the handover loses no event. Where
// Web Locks or BroadcastChannel are missing (Node, old browsers), each instance holds
// its own stream.

import { Http } from "./http.js";
import { NotificationCursor } from "./resume.js";
import { DEFAULTS, Reconnector } from "./stream.js";
import { TokenSource, UnauthorizedError } from "./tokens.js";
import { ChatConnection } from "./chat.js";

export const MAX_NOTIFICATIONS = 200;

function memoryFlag() {
  let value = false;
  return { get: () => value, set: () => { value = true; } };
}

function sessionFlag(key) {
  try {
    const storage = globalThis.sessionStorage;
    if (!storage) return memoryFlag();
    return { get: () => storage.getItem(key) === "1", set: () => { try { storage.setItem(key, "1"); } catch { /* */ } } };
  } catch {
    return memoryFlag();
  }
}

export class Squall {
  constructor(options = {}) {
    if (!options || typeof options.getToken !== "function") throw new TypeError("createSquall needs getToken");
    this.options = { ...DEFAULTS, historyLimit: 50, shareAcrossTabs: true, loadPreferences: true, ...options };
    this.tokens = new TokenSource(options.getToken);
    this.http = new Http({ url: options.url || "", fetch: options.fetch, credentials: options.credentials || "same-origin",
                           tokens: this.tokens });
    const name = options.name || `squall:${this.http.base || "same-origin"}`;
    this.lockName = `${name}:notification-stream`;
    this.channelName = `${name}:notification-events`;
    this.WebSocket = options.WebSocket !== undefined ? options.WebSocket : globalThis.WebSocket;
    this.heldBack = options.heldBack || sessionFlag(`${name}:eventStreamHeldBack`);
    this.listeners = new Map();
    this.cursor = new NotificationCursor(options.lastEventId ?? null);
    this.seen = new Set();
    this.state = {
      status: { state: "idle", transport: null, role: "follower", wsBlocked: false, sseHeldBack: false,
                pollRttMs: null, retryInMs: null, lastEventId: this.cursor.lastEventId },
      unread: { total: 0, chats: {}, muted: {}, mentions: {} },
      unreadKnown: false,
      notifications: [],
      preferences: null,
    };
    this.channel = null;
    this.reconnector = null;
    this.started = false;
    this.startPromise = null;
    this.runId = 0;
    this.stopped = false;
    this.ready = false;
    this.releaseLock = null;
    /** Resolves once the first history load ended (loaded, failed or unauthorized). */
    this.historyLoaded = new Promise((resolve) => { this.resolveHistory = resolve; });
  }

  /** The stream's context for openStream/Reconnector. */
  streamContext() {
    return { http: this.http, tokens: this.tokens, WebSocket: this.WebSocket, options: this.options, heldBack: this.heldBack };
  }

  // Events -------------------------------------------------------------------------------

  /** Subscribe to an event; returns the unsubscribe function. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => { this.listeners.get(type)?.delete(fn); };
  }

  /** Call ``fn(state)`` on every state change (and once now); returns the unsubscribe function. */
  subscribe(fn) {
    const off = this.on("change", fn);
    fn(this.state);
    return off;
  }

  getState() { return this.state; }

  emit(type, detail) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try { fn(detail); } catch (err) { if (typeof console !== "undefined") console.error(err); }
    }
  }

  update(changes) {
    this.state = { ...this.state, ...changes };
    this.emit("change", this.state);
  }

  // Public API ---------------------------------------------------------------------------

  hasUnreadMessages() { return this.state.unread.total > 0; }

  /** HTTP to the server with this client's credentials (refreshing once on 401). */
  request(method, path, body) {
    if (this.isUnauthorized()) return Promise.reject(new UnauthorizedError("unauthorized"));
    return this.http.request(method, path, body).catch((err) => {
      if (err instanceof UnauthorizedError) this.onUnauthorized(err);
      throw err;
    });
  }

  /**
   * Get a token, load the history and preferences, then join the leader election. Calling
   * it again while started returns the same promise; after ``stop()`` it starts afresh
   * (React StrictMode's mount, unmount, mount opens one stream, not two).
   */
  start() {
    if (this.startPromise && !this.stopped) return this.startPromise;
    this.stopped = false;
    this.started = true;
    const run = ++this.runId;
    this.startPromise = this.run(run);
    return this.startPromise;
  }

  /** True while ``run`` is the current start (not stopped, not restarted since). */
  current(run) { return run === this.runId && !this.stopped; }

  async run(run) {
    this.setStatus({ state: "connecting", transport: null });
    try {
      await this.tokens.refresh("start");
    } catch (err) {
      this.onUnauthorized(err);
      this.resolveHistory();
      return;
    }
    if (!this.current(run)) return;
    // Listen before loading the history so that no frame falls between the two.
    const early = [];
    this.ready = false;
    const BC = this.options.BroadcastChannel !== undefined ? this.options.BroadcastChannel : globalThis.BroadcastChannel;
    const locks = this.options.locks !== undefined ? this.options.locks : globalThis.navigator?.locks;
    if (this.options.shareAcrossTabs && BC && locks) {
      const channel = new BC(this.channelName);
      this.channel = channel;
      channel.onmessage = (e) => {
        if (this.channel !== channel) return;
        if (this.ready) this.onChannel(e.data); else early.push(e.data);
      };
    }
    await this.loadHistory();
    this.resolveHistory();
    if (!this.current(run) || this.isUnauthorized()) return;
    if (this.options.loadPreferences) {
      this.request("GET", "/api/me/preferences").then((prefs) => {
        if (prefs && typeof prefs === "object") this.update({ preferences: prefs });
      }).catch(() => { /* optional */ });
    }
    this.ready = true;
    for (const msg of early) this.onChannel(msg);
    if (this.channel) {
      locks.request(this.lockName, () => new Promise((release) => {
        // Granted to a start that was stopped (or restarted) meanwhile: pass it on at once.
        if (!this.current(run)) { release(); return; }
        this.releaseLock = release;
        this.becomeLeader();
      })).catch(() => {});
      this.post({ kind: "hello" });
    } else {
      this.becomeLeader();
    }
  }

  /** Stop the stream (and give the leadership to another tab). */
  stop() {
    this.stopped = true;
    if (this.reconnector) this.reconnector.stop();
    this.reconnector = null;
    if (this.releaseLock) { this.releaseLock(); this.releaseLock = null; }
    if (this.channel) { this.channel.close(); this.channel = null; }
    if (this.state.status.state !== "unauthorized") this.setStatus({ state: "stopped", transport: null, role: "follower" });
  }

  /** Reconnect now if waiting for a retry (e.g. the platform came back online). */
  retryNow() { if (this.reconnector) this.reconnector.retryNow(); }

  /** Clear the notifications (all, or those of ``type``) on the server and in every tab. */
  async clearNotifications(type = null) {
    await this.request("POST", "/api/notifications/clear", type ? { type } : {});
    this.applyCleared(type);
    this.post({ kind: "cleared", type });
  }

  /** Mark notifications read (``ids``; all when omitted). */
  markNotificationsRead(ids) {
    return this.request("POST", "/api/notifications/read", ids ? { ids } : {});
  }

  /** Change preferences (PATCH /api/me/preferences); every tab gets the ``preferences`` event. */
  async updatePreferences(changes) {
    const prefs = await this.request("PATCH", "/api/me/preferences", changes);
    if (prefs && typeof prefs === "object") this.update({ preferences: prefs });
    return prefs;
  }

  /**
   * Upload a file for a later send's ``attachments``: resolves with ``{id, content_type,
   * size, filename, width, height}``; ``onProgress(sent, total)`` follows it in a browser.
   */
  upload(file, options = {}) {
    if (this.isUnauthorized()) return Promise.reject(new UnauthorizedError("unauthorized"));
    return this.http.upload(file, options).catch((err) => {
      if (err instanceof UnauthorizedError) this.onUnauthorized(err);
      throw err;
    });
  }

  /** Short-lived URLs of an attachment (``{url, thumbnail_url, expires_at}``), for members of its chat. */
  attachmentLink(uploadId) {
    return this.request("GET", `/api/uploads/${encodeURIComponent(uploadId)}/link`).then((link) => ({
      ...link,
      url: link.url ? this.http.url(link.url) : link.url,
      thumbnail_url: link.thumbnail_url ? this.http.url(link.thumbnail_url) : link.thumbnail_url,
    }));
  }

  /** A chat connection (/ws/chat, or /sse/chat or /poll/chat plus HTTP) with this client's credentials. */
  chat(options = {}) {
    return new ChatConnection(this, options);
  }

  // Internals ----------------------------------------------------------------------------

  post(message) { if (this.channel) { try { this.channel.postMessage(message); } catch { /* closed */ } } }

  setStatus(changes) {
    const status = { ...this.state.status, ...changes, lastEventId: this.cursor.lastEventId };
    this.update({ status });
    this.emit("status", status);
    if (status.role === "leader") this.post({ kind: "status", status });
  }

  onUnauthorized(err) {
    if (this.isUnauthorized() && this.reportedUnauthorized === this.runId) return;
    this.reportedUnauthorized = this.runId;
    if (this.reconnector) this.reconnector.stop();
    this.reconnector = null;
    this.setStatus({ state: "unauthorized", transport: null });
    this.post({ kind: "unauthorized" });
    this.emit("unauthorized", err);
  }

  async loadHistory() {
    try {
      const { notifications } = await this.request("GET", `/api/notifications?limit=${this.options.historyLimit}`);
      for (const n of notifications.slice().reverse()) this.remember(n);
      if (this.cursor.lastEventId === null) this.cursor.advance(notifications.reduce((m, n) => Math.max(m, n.id), 0));
      this.update({ notifications: this.state.notifications });
      this.emit("history", this.state.notifications);
    } catch (err) {
      if (!(err instanceof UnauthorizedError)) this.emit("error", err);
    }
  }

  remember(n) {
    if (this.seen.has(n.id)) return false;
    this.seen.add(n.id);
    const list = [n, ...this.state.notifications].sort((a, b) => b.id - a.id).slice(0, MAX_NOTIFICATIONS);
    this.state = { ...this.state, notifications: list };
    return true;
  }

  isUnauthorized() { return this.state.status.state === "unauthorized"; }

  becomeLeader() {
    if (this.stopped || this.isUnauthorized()) return;
    this.setStatus({ role: "leader" });
    const resume = (path) => {
      const q = this.cursor.query();
      return q ? `${path}?${q}` : path;
    };
    this.reconnector = new Reconnector({
      ws: () => resume("/ws/notifications"),
      sse: () => resume("/sse/notifications"),
      // A poll resumes from its own answer's position (the first from the cursor).
      poll: (position) => (position !== null ? "/poll/notifications" : resume("/poll/notifications")),
    }, {
      status: (s) => this.setStatus(s),
      frame: (data) => { this.post({ kind: "frame", data }); this.handleFrame(data); },
      position: (id) => this.cursor.advance(id),
      unauthorized: (err) => this.onUnauthorized(err),
    }, this.streamContext());
    this.reconnector.start();
  }

  onChannel(msg) {
    if (!msg || typeof msg !== "object") return;
    const leader = this.state.status.role === "leader";
    if (msg.kind === "frame") this.handleFrame(msg.data);
    else if (msg.kind === "status" && !leader) {
      this.setStatus({ ...msg.status, role: "follower" });
    } else if (msg.kind === "hello" && leader) {
      this.post({ kind: "snapshot", unread: this.state.unread, unreadKnown: this.state.unreadKnown,
                  status: this.state.status });
    } else if (msg.kind === "snapshot" && !leader) {
      if (msg.unreadKnown) {
        this.update({ unread: msg.unread, unreadKnown: true });
        this.emit("unread", msg.unread);
      }
      this.setStatus({ ...msg.status, role: "follower" });
    } else if (msg.kind === "cleared") this.applyCleared(msg.type || null);
    else if (msg.kind === "unauthorized") this.onUnauthorized(new UnauthorizedError("unauthorized in another tab"));
  }

  applyCleared(type = null) {
    const notifications = type ? this.state.notifications.filter((n) => n.type !== type) : [];
    this.update({ notifications });
    this.emit("cleared", type);
  }

  /** One frame of the notification stream (from the own stream or the leader tab). */
  handleFrame(data) {
    if (!data || typeof data !== "object") return;
    if (data.id != null) {
      if (!this.cursor.accept(data.id)) return;   // replayed or forwarded twice
      this.setStatus({});
      if (!this.remember(data)) return;
      this.update({ notifications: this.state.notifications });
      this.emit("notification", data);
      if (data.type === "new_message") this.emit("new_message", data);
      return;
    }
    if (data.type === "unread") {
      const unread = { total: data.total || 0, chats: data.chats || {}, muted: data.muted || {}, mentions: data.mentions || {} };
      this.update({ unread, unreadKnown: true });
      this.emit("unread", unread);
    } else if (data.type === "resync") {
      // The server could not replay everything missed: refetch over HTTP.
      this.cursor.reset();
      this.seen.clear();
      this.state = { ...this.state, notifications: [] };
      this.loadHistory().then(() => this.emit("resync", null));
    } else if (data.type === "preferences") {
      const { type: _type, ...prefs } = data;
      this.update({ preferences: { ...(this.state.preferences || {}), ...prefs } });
      this.emit("preferences", data);
    } else if (data.type === "mute") {
      this.emit("mute", data);
    } else if (data.type === "presence") {
      this.emit("presence", data);
    } else if (data.type === "notification_withdrawn") {
      // its message was deleted: the notification leaves the list (an ``unread`` follows)
      const notifications = this.state.notifications.filter((n) => n.id !== data.notification_id);
      if (notifications.length !== this.state.notifications.length) this.update({ notifications });
      this.emit("withdrawn", data);
    } else if (data.type === "notification_updated") {
      // its message was edited: the new preview
      const notifications = this.state.notifications.map((n) => (n.id === data.notification_id
        ? { ...n, content_preview: data.content_preview } : n));
      this.update({ notifications });
      this.emit("updated", data);
    }
  }
}

/** Create a client (call ``start()`` to connect). */
export function createSquall(options) {
  return new Squall(options);
}
