// Against a real Squall server: `python run.py` on a free port (SQUALL_PYTHON names the
// interpreter; tests/test_js_client.py passes its own), users registered over HTTP, the
// client connected on each rung of the ladder, notifications published with the service
// token, chat messages sent and acknowledged, tokens that expire, a refused token.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createSquall } from "../src/index.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const SERVICE_TOKEN = "js-client-service-token-0123456789";

function python() {
  if (process.env.SQUALL_PYTHON) return process.env.SQUALL_PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on("error", reject);
  });
}

async function startServer(extra = []) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "squall-js-"));
  const child = spawn(python(), [join(ROOT, "run.py"), "--port", String(port), "--host", "127.0.0.1",
    "--database-url", `sqlite:///${join(dir, "squall.db")}`, "--service-token", SERVICE_TOKEN,
    "--jwt-secret", "js-client-test-secret-0123456789abcdef", "--log-level", "warning", ...extra],
  { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited: ${stderr}`);
    try { if ((await fetch(`${url}/healthz`)).ok) break; } catch { /* not yet */ }
    if (Date.now() > deadline) { child.kill("SIGKILL"); throw new Error(`server not healthy: ${stderr}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, stop: () => new Promise((r) => { child.once("exit", r); child.kill("SIGTERM"); }).then(() => rmSync(dir, { recursive: true, force: true })) };
}

async function post(url, path, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(url + path, { method: "POST", headers, body: JSON.stringify(body) });
  const data = await resp.json();
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}

/** A user whose getToken spends its refresh token for a new pair, as a product's backend would. */
async function register(url, username) {
  const session = await post(url, "/api/auth/register", { username, password: "correct-horse-battery" });
  const user = { id: session.user.id, token: session.access_token, refresh: session.refresh_token, reasons: [] };
  user.getToken = async ({ reason }) => {
    user.reasons.push(reason);
    if (reason === "start") return user.token;
    const next = await post(url, "/api/auth/refresh", { refresh_token: user.refresh });
    user.token = next.access_token;
    user.refresh = next.refresh_token;
    return user.token;
  };
  return user;
}

function next(squall, type, predicate = () => true, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`no ${type} in ${ms} ms`)); }, ms);
    const off = squall.on(type, (detail) => { if (predicate(detail)) { clearTimeout(timer); off(); resolve(detail); } });
  });
}

function opened(squall, ms = 15_000) {
  if (squall.getState().status.state === "open") return Promise.resolve(squall.getState().status);
  return next(squall, "status", (s) => s.state === "open", ms);
}

const publish = (url, userId, message) => post(url, "/api/notifications", { user_ids: [userId], message, type: "invoice_ready" }, SERVICE_TOKEN);

let server;
before(async () => { server = await startServer(); });
after(async () => { if (server) await server.stop(); });

const rungs = [
  ["websocket", { WebSocket: globalThis.WebSocket }],
  ["sse", { WebSocket: null }],
  ["poll", { WebSocket: null, heldBack: { get: () => true, set() {} } }],
];

for (const [transport, options] of rungs) {
  test(`a published notification arrives over ${transport}, and resumes after a restart of the stream`,
       { skip: transport === "websocket" && !globalThis.WebSocket ? "no WebSocket in this Node (run with --experimental-websocket)" : false },
       async () => {
    const user = await register(server.url, `u_${transport}`);
    const squall = createSquall({ url: server.url, getToken: user.getToken, ...options });
    try {
      await squall.start();
      const status = await opened(squall);
      assert.equal(status.transport, transport);
      assert.equal(status.role, "leader");
      const got = next(squall, "notification");
      await publish(server.url, user.id, "Your invoice is ready");
      const n = await got;
      assert.equal(n.type, "invoice_ready");
      assert.equal(n.message, "Your invoice is ready");
      assert.deepEqual(squall.getState().notifications.map((x) => x.id), [n.id]);
      // Published while the stream is down: the resumed stream replays it, once.
      const ids = [];
      squall.on("notification", (x) => ids.push(x.id));
      squall.reconnector.stream.close();
      squall.reconnector.stream = null;
      const missed = await publish(server.url, user.id, "While away");
      squall.reconnector.restart();
      await next(squall, "notification", (x) => x.message === "While away");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(ids.length, 1, `got ${ids}`);
      assert.ok(missed);
      assert.deepEqual(user.reasons, ["start"]);
    } finally {
      squall.stop();
    }
  });
}

