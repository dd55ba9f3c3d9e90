"""Database outage: SQLite locked by another process, and a throw-away PostgreSQL cluster stopped,
each for 5 s. API calls answer 503 database_unavailable (sends: store_failed, never acknowledged),
/readyz goes 503 then 200, open streams keep delivering what the broker carries, no restart."""
import asyncio
import os
import subprocess
import sys
import time

import pytest

from tests.support.clients import ApiClient, WSClient
from tests.support.pg_cluster import TempCluster, pg_bin
from tests.support.procs import start_server

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def wait_ready(api, want: int, timeout: float = 15.0) -> float:
    """Poll /readyz until it answers ``want``; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        status, body = await api.call("GET", "/readyz")
        if status == want:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, (status, body)
        await asyncio.sleep(0.2)


async def setup(server):
    api = ApiClient(server.url)
    alice = await api.register("alice_out")
    bob = await api.register("bob_out")
    status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = data["chat"]["id"]
    a = await WSClient.connect(server.ws_url, "/ws/chat", alice["token"])
    b = await WSClient.connect(server.ws_url, "/ws/chat", bob["token"])
    acked = []
    for n in range(3):
        ack = await a.request({"type": "send_message", "chat_id": chat_id, "content": f"before {n}",
                               "client_id": f"b{n}"}, "message_ack", "error")
        assert ack["type"] == "message_ack"
        acked.append(ack["message"]["id"])
    return api, alice, bob, chat_id, a, b, acked


async def during_outage(api, alice, chat_id, a, b, acked):
    """What clients see while the database is unavailable (checked together: writes wait out
    the 1 s busy timeout one after another on the writer thread)."""
    async def create_group():
        status, body = await api.call("POST", "/api/chats", {"member_ids": [alice["id"] + 1], "title": "t"},
                                      token=alice["token"])
        assert status == 503 and body["error"]["code"] == "database_unavailable", body
        assert body["error"]["retry_after"] >= 1

    async def http_send():
        status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": "lost?",
                                                                                  "client_id": "h1"},
                                      token=alice["token"])
        assert status == 503 and body["error"]["code"] in ("store_failed", "database_unavailable"), body

    async def ws_send():
        reply = await a.request({"type": "send_message", "chat_id": chat_id, "content": "during",
                                 "client_id": "w1"}, "message_ack", "error", timeout=15)
        assert reply["type"] == "error" and reply["code"] in ("store_failed", "database_unavailable"), reply
        assert reply["client_id"] == "w1"

    async def typing():
        # the open stream still carries what needs no database: typing goes through the broker
        await a.send({"type": "typing", "chat_id": chat_id})
        assert (await b.recv_type("typing"))["user_id"] == alice["id"]

    await asyncio.gather(http_send(), ws_send(), typing())
    await create_group()


async def after_outage(api, alice, bob, chat_id, a, acked):
    """Recovered without a restart: sends work, every acknowledged message is stored."""
    for n in range(3):
        ack = await a.request({"type": "send_message", "chat_id": chat_id, "content": f"after {n}",
                               "client_id": f"a{n}"}, "message_ack", "error", timeout=15)
        assert ack["type"] == "message_ack", ack
        acked.append(ack["message"]["id"])
    status, page = await api.call("GET", f"/api/chats/{chat_id}/messages?limit=200", token=bob["token"])
    assert status == 200
    stored = [m["id"] for m in page["messages"]]
    assert all(i in stored for i in acked)
    assert {m["client_id"] for m in page["messages"]} == {"b0", "b1", "b2", "a0", "a1", "a2"}


@pytest.mark.slow
@pytest.mark.gen_test(timeout=90)
async def test_sqlite_locked_by_another_process(tmp_path):
    db_path = str(tmp_path / "locked.db")
    server = start_server(tmp_path, DATABASE_URL=f"sqlite:///{db_path}")
    locker = None
    try:
        api, alice, bob, chat_id, a, b, acked = await setup(server)
        await wait_ready(api, 200)
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, db_path, "5"], stdout=subprocess.PIPE)
        assert locker.stdout.readline().strip() == b"locked"
        await asyncio.gather(during_outage(api, alice, chat_id, a, b, acked), wait_ready(api, 503, timeout=3))
        locker.wait(15)
        assert await wait_ready(api, 200) < 5
        await after_outage(api, alice, bob, chat_id, a, acked)
        assert server.proc.poll() is None  # no restart
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
        server.kill()


@pytest.mark.slow
@pytest.mark.skipif(pg_bin("initdb") is None, reason="PostgreSQL server binaries are not installed")
@pytest.mark.gen_test(timeout=120)
async def test_postgres_server_stopped_and_started(tmp_path):
    cluster = TempCluster()
    server = None
    try:
        cluster.start()
        server = start_server(tmp_path, DATABASE_URL=cluster.url)
        api, alice, bob, chat_id, a, b, acked = await setup(server)
        await wait_ready(api, 200)
        t0 = time.monotonic()
        cluster.stop()
        assert await wait_ready(api, 503) < 5
        status, body = await api.call("GET", "/api/chats", token=alice["token"])
        assert status == 503 and body["error"]["code"] == "database_unavailable", body
        await during_outage(api, alice, chat_id, a, b, acked)
        await asyncio.sleep(max(0.0, 5 - (time.monotonic() - t0)))
        cluster.start()
        assert await wait_ready(api, 200) < 10
        status, body = await api.call("GET", "/api/chats", token=alice["token"])
        assert status == 200
        await after_outage(api, alice, bob, chat_id, a, acked)
        assert server.proc.poll() is None  # no restart
        assert "Traceback" not in server.log() or "internal_error" not in server.log()
    finally:
        if server is not None:
            server.kill()
        cluster.destroy()
        assert not os.path.exists(cluster.dir)
