// The React-free parts of @squall/react: sharing one started client between the mounts of
// a component tree, and the state of one open conversation. Kept apart from the hooks so
// that Node's test runner exercises them without a DOM.

/**
 * Holds on ``client``: starts it on the first hold and stops it when the last hold is
 * released, one macrotask later. React StrictMode runs effects twice (mount, unmount,
 * mount) within one commit: the deferred stop is cancelled by the second mount, so the
 * client starts once and opens one stream, not two. Returns the release function (which
 * may be called more than once).
 */
export function retain(client, holds = defaultHolds) {
  let entry = holds.get(client);
  if (!entry) {
    entry = { count: 0, timer: null, started: false };
    holds.set(client, entry);
  }
  entry.count += 1;
  if (entry.timer !== null) {
    clearTimeout(entry.timer);
    entry.timer = null;
  }
  if (!entry.started) {
    entry.started = true;
    Promise.resolve(client.start()).catch(() => { /* reported as the client's status */ });
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    entry.count -= 1;
    if (entry.count > 0) return;
    entry.timer = setTimeout(() => {
      entry.timer = null;
      if (entry.count === 0 && entry.started) {
        entry.started = false;
        client.stop();
      }
    }, 0);
  };
}

const defaultHolds = new WeakMap();

/** How long a "typing" frame shows its user as typing. */
export const TYPING_MS = 5000;
/** Messages per history page. */
export const PAGE_SIZE = 50;

function byId(a, b) { return a.id - b.id; }

/** ``list`` plus ``more`` (messages), each id once, oldest first. */
export function mergeMessages(list, more) {
  const ids = new Set(list.map((m) => m.id));
  const added = more.filter((m) => m && typeof m.id === "number" && !ids.has(m.id) && ids.add(m.id));
  if (added.length === 0) return list;
  return [...list, ...added].sort(byId);
}

/**
 * The state of one conversation over a ChatConnection (``conn``): messages (oldest first,
 * each id once whether it came from the history, the stream or a send's acknowledgement),
 * paging back, sends in flight, who is typing, read receipts. ``subscribe`` and
 * ``getSnapshot`` are useSyncExternalStore's; the snapshot object changes only when the
 * state does.
 */
export class ChatStore {
  constructor(conn, chatId, { pageSize = PAGE_SIZE, typingMs = TYPING_MS, now = () => Date.now() } = {}) {
    this.conn = conn;
    this.chatId = chatId;
    this.pageSize = pageSize;
    this.typingMs = typingMs;
    this.now = now;
    this.listeners = new Set();
    this.state = {
      chatId, messages: [], loading: false, loaded: false, hasOlder: false, pending: [], typing: [], receipts: {},
      error: null,
    };
    this.offs = [];
    this.typingTimer = null;
    this.closed = false;
    this.getSnapshot = () => this.state;
    this.subscribe = (fn) => {
      this.listeners.add(fn);
      return () => { this.listeners.delete(fn); };
    };
  }

  set(changes) {
    this.state = { ...this.state, ...changes };
    for (const fn of [...this.listeners]) fn();
  }

  /** Listen to the connection and load the newest page. */
  open() {
    this.closed = false;
    this.offs.push(this.conn.on("message", (f) => this.onMessage(f.message)));
    this.offs.push(this.conn.on("typing", (f) => this.onTyping(f)));
    this.offs.push(this.conn.on("read", (f) => this.onRead(f)));
    return this.load();
  }

  close() {
    this.closed = true;
    for (const off of this.offs) off();
    this.offs = [];
    if (this.typingTimer !== null) clearTimeout(this.typingTimer);
    this.typingTimer = null;
  }

  async load() {
    if (this.chatId === null || this.chatId === undefined) return;
    this.set({ loading: true, error: null });
    try {
      const page = await this.conn.history(this.chatId, { limit: this.pageSize });
      if (this.closed) return;
      this.set({ messages: mergeMessages(this.state.messages, page), hasOlder: page.length >= this.pageSize,
                 loading: false, loaded: true });
    } catch (err) {
      if (!this.closed) this.set({ loading: false, error: err });
    }
  }

  /** The page before the oldest message held; resolves with how many were added. */
  async loadOlder() {
    if (this.state.loading || !this.state.hasOlder || this.chatId == null) return 0;
    const oldest = this.state.messages[0];
    this.set({ loading: true, error: null });
    try {
      const page = await this.conn.history(this.chatId, { beforeId: oldest ? oldest.id : null, limit: this.pageSize });
      if (this.closed) return 0;
      const before = this.state.messages.length;
      const messages = mergeMessages(this.state.messages, page);
      this.set({ messages, hasOlder: page.length >= this.pageSize, loading: false });
      return messages.length - before;
    } catch (err) {
      if (!this.closed) this.set({ loading: false, error: err });
      throw err;
    }
  }

  onMessage(message) {
    if (!message || message.chat_id !== this.chatId) return;
    const typing = this.state.typing.filter((t) => t.user_id !== message.sender_id);
    this.set({ messages: mergeMessages(this.state.messages, [message]), typing });
  }

