"""Presence across processes: "active in a chat" holds when the chat socket is on another
process, and expires by itself when that process dies (SIGKILL, no goodbye)."""
from __future__ import annotations

import asyncio

import pytest

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.scaleout import (broker_kind, open_private_chat, publish_notification, register, send_http,
                                    start_cluster)

PRESENCE_TTL = 2.0


@pytest.fixture(params=["redis", "postgres", "redis-cluster"])
def cluster(request, shared_db, server_factory):
    """Three servers with a short presence expiry."""
    return start_cluster(broker_kind(request), shared_db, server_factory, PRESENCE_TTL=PRESENCE_TTL)


@pytest.mark.slow
@pytest.mark.gen_test(timeout=120)
async def test_remote_presence_suppresses_notification_until_its_process_dies(cluster):
    p1, p2, p3 = cluster
    api1 = ApiClient(p1.url)
    alice, bob = await register(api1, "alice"), await register(api1, "bob")
    chat_id = await open_private_chat(api1, alice, bob)
    b_chat = await WSClient.connect(p2.ws_url, "/ws/chat", bob["token"])
    await b_chat.request({"type": "join_chat", "chat_id": chat_id}, "joined")
    b_sse = await SSEClient.connect("127.0.0.1", p3.port, "/sse/notifications", bob["token"])
    assert (await b_sse.next_type("unread"))["total"] == 0

    # Bob is active on p2: a message from p1 reaches his chat socket and raises no notification.
    first = await send_http(api1, alice, chat_id, "while bob is here")
    assert (await b_chat.recv_type("message"))["message"]["id"] == first["id"]
    (sentinel,) = await publish_notification(api1, [bob["id"]], "sentinel 1")
    got = await b_sse.next_type("new_message", "announcement")
    assert got["type"] == "announcement" and got["id"] == sentinel

    # Still active after several refresh periods (the claim is renewed, not just made once).
    await asyncio.sleep(PRESENCE_TTL * 2)
    await send_http(api1, alice, chat_id, "still here")
    (sentinel,) = await publish_notification(api1, [bob["id"]], "sentinel 2")
    got = await b_sse.next_type("new_message", "announcement")
    assert got["type"] == "announcement" and got["id"] == sentinel

    # p2 dies without clearing anything; once its claim has expired, the next message notifies.
    p2.kill()
    await asyncio.sleep(PRESENCE_TTL + 0.5)
    await send_http(api1, alice, chat_id, "are you gone?")
    got = await b_sse.next_type("new_message", "announcement", timeout=30)
    assert got["type"] == "new_message" and got["content_preview"] == "are you gone?"
    b_sse.close()
