"""Broker selection by URL scheme and the ``?prefix=`` option (pure, no servers)."""
import pytest

from tornado_app.services.delivery.broker import create_broker
from tornado_app.services.delivery.broker.memory import MemoryBroker
from tornado_app.services.delivery.broker.postgres import PostgresBroker
from tornado_app.services.delivery.broker.postgres import split_prefix as pg_split
from tornado_app.services.delivery.broker.redis import RedisBroker
from tornado_app.services.delivery.broker.redis import split_prefix as redis_split


@pytest.mark.parametrize("url, cls", [
    ("memory", MemoryBroker),
    ("memory://", MemoryBroker),
    ("redis://127.0.0.1:6379/0", RedisBroker),
    ("rediss://cache.internal:6380/1", RedisBroker),
    ("postgresql://postgres@127.0.0.1/squall", PostgresBroker),
    ("postgres://postgres@127.0.0.1/squall", PostgresBroker),
])
def test_scheme_picks_the_broker(url, cls):
    broker = create_broker(url, "o1", presence_ttl=5)
    assert type(broker) is cls and broker.origin == "o1"


@pytest.mark.parametrize("url", ["amqp://localhost", "kafka://x", "redis"])
def test_unknown_scheme_is_refused(url):
    with pytest.raises(ValueError, match="unsupported broker URL"):
        create_broker(url, "o1")


@pytest.mark.parametrize("url, clean, prefix", [
    ("redis://h:6379/0", "redis://h:6379/0", "squall"),
    ("redis://h:6379/0?prefix=blue", "redis://h:6379/0", "blue"),
    ("redis://h:6379/0?prefix=blue&health_check_interval=5", "redis://h:6379/0?health_check_interval=5", "blue"),
    ("redis://h:6379/0?prefix=", "redis://h:6379/0", "squall"),
])
def test_redis_prefix_is_taken_out_of_the_url(url, clean, prefix):
    assert redis_split(url) == (clean, prefix)


@pytest.mark.parametrize("url, clean, prefix", [
    ("postgresql://u@h/db", "postgresql://u@h/db", "squall"),
    ("postgres://u@h/db?prefix=Blue_2", "postgresql://u@h/db", "blue_2"),
    ("postgresql://u@h/db?sslmode=require&prefix=x1", "postgresql://u@h/db?sslmode=require", "x1"),
])
def test_postgres_prefix_is_taken_out_of_the_url(url, clean, prefix):
    assert pg_split(url) == (clean, prefix)


@pytest.mark.parametrize("prefix", ["1abc", "a-b", "a;drop", "a b"])
def test_postgres_prefix_must_be_an_identifier(prefix):
    # It names tables and a channel, so only plain identifiers are accepted.
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        pg_split(f"postgresql://u@h/db?prefix={prefix}")


def test_channels_and_keys_follow_the_prefix():
    redis_broker = create_broker("redis://h/0?prefix=blue", "o1")
    assert redis_broker.channel == "blue:events" and redis_broker._presence_key(7) == "blue:presence:7"
    pg_broker = create_broker("postgresql://u@h/db?prefix=blue", "o1")
    assert pg_broker.channel == "blue_events"
