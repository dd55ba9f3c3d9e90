"""Routing by user (broker/shards.py): the split of envelopes and the options' bounds."""
from __future__ import annotations

import pytest

from tornado_app.config import load_config
from tornado_app.services.delivery.broker.shards import FANOUT_LIMIT, MAX_SHARDS, shard_of, split


def envelope(users):
    return {"o": "p", "k": "notify", "u": users, "x": None, "i": 1, "d": "{}"}


def test_shard_is_the_remainder_of_the_user_id():
    assert [shard_of(u, 1024) for u in (0, 1, 1023, 1024, 1025)] == [0, 1, 1023, 0, 1]


def test_split_names_each_user_once_per_shard():
    parts = split(envelope([1, 2, 1025, 3]), 1024)
    assert sorted((shard, part["u"]) for shard, part in parts) == [(1, [1, 1025]), (2, [2]), (3, [3])]
    assert all(part["i"] == 1 and part["d"] == "{}" for _, part in parts)
    assert split(envelope(None), 1024) == [(None, envelope(None))]  # everyone: the broadcast channel


def test_split_at_and_past_the_fanout_limit():
    at = list(range(FANOUT_LIMIT))
    assert len(split(envelope(at), 1024)) == FANOUT_LIMIT
    past = list(range(FANOUT_LIMIT + 1))
    assert split(envelope(past), 1024) == [(None, envelope(past))]


@pytest.mark.parametrize("argv, ok", [
    (["--broker-shards", "1"], True), (["--broker-shards", str(MAX_SHARDS)], True),
    (["--broker-shards", "0"], False), (["--broker-shards", str(MAX_SHARDS + 1)], False),
    (["--broker-shard-linger", "0"], True), (["--broker-shard-linger", "3600"], True),
    (["--broker-shard-linger", "3600.5"], False), (["--broker-shard-linger", "-1"], False),
    (["--routing", "broadcast"], True), (["--routing", "nearest"], False),
])
def test_routing_options_bounds(argv, ok):
    if ok:
        load_config(argv, {})
    else:
        with pytest.raises(SystemExit):
            load_config(argv, {})


def test_routing_defaults():
    _, config = load_config([], {})
    assert (config.routing, config.broker_shards, config.broker_shard_linger) == ("sharded", 16384, 30.0)


def test_ready_waits_for_the_confirmation_and_gives_up_after_its_timeout():
    import asyncio

    from tornado_app.services.delivery.broker.shards import ShardInterest

    async def scenario():
        sent = []

        async def subscribe(shards):
            sent.append(list(shards))

        async def unsubscribe(shards):
            sent.append([-s for s in shards])

        interest = ShardInterest(1024, 0.0, subscribe, unsubscribe)
        interest.hold(5)
        interest.hold(1029)  # the same shard: one SUBSCRIBE
        await asyncio.sleep(0.01)
        assert sent == [[5]]
        with pytest.raises(asyncio.TimeoutError):
            await interest.ready(5, timeout=0.05)  # never confirmed
        waiting = asyncio.ensure_future(interest.ready(5, timeout=5))
        await asyncio.sleep(0.01)
        interest.confirmed(5)
        await waiting
        assert interest.is_confirmed(1029) and interest.subscribed() == 1
        # Lost connection: waiters go on (the resume after reconnecting covers them).
        interest.reset()
        waiting = asyncio.ensure_future(interest.ready(5, timeout=5))
        await asyncio.sleep(0.01)
        interest.reset()
        await asyncio.wait_for(waiting, 1)
        # Released by both users: unsubscribed after the (zero) linger.
        interest.release(5)
        interest.release(1029)
        await asyncio.sleep(0.05)
        assert sent == [[5], [-5]] and interest.wanted == set()

    asyncio.run(scenario())
