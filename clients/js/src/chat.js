// A chat connection: /ws/chat (join/leave, send with ack, typing, mark read) or, when
// WebSockets are blocked, /sse/chat (or /poll/chat) plus HTTP, with the stream's ladder,
// backoff and token refresh. Sends wait for their acknowledgement across reconnects: a
// send not acknowledged when the connection drops is sent again, with the same
// ``client_id``, once it is back (the server stores a ``client_id`` once).

import { newClientId, PendingSends, SendError } from "./acks.js";
import { ChatCursor } from "./resume.js";
import { Reconnector } from "./stream.js";
import { SquallError } from "./http.js";

// Events that change a stored message (edits, deletes, reactions), each with an ``event_id``.
const CHANGE_EVENTS = new Set(["message_edited", "message_deleted", "reaction"]);

export class ChatConnection {
  constructor(squall, { chatId = null, lastMessageId = null, ackTimeoutMs = 10_000 } = {}) {
    this.squall = squall;
    this.chatId = chatId;
    this.cursor = new ChatCursor(lastMessageId, null);
    this.ackTimeoutMs = ackTimeoutMs;
    this.pending = new PendingSends();
    this.listeners = new Map();
    this.transport = null;
    this.joined = null;
    this.selfId = null;
    this.reconnector = null;
    this.status = { state: "idle", transport: null };
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => { this.listeners.get(type)?.delete(fn); };
  }

