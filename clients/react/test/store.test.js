// The React-free parts: retain (StrictMode's mount, unmount, mount starts one stream),
// ChatStore (messages once each, paging, typing, receipts, sends) and ToastQueue.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createSquall } from "@squall/client";
import { ChatStore, ToastQueue, mergeMessages, retain } from "../src/index.js";

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function counter() {
  return { starts: 0, stops: 0, start() { this.starts += 1; return Promise.resolve(); }, stop() { this.stops += 1; } };
}

test("retain: mount, unmount, mount in one commit starts once and never stops", async () => {
  const c = counter();
  const release1 = retain(c);
  release1();
  const release2 = retain(c);
  await tick(5);
  assert.equal(c.starts, 1);
  assert.equal(c.stops, 0);
  release2();
  release2();                 // a second call is a no-op
  assert.equal(c.stops, 0);   // deferred by one macrotask
  await tick(5);
  assert.equal(c.stops, 1);
  retain(c);                  // a new mount after the stop starts afresh
  assert.equal(c.starts, 2);
});

test("retain: the client stops only when the last of two holders releases", async () => {
  const c = counter();
  const a = retain(c);
  const b = retain(c);
  a();
  await tick(5);
  assert.equal(c.stops, 0);
  b();
  await tick(5);
  assert.deepEqual([c.starts, c.stops], [1, 1]);
});

/** A local Squall stand-in over HTTP: history, and an SSE stream whose opens it counts. */
async function sseServer() {
  const state = { streams: 0, tokens: 0, open: new Set() };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/api/stream-ticket") {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ ticket: "k" }));
    } else if (url.pathname === "/api/notifications") {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ notifications: [] }));
    } else if (url.pathname === "/sse/notifications") {
      state.streams += 1;
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
      res.write(`data: ${JSON.stringify({ type: "unread", total: 1, chats: { 4: 1 } })}\n\n`);
      state.open.add(res);
      req.on("close", () => state.open.delete(res));
    } else {
      res.writeHead(404, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: { code: "not_found", message: "no" } }));
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, state, close: () => { for (const r of state.open) r.destroy(); server.close(); } };
}

test("retain with a real client: StrictMode's double effect opens one stream", async () => {
  const srv = await sseServer();
  const client = createSquall({ url: srv.url, WebSocket: null, shareAcrossTabs: false, loadPreferences: false,
                                getToken: () => { srv.state.tokens += 1; return "t"; } });
  try {
    const release = retain(client);
    release();
    const again = retain(client);
    for (let i = 0; i < 200 && client.getState().status.state !== "open"; i += 1) await tick(10);
    assert.equal(client.getState().status.state, "open");
    assert.equal(client.getState().status.transport, "sse");
    for (let i = 0; i < 100 && !client.getState().unreadKnown; i += 1) await tick(10);
    assert.equal(client.getState().unread.total, 1);
    await tick(50);
    assert.equal(srv.state.streams, 1);
    assert.equal(srv.state.tokens, 1);
    again();
    await tick(20);
    assert.equal(client.getState().status.state, "stopped");
  } finally {
    client.stop();
    srv.close();
  }
});

function message(id, chatId = 1, senderId = 2) {
  return { id, chat_id: chatId, sender_id: senderId, sender_name: "Bob", content: `m${id}`, message_type: "text",
           client_id: null, created_at: "2026-01-01T00:00:00Z" };
}

/** A ChatConnection-shaped object holding ``total`` messages of chat 1 in memory. */
function memoryConnection(total) {
  const listeners = new Map();
  const all = Array.from({ length: total }, (_, i) => message(i + 1));
  return {
    sent: [], reads: [], typings: 0, refuse: false,
    on(type, fn) {
      if (!listeners.has(type)) listeners.set(type, new Set());
      listeners.get(type).add(fn);
      return () => listeners.get(type).delete(fn);
    },
    emit(type, frame) { for (const fn of listeners.get(type) || []) fn(frame); },
    listenerCount() { let n = 0; for (const s of listeners.values()) n += s.size; return n; },
    async history(chatId, { beforeId = null, limit = 50 } = {}) {
      const older = all.filter((m) => m.chat_id === chatId && (beforeId === null || m.id < beforeId));
      return older.slice(-limit);
    },
    async send(chatId, content, { clientId }) {
      this.sent.push({ chatId, content, clientId });
      if (this.refuse) throw Object.assign(new Error("too long"), { code: "content_too_long" });
      const m = { ...message(all.length + 1, chatId, 9), content, client_id: clientId };
      all.push(m);
      this.emit("message", { type: "message", message: m });   // the stream's echo may come first
      return m;
    },
    async markRead(chatId, id) { this.reads.push([chatId, id]); },
    async typing() { this.typings += 1; },
  };
}

