// The reconnecting stream against a small real HTTP server (127.0.0.1): Retry-After on
// long-poll and SSE refusals, resume positions across rungs, concurrent expiries.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Http, Reconnector, TokenSource, DEFAULTS } from "../src/index.js";

// ``tickets``: answer POST /api/stream-ticket with ``tk-<bearer token>`` (not recorded).
async function serve(handler, { tickets = true } = {}) {
  const requests = [];
  const server = createServer((req, res) => {
    if (tickets && req.url === "/api/stream-ticket") {
      json(res, 200, { ticket: `tk-${(req.headers.authorization || "").split(" ")[1]}`, expires_in: 30 });
      return;
    }
    requests.push({ url: req.url, at: Date.now(), auth: req.headers.authorization });
    handler(req, res, requests);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, requests, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

function context(url, tokens, { heldBack = false, ...options } = {}) {
  return { http: new Http({ url, tokens }), tokens, WebSocket: null,
           options: { ...DEFAULTS, backoffBaseMs: 50, backoffCapMs: 100, sseFirstEventMs: 1000, ...options },
           heldBack: { get: () => heldBack, set() {} } };
}

const json = (res, status, body, headers = {}) => {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
};

test("a long-poll answered 429 waits its Retry-After, then resumes from the same position", async () => {
  const srv = await serve((req, res, requests) => {
    const n = requests.length;
    if (n === 1) json(res, 200, { events: [{ type: "unread", total: 0, chats: {} }, { id: 4, type: "x" }], last_event_id: "4", unread_tag: "t1" });
    else if (n === 2) json(res, 429, { error: { code: "rate_limited", message: "slow down", retry_after: 1 } }, { "Retry-After": "1" });
    else if (n === 3) json(res, 200, { events: [{ id: 5, type: "x" }], last_event_id: "5", unread_tag: "t1" });
    else setTimeout(() => json(res, 200, { events: [], last_event_id: "5", unread_tag: "t1" }), 5000);
  });
  const tokens = new TokenSource(() => "tok");
  await tokens.refresh("start");
  let position = null;
  const frames = [];
  const statuses = [];
  const r = new Reconnector({
    ws: null, sse: () => "/sse/notifications",
    poll: (cursor) => `/poll/notifications${cursor === null && position ? `?last_event_id=${position}` : ""}`,
  }, { status: (s) => statuses.push(s), frame: (d) => frames.push(d), position: (id) => { position = id; } },
  context(srv.url, tokens, { heldBack: true }));
  r.start();
  while (srv.requests.length < 3) await new Promise((res) => setTimeout(res, 20));
  r.stop();
  await srv.close();
  const [first, second, third] = srv.requests;
  assert.match(first.url, /^\/poll\/notifications/);
  assert.match(second.url, /last_event_id=4/);
  assert.match(second.url, /unread_tag=t1/);
  assert.match(third.url, /last_event_id=4/, "resumes from the same position after the refusal");
  assert.ok(third.at - second.at >= 1000, `waited ${third.at - second.at} ms`);
  assert.equal(first.auth, "Bearer tok");
  assert.deepEqual(frames.filter((f) => f.id).map((f) => f.id), [4, 5]);
  assert.ok(statuses.some((s) => s.state === "reconnecting" && s.retryInMs >= 1000));
  assert.ok(statuses.some((s) => s.state === "open" && s.transport === "poll"));
});

test("an SSE refusal with 503 and Retry-After waits that long", async () => {
  const srv = await serve((req, res, requests) => {
    if (requests.length === 1) { json(res, 503, { error: { code: "server_busy", message: "busy" } }, { "Retry-After": "1" }); return; }
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    res.write('retry: 2000\n\ndata: {"type":"unread","total":0,"chats":{}}\n\n');
  });
  const tokens = new TokenSource(() => "tok");
  await tokens.refresh("start");
  let opened;
  const open = new Promise((r) => { opened = r; });
  const r = new Reconnector({ ws: null, sse: () => "/sse/notifications", poll: null },
    { status: (s) => s.state === "open" && opened(s), frame: () => {} }, context(srv.url, tokens));
  r.start();
  const s = await open;
  r.stop();
  await srv.close();
  assert.equal(s.transport, "sse");
  assert.ok(srv.requests[1].at - srv.requests[0].at >= 1000);
});

test("an SSE stream whose first event never comes falls to long-polling", async () => {
  const srv = await serve((req, res) => {
    if (req.url.startsWith("/sse/")) { res.writeHead(200, { "Content-Type": "text/event-stream" }); res.write(": buffered\n\n"); return; }
    json(res, 200, { events: [{ type: "unread", total: 2, chats: { 1: 2 } }], last_event_id: "7", unread_tag: "a" });
  });
  const tokens = new TokenSource(() => "tok");
  await tokens.refresh("start");
  let set = false;
  const ctx = context(srv.url, tokens, { sseFirstEventMs: 300 });
  ctx.heldBack = { get: () => set, set: () => { set = true; } };
  let opened;
  const open = new Promise((r) => { opened = r; });
  const r = new Reconnector({ ws: null, sse: () => "/sse/notifications?last_event_id=7", poll: (c) => (c === null ? "/poll/notifications?last_event_id=7" : "/poll/notifications") },
    { status: (s) => s.state === "open" && opened(s), frame: () => {} }, ctx);
  r.start();
  const s = await open;
  r.stop();
  await srv.close();
  assert.equal(s.transport, "poll");
  assert.equal(s.sseHeldBack, true);
  assert.equal(set, true, "remembered for the session");
  assert.match(srv.requests.find((q) => q.url.startsWith("/poll/")).url, /last_event_id=7/);
});

test("two streams ending with auth_expired together call getToken once, then resume", async () => {
  let calls = 0;
  const srv = await serve((req, res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    if (req.url.includes("ticket=tk-old")) {
      res.write('data: {"type":"unread","total":0,"chats":{}}\n\n');
      setTimeout(() => res.end('data: {"type":"auth_expired","reason":"token_expired"}\n\n'), 200);
    } else {
      res.write('data: {"type":"unread","total":0,"chats":{}}\n\n');
    }
  });
  const tokens = new TokenSource(async ({ reason }) => {
    calls += 1;
    await new Promise((r) => setTimeout(r, 100));
    return reason === "start" ? "old" : "new";
  });
  await tokens.refresh("start");
  calls = 0;
  const streams = [];
  const reopened = [];
  for (let i = 0; i < 2; i++) {
    let done;
    reopened.push(new Promise((r) => { done = r; }));
    let opens = 0;
    const r = new Reconnector({ ws: null, sse: () => "/sse/notifications", poll: null },
      { status: (s) => { if (s.state === "open" && ++opens === 2) done(); }, frame: () => {} }, context(srv.url, tokens));
    streams.push(r);
    r.start();
  }
  await Promise.all(reopened);
  for (const r of streams) r.stop();
  await srv.close();
  assert.equal(calls, 1);
  assert.deepEqual(srv.requests.map((q) => new URL(q.url, srv.url).searchParams.get("ticket")), ["tk-old", "tk-old", "tk-new", "tk-new"]);
  assert.ok(srv.requests.every((q) => q.auth === undefined), "no token on the stream request: the ticket only");
});

test("a 401 after a fresh token stops the stream: unauthorized, no loop", async () => {
  const srv = await serve((req, res) => json(res, 401, { error: { code: "invalid_token", message: "no" } }), { tickets: false });
  let calls = 0;
  const tokens = new TokenSource(() => { calls += 1; return `t${calls}`; });
  await tokens.refresh("start");
  let unauthorized;
  const stopped = new Promise((r) => { unauthorized = r; });
  const r = new Reconnector({ ws: null, sse: () => "/sse/notifications", poll: null },
    { status: () => {}, frame: () => {}, unauthorized }, context(srv.url, tokens));
  r.start();
  await stopped;
  await new Promise((res) => setTimeout(res, 500));
  await srv.close();
  assert.equal(calls, 2, "start, then one refresh after the first 401");
  assert.deepEqual(srv.requests.map((q) => q.url), ["/api/stream-ticket", "/api/stream-ticket"]);
});

test("an SSE request whose headers never come falls to long-polling too", async () => {
  const srv = await serve((req, res) => {
    if (req.url.startsWith("/sse/")) return;   // a proxy that holds back the whole answer
    json(res, 200, { events: [{ type: "unread", total: 0, chats: {} }], last_event_id: "3", unread_tag: "a" });
  });
  const tokens = new TokenSource(() => "tok");
  await tokens.refresh("start");
  let opened;
  const open = new Promise((r) => { opened = r; });
  const r = new Reconnector({ ws: null, sse: () => "/sse/notifications", poll: () => "/poll/notifications" },
    { status: (s) => s.state === "open" && opened(s), frame: () => {} }, context(srv.url, tokens, { sseFirstEventMs: 300 }));
  const started = Date.now();
  r.start();
  const s = await open;
  r.stop();
  await srv.close();
  assert.equal(s.transport, "poll");
  assert.ok(Date.now() - started >= 300);
});
