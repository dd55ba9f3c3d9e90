"""Deployments sharing one Redis (or one PostgreSQL broker database) stay apart (issue 20, item 15).

Every broker name carries the installation id (one per database) after the prefix
(``squall`` or ``--broker-prefix``). Two deployments with their own databases on one Redis
never receive each other's broadcasts; two processes of one deployment still do; a copy of
a database (same installation id) is kept apart by a different ``--broker-prefix``.

Absence is shown without waiting for silence: after the other deployment's broadcast, each
stream's next notification must be its own deployment's sentinel, which was published later
(one Redis delivers a channel's messages in the order it received them).
"""
from __future__ import annotations

import sqlite3
import uuid

import pytest
import redis

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.scaleout import SERVICE_TOKEN, postgres_base_url, redis_base_url, register
from tests.support import pg

pytestmark = pytest.mark.same_in_both_runs


def installation_id(db_path) -> str:
    """The installation id stored in a deployment's SQLite database."""
    with sqlite3.connect(str(db_path)) as conn:
        return conn.execute("SELECT value FROM setting WHERE key = 'installation_id'").fetchone()[0]


async def broadcast(server, message: str) -> int:
    """An announcement to everyone of ``server``'s deployment (publish API); its id."""
    status, body = await ApiClient(server.url).call("POST", "/api/notifications",
                                                    {"broadcast": True, "message": message}, token=SERVICE_TOKEN)
    assert status == 202, (status, body)
    return body["ids"][0]


async def streams_of(server):
    """A user of ``server`` with a WebSocket and an SSE notification stream, both past their first state."""
    user = await register(ApiClient(server.url), "user")
    ws = await WSClient.connect(server.ws_url, "/ws/notifications", user["token"])
    await ws.recv_type("unread")
    sse = await SSEClient.connect("127.0.0.1", server.port, "/sse/notifications", user["token"])
    assert sse.status == 200
    await sse.next_type("unread")
    return user, ws, sse


async def next_announcements(ws, sse) -> list:
    """The next announcement message on each of the two streams."""
    return [(await ws.recv_type("announcement"))["message"], (await sse.next_type("announcement"))["message"]]


@pytest.mark.gen_test(timeout=120)
async def test_two_deployments_on_one_redis_do_not_see_each_other(tmp_path, server_factory):
    url = redis_base_url()  # no ?prefix=: the installation ids alone keep them apart
    one = server_factory("--database-url", f"sqlite:///{tmp_path}/one.db", "--broker-url", url)
    two = server_factory("--database-url", f"sqlite:///{tmp_path}/two.db", "--broker-url", url)
    id_one, id_two = installation_id(tmp_path / "one.db"), installation_id(tmp_path / "two.db")
    assert id_one != id_two

    u1, ws1, sse1 = await streams_of(one)
    u2, ws2, sse2 = await streams_of(two)
    assert u1["id"] == u2["id"] == 1  # same user ids: a leaked targeted event would reach the wrong person too

    await broadcast(one, "from one")
    assert await next_announcements(ws1, sse1) == ["from one", "from one"]
    await broadcast(two, "from two")
    # two's users get two's broadcast next: one's never reached them
    assert await next_announcements(ws2, sse2) == ["from two", "from two"]
    status, _ = await ApiClient(one.url).call("POST", "/api/notifications", {"user_ids": [1], "message": "to 1"},
                                              token=SERVICE_TOKEN)
    assert status == 202
    assert await next_announcements(ws1, sse1) == ["to 1", "to 1"]
    await broadcast(two, "two again")
    assert await next_announcements(ws2, sse2) == ["two again", "two again"]
    # The names on the shared Redis are the documented ones.
    channels = {c.decode() for c in redis.Redis.from_url(url).pubsub_channels("squall:*")}
    assert {f"squall:{id_one[:16]}:events", f"squall:{id_two[:16]}:events"} <= channels
    for client in (ws1, ws2, sse1, sse2):
        client.close()


