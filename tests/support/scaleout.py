"""Shared helpers of the broker and scale-out tests: real Redis/PostgreSQL URLs, unique per test.

TEST_REDIS_URL and TEST_DATABASE_URL (PostgreSQL) name the servers; when unset they default
to this machine's 127.0.0.1:6379 and 127.0.0.1:5432, which are always there in CI.
"""
from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlparse

from tests.support import pg

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def redis_base_url() -> str:
    """The Redis server of the tests."""
    return os.environ.get("TEST_REDIS_URL") or DEFAULT_REDIS_URL


def postgres_base_url() -> str:
    """A PostgreSQL URL of the tests' server (the run's TEST_DATABASE_URL when it is PostgreSQL)."""
    url = os.environ.get("TEST_DATABASE_URL") or ""
    return url if url.startswith(("postgres://", "postgresql://")) else DEFAULT_PG_URL


def unique_prefix() -> str:
    """A key/channel prefix no other test (or parallel run) uses."""
    return "t" + uuid.uuid4().hex[:12]


def with_prefix(url: str, prefix: str) -> str:
    """``url`` with ``?prefix=`` set (the brokers strip it before connecting)."""
    sep = "&" if urlparse(url).query else "?"
    return f"{url}{sep}prefix={prefix}"


def redis_broker_url() -> str:
    """A Redis broker URL with a fresh prefix."""
    return with_prefix(redis_base_url(), unique_prefix())


class ThrowawayPostgres:
    """A PostgreSQL database created for one test module and dropped afterwards."""

    def __init__(self):
        self.url = pg.create_database(postgres_base_url(), "squall_scale_" + uuid.uuid4().hex[:10])

    def reset(self) -> None:
        """Empty it (tables of models and brokers alike)."""
        pg.reset_database(self.url)

    def drop(self) -> None:
        """Drop it."""
        pg.drop_database(self.url)


class Collector:
    """A broker receiver that queues envelopes; ``await next()`` waits for one."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.gaps = 0

    def __call__(self, envelope: dict) -> None:
        self.queue.put_nowait(envelope)

    def gap(self) -> None:
        """The broker's on_gap hook."""
        self.gaps += 1

    async def next(self, timeout: float = 15.0) -> dict:
        """The next envelope received."""
        return await asyncio.wait_for(self.queue.get(), timeout)


SERVICE_TOKEN = "test-service-token"  # what tests.support.procs.server_env gives every child server


async def register(api, name: str) -> dict:
    """Register ``name`` (made unique) through ``api``; returns the user with its token."""
    return await api.register(name + "_" + uuid.uuid4().hex[:6], display_name=name.title())


async def open_private_chat(api, user: dict, other: dict) -> int:
    """The id of the private chat of ``user`` and ``other``."""
    status, body = await api.call("POST", "/api/chats", {"user_id": other["id"]}, token=user["token"])
    assert status in (200, 201), (status, body)
    return body["chat"]["id"]


async def send_http(api, user: dict, chat_id: int, content: str) -> dict:
    """Send a message over HTTP; returns the stored message (201 means committed)."""
    status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content},
                                  token=user["token"])
    assert status == 201, (status, body)
    return body["message"]


async def publish_notification(api, user_ids, message: str, data=None) -> list:
    """Publish a notification through the service API; returns the created ids."""
    body = {"user_ids": list(user_ids), "message": message}
    if data is not None:
        body["data"] = data
    status, out = await api.call("POST", "/api/notifications", body, token=SERVICE_TOKEN)
    assert status == 202, (status, out)
    return out["ids"]


def broker_kind(request) -> str:
    """What ``start_cluster`` takes for a fixture parametrized with "redis", "postgres" or "redis-cluster"
    (the session's local Redis Cluster, tests/conftest.py ``redis_cluster``, started on first use)."""
    if request.param == "redis-cluster":
        return request.getfixturevalue("redis_cluster").url
    return request.param


def start_cluster(broker_kind: str, shared_db: "ThrowawayPostgres", server_factory, count: int = 3, **env) -> list:
    """``count`` servers sharing ``shared_db`` (emptied first) and a broker: "redis", "postgres", or a
    ``redis+cluster://`` URL (``broker_kind(request)``)."""
    shared_db.reset()
    if broker_kind.startswith("redis+cluster://"):
        broker = with_prefix(broker_kind, unique_prefix())
    elif broker_kind == "redis":
        broker = redis_broker_url()
    else:
        broker = with_prefix(shared_db.url, unique_prefix())
    return [server_factory("--database-url", shared_db.url, "--broker-url", broker, **env) for _ in range(count)]
