"""Property-based fuzzing (hypothesis, fixed budget, deterministic): random JSON, random bytes and
random frames at /ws/chat, /ws/notifications and every HTTP route. Never a 500, no unhandled
exception in the log, and a well-behaved client on the same server keeps sending and receiving."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from urllib.parse import quote

import pytest
import tornado.httpclient
import tornado.websocket
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.clients import ApiClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tests.support.procs import start_server

EXAMPLES = 300

ROUTES = [  # (method, path template); {chat} is a chat of the fuzzing user, {n} a random number text
    ("GET", "/api/chats"), ("POST", "/api/chats"), ("GET", "/api/chats/{chat}"), ("GET", "/api/chats/{n}"),
    ("GET", "/api/chats/{chat}/messages"), ("POST", "/api/chats/{chat}/messages"),
    ("POST", "/api/chats/{chat}/read"), ("POST", "/api/chats/{chat}/typing"), ("GET", "/api/unread"),
    ("GET", "/api/notifications"), ("POST", "/api/notifications"), ("POST", "/api/notifications/clear"),
    ("POST", "/api/notifications/read"), ("POST", "/api/notifications/test"), ("GET", "/api/me"),
    ("GET", "/api/users"), ("POST", "/api/auth/login"), ("POST", "/api/auth/register"), ("GET", "/api/stats"),
    ("POST", "/api/auth/logout"), ("HEAD", "/static/js/api.js"), ("OPTIONS", "/api/chats"),
    ("GET", "/healthz"), ("GET", "/readyz"), ("PUT", "/api/chats"), ("DELETE", "/api/notifications"),
    ("GET", "/sse/notifications"), ("GET", "/sse/chat"), ("GET", "/ws/chat"), ("GET", "/"),
    ("GET", "/static/{n}"), ("GET", "/chat/{n}"), ("POST", "/no/such/route"),
]
QUERY_NAMES = ["limit", "before", "before_id", "last_event_id", "chat_id", "q", "access_token"]
FRAME_TYPES = ["send_message", "join_chat", "leave_chat", "typing", "mark_read", "ping"]

numbers = st.one_of(st.integers(), st.integers(-2, 5), st.just(2 ** 63), st.just(2 ** 63 - 1), st.floats(),
                    st.text(max_size=8), st.booleans(), st.none())
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
frames = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(FRAME_TYPES), st.text(max_size=10), numbers)},
    optional={"chat_id": numbers, "message_id": numbers, "recipient_id": numbers,
              "content": st.one_of(st.text(max_size=50), numbers),
              "client_id": st.one_of(st.text(max_size=70), numbers),
              "message_type": st.one_of(st.text(max_size=10), numbers), "extra": json_values})
bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()),
                   st.dictionaries(st.sampled_from(["user_id", "member_ids", "title", "ids", "message_id",
                                                    "content", "client_id", "user_ids", "broadcast", "message",
                                                    "username", "password", "data", "type"]),
                                   st.one_of(numbers, json_values, st.lists(numbers, max_size=3)), max_size=4)
                   .map(lambda d: json.dumps(d).encode()),
                   st.binary(max_size=200))
queries = st.dictionaries(st.sampled_from(QUERY_NAMES), st.one_of(numbers.map(str), st.text(max_size=12)), max_size=3)


class Loop:
    """An event loop in a thread: the synchronous hypothesis test runs coroutines on it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class GoodClient:
    """Alice sends to Bob over /ws/chat every 50 ms; every ack and every delivery is counted."""

    def __init__(self, server, alice, bob, chat_id):
        self.server, self.alice, self.bob, self.chat_id = server, alice, bob, chat_id
        self.acked, self.received, self.errors = [], [], []
        self.running = True

    async def run(self):
        a = await WSClient.connect(self.server.ws_url, "/ws/chat", self.alice["token"])
        b = await WSClient.connect(self.server.ws_url, "/ws/chat", self.bob["token"])
        n = 0
        while self.running:
            reply = await a.request({"type": "send_message", "chat_id": self.chat_id, "content": f"good {n}",
                                     "client_id": f"g{n}"}, "message_ack", "error")
            if reply["type"] != "message_ack":
                self.errors.append(reply)
            else:
                self.acked.append(reply["message"]["id"])
                self.received.append((await b.recv_type("message"))["message"]["id"])
            n += 1
            await asyncio.sleep(0.05)
        a.close()
        b.close()


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    server = start_server(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/fuzz.db")
    loop = Loop()
    try:
        async def setup():
            api = ApiClient(server.url)
            stamp = str(int(time.time() * 1000) % 10 ** 8)
            fuzzer, alice, bob = [await api.register(f"{name}{stamp}") for name in ("fz", "al", "bo")]
            status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=fuzzer["token"])
            fuzz_chat = data["chat"]["id"]
            status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
            good = GoodClient(server, alice, bob, data["chat"]["id"])
            task = asyncio.ensure_future(good.run())
            sockets = {path: await WSClient.connect(server.ws_url, path, fuzzer["token"])
                       for path in ("/ws/chat", "/ws/notifications")}
            return api, fuzzer, fuzz_chat, good, task, sockets
        env = loop.run(setup())
        yield server, loop, env
    finally:
        loop.stop()
        server.kill()