@pytest.mark.gen_test(timeout=120)
async def test_two_processes_of_one_deployment_still_exchange_events(shared_db, server_factory):
    shared_db.reset()
    url = redis_base_url()
    first = server_factory("--database-url", shared_db.url, "--broker-url", url)
    second = server_factory("--database-url", shared_db.url, "--broker-url", url)
    _, ws, sse = await streams_of(second)
    await broadcast(first, "across processes")
    assert await next_announcements(ws, sse) == ["across processes", "across processes"]
    ws.close()
    sse.close()


@pytest.mark.gen_test(timeout=120)
async def test_a_copied_database_is_kept_apart_by_the_broker_prefix(tmp_path, server_factory):
    url = redis_base_url()
    original = server_factory("--database-url", f"sqlite:///{tmp_path}/prod.db", "--broker-url", url)
    for name in ("same.db", "staging.db"):  # e.g. staging restored from a production backup
        with sqlite3.connect(str(tmp_path / "prod.db")) as src, sqlite3.connect(str(tmp_path / name)) as dst:
            src.backup(dst)
    assert installation_id(tmp_path / "staging.db") == installation_id(tmp_path / "prod.db")
    same = server_factory("--database-url", f"sqlite:///{tmp_path}/same.db", "--broker-url", url)
    staging = server_factory("--database-url", f"sqlite:///{tmp_path}/staging.db", "--broker-url", url,
                             "--broker-prefix", "staging")
    _, ws_same, sse_same = await streams_of(same)
    _, ws_staging, sse_staging = await streams_of(staging)

    await broadcast(original, "from prod")
    # A copy with the same installation id and prefix is the same deployment to the broker (documented).
    assert await next_announcements(ws_same, sse_same) == ["from prod", "from prod"]
    await broadcast(staging, "from staging")
    assert await next_announcements(ws_staging, sse_staging) == ["from staging", "from staging"]
    for client in (ws_same, sse_same, ws_staging, sse_staging):
        client.close()


@pytest.mark.gen_test(timeout=120)
async def test_two_deployments_on_one_postgres_broker_database_do_not_see_each_other(tmp_path, server_factory):
    broker_db = pg.create_database(postgres_base_url(), "squall_ns_" + uuid.uuid4().hex[:10])
    try:
        one = server_factory("--database-url", f"sqlite:///{tmp_path}/one.db", "--broker-url", broker_db)
        two = server_factory("--database-url", f"sqlite:///{tmp_path}/two.db", "--broker-url", broker_db,
                             "--broker-prefix", "chat")
        _, ws1, sse1 = await streams_of(one)
        _, ws2, sse2 = await streams_of(two)
        await broadcast(one, "from one")
        assert await next_announcements(ws1, sse1) == ["from one", "from one"]
        await broadcast(two, "from two")
        assert await next_announcements(ws2, sse2) == ["from two", "from two"]
        conn = pg._connect(broker_db)
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            tables = {row[0] for row in cur.fetchall()}
        conn.close()
        id_one, id_two = installation_id(tmp_path / "one.db")[:16], installation_id(tmp_path / "two.db")[:16]
        assert {f"squall_{id_one}_presence", f"squall_{id_one}_payload",
                f"chat_{id_two}_presence", f"chat_{id_two}_payload"} <= tables
        for client in (ws1, sse1, ws2, sse2):
            client.close()
        one.kill()
        two.kill()
    finally:
        pg.drop_database(broker_db)


def test_a_bad_broker_prefix_is_refused(tmp_path):
    import subprocess
    import sys
    from tests.support.procs import ROOT
    for bad in ("1abc", "a-b", "x" * 33):
        done = subprocess.run([sys.executable, "run.py", "--broker-prefix", bad, "--database-url",
                               f"sqlite:///{tmp_path}/x.db"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "--broker-prefix must be 1-32 letters" in done.stderr
        assert "Traceback" not in done.stderr
