import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser } from "../src/index.js";

test("a retry: block with no data dispatches nothing", () => {
  const p = new SseParser();
  assert.deepEqual(p.feed("retry: 6421\n\n"), []);
  assert.equal(p.retry, 6421);
  assert.deepEqual(p.feed(": ping\n\n"), []);
});

test("events with and without ids, as /sse/notifications sends them", () => {
  const p = new SseParser();
  const events = p.feed('retry: 2000\n\ndata: {"type":"unread","total":1}\n\nid: 2\ndata: {"id":2}\n\ndata: {"type":"unread","total":0}\n\n');
  assert.deepEqual(events, [
    { type: "message", data: '{"type":"unread","total":1}', id: null },
    { type: "message", data: '{"id":2}', id: "2" },
    // a state event keeps the last event id of the last notification
    { type: "message", data: '{"type":"unread","total":0}', id: "2" },
  ]);
});

test("chunks split anywhere, CRLF split across chunks, multi-line data", () => {
  const p = new SseParser();
  const text = "id: 1-4\r\ndata: a\r\ndata: b\r\n\r\nid: 2-4\rdata:c\r\r";
  const out = [];
  for (const ch of text) out.push(...p.feed(ch));
  assert.deepEqual(out, [{ type: "message", data: "a\nb", id: "1-4" }, { type: "message", data: "c", id: "2-4" }]);
});

test("an unfinished block dispatches nothing until its blank line", () => {
  const p = new SseParser();
  assert.deepEqual(p.feed("data: x\n"), []);
  assert.deepEqual(p.feed("\n"), [{ type: "message", data: "x", id: null }]);
});

test("event: names the type; a bad retry is ignored; an id-only block moves the id", () => {
  const p = new SseParser();
  assert.deepEqual(p.feed("retry: soon\nid: 7\n\nevent: custom\ndata\n\n"), [{ type: "custom", data: "", id: "7" }]);
  assert.equal(p.retry, null);
});
