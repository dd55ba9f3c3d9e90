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
