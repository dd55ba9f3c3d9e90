// The hooks and the toast rendered by react-dom/server inside StrictMode: what each hook
// returns for a client's state, the toast's accessible markup, the errors outside a provider.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as React from "react";
import { renderToString } from "react-dom/server";
import { createSquall } from "@squall/client";
import {
  NotificationToast, SquallProvider, WebSocketProvider, useChat, useChatNotifications, useUnread, useWebSocket,
} from "../src/index.js";

const h = React.createElement;

function client() {
  return createSquall({ url: "http://127.0.0.1:9", getToken: () => "t", shareAcrossTabs: false, WebSocket: null });
}

function render(c, ...children) {
  return renderToString(h(React.StrictMode, null, h(WebSocketProvider, { client: c }, ...children)));
}

function Probe({ hook }) {
  return h("pre", null, JSON.stringify(hook()));
}

function parsed(html) {
  return JSON.parse(html.replace(/^<pre>|<\/pre>$/g, "").replace(/&quot;/g, '"'));
}

test("useChatNotifications: the red dot follows the unread total; notifications are the new messages", () => {
  const c = client();
  const hook = () => {
    const { hasUnreadMessages, unreadCount, notifications } = useChatNotifications({ onNewMessage: () => {} });
    return { hasUnreadMessages, unreadCount, ids: notifications.map((n) => n.id) };
  };
  assert.deepEqual(parsed(render(c, h(Probe, { hook }))), { hasUnreadMessages: false, unreadCount: 0, ids: [] });
  c.handleFrame({ id: 1, type: "announcement", message: "Hello", timestamp: "t" });
  c.handleFrame({ id: 2, type: "new_message", message: "m", timestamp: "t", chat_id: 4, sender_id: 2,
                  sender_name: "Bob", content_preview: "hi", message_type: "text" });
  c.handleFrame({ type: "unread", total: 3, chats: { 4: 3 }, muted: { 6: 2 } });
  assert.deepEqual(parsed(render(c, h(Probe, { hook }))), { hasUnreadMessages: true, unreadCount: 3, ids: [2] });
  c.handleFrame({ type: "unread", total: 0, chats: {}, muted: { 6: 2 } });
  assert.equal(parsed(render(c, h(Probe, { hook }))).hasUnreadMessages, false);
});

test("useUnread and useWebSocket read the client's state", () => {
  const c = client();
  c.handleFrame({ type: "unread", total: 2, chats: { 4: 2 }, muted: {}, mentions: { 4: 1 } });
  c.handleFrame({ id: 7, type: "test", message: "x", timestamp: "t" });
  const out = parsed(render(c, h(Probe, { hook: () => {
    const { socket, status, transport, notifications, setOnNewMessage } = useWebSocket();
    return { unread: useUnread(), same: socket === c, status, transport, n: notifications.length,
             set: typeof setOnNewMessage };
  } })));
  assert.deepEqual(out, { unread: { total: 2, chats: { 4: 2 }, muted: {}, mentions: { 4: 1 }, known: true }, same: true, status: "idle",
                          transport: null, n: 1, set: "function" });
});

test("useChat renders its empty state before any effect ran", () => {
  const out = parsed(render(client(), h(Probe, { hook: () => {
    const { chatId, messages, pending, typing, receipts, loading, hasOlder, status } = useChat("5");
    return { chatId, messages, pending, typing, receipts, loading, hasOlder, state: status.state };
  } })));
  assert.deepEqual(out, { chatId: 5, messages: [], pending: [], typing: [], receipts: {}, loading: false,
                          hasOlder: false, state: "idle" });
});

test("NotificationToast: a named region with a polite live region, present before any toast", () => {
  const html = render(client(), h(NotificationToast, { label: "New messages" }));
  assert.match(html, /<section class="squall-toasts" aria-label="New messages">/);
  assert.match(html, /<div role="status" aria-live="polite"[^>]*><\/div>/);
});

test("a provider made from url and getToken creates its client without calling getToken during render", () => {
  let calls = 0;
  const html = renderToString(h(React.StrictMode, null, h(SquallProvider, {
    url: "http://127.0.0.1:9", getToken: () => { calls += 1; return "t"; },
  }, h(Probe, { hook: () => useWebSocket().status }))));
  assert.equal(html, "<pre>&quot;idle&quot;</pre>");
  assert.equal(calls, 0);
});

test("the hooks outside a provider say which provider they need", () => {
  for (const hook of [useWebSocket, useChatNotifications, useUnread, () => useChat(1)]) {
    assert.throws(() => renderToString(h(Probe, { hook })), /inside <WebSocketProvider>/);
  }
});
