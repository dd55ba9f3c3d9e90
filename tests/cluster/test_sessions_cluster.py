"""Logout across processes (issue 10, acceptance 3): revocation travels over the Redis and the
PostgreSQL brokers; the session's streams on another process end within a second."""
from __future__ import annotations

import time

import pytest

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.scaleout import broker_kind, publish_notification, register, start_cluster
from tests.support.checks import closed


@pytest.fixture(params=["redis", "postgres", "redis-cluster"])
def cluster(request, shared_db, server_factory):
    """Two servers sharing a database and a broker."""
    return start_cluster(broker_kind(request), shared_db, server_factory, count=2)


@pytest.mark.gen_test(timeout=120)
async def test_logout_on_one_process_ends_the_sessions_streams_on_another(cluster):
    p1, p2 = cluster
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice = await register(api1, "alice")
    status, other = await api2.call("POST", "/api/auth/login", {"username": alice["username"],
                                                                "password": "password123"})
    assert status == 200
    ws = await WSClient.connect(p2.ws_url, "/ws/notifications", alice["token"])
    sse = await SSEClient.connect("127.0.0.1", p2.port, "/sse/chat", alice["token"])
    ws_other = await WSClient.connect(p2.ws_url, "/ws/chat", other["access_token"])
    sse_other = await SSEClient.connect("127.0.0.1", p1.port, "/sse/notifications", other["access_token"])
    await ws.recv_type("unread")
    await sse.next_type("unread")
    await sse_other.next_type("unread")
    await ws_other.request({"type": "ping"}, "pong")

    started = time.monotonic()
    status, _ = await api1.call("POST", "/api/auth/logout", {}, token=alice["token"])
    assert status == 200
    assert await closed(ws, 1.0) == (4001, "logged_out")
    assert (await sse.next_type("auth_expired", timeout=1.0))["reason"] == "logged_out"
    assert time.monotonic() - started < 1.5
    # refused on the other process at once, by the in-memory list the broker filled
    status, err = await api2.call("GET", "/api/me", token=alice["token"])
    assert status == 401 and err["error"]["code"] == "token_revoked"
    # the other session keeps working on both processes
    await ws_other.request({"type": "ping"}, "pong")
    (nid,) = await publish_notification(api2, [alice["id"]], "still signed in")
    assert (await sse_other.next_type("announcement"))["id"] == nid

    status, _ = await api2.call("POST", "/api/auth/logout-all", {}, token=other["access_token"])
    assert status == 200
    assert await closed(ws_other, 1.0) == (4001, "logged_out")
    assert (await sse_other.next_type("auth_expired", timeout=1.0))["reason"] == "logged_out"
    status, err = await api1.call("GET", "/api/me", token=other["access_token"])
    assert status == 401 and err["error"]["code"] == "invalid_token"
