"""One contract for every broker (memory, Redis, PostgreSQL), against the real servers."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from tornado_app.services.delivery.broker import create_broker
from tornado_app.services.delivery.broker.base import BrokerUnavailable
from tests.support.scaleout import Collector, ThrowawayPostgres, redis_base_url, unique_prefix, with_prefix

pytestmark = pytest.mark.same_in_both_runs  # this machine's servers, whatever the run's database

BACKENDS = ["memory", "redis", "postgres", "redis-cluster"]


@pytest.fixture(scope="module")
def pg_broker_db():
    """A throw-away PostgreSQL database for this module's brokers."""
    db = ThrowawayPostgres()
    yield db
    db.drop()


@pytest.fixture(params=BACKENDS)
def broker_url(request, pg_broker_db):
    """A broker URL of each backend, with a prefix of its own."""
    prefix = unique_prefix()
    if request.param == "memory":
        return "memory"
    if request.param == "redis-cluster":
        return with_prefix(request.getfixturevalue("redis_cluster").url, prefix)
    if request.param == "redis":
        return with_prefix(redis_base_url(), prefix)
    return with_prefix(pg_broker_db.url, prefix)


@pytest.fixture
def make_broker(io_loop, broker_url):
    """``await make_broker(presence=[...], ttl=..., hold=(user ids), **options)`` → a started broker and its
    Collector, holding ``hold`` (users 1 and 2 unless told: the envelopes below name them); all stopped afterwards."""
    started = []

    async def make(presence=None, ttl=15.0, hold=(1, 2), **options):
        broker = create_broker(broker_url, "origin-" + uuid.uuid4().hex[:8], presence_ttl=ttl, **options)
        collector = Collector()
        await broker.start(collector, (lambda: list(presence)) if presence is not None else None, collector.gap)
        started.append(broker)
        for user_id in hold:
            broker.hold(user_id)
        for user_id in hold:
            await broker.ready(user_id)
        return broker, collector
    yield make

    async def stop_all():
        for broker in started:
            await broker.stop()
    io_loop.run_sync(stop_all, timeout=30)


def envelope(origin, n, data=None, users=(1,)):
    """A well-formed envelope numbered ``n``."""
    return {"o": origin, "k": "chat", "u": list(users), "x": None, "i": n,
            "d": data if data is not None else '{"type":"message","n":%d}' % n}


@pytest.mark.gen_test(timeout=60)
async def test_publish_reaches_own_receiver_unchanged(make_broker):
    broker, got = await make_broker()
    sent = envelope(broker.origin, 1)
    sent["x"] = "conn/7"
    await broker.publish(sent)
    assert await got.next() == sent


@pytest.mark.gen_test(timeout=60)
async def test_targeted_envelope_names_each_user_once(make_broker):
    # Sharded routing splits an envelope by shard; together the parts name every user exactly once.
    broker, got = await make_broker()
    await broker.publish(envelope(broker.origin, 1, users=(1, 2)))
    named = []
    while sorted(named) != [1, 2]:
        part = await got.next()
        assert part["i"] == 1 and part["d"] == '{"type":"message","n":1}'
        named.extend(part["u"])
    await broker.publish(envelope(broker.origin, 2))  # a sentinel: nothing else came
    assert (await got.next())["i"] == 2


@pytest.mark.gen_test(timeout=60)
async def test_envelopes_arrive_in_publish_order(make_broker):
    broker, got = await make_broker()
    for n in range(1, 51):
        await broker.publish(envelope(broker.origin, n))
    assert [(await got.next())["i"] for _ in range(50)] == list(range(1, 51))


@pytest.mark.gen_test(timeout=60)
async def test_large_envelope_round_trips(make_broker):
    # Over NOTIFY's 8000-byte cap: the PostgreSQL broker must send it by id.
    broker, got = await make_broker()
    big = '{"type":"notification","data":"%s"}' % ("é" * 20000)
    await broker.publish(envelope(broker.origin, 1, big))
    await broker.publish(envelope(broker.origin, 2))
    first, second = await got.next(), await got.next()
    assert first["d"] == big and first["i"] == 1
    assert second["i"] == 2


