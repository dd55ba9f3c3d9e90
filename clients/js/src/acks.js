// Sends awaiting their acknowledgement, matched by ``client_id``.
//
// A send keeps its ``client_id`` for every retry: the server stores a ``client_id`` once
// per sender and answers a repeat with the message stored the first time, so resending
// after a reconnect or a timeout never stores it twice.

/** Error codes after which the same send may be retried (docs/protocol.md, section 3). */
export const RETRYABLE_CODES = new Set(["shutting_down", "store_failed", "database_unavailable", "disconnected"]);

export class SendError extends Error {
  constructor(code, message, status = 0) {
    super(message || code);
    this.name = "SendError";
    this.code = code;
    this.status = status;
  }
}

/** A new ``client_id`` (1-64 characters). */
export function newClientId() {
  const c = globalThis.crypto;
  const id = c && c.randomUUID ? c.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  return `c-${id}`.slice(0, 64);
}

export class PendingSends {
  constructor() { this.pending = new Map(); }

  get size() { return this.pending.size; }

  /** Register ``request`` (``{chat_id|recipient_id, content, message_type?, client_id}``); resolves with the stored message. */
  add(request) {
    const existing = this.pending.get(request.client_id);
    if (existing) return existing.promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    this.pending.set(request.client_id, { request, resolve, reject, promise, attempts: 0 });
    return promise;
  }

  /** The requests still waiting (to resend after a reconnect). */
  waiting() { return [...this.pending.values()].map((p) => p.request); }

  has(clientId) { return this.pending.has(clientId); }

  noteAttempt(clientId) {
    const p = this.pending.get(clientId);
    if (p) p.attempts += 1;
    return p ? p.attempts : 0;
  }

  /**
   * Resolve the send a frame acknowledges; true when it matched one. A ``message_ack``
   * or ``error`` names its ``client_id``; a ``message`` frame (no ack over SSE or
   * long-polling) matches by ``message.client_id`` when ``selfId`` sent it.
   */
  match(frame, selfId = null) {
    if (!frame || typeof frame !== "object") return false;
    let clientId = typeof frame.client_id === "string" ? frame.client_id : null;
    if (frame.type === "message" && frame.message && typeof frame.message.client_id === "string"
        && selfId !== null && frame.message.sender_id === selfId) clientId = frame.message.client_id;
    if (clientId === null) return false;
    const p = this.pending.get(clientId);
    if (!p) return false;
    if (frame.type === "message_ack" || frame.type === "message") {
      this.pending.delete(clientId);
      p.resolve(frame.message);
      return true;
    }
    if (frame.type === "error") {
      if (RETRYABLE_CODES.has(frame.code)) return true;    // stays pending: resent on the next open
      this.pending.delete(clientId);
      p.reject(new SendError(frame.code, frame.message));
      return true;
    }
    return false;
  }

  /** Resolve ``clientId`` with ``message`` (an HTTP 201). */
  resolve(clientId, message) {
    const p = this.pending.get(clientId);
    if (!p) return;
    this.pending.delete(clientId);
    p.resolve(message);
  }

  /** Reject ``clientId`` (a refused send) with ``error``. */
  reject(clientId, error) {
    const p = this.pending.get(clientId);
    if (!p) return;
    this.pending.delete(clientId);
    p.reject(error);
  }

  /** Reject every waiting send (the client stopped). */
  rejectAll(error) {
    for (const [id] of this.pending) this.reject(id, error);
  }
}