test("chat: a send resolves with the stored message, the other member gets it and an unread count", async () => {
  const alice = await register(server.url, "chat_alice");
  const bob = await register(server.url, "chat_bob");
  const { chat } = await post(server.url, "/api/chats", { user_id: bob.id }, alice.token);
  const a = createSquall({ url: server.url, getToken: alice.getToken, WebSocket: globalThis.WebSocket ?? null });
  const b = createSquall({ url: server.url, getToken: bob.getToken, WebSocket: null });
  const aChat = a.chat();
  const bChat = b.chat();
  try {
    await a.start();
    await b.start();
    await opened(b);
    await aChat.start(chat.id);
    await bChat.start(null);
    await new Promise((resolve) => { if (aChat.transport) resolve(); else aChat.on("status", (s) => s.state === "open" && resolve()); });
    await new Promise((resolve) => { if (bChat.transport) resolve(); else bChat.on("status", (s) => s.state === "open" && resolve()); });
    const bobGets = new Promise((resolve) => bChat.on("message", (f) => resolve(f.message)));
    const unread = next(b, "unread", (u) => u.total === 1);
    const stored = await aChat.send(chat.id, "Lunch at noon?", { clientId: "c-lunch" });
    assert.equal(stored.content, "Lunch at noon?");
    assert.equal(stored.client_id, "c-lunch");
    assert.equal((await bobGets).id, stored.id);
    assert.deepEqual((await unread).chats, { [chat.id]: 1 });
    // The same client_id again (a retry) answers the stored message, nothing new.
    const again = await aChat.send(chat.id, "other", { clientId: "c-lunch" });
    assert.equal(again.id, stored.id);
    const page = await aChat.history(chat.id, { limit: 10 });
    assert.deepEqual(page.map((m) => m.id), [stored.id]);
    // Bob reads it: his unread goes to 0 and Alice gets the receipt.
    const receipt = new Promise((resolve) => aChat.on("read", resolve));
    const cleared = next(b, "unread", (u) => u.total === 0);
    await bChat.markRead(chat.id, stored.id);
    await cleared;
    assert.equal((await receipt).message_id, stored.id);
  } finally {
    aChat.stop(); bChat.stop(); a.stop(); b.stop();
  }
});

test("attachments: upload, send with the upload, the other member fetches it by its short-lived link", async () => {
  const alice = await register(server.url, "files_alice");
  const bob = await register(server.url, "files_bob");
  const { chat } = await post(server.url, "/api/chats", { user_id: bob.id }, alice.token);
  const a = createSquall({ url: server.url, getToken: alice.getToken, WebSocket: globalThis.WebSocket ?? null });
  const b = createSquall({ url: server.url, getToken: bob.getToken, WebSocket: null });
  const aChat = a.chat();
  try {
    await a.start();
    await b.start();
    const progress = [];
    const upload = await a.upload(new Blob(["meeting notes\n"]), { filename: "notes.txt", onProgress: (sent, total) => progress.push([sent, total]) });
    assert.equal(upload.content_type, "text/plain; charset=utf-8");
    assert.equal(upload.filename, "notes.txt");
    assert.equal(upload.size, 14);
    assert.deepEqual(progress, [[14, 14]]);  // Node has no XMLHttpRequest: once, at the end
    await aChat.start(chat.id);
    const stored = await aChat.send(chat.id, "", { attachments: [upload.id] });
    assert.deepEqual(stored.attachments.map((f) => f.id), [upload.id]);
    const link = await b.attachmentLink(upload.id);
    assert.ok(link.url.startsWith(`${server.url}/files/`));
    assert.equal(link.thumbnail_url, null);
    const file = await fetch(link.url);
    assert.equal(file.status, 200);
    assert.equal(await file.text(), "meeting notes\n");
    // a refused upload rejects with the server's code
    await assert.rejects(a.upload(new Uint8Array([0x4d, 0x5a, 0x90, 0, 3, 0, 0, 0]), { filename: "setup.png" }),
      (err) => err.status === 415 && err.code === "unsupported_media_type");
  } finally {
    aChat.stop(); a.stop(); b.stop();
  }
});