@pytest.mark.gen_test(timeout=60)
async def test_broadcast_envelope_round_trips(make_broker):
    broker, got = await make_broker()
    sent = {"o": broker.origin, "k": "notify", "u": None, "x": None, "i": None, "d": "{}"}
    await broker.publish(sent)
    assert await got.next() == sent


@pytest.mark.gen_test(timeout=60)
async def test_ping_answers(make_broker):
    broker, _ = await make_broker()
    await broker.ping()


DISTRIBUTED = pytest.mark.parametrize("broker_url", ["redis", "postgres", "redis-cluster"], indirect=True)


@pytest.mark.gen_test(timeout=60)
async def test_memory_broker_is_one_process(make_broker, broker_url):
    broker, got = await make_broker()
    await broker.presence_changed(5, 9, True)
    # One process: the hub asks its own registry; the memory broker knows no other process.
    assert broker.distributed is (broker_url != "memory")
    if broker_url == "memory":
        assert await broker.active_users(9, [5]) == set()


@DISTRIBUTED
@pytest.mark.gen_test(timeout=60)
async def test_two_processes_receive_each_others_envelopes(make_broker):
    a, got_a = await make_broker()
    b, got_b = await make_broker()
    assert a.distributed and b.distributed
    await a.publish(envelope(a.origin, 1))
    await b.publish(envelope(b.origin, 2))
    assert sorted([(await got_a.next())["i"], (await got_a.next())["i"]]) == [1, 2]
    assert sorted([(await got_b.next())["i"], (await got_b.next())["i"]]) == [1, 2]


@DISTRIBUTED
@pytest.mark.gen_test(timeout=60)
async def test_presence_is_shared_and_withdrawn(make_broker):
    claims = [(5, 9)]
    a, _ = await make_broker(presence=claims)
    b, _ = await make_broker()
    await a.presence_changed(5, 9, True)
    assert await b.active_users(9, [5, 6]) == {5}
    assert await b.active_users(10, [5]) == set()
    claims.clear()
    await a.presence_changed(5, 9, False)
    assert await b.active_users(9, [5, 6]) == set()


@DISTRIBUTED
@pytest.mark.gen_test(timeout=60)
async def test_presence_survives_refresh_and_expires_without_it(make_broker):
    claims = [(5, 9)]
    a, _ = await make_broker(presence=claims, ttl=1.0)
    b, _ = await make_broker(ttl=1.0)
    await a.presence_changed(5, 9, True)
    # Refreshed every ttl/3: still there after several ttls.
    await asyncio.sleep(3.0)
    assert await b.active_users(9, [5]) == {5}
    # A process that stops refreshing (as if killed): the claim expires by itself.
    claims.clear()
    for _ in range(100):
        if await b.active_users(9, [5]) == set():
            break
        await asyncio.sleep(0.1)
    assert await b.active_users(9, [5]) == set()


@DISTRIBUTED
@pytest.mark.gen_test(timeout=60)
async def test_stop_withdraws_presence(make_broker):
    a, _ = await make_broker(presence=[(5, 9)])
    b, _ = await make_broker()
    await a.presence_changed(5, 9, True)
    assert await b.active_users(9, [5]) == {5}
    await a.stop()
    assert await b.active_users(9, [5]) == set()


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_unreachable_broker_fails_ping_but_not_publish(io_loop):
    # Nothing listens on port 1: publish must not raise (the data is already stored).
    for url in ("redis://127.0.0.1:1/0", "postgresql://postgres@127.0.0.1:1/none"):
        broker = create_broker(url, "origin-x", presence_ttl=3)
        if url.startswith("redis"):
            await broker.start(Collector())
            await broker.publish(envelope("origin-x", 1))
            # A stream opening while the broker is away is not held up: the resume after it covers it.
            broker.hold(1)
            await asyncio.wait_for(broker.ready(1), 1.0)
            with pytest.raises(BrokerUnavailable):
                await broker.ping()
            await broker.stop()
        else:
            import psycopg2
            with pytest.raises(psycopg2.OperationalError):
                await broker.start(Collector())
            await broker.stop()


SHARDED_ONLY = pytest.mark.parametrize("broker_url", ["redis", "redis-cluster"], indirect=True)


