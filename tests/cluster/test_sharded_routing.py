"""Routing by user (issue 26, acceptance 1): two processes on one Redis, users on each.

A targeted event reaches only the process holding its user (counted per process in
/metrics: ``squall_broker_messages_total{direction="in"}`` and ``squall_broker_discarded_total``;
``--routing broadcast``, the old design, is the control); a user who moves between processes
loses nothing and gets nothing twice; broadcasts reach everyone. Presence, revocation and
preference changes crossing processes are the other tests of tests/cluster (test_scaleout_presence,
test_sessions_cluster, test_scaleout_preferences), which run with the default sharded routing;
the last test here checks revocation and a preference change against a process that holds
none of the user's shards.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.support.checks import closed
from tests.support.clients import ApiClient, WSClient
from tests.support.metrics import scrape
from tests.support.scaleout import SERVICE_TOKEN, broker_kind, publish_notification, register, start_cluster

METRICS_TOKEN = "test-metrics-token"  # tests.support.metrics sends it


@pytest.fixture(params=["redis", "redis-cluster"])
def kind(request) -> str:
    """One Redis, or the local Redis Cluster (SPUBLISH/SSUBSCRIBE)."""
    return broker_kind(request)


def cluster_of(kind: str, shared_db, server_factory, routing: str) -> list:
    """Two servers sharing PostgreSQL and a Redis broker with ``routing``; shards unsubscribe at once (no linger)."""
    return start_cluster(kind, shared_db, server_factory, count=2, ROUTING=routing, BROKER_SHARD_LINGER="0",
                         METRICS_TOKEN=METRICS_TOKEN)


async def broker_counts(server) -> tuple:
    """``(envelopes received, received for nobody here)`` of one process."""
    samples = await scrape(ApiClient(server.url))
    return (samples[("squall_broker_messages_total", (("direction", "in"),))],
            samples[("squall_broker_discarded_total", ())])


async def notified(ws: WSClient, nid: int) -> None:
    """Read ``ws`` up to the announcement ``nid``."""
    while (await ws.recv_type("announcement"))["id"] != nid:
        pass


@pytest.mark.parametrize("routing", ["sharded", "broadcast"])
@pytest.mark.gen_test(timeout=120)
async def test_targeted_event_reaches_only_the_process_holding_its_user(routing, kind, shared_db, server_factory):
    p1, p2 = cluster_of(kind, shared_db, server_factory, routing)
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice, bob = await register(api1, "alice"), await register(api1, "bob")
    a_ws = await WSClient.connect(p1.ws_url, "/ws/notifications", alice["token"])
    b_ws = await WSClient.connect(p2.ws_url, "/ws/notifications", bob["token"])
    await a_ws.recv_type("unread")
    await b_ws.recv_type("unread")
    before = [await broker_counts(p) for p in (p1, p2)]

    # Five for bob (on p2), published from p1 (which holds alice only), then one for alice from p2.
    to_bob = [(await publish_notification(api1, [bob["id"]], f"for bob {i}"))[0] for i in range(5)]
    for nid in to_bob:
        assert (await b_ws.recv_type("announcement"))["id"] == nid
    (to_alice,) = await publish_notification(api2, [alice["id"]], "for alice")
    assert (await a_ws.recv_type("announcement"))["id"] == to_alice

    (in1, discarded1), (in2, discarded2) = [(after[0] - b[0], after[1] - b[1]) for after, b in
                                            zip([await broker_counts(p) for p in (p1, p2)], before)]
    if routing == "sharded":
        assert (in1, discarded1) == (1, 0)  # alice's only: bob's five never reached p1
        assert (in2, discarded2) == (5, 0)
    else:  # the old design: every process reads every envelope and discards the others' users'
        assert (in1, discarded1) == (6, 5)
        assert (in2, discarded2) == (6, 1)
    a_ws.close()
    b_ws.close()


@pytest.mark.gen_test(timeout=120)
async def test_user_moving_between_processes_loses_nothing_and_gets_nothing_twice(kind, shared_db, server_factory):
    p1, p2 = cluster_of(kind, shared_db, server_factory, "sharded")
    api = [ApiClient(p1.url), ApiClient(p2.url)]
    bob = await register(api[0], "bob")
    published: list = []
    done = asyncio.Event()

    async def publish_steadily() -> None:
        # From both processes in turn, while bob moves: every event is stored before it is published.
        i = 0
        while not done.is_set():
            published.extend(await publish_notification(api[i % 2], [bob["id"]], f"n{i}"))
            i += 1
            await asyncio.sleep(0.01)

    ws = await WSClient.connect(p1.ws_url, "/ws/notifications", bob["token"])
    await ws.recv_type("unread")
    publisher = asyncio.ensure_future(publish_steadily())
    got: list = []
    # p1 → p2 → p1 → p2: each move closes the socket and resumes elsewhere with the last id;
    # with no linger, each arrival is on a process that has just unsubscribed (or never subscribed).
    for move, server in enumerate((p2, p1, p2)):
        while len(got) < 5 * (move + 1):  # a few live on each process before moving on
            frame = await ws.recv_type("announcement")
            got.append(frame["id"])
        ws.close()
        await asyncio.sleep(0.05)  # events published while bob is away: the resume must bring them
        ws = await WSClient.connect(server.ws_url, "/ws/notifications", bob["token"], last_event_id=str(got[-1]))
    done.set()
    await publisher
    while got[-1] != published[-1]:
        frame = await ws.recv(timeout=15)
        assert frame is not None, "the stream closed"
        if frame.get("type") == "announcement":
            got.append(frame["id"])
    assert got == published, (got, published)  # all of them, in order, none twice
    # And nothing more came (a sentinel is the next frame).
    (sentinel,) = await publish_notification(api[0], [bob["id"]], "sentinel")
    assert (await ws.recv_type("announcement"))["id"] == sentinel
    ws.close()


@pytest.mark.gen_test(timeout=120)
async def test_broadcasts_reach_every_process(kind, shared_db, server_factory):
    p1, p2 = cluster_of(kind, shared_db, server_factory, "sharded")
    api1 = ApiClient(p1.url)
    users = [await register(api1, name) for name in ("ann", "ben", "cat")]
    sockets = [await WSClient.connect(server.ws_url, "/ws/notifications", user["token"])
               for server, user in zip((p1, p2, p2), users)]
    for ws in sockets:
        await ws.recv_type("unread")
    status, body = await api1.call("POST", "/api/notifications", {"broadcast": True, "message": "to all"},
                                   token=SERVICE_TOKEN)
    assert status == 202, body
    for ws in sockets:
        frame = await ws.recv_type("announcement")
        assert frame["message"] == "to all"
        ws.close()


@pytest.mark.gen_test(timeout=120)
async def test_revocation_and_preferences_reach_a_process_holding_no_shard_of_the_user(kind, shared_db,
                                                                                       server_factory):
    # Control messages stay on the broadcast channel: p1, where the change is made, holds nobody.
    p1, p2 = cluster_of(kind, shared_db, server_factory, "sharded")
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice = await register(api1, "alice")
    ws = await WSClient.connect(p2.ws_url, "/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    digest = {"user_ids": [alice["id"]], "type": "digest", "message": "a digest"}
    status, out = await api2.call("POST", "/api/notifications", digest, token=SERVICE_TOKEN)  # p2 caches her prefs
    assert status == 202, out
    assert (await ws.recv_type("digest"))["message"] == "a digest"
    status, prefs = await api1.call("PATCH", "/api/me/preferences", {"muted_types": ["digest"]},
                                    token=alice["token"])
    assert status == 200, prefs
    assert (await ws.recv_type("preferences"))["muted_types"] == ["digest"]
    status, out = await api2.call("POST", "/api/notifications", {"user_ids": [alice["id"]], "type": "digest",
                                                                 "message": "muted"}, token=SERVICE_TOKEN)
    assert status == 202, out
    (sentinel,) = await publish_notification(api2, [alice["id"]], "sentinel")
    assert (await ws.recv_type("announcement", "digest"))["id"] == sentinel  # the muted digest never came
    status, _ = await api1.call("POST", "/api/auth/logout", {}, token=alice["token"])
    assert status == 200
    assert await closed(ws, 2.0) == (4001, "logged_out")
    status, err = await api2.call("GET", "/api/me", token=alice["token"])
    assert status == 401 and err["error"]["code"] == "token_revoked"