test("a refused token reports unauthorized and stops: no loop", async () => {
  let calls = 0;
  const squall = createSquall({ url: server.url, getToken: () => { calls += 1; return "not-a-token"; }, WebSocket: null });
  const states = [];
  squall.on("status", (s) => states.push(s.state));
  const unauthorized = next(squall, "unauthorized");
  await squall.start();
  await unauthorized;
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(squall.getState().status.state, "unauthorized");
  assert.equal(calls, 2, "getToken: once at the start, once after the 401");
  assert.ok(!states.slice(states.indexOf("unauthorized")).includes("connecting"));
  squall.stop();
});

test("a failing getToken reports unauthorized at once", async () => {
  const squall = createSquall({ url: server.url, getToken: async () => { throw new Error("signed out"); }, WebSocket: null });
  const unauthorized = next(squall, "unauthorized", () => true, 3000);
  await squall.start();
  const err = await unauthorized;
  assert.equal(err.code, "unauthorized");
  squall.stop();
});

test("tokens that live 5 seconds: getToken mints new ones and nothing is lost", { timeout: 60_000 }, async () => {
  const short = await startServer(["--token-ttl", "5"]);
  const user = await register(short.url, "shortlived");
  const squall = createSquall({ url: short.url, getToken: user.getToken, WebSocket: globalThis.WebSocket ?? null });
  try {
    await squall.start();
    await opened(squall);
    const got = [];
    squall.on("notification", (n) => got.push(n.message));
    for (let i = 0; i < 6; i++) {
      await publish(short.url, user.id, `n${i}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    await next(squall, "notification", (n) => n.message === "n5").catch(() => {});
    assert.deepEqual(got, ["n0", "n1", "n2", "n3", "n4", "n5"]);
    assert.ok(user.reasons.length >= 3, `reasons ${user.reasons}`);
    assert.ok(user.reasons.every((r) => ["start", "token_expiring", "auth_expired", "unauthorized"].includes(r)));
    assert.notEqual(squall.getState().status.state, "unauthorized");
  } finally {
    squall.stop();
    await short.stop();
  }
});

test("start, stop, start (StrictMode's double effect) holds one stream, not two", async () => {
  const user = await register(server.url, "strict_mode");
  const squall = createSquall({ url: server.url, getToken: user.getToken, WebSocket: null });
  const stats = async () => (await (await fetch(`${server.url}/api/stats`, { headers: { Authorization: `Bearer ${SERVICE_TOKEN}` } })).json());
  try {
    const first = squall.start();
    squall.stop();
    const second = squall.start();
    assert.notEqual(first, second);
    assert.equal(squall.start(), second, "a start while started is the same start");
    await second;
    await opened(squall);
    await new Promise((r) => setTimeout(r, 1500));
    const s = await stats();
    assert.equal(s.notification_streams_by_user[String(user.id)], 1, JSON.stringify(s));
    const got = next(squall, "notification");
    await publish(server.url, user.id, "once");
    assert.equal((await got).message, "once");
  } finally {
    squall.stop();
  }
});

test("logged out everywhere while connected: the refused refresh reports unauthorized once and stops", async () => {
  for (const WebSocket of [globalThis.WebSocket ?? null, null]) {
    const user = await register(server.url, `logout_${WebSocket ? "ws" : "sse"}`);
    const squall = createSquall({ url: server.url, getToken: user.getToken, WebSocket });
    let reports = 0;
    squall.on("unauthorized", () => { reports += 1; });
    try {
      await squall.start();
      await opened(squall);
      const unauthorized = next(squall, "unauthorized");
      await post(server.url, "/api/auth/logout-all", {}, user.token);
      await unauthorized;
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(reports, 1);
      assert.equal(squall.getState().status.state, "unauthorized");
      assert.deepEqual(user.reasons, ["start", "auth_expired"]);
    } finally {
      squall.stop();
    }
  }
});
