"""The PostgreSQL broker's LISTEN connection is killed under it: it reconnects, tells the hub
to make clients resume (on_gap), and envelopes flow again."""
from __future__ import annotations

import asyncio
import uuid

import psycopg2
import pytest

from tornado_app.services.delivery.broker import create_broker
from tests.support.scaleout import Collector, ThrowawayPostgres, unique_prefix, with_prefix

pytestmark = pytest.mark.same_in_both_runs  # this machine's servers, whatever the run's database


@pytest.fixture
def broker_db():
    """A throw-away PostgreSQL database for the test."""
    db = ThrowawayPostgres()
    yield db
    db.drop()


def kill_listener(url: str, channel: str) -> int:
    """Terminate the backend that LISTENs on ``channel``; returns how many were ended."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query = %s", (f'LISTEN "{channel}"',))
        ended = cur.rowcount
    conn.close()
    return ended


@pytest.mark.gen_test(timeout=90)
async def test_killed_listen_connection_is_replaced(broker_db):
    url = with_prefix(broker_db.url, unique_prefix())
    broker = create_broker(url, "origin-" + uuid.uuid4().hex[:6], presence_ttl=3)
    got = Collector()
    await broker.start(got, None, got.gap)
    try:
        await broker.publish({"o": broker.origin, "k": "chat", "u": [1], "x": None, "i": 1, "d": "{}"})
        assert (await got.next())["i"] == 1

        assert kill_listener(broker_db.url, broker.channel) == 1
        # Reconnected (the backoff starts at 1 s) and the hub was told to make clients resume.
        deadline = asyncio.get_running_loop().time() + 60
        while got.gaps == 0:
            assert asyncio.get_running_loop().time() < deadline, "no reconnect"
            await asyncio.sleep(0.1)
        await broker.ping()
        await broker.publish({"o": broker.origin, "k": "chat", "u": [1], "x": None, "i": 2, "d": "{}"})
        assert (await got.next())["i"] == 2
    finally:
        await broker.stop()
