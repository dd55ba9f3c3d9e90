// Resume bookkeeping: where a stream picks up after a reconnect, on any transport.
//
// The notification stream's event id is the notification id (a growing integer) on every
// transport: a WebSocket frame's ``id``, an SSE ``id:`` line, a poll answer's
// ``last_event_id``. The chat streams (/sse/chat, /poll/chat) use ``M-N``: the last chat
// message and the last notification. A cursor only moves forward, so a frame at or below
// it (a replay the client had already, a frame forwarded twice) is a duplicate.

/** The notification cursor: the highest notification id handled (null: start "now"). */
export class NotificationCursor {
  constructor(lastEventId = null) {
    this.lastEventId = lastEventId === null || lastEventId === undefined ? null : Number(lastEventId);
  }

  /** True (and the cursor moves) when ``id`` is new; false for a duplicate. */
  accept(id) {
    const n = Number(id);
    if (!Number.isFinite(n)) return false;
    if (this.lastEventId !== null && n <= this.lastEventId) return false;
    this.lastEventId = n;
    return true;
  }

  /** Move to at least ``id`` without handling a frame (a poll answer's position, a history). */
  advance(id) {
    const n = Number(id);
    if (Number.isFinite(n) && (this.lastEventId === null || n > this.lastEventId)) this.lastEventId = n;
  }

  /** Forget the position (after ``resync``: the list is reloaded over HTTP). */
  reset() { this.lastEventId = null; }

  /** ``?last_event_id=N`` or "" (no position yet). */
  query() { return this.lastEventId === null ? "" : `last_event_id=${this.lastEventId}`; }
}

/** Parse a composite ``M-N`` id; null when it is not one. */
export function parseChatEventId(value) {
  const m = /^(\d+)-(\d+)$/.exec(String(value ?? ""));
  return m ? { messageId: Number(m[1]), notificationId: Number(m[2]) } : null;
}

/** The chat cursor: the last chat message id and the last notification id. */
export class ChatCursor {
  constructor(messageId = null, notificationId = null) {
    this.messageId = messageId;
    this.notificationId = notificationId;
  }

  /** A message seen (frame, ack or HTTP answer): true when it is new. */
  acceptMessage(id) {
    const n = Number(id);
    if (!Number.isFinite(n)) return false;
    if (this.messageId !== null && n <= this.messageId) return false;
    this.messageId = n;
    return true;
  }

  /** An SSE or poll position ``M-N``: both parts move forward (never back). */
  advance(eventId) {
    const p = parseChatEventId(eventId);
    if (!p) return;
    if (this.messageId === null || p.messageId > this.messageId) this.messageId = p.messageId;
    if (this.notificationId === null || p.notificationId > this.notificationId) this.notificationId = p.notificationId;
  }

  /** The WebSocket's resume id (the last message id), or null. */
  wsLastEventId() { return this.messageId; }

  /**
   * The SSE/poll resume id ``M-N``, or null when no message is known yet. ``notificationId``:
   * a notification position known elsewhere (the notification stream's), the higher wins.
   */
  streamLastEventId(notificationId = null) {
    if (this.messageId === null) return null;
    return `${this.messageId}-${Math.max(this.notificationId || 0, Number(notificationId) || 0)}`;
  }
}