async def http_case(server, fuzzer, chat_id, method, template, number, query, body, auth):
    path = template.format(chat=chat_id, n=quote(number, safe=""))
    if query:
        path += "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
    headers = {"Content-Type": "application/json"}
    if auth == "user":
        headers["Authorization"] = f"Bearer {fuzzer['token']}"
    elif auth == "service":
        headers["Authorization"] = f"Bearer {SERVICE_TOKEN}"
    elif auth == "garbage":
        headers["Authorization"] = "Bearer " + quote(number)
    has_body = method in ("POST", "PUT")
    client = tornado.httpclient.AsyncHTTPClient()
    head = []
    stream = template.startswith("/sse/")  # an opened stream never ends: its status line is enough
    try:
        resp = await client.fetch(server.url + path, method=method, headers=headers,
                                  body=body if has_body else None, raise_error=False,
                                  request_timeout=1 if stream else 10, allow_nonstandard_methods=True,
                                  header_callback=head.append, streaming_callback=(lambda chunk: None)
                                  if stream else None)
    except tornado.httpclient.HTTPClientError:
        if stream and head and head[0].split()[1] == "200":
            return 200, b""
        raise
    return resp.code, resp.body


async def fresh_session(server, fuzzer) -> None:
    """Sign the fuzzing user in again: a fuzzed ``/api/auth/logout(-all)`` may have ended its session."""
    status, login = await ApiClient(server.url).call(
        "POST", "/api/auth/login", {"username": fuzzer["username"], "password": "password123"})
    assert status == 200, login
    fuzzer["token"] = login["access_token"]


async def reopen(server, fuzzer, sockets, path):
    """A socket the server closed (a frame over the size limit, or logged out): connect again."""
    ws = sockets[path]
    if ws.conn.close_code == 4001:
        await fresh_session(server, fuzzer)
    ws = sockets[path] = await WSClient.connect(server.ws_url, path, fuzzer["token"])
    return ws


async def ws_case(server, fuzzer, sockets, path, payload):
    ws = sockets[path]
    if ws.conn.protocol is None:
        ws = await reopen(server, fuzzer, sockets, path)
    for attempt in range(2):
        try:
            if isinstance(payload, bytes):
                await ws.conn.write_message(payload, binary=True)
            else:
                await ws.send(payload)
            break
        except tornado.websocket.WebSocketClosedError:
            # the HTTP case just before logged this session out, and the close is still on its
            # way to this client: wait for it, then start again on a new socket
            while await ws.recv() is not None:
                pass
            ws = await reopen(server, fuzzer, sockets, path)
    await ws.send({"type": "ping"})  # every frame is answered in order: wait for the pong
    while True:
        frame = await ws.recv()
        if frame is None and ws.conn.close_code == 4001:
            return  # the fuzzed request logged this session out: the next case signs in again
        assert frame is not None, (path, payload, ws.conn.close_code)
        assert not (frame.get("type") == "error" and frame.get("code") == "internal_error"), (payload, frame)
        if frame.get("type") == "pong":
            return


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: the budget stays fixed
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(route=st.sampled_from(ROUTES), number=numbers.map(str), query=queries, body=bodies,
       auth=st.sampled_from(["user", "service", "none", "garbage"]),
       frame=st.one_of(frames.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40),
                       st.binary(max_size=40)),
       ws_path=st.sampled_from(["/ws/chat", "/ws/notifications"]))
@pytest.mark.slow
def test_fuzz_never_500(fuzz_env, route, number, query, body, auth, frame, ws_path):
    server, loop, (api, fuzzer, chat_id, good, task, sockets) = fuzz_env
    method, template = route
    status, resp = loop.run(http_case(server, fuzzer, chat_id, method, template, number, query, body, auth))
    assert status < 500 or status == 503 and b"internal_error" not in resp, (method, template, query, body, resp)
    loop.run(ws_case(server, fuzzer, sockets, ws_path, frame))
    assert server.proc.poll() is None


def test_after_fuzzing_the_log_is_clean_and_the_good_client_kept_working(fuzz_env):
    server, loop, (api, fuzzer, chat_id, good, task, sockets) = fuzz_env
    good.running = False
    loop.run(asyncio.wait_for(task, 20))
    assert good.errors == []
    assert len(good.acked) > 20 and good.received == good.acked
    log = server.log()
    for marker in ("Traceback", "uncaught", "Uncaught", " ERROR "):
        assert marker not in log, log[-3000:]
