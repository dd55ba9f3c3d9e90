// A Server-Sent Events parser (the HTML standard's event-stream rules) and an SSE stream
// read with fetch, for platforms without EventSource (Node) and to see the HTTP status
// and Retry-After of a refused stream, which EventSource hides.

/**
 * Incremental parser: ``feed(text)`` returns the events completed by ``text``, each
 * ``{type, data, id}`` where ``id`` is the stream's last event id after it (null if none
 * was ever set). A block without ``data:`` (a lone ``retry:`` or ``id:`` block, a comment)
 * dispatches nothing. ``retry`` holds the last ``retry:`` value (ms) or null.
 */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.data = null;       // lines of the current block, null when none
    this.eventType = "";
    this.idBuffer = null;
    this.lastEventId = null;
    this.retry = null;
    this.sawCR = false;
  }

  feed(text) {
    const events = [];
    let chunk = String(text);
    // A CR at the end of the last chunk and an LF at the start of this one are one newline.
    if (this.sawCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.sawCR = false;
    this.buffer += chunk;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) break;
      if (m[0] === "\r" && m.index === this.buffer.length - 1) {
        this.sawCR = true;   // maybe half of CRLF: take the line, skip the LF if it comes
      }
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null;          // a comment (``: ping``)
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
    }
    if (field === "data") (this.data ||= []).push(value);
    else if (field === "event") this.eventType = value;
    else if (field === "id") { if (!value.includes("\0")) this.idBuffer = value; }
    else if (field === "retry") { if (/^\d+$/.test(value)) this.retry = Number(value); }
    return null;
  }

  dispatch() {
    if (this.idBuffer !== null) this.lastEventId = this.idBuffer;
    const data = this.data;
    const type = this.eventType || "message";
    this.data = null;
    this.eventType = "";
    if (data === null) return null;
    return { type, data: data.join("\n"), id: this.lastEventId };
  }
}

/**
 * Read an SSE response body (a fetch ``Response``) until it ends or ``signal`` aborts:
 * ``onEvent(event)`` for each event, ``onActivity()`` for every chunk (pings included).
 * Resolves when the body ends; rejects on a read error.
 */
export async function readEventStream(response, { onEvent, onActivity, signal } = {}) {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const reader = response.body.getReader();
  const cancel = () => { reader.cancel().catch(() => {}); };
  if (signal) signal.addEventListener("abort", cancel, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (onActivity) onActivity();
      for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
        if (onEvent) onEvent(event);
      }
    }
  } finally {
    if (signal) signal.removeEventListener("abort", cancel);
  }
}