  onTyping(frame) {
    if (frame.chat_id !== this.chatId) return;
    const until = this.now() + this.typingMs;
    const typing = [...this.state.typing.filter((t) => t.user_id !== frame.user_id),
                    { user_id: frame.user_id, user_name: frame.user_name, until }];
    this.set({ typing });
    this.scheduleTypingExpiry();
  }

  scheduleTypingExpiry() {
    if (this.typingTimer !== null) clearTimeout(this.typingTimer);
    this.typingTimer = null;
    if (this.state.typing.length === 0) return;
    const next = Math.min(...this.state.typing.map((t) => t.until));
    this.typingTimer = setTimeout(() => {
      this.typingTimer = null;
      this.expireTyping();
    }, Math.max(0, next - this.now()));
  }

  /** Drop the users whose typing frame is older than ``typingMs``. */
  expireTyping() {
    const now = this.now();
    const typing = this.state.typing.filter((t) => t.until > now);
    if (typing.length !== this.state.typing.length) this.set({ typing });
    this.scheduleTypingExpiry();
  }

  onRead(frame) {
    if (frame.chat_id !== this.chatId) return;
    const key = String(frame.user_id);
    if ((this.state.receipts[key] || 0) >= frame.message_id) return;
    this.set({ receipts: { ...this.state.receipts, [key]: frame.message_id } });
  }

  /**
   * Send ``content``; it shows in ``pending`` until acknowledged, then in ``messages``.
   * Resolves with the stored message; a refused send stays in ``pending`` with its error.
   */
  async send(content, options = {}) {
    const clientId = options.clientId || newId();
    const entry = { client_id: clientId, content, error: null };
    this.set({ pending: [...this.state.pending, entry] });
    try {
      const message = await this.conn.send(this.chatId, content, { ...options, clientId });
      if (!this.closed) {
        this.set({ messages: mergeMessages(this.state.messages, [message]),
                   pending: this.state.pending.filter((p) => p.client_id !== clientId) });
      }
      return message;
    } catch (err) {
      if (!this.closed) {
        this.set({ pending: this.state.pending.map((p) => (p.client_id === clientId ? { ...p, error: err } : p)) });
      }
      throw err;
    }
  }

  /** Forget a failed send shown in ``pending``. */
  discard(clientId) {
    this.set({ pending: this.state.pending.filter((p) => p.client_id !== clientId) });
  }

  /** Mark the conversation read up to ``messageId`` (default: the newest message held). */
  markRead(messageId) {
    const last = this.state.messages[this.state.messages.length - 1];
    const id = messageId ?? (last ? last.id : null);
    if (id === null || this.chatId == null) return Promise.resolve();
    return this.conn.markRead(this.chatId, id);
  }

  /** Tell the others this user is typing. */
  typing() {
    if (this.chatId == null) return Promise.resolve();
    return this.conn.typing(this.chatId);
  }
}

function newId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  return `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * A toast queue: ``push(notification)``, ``dismiss(id)``, timers that pause while the
 * pointer or the focus is on a toast. ``subscribe``/``getSnapshot`` as ChatStore's.
 */
export class ToastQueue {
  constructor({ durationMs = 6000, max = 3 } = {}) {
    this.durationMs = durationMs;
    this.max = max;
    this.toasts = [];
    this.timers = new Map();   // id -> {timer, remaining, started}
    this.paused = false;
    this.listeners = new Set();
    this.getSnapshot = () => this.toasts;
    this.subscribe = (fn) => {
      this.listeners.add(fn);
      return () => { this.listeners.delete(fn); };
    };
  }

  changed() { for (const fn of [...this.listeners]) fn(); }

  /** Show ``notification`` (once per id); the oldest beyond ``max`` goes. */
  push(notification) {
    if (this.toasts.some((t) => t.id === notification.id)) return false;
    this.toasts = [...this.toasts, notification];
    while (this.toasts.length > this.max) this.forget(this.toasts[0].id);
    this.timers.set(notification.id, { timer: null, remaining: this.durationMs, started: 0 });
    if (!this.paused) this.arm(notification.id);
    this.changed();
    return true;
  }

  arm(id) {
    const t = this.timers.get(id);
    if (!t || t.timer !== null || !(this.durationMs > 0)) return;
    t.started = Date.now();
    t.timer = setTimeout(() => this.dismiss(id), t.remaining);
  }

  forget(id) {
    const t = this.timers.get(id);
    if (t && t.timer !== null) clearTimeout(t.timer);
    this.timers.delete(id);
    this.toasts = this.toasts.filter((n) => n.id !== id);
  }

  dismiss(id) {
    if (!this.toasts.some((n) => n.id === id)) return;
    this.forget(id);
    this.changed();
  }

  /** Hold every timer (pointer or focus on the toasts). */
  pause() {
    if (this.paused) return;
    this.paused = true;
    for (const t of this.timers.values()) {
      if (t.timer === null) continue;
      clearTimeout(t.timer);
      t.timer = null;
      t.remaining = Math.max(0, t.remaining - (Date.now() - t.started));
    }
  }

  resume() {
    if (!this.paused) return;
    this.paused = false;
    for (const id of this.timers.keys()) this.arm(id);
  }

  clear() {
    for (const id of [...this.timers.keys()]) this.forget(id);
    this.changed();
  }
}