@SHARDED_ONLY
@pytest.mark.gen_test(timeout=60)
async def test_sharded_process_gets_only_its_users_and_broadcasts(make_broker):
    a, got_a = await make_broker(hold=(1,))
    b, got_b = await make_broker(hold=(2,))
    assert a.routing == b.routing == "sharded" and b.subscribed_shards() == 1
    await a.publish(envelope(a.origin, 1, users=(1,)))  # only a holds user 1
    await a.publish({"o": a.origin, "k": "notify", "u": None, "x": None, "i": 2, "d": "{}"})  # everyone
    await a.publish(envelope(a.origin, 3, users=(2,)))
    assert [(await got_b.next())["i"] for _ in range(2)] == [2, 3]
    assert [(await got_a.next())["i"] for _ in range(2)] == [1, 2]
    assert got_b.queue.empty()


@SHARDED_ONLY
@pytest.mark.gen_test(timeout=60)
async def test_shard_stays_subscribed_for_its_linger_then_goes(make_broker):
    a, _ = await make_broker(hold=())
    b, got_b = await make_broker(hold=(7,), shard_linger=1.0)
    b.release(7)
    await a.publish(envelope(a.origin, 1, users=(7,)))  # within the linger: still routed here
    assert (await got_b.next())["i"] == 1
    for _ in range(100):
        if b.subscribed_shards() == 0:
            break
        await asyncio.sleep(0.05)
    assert b.subscribed_shards() == 0
    await asyncio.sleep(0.2)  # the UNSUBSCRIBE reached Redis
    await a.publish(envelope(a.origin, 2, users=(7,)))
    await a.publish({"o": a.origin, "k": "notify", "u": None, "x": None, "i": 3, "d": "{}"})
    assert (await got_b.next())["i"] == 3  # the broadcast came; the event of the gone user did not
    # A user back within the linger keeps the subscription (no UNSUBSCRIBE, no SUBSCRIBE).
    b.hold(7)
    await b.ready(7)
    b.release(7)
    b.hold(7)
    await b.ready(7)
    await a.publish(envelope(a.origin, 4, users=(7,)))
    assert (await got_b.next())["i"] == 4


@SHARDED_ONLY
@pytest.mark.gen_test(timeout=60)
async def test_envelope_past_the_fanout_limit_goes_on_the_broadcast_channel(make_broker):
    from tornado_app.services.delivery.broker.shards import FANOUT_LIMIT
    a, got_a = await make_broker(hold=(), shards=1024)
    b, got_b = await make_broker(hold=(5,), shards=1024)
    at_limit = list(range(1, FANOUT_LIMIT + 1))  # one user per shard: FANOUT_LIMIT shards
    await a.publish(envelope(a.origin, 1, users=at_limit))
    part = await got_b.next()
    assert part["i"] == 1 and part["u"] == [5]  # split: b's shard only
    past = list(range(1, FANOUT_LIMIT + 2))
    await a.publish(envelope(a.origin, 2, users=past))
    whole = await got_b.next()
    assert whole["i"] == 2 and whole["u"] == past  # one envelope, on the broadcast channel
    assert (await got_a.next())["i"] == 2  # a holds nobody: of the two, only the broadcast reached it


@pytest.mark.gen_test(timeout=60)
async def test_routing_broadcast_switch_gets_everything(broker_url, io_loop):
    if not broker_url.startswith(("redis://", "redis+cluster://")):
        pytest.skip("memory and PostgreSQL always broadcast")
    a = create_broker(broker_url, "origin-a", routing="broadcast")
    b = create_broker(broker_url, "origin-b", routing="broadcast")
    got = Collector()
    await a.start(Collector())
    await b.start(got)
    try:
        assert b.routing == "broadcast"
        await b.ready(1)  # nothing to wait for
        await a.publish(envelope(a.origin, 1, users=(1, 2)))
        assert (await got.next())["u"] == [1, 2]  # unsplit, though b holds nobody
        assert b.subscribed_shards() == 0
    finally:
        await a.stop()
        await b.stop()
    with pytest.raises(ValueError):
        create_broker(broker_url, "origin-c", routing="nearest")
