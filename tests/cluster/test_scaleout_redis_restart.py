"""Redis restarted under two running servers: they reconnect, and every acknowledged message
reaches B (live, or by resume after the server asked the client to reconnect)."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest
import redis

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.procs import free_port
from tests.support.scaleout import ThrowawayPostgres, open_private_chat, register, send_http


class RedisServer:
    """A private redis-server child on a free port, so stopping it disturbs nobody else."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = os.path.join(str(tmp_path), f"redis-{self.port}.log")
        self.proc = None

    def start(self) -> None:
        """Start and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--daemonize", "no", "--logfile", self.log_path])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=1).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def private_redis(tmp_path):
    """A started private Redis; stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def shared_db():
    """A throw-away PostgreSQL database for the test."""
    db = ThrowawayPostgres()
    yield db
    db.drop()


async def collect_messages(ws_holder, token, url, want_ids, timeout=60.0):
    """Read ``message`` frames until every id in ``want_ids`` came; reconnect with the last id
    (a resume) whenever the server closes the socket. Returns the ids in arrival order."""
    got = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not set(want_ids) <= set(got):
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"only got {got} of {want_ids}"
        frame = await ws_holder[0].recv(timeout=left)
        if frame is None:  # closed by the server: resume from the last message we saw
            last = max(got, default=ws_holder[1])
            ws_holder[0] = await WSClient.connect(url, "/ws/chat", token, last_event_id=str(last))
            continue
        if frame.get("type") == "message":
            got.append(frame["message"]["id"])
    return got


@pytest.mark.gen_test(timeout=180)
async def test_redis_restart_loses_nothing_acknowledged(private_redis, shared_db, server_factory):
    p1 = server_factory("--database-url", shared_db.url, "--broker-url", private_redis.url, LOG_LEVEL="info")
    p2 = server_factory("--database-url", shared_db.url, "--broker-url", private_redis.url, LOG_LEVEL="info")
    api1 = ApiClient(p1.url)
    alice, bob = await register(api1, "alice"), await register(api1, "bob")
    chat_id = await open_private_chat(api1, alice, bob)
    b_chat = [await WSClient.connect(p2.ws_url, "/ws/chat", bob["token"]), 0]
    await b_chat[0].request({"type": "ping"}, "pong")

    before = await send_http(api1, alice, chat_id, "before the outage")
    assert await collect_messages(b_chat, bob["token"], p2.ws_url, [before["id"]]) == [before["id"]]
    b_chat[1] = before["id"]

    private_redis.stop()
    # Sent while Redis is down: acknowledged (201) because it is stored.
    during = [await send_http(api1, alice, chat_id, f"during the outage {i}") for i in range(3)]
    # /readyz names the broker as the failing dependency while Redis is away.
    status, body = await ApiClient(p2.url).call("GET", "/readyz")
    assert status == 503 and body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error"), body
    private_redis.start()

    # Both servers come back: /readyz on each reports the broker again.
    for server in (p1, p2):
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            status, body = await ApiClient(server.url).call("GET", "/readyz")
            if status == 200:
                break
            assert asyncio.get_running_loop().time() < deadline, body
            await asyncio.sleep(0.2)
    after = await send_http(api1, alice, chat_id, "after the outage")

    want = [m["id"] for m in during] + [after["id"]]
    got = await collect_messages(b_chat, bob["token"], p2.ws_url, want, timeout=90)
    assert sorted(got) == want and len(got) == len(set(got)), got  # all of them, none twice
    assert "resubscribed" in p2.log() or "reachable again" in p2.log()

    # The stored history agrees.
    status, page = await ApiClient(p2.url).call("GET", f"/api/chats/{chat_id}/messages", token=bob["token"])
    assert [m["id"] for m in page["messages"]] == [before["id"]] + want

    # And a notification stream opened on p1 after the outage works live across processes.
    sse = await SSEClient.connect("127.0.0.1", p1.port, "/sse/notifications", bob["token"])
    await sse.next_type("unread")
    await send_http(ApiClient(p2.url), alice, chat_id, "live again")
    assert (await sse.next_type("new_message"))["content_preview"] == "live again"
    sse.close()
    b_chat[0].close()
