"""The push queue bounds (--push-queue, --push-queue-per-user): pushes past them are dropped and
counted, never waited for; users' pushes are served in turn."""
import asyncio

import pytest

from tests.conftest import SERVICE_TOKEN
from tests.support.push_service import PushServer
from tests.support.push_service import subscribe
from tests.support.streams import open_chat, send, wait_until


@pytest.fixture
def config_overrides():
    return {"push_allow_http": True, "push_queue": 1, "push_threads": 1}


@pytest.fixture
def push_server(io_loop):
    server = io_loop.run_sync(PushServer.start)
    yield server
    server.stop()


@pytest.mark.gen_test(timeout=60)
async def test_push_queue_at_and_past_its_bound(api, users, push_server, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    metrics = services.metrics.metrics
    keys = await subscribe(api, bob, push_server.endpoint("one"))
    await send(api, alice, chat_id, "fits")  # one push, a queue of one: sent
    (push,) = await push_server.wait_for(1)
    assert keys.decrypt(push[2])["body"] == "fits"
    await wait_until(lambda: metrics.pushes["sent"] == 1 and metrics.push_queue == 0, what="sent")
    assert metrics.pushes["dropped"] == 0

    await subscribe(api, bob, push_server.endpoint("two"))
    await send(api, alice, chat_id, "one too many")  # two pushes at once, a queue of one
    await push_server.wait_for(2)
    await wait_until(lambda: metrics.pushes["sent"] == 2 and metrics.push_queue == 0, what="second sent")
    assert metrics.pushes["dropped"] == 1
    assert len(push_server.received) == 2


async def notify(api, user: dict, message: str) -> None:
    status, body = await api.call("POST", "/api/notifications", {"user_ids": [user["id"]], "type": "announcement",
                                                                  "message": message, "push": True},
                                  token=SERVICE_TOKEN)
    assert status == 202, body


FAIR = {"push_allow_http": True, "push_threads": 1, "push_queue": 1000, "push_queue_per_user": 500,
        "push_retries": 0}


@pytest.mark.parametrize("config_overrides", [FAIR])
@pytest.mark.gen_test(timeout=90)
async def test_one_users_burst_does_not_delay_another_users_push(api, users, push_server, services):
    """500 queued pushes of bob's; carol's push goes out next in turn, not after his."""
    bob, carol = await users("bob", "carol")
    metrics = services.metrics.metrics
    for i in range(10):  # max_push_subscriptions (10) browsers × 50 notifications = 500 pushes
        await subscribe(api, bob, push_server.endpoint(f"bob{i}"))
    await subscribe(api, carol, push_server.endpoint("carol"))
    push_server.delay = 0.05  # a slow push service: bob's burst alone takes 25 s on one thread
    for i in range(50):
        await notify(api, bob, f"burst {i}")
    await wait_until(lambda: metrics.push_queue + metrics.pushes["sent"] == 500, what="500 pushes of bob's")
    assert metrics.pushes["dropped"] == 0 and metrics.push_queue > 400

    loop = asyncio.get_running_loop()
    before, started = len(push_server.received), loop.time()
    await notify(api, carol, "me too")
    await wait_until(lambda: any(p[0] == "/push/carol" for p in push_server.received), timeout=10,
                     what="carol's push")
    index = next(i for i, p in enumerate(push_server.received) if p[0] == "/push/carol")
    # In turn: at most the push on the thread and one more of bob's went before hers.
    assert index - before <= 2, (before, index)
    assert push_server.arrivals[index] - started < 1.0
    assert metrics.push_queue > 300  # bob's burst was still waiting


@pytest.mark.parametrize("config_overrides", [{**FAIR, "push_queue_per_user": 2}])
@pytest.mark.gen_test(timeout=60)
async def test_per_user_share_of_the_push_queue_at_and_past_its_bound(api, users, push_server, services):
    bob, carol = await users("bob", "carol")
    metrics = services.metrics.metrics
    for name in ("bob1", "bob2"):
        await subscribe(api, bob, push_server.endpoint(name))
    await subscribe(api, carol, push_server.endpoint("carol"))
    await notify(api, bob, "two of two")  # at the bound: both queued
    await push_server.wait_for(2)
    await wait_until(lambda: metrics.pushes["sent"] == 2 and metrics.push_queue == 0, what="two sent")
    assert metrics.pushes["dropped"] == 0

    await subscribe(api, bob, push_server.endpoint("bob3"))
    push_server.delay = 0.2  # the pushes stay queued while carol's arrives
    await notify(api, bob, "three of two")  # past it: one of bob's is dropped
    await notify(api, carol, "mine")  # carol's share is her own
    await wait_until(lambda: metrics.pushes["sent"] == 5 and metrics.push_queue == 0, what="three more sent")
    assert metrics.pushes["dropped"] == 1
    paths = sorted(p[0] for p in push_server.received[2:])
    assert len(paths) == 3 and "/push/carol" in paths