  emit(type, detail) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try { fn(detail); } catch (err) { if (typeof console !== "undefined") console.error(err); }
    }
  }

  /** Connect (present in ``chatId`` when given). */
  async start(chatId = this.chatId) {
    this.chatId = chatId;
    if (this.squall.tokens.generation === 0) await this.squall.tokens.refresh("start");
    try { this.selfId = (await this.squall.request("GET", "/api/me")).id; } catch { /* matched by acks only */ }
    // The chat streams also carry notifications: resume those from the notification client's cursor.
    const lastId = () => this.cursor.streamLastEventId(this.squall.cursor.lastEventId);
    const chatQuery = (base, position) => {
      const q = new URLSearchParams();
      if (this.chatId) q.set("chat_id", String(this.chatId));
      if (position === undefined && lastId()) q.set("last_event_id", lastId());
      const s = q.toString();
      return s ? `${base}?${s}` : base;
    };
    this.reconnector = new Reconnector({
      ws: () => (this.cursor.wsLastEventId() ? `/ws/chat?last_event_id=${this.cursor.wsLastEventId()}` : "/ws/chat"),
      sse: () => chatQuery("/sse/chat"),
      poll: (position) => (position !== null ? chatQuery("/poll/chat", position) : chatQuery("/poll/chat")),
    }, {
      status: (s) => {
        if (s.transport) this.transport = s.transport;
        if (s.state && s.state !== "open") { this.transport = null; this.setJoined(null); }
        this.status = { ...this.status, ...s, transport: this.transport };
        this.emit("status", this.status);
      },
      open: (transport) => {
        this.transport = transport;
        if (transport === "websocket" && this.chatId) this.trySend({ type: "join_chat", chat_id: this.chatId });
        this.resendPending();
      },
      frame: (data, id) => { if (id && id.includes("-")) this.cursor.advance(id); this.handleFrame(data); },
      position: (id) => this.cursor.advance(id),
      unauthorized: (err) => { this.pending.rejectAll(err); this.squall.onUnauthorized(err); },
    }, this.squall.streamContext());
    this.reconnector.start();
  }

  stop() {
    if (this.reconnector) this.reconnector.stop();
    this.reconnector = null;
    this.pending.rejectAll(new SendError("stopped", "The chat connection was stopped"));
  }

  setJoined(chatId) {
    if (this.joined === chatId) return;
    this.joined = chatId;
    this.emit("joined", chatId);
  }

  /** Switch presence to ``chatId`` (null: no chat open). */
  setChat(chatId) {
    const previous = this.chatId;
    if (previous === chatId) return;
    this.chatId = chatId;
    this.setJoined(null);
    if (this.transport === "websocket") {
      if (previous) this.trySend({ type: "leave_chat", chat_id: previous });
      if (chatId) this.trySend({ type: "join_chat", chat_id: chatId });
    } else if (this.reconnector) {
      this.reconnector.restart();   // /sse/chat and /poll/chat carry presence in their URL
    }
  }

  trySend(obj) {
    try { this.reconnector.send(obj); return true; } catch { return false; }
  }

  handleFrame(data) {
    if (!data || typeof data !== "object") return;
    if ((data.type === "message" || data.type === "message_ack") && data.message) {
      this.cursor.acceptMessage(data.message.id);
    } else if (CHANGE_EVENTS.has(data.type) && data.event_id != null) {
      // A change of a message has an id of its own in the messages' sequence (docs/protocol.md,
      // "Changing a message"): resume after it, or it comes again.
      this.cursor.acceptMessage(data.event_id);
    }
    if (this.pending.match(data, this.selfId)) {
      if (data.type === "message_ack" || data.type === "error") return;
    }
    if (data.type === "unread" && (this.transport === "sse" || this.transport === "poll")) this.setJoined(this.chatId);
    else if (data.type === "joined" && data.chat_id === this.chatId) this.setJoined(data.chat_id);
    this.emit("frame", data);
    if (["message", "typing", "read", "left", "error", ...CHANGE_EVENTS].includes(data.type)) this.emit(data.type, data);  // "joined": presence, see setJoined
  }

  /** A page of history, oldest to newest (``beforeId``: page back). */
  async history(chatId, { beforeId = null, limit = 50 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (beforeId !== null) q.set("before_id", String(beforeId));
    const { messages } = await this.squall.request("GET", `/api/chats/${chatId}/messages?${q}`);
    return messages;
  }

  /**
   * Send ``content`` to ``chatId``; resolves with the stored message once acknowledged
   * (a ``message_ack`` over the WebSocket, the 201 over HTTP). Retried with the same
   * ``client_id`` across reconnects and after ``ackTimeoutMs``.
   */
  send(chatId, content, { clientId = newClientId(), messageType, attachments, replyTo } = {}) {
    const request = { chat_id: chatId, content, client_id: clientId };
    if (messageType) request.message_type = messageType;
    if (attachments && attachments.length) request.attachments = [...attachments];
    if (replyTo != null) request.reply_to = replyTo;
    const promise = this.pending.add(request);
    this.dispatch(request);
    return promise;
  }

  dispatch(request) {
    const id = request.client_id;
    if (!this.pending.has(id)) return;
    const attempt = this.pending.noteAttempt(id);
    if (this.transport === "websocket" && this.trySend({ type: "send_message", ...request })) {
      // No ack in time (a lost socket): send again over HTTP, same client_id.
      setTimeout(() => { if (this.pending.has(id) && this.pending.noteAttempt(id) <= attempt + 1) this.sendHttp(request); },
                 this.ackTimeoutMs);
      return;
    }
    this.sendHttp(request);
  }

  async sendHttp(request) {
    const { chat_id: chatId, ...body } = request;
    try {
      const { message } = await this.squall.request("POST", `/api/chats/${chatId}/messages`, body);
      if (message) this.cursor.acceptMessage(message.id);
      this.pending.resolve(request.client_id, message);
    } catch (err) {
      const retryable = err instanceof SquallError && (err.status === 0 || err.status === 503);
      if (!retryable) this.pending.reject(request.client_id, err);
      // else: stays pending; resent when the connection opens again
    }
  }

  resendPending() {
    for (const request of this.pending.waiting()) this.dispatch(request);
  }

  /** Tell the others this user is typing in ``chatId``. */
  typing(chatId) {
    if (this.transport === "websocket" && this.trySend({ type: "typing", chat_id: chatId })) return Promise.resolve();
    return this.squall.request("POST", `/api/chats/${chatId}/typing`, {}).then(() => undefined);
  }

  /** Mark ``chatId`` read up to ``messageId``. */
  markRead(chatId, messageId) {
    if (this.transport === "websocket" && this.trySend({ type: "mark_read", chat_id: chatId, message_id: messageId })) {
      return Promise.resolve();
    }
    return this.squall.request("POST", `/api/chats/${chatId}/read`, { message_id: messageId }).then(() => undefined);
  }
}
