"""Redis Cluster as the broker (issue 26, acceptance 2): a master killed mid-traffic.

Two servers on a local 6-node cluster (3 masters, 3 replicas, tests/support/redis_cluster.py).
Alice sends from p1 without pause; Bob reads on p2. The master that owns Bob's shard channel
is killed (SIGKILL): its replica takes over, both servers subscribe again on the new owner,
and Bob, resuming whenever the server asks him to, gets every acknowledged message exactly once.
"""
from __future__ import annotations

import asyncio

import pytest
import redis

from tests.support.clients import ApiClient, WSClient
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.scaleout import ThrowawayPostgres, open_private_chat, register, send_http, unique_prefix, with_prefix


@pytest.fixture
def own_cluster(tmp_path):
    """A Redis Cluster of this test only (a node of it dies)."""
    cluster = LocalRedisCluster(str(tmp_path / "redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def shared_db():
    """A throw-away PostgreSQL database for the test."""
    db = ThrowawayPostgres()
    yield db
    db.drop()


def owner_of_shard(cluster: LocalRedisCluster, prefix: str, shard: int) -> int:
    """The port of the master where a shard channel ``<prefix>:…:u:<shard>`` is subscribed."""
    for port in cluster.live_ports():
        client = redis.Redis(port=port, socket_connect_timeout=1)
        if cluster.role(port) != "master":
            continue
        for channel in client.execute_command("PUBSUB", "SHARDCHANNELS", f"{prefix}:*"):
            if channel.decode().endswith(f":u:{shard}"):
                return port
    raise AssertionError(f"no master has the channel of shard {shard}")


async def ready(server, timeout: float = 90) -> None:
    """Wait until ``/readyz`` answers 200 (the broker is subscribed again)."""
    api = ApiClient(server.url)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await api.call("GET", "/readyz")
        if status == 200:
            return
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.2)


@pytest.mark.gen_test(timeout=240)
async def test_master_killed_mid_traffic_loses_no_acknowledged_message(own_cluster, shared_db, server_factory):
    prefix = unique_prefix()
    url = with_prefix(own_cluster.url, prefix)
    p1 = server_factory("--database-url", shared_db.url, "--broker-url", url, LOG_LEVEL="info")
    p2 = server_factory("--database-url", shared_db.url, "--broker-url", url, LOG_LEVEL="info")
    api1 = ApiClient(p1.url)
    alice, bob = await register(api1, "alice"), await register(api1, "bob")
    chat_id = await open_private_chat(api1, alice, bob)
    ws = await WSClient.connect(p2.ws_url, "/ws/chat", bob["token"])
    await ws.request({"type": "ping"}, "pong")
    first = await send_http(api1, alice, chat_id, "before")
    assert (await ws.recv_type("message"))["message"]["id"] == first["id"]
    victim = owner_of_shard(own_cluster, prefix, bob["id"] % 16384)

    acked = [first["id"]]
    stop = asyncio.Event()

    async def send_steadily() -> None:
        i = 0
        while not stop.is_set():
            acked.append((await send_http(api1, alice, chat_id, f"m{i}"))["id"])  # 201: stored
            i += 1
            await asyncio.sleep(0.02)

    sender = asyncio.ensure_future(send_steadily())
    got = [first["id"]]
    while len(got) < 10:  # live traffic first
        got.append((await ws.recv_type("message"))["message"]["id"])
    own_cluster.kill(victim)
    await asyncio.get_running_loop().run_in_executor(None, own_cluster.wait_promoted, victim)
    for server in (p1, p2):
        await ready(server)
    await asyncio.sleep(1.0)  # traffic after the failover too
    stop.set()
    await sender
    assert victim not in own_cluster.live_ports() and len(own_cluster.live_ports()) == 5

    # Bob reads on; whenever the server closes the socket (the gap), he resumes from his last id.
    deadline = asyncio.get_running_loop().time() + 90
    while got[-1] != acked[-1] or len(got) < len(acked):
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"only {len(got)} of {len(acked)}"
        frame = await ws.recv(timeout=left)
        if frame is None:
            ws = await WSClient.connect(p2.ws_url, "/ws/chat", bob["token"], last_event_id=str(got[-1]))
            continue
        if frame.get("type") == "message":
            got.append(frame["message"]["id"])
    assert got == acked, (got, acked)  # every acknowledged message, in order, none twice
    assert "resubscribed" in p2.log()

    # Live again across processes on the promoted master.
    after = await send_http(ApiClient(p1.url), alice, chat_id, "after the failover")
    while True:
        frame = await ws.recv_type("message")
        if frame["message"]["id"] == after["id"]:
            break
    ws.close()
