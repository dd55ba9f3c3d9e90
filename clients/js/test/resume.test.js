import { test } from "node:test";
import assert from "node:assert/strict";
import { NotificationCursor, ChatCursor, parseChatEventId, createSquall } from "../src/index.js";

test("the notification cursor moves forward only, whatever the transport", () => {
  const c = new NotificationCursor();
  assert.equal(c.query(), "");
  assert.ok(c.accept(3));         // a WebSocket frame's id (number)
  assert.ok(c.accept("4"));       // an SSE id: line (string)
  assert.ok(!c.accept("4"));      // the same event over another transport: a duplicate
  assert.ok(!c.accept(2));        // a replay already seen
  c.advance("9");                 // a poll answer's last_event_id
  assert.ok(!c.accept(9));
  assert.ok(c.accept(10));
  c.advance("5");                 // never backwards
  assert.equal(c.query(), "last_event_id=10");
  assert.ok(!c.accept("x"));
  c.reset();
  assert.equal(c.lastEventId, null);
});

test("the chat cursor keeps M-N for SSE and polls, M for the WebSocket", () => {
  assert.deepEqual(parseChatEventId("12-7"), { messageId: 12, notificationId: 7 });
  assert.equal(parseChatEventId("12"), null);
  assert.equal(parseChatEventId("a-1"), null);
  const c = new ChatCursor();
  assert.equal(c.streamLastEventId(), null);
  c.advance("5-2");
  assert.equal(c.streamLastEventId(), "5-2");
  assert.ok(c.acceptMessage(6));             // an ack over the WebSocket
  assert.ok(!c.acceptMessage(6));
  assert.equal(c.wsLastEventId(), 6);
  assert.equal(c.streamLastEventId(), "6-2");
  c.advance("4-3");                          // an older message part does not go back
  assert.equal(c.streamLastEventId(), "6-3");
  assert.equal(c.streamLastEventId(9), "6-9");   // the notification stream knows a later one
});

test("the client drops frames it already handled (leader's frame forwarded, replay after resume)", () => {
  const squall = createSquall({ getToken: () => "t", shareAcrossTabs: false });
  const seen = [];
  squall.on("notification", (n) => seen.push(n.id));
  const unread = [];
  squall.on("unread", (u) => unread.push(u.total));
  squall.handleFrame({ type: "unread", total: 1, chats: { 1: 1 } });
  squall.handleFrame({ id: 1, type: "new_message" });
  squall.handleFrame({ id: 2, type: "announcement" });
  squall.handleFrame({ id: 1, type: "new_message" });   // replayed after a reconnect
  squall.handleFrame({ id: 2, type: "announcement" });  // forwarded by a leader too
  squall.handleFrame({ id: 3, type: "test" });
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual(unread, [1]);
  assert.equal(squall.getState().status.lastEventId, 3);
  assert.deepEqual(squall.getState().notifications.map((n) => n.id), [3, 2, 1]);
  assert.equal(squall.hasUnreadMessages(), true);
});

test("a change of a message (edit, delete, reaction) moves the chat cursor by its event_id", () => {
  const squall = createSquall({ url: "http://127.0.0.1:9", getToken: () => "t", WebSocket: null });
  const chat = squall.chat();
  const seen = [];
  chat.on("message_edited", (f) => seen.push(f.type));
  chat.on("reaction", (f) => seen.push(f.type));
  chat.handleFrame({ type: "message", message: { id: 5, chat_id: 1 } });
  assert.equal(chat.cursor.wsLastEventId(), 5);
  chat.handleFrame({ type: "message_edited", chat_id: 1, message_id: 5, event_id: 6, content: "x" });
  assert.equal(chat.cursor.wsLastEventId(), 6);
  chat.handleFrame({ type: "reaction", chat_id: 1, message_id: 5, event_id: 8, emoji: "👍", added: true, count: 1 });
  chat.handleFrame({ type: "message_deleted", chat_id: 1, message_id: 5 });  // already deleted: no event_id
  assert.equal(chat.cursor.wsLastEventId(), 8);
  chat.handleFrame({ type: "message_edited", chat_id: 1, message_id: 5, event_id: 7 });  // older: no step back
  assert.equal(chat.cursor.wsLastEventId(), 8);
  assert.deepEqual(seen, ["message_edited", "reaction", "message_edited"]);
});