test("ChatStore: newest page, then older pages until none is left", async () => {
  const conn = memoryConnection(25);
  const store = new ChatStore(conn, 1, { pageSize: 10 });
  await store.open();
  let s = store.getSnapshot();
  assert.deepEqual(s.messages.map((m) => m.id), [16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
  assert.equal(s.hasOlder, true);
  assert.equal(await store.loadOlder(), 10);
  assert.equal(await store.loadOlder(), 5);
  s = store.getSnapshot();
  assert.equal(s.messages.length, 25);
  assert.equal(s.messages[0].id, 1);
  assert.equal(s.hasOlder, false);
  assert.equal(await store.loadOlder(), 0);
  store.close();
  assert.equal(conn.listenerCount(), 0);
});

test("ChatStore: a message from the stream and the same one from the ack show once; other chats are ignored", async () => {
  const conn = memoryConnection(3);
  const store = new ChatStore(conn, 1);
  await store.open();
  let notified = 0;
  store.subscribe(() => { notified += 1; });
  const sending = store.send("hello", { clientId: "c-1" });
  assert.deepEqual(store.getSnapshot().pending.map((p) => p.client_id), ["c-1"]);
  const sent = await sending;
  const s = store.getSnapshot();
  assert.deepEqual(s.messages.map((m) => m.id), [1, 2, 3, 4]);
  assert.equal(s.messages[3].client_id, "c-1");
  assert.equal(sent.id, 4);
  assert.deepEqual(s.pending, []);
  conn.emit("message", { type: "message", message: message(4) });         // replayed after a reconnect
  conn.emit("message", { type: "message", message: message(99, 2) });     // another chat
  assert.equal(store.getSnapshot().messages.length, 4);
  assert.ok(notified >= 2);
  store.close();
});

test("ChatStore: a refused send stays pending with its error until discarded", async () => {
  const conn = memoryConnection(1);
  conn.refuse = true;
  const store = new ChatStore(conn, 1);
  await store.open();
  await assert.rejects(store.send("x".repeat(10), { clientId: "c-2" }), /too long/);
  const [p] = store.getSnapshot().pending;
  assert.equal(p.client_id, "c-2");
  assert.equal(p.error.code, "content_too_long");
  store.discard("c-2");
  assert.deepEqual(store.getSnapshot().pending, []);
  store.close();
});

test("ChatStore: typing shows for typingMs, a message from that user ends it; receipts keep the highest id", async () => {
  let now = 1000;
  const conn = memoryConnection(2);
  const store = new ChatStore(conn, 1, { typingMs: 40, now: () => now });
  await store.open();
  conn.emit("typing", { type: "typing", chat_id: 1, user_id: 2, user_name: "Bob" });
  conn.emit("typing", { type: "typing", chat_id: 1, user_id: 3, user_name: "Carol" });
  conn.emit("typing", { type: "typing", chat_id: 5, user_id: 4, user_name: "Dan" });
  assert.deepEqual(store.getSnapshot().typing.map((t) => t.user_name), ["Bob", "Carol"]);
  conn.emit("message", { type: "message", message: message(3, 1, 2) });
  assert.deepEqual(store.getSnapshot().typing.map((t) => t.user_name), ["Carol"]);
  now += 41;
  await tick(60);
  assert.deepEqual(store.getSnapshot().typing, []);
  conn.emit("read", { type: "read", chat_id: 1, user_id: 2, message_id: 3 });
  conn.emit("read", { type: "read", chat_id: 1, user_id: 2, message_id: 2 });
  conn.emit("read", { type: "read", chat_id: 7, user_id: 2, message_id: 9 });
  assert.deepEqual(store.getSnapshot().receipts, { 2: 3 });
  await store.markRead();
  await store.typing();
  assert.deepEqual(conn.reads, [[1, 3]]);
  assert.equal(conn.typings, 1);
  store.close();
});

test("mergeMessages keeps each id once, oldest first, and the same array when nothing is new", () => {
  const list = [message(2), message(5)];
  assert.equal(mergeMessages(list, [message(5)]), list);
  assert.deepEqual(mergeMessages(list, [message(9), message(1), message(9)]).map((m) => m.id), [1, 2, 5, 9]);
});

function note(id) { return { id, type: "new_message", message: "m", timestamp: "t" }; }

test("ToastQueue: each id once, at most max, dismissed after durationMs", async () => {
  const q = new ToastQueue({ durationMs: 40, max: 2 });
  assert.equal(q.push(note(1)), true);
  assert.equal(q.push(note(1)), false);
  q.push(note(2));
  q.push(note(3));
  assert.deepEqual(q.getSnapshot().map((n) => n.id), [2, 3]);
  await tick(80);
  assert.deepEqual(q.getSnapshot(), []);
});

test("ToastQueue: pausing (hover or focus) holds the timers; resuming runs what was left", async () => {
  const q = new ToastQueue({ durationMs: 60 });
  q.push(note(1));
  await tick(20);
  q.pause();
  await tick(100);
  assert.deepEqual(q.getSnapshot().map((n) => n.id), [1]);
  q.push(note(2));                     // arrives while paused: waits too
  await tick(80);
  assert.equal(q.getSnapshot().length, 2);
  q.resume();
  await tick(120);
  assert.deepEqual(q.getSnapshot(), []);
});
