import { test } from "node:test";
import assert from "node:assert/strict";
import { PendingSends, SendError, newClientId } from "../src/index.js";

test("an ack resolves the send of its client_id, and only that one", async () => {
  const p = new PendingSends();
  const a = p.add({ chat_id: 1, content: "a", client_id: "c-a" });
  const b = p.add({ chat_id: 1, content: "b", client_id: "c-b" });
  assert.equal(p.match({ type: "message_ack", client_id: "c-x", message: { id: 9 } }), false);
  assert.equal(p.match({ type: "message_ack", client_id: "c-b", message: { id: 5, client_id: "c-b" } }), true);
  assert.deepEqual(await b, { id: 5, client_id: "c-b" });
  assert.equal(p.size, 1);
  // a repeated ack (a retry answered with the stored message) matches nothing more
  assert.equal(p.match({ type: "message_ack", client_id: "c-b", message: { id: 5 } }), false);
  assert.deepEqual(p.waiting().map((r) => r.client_id), ["c-a"]);
  p.resolve("c-a", { id: 6 });
  assert.deepEqual(await a, { id: 6 });
});

test("over SSE the own message frame is the ack; another user's same client_id is not", async () => {
  const p = new PendingSends();
  const a = p.add({ chat_id: 1, content: "a", client_id: "c-1" });
  assert.equal(p.match({ type: "message", message: { id: 3, sender_id: 2, client_id: "c-1" } }, 1), false);
  assert.equal(p.match({ type: "message", message: { id: 4, sender_id: 1, client_id: "c-1" } }, 1), true);
  assert.equal((await a).id, 4);
});

test("a refused send rejects; a retryable error keeps it pending for the resend", async () => {
  const p = new PendingSends();
  const a = p.add({ chat_id: 1, content: "", client_id: "c-1" });
  const b = p.add({ chat_id: 1, content: "b", client_id: "c-2" });
  assert.equal(p.match({ type: "error", code: "empty_content", message: "no", client_id: "c-1" }), true);
  await assert.rejects(a, (err) => err instanceof SendError && err.code === "empty_content");
  assert.equal(p.match({ type: "error", code: "shutting_down", message: "bye", client_id: "c-2" }), true);
  assert.ok(p.has("c-2"));
  assert.equal(p.add({ chat_id: 1, content: "b", client_id: "c-2" }), b);   // the same send, not a second
  p.rejectAll(new SendError("stopped"));
  await assert.rejects(b);
});

test("client ids are 1-64 characters and unique", () => {
  const ids = new Set();
  for (let i = 0; i < 100; i++) {
    const id = newClientId();
    assert.ok(id.length >= 1 && id.length <= 64);
    ids.add(id);
  }
  assert.equal(ids.size, 100);
});
