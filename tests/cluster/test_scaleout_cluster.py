"""Three server processes sharing PostgreSQL and a broker (Redis, or PostgreSQL LISTEN/NOTIFY).

A chats from process 1 with B on process 2; B's SSE stream and A's other tab are on
process 3. Every event arrives exactly once: after each one, a later sentinel event must
be the next thing on the same connection.
"""
from __future__ import annotations

import pytest

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.scaleout import broker_kind, open_private_chat, publish_notification, register, start_cluster


@pytest.fixture(params=["redis", "postgres", "redis-cluster"])
def cluster(request, shared_db, server_factory):
    """Three servers on three ports, one database, one broker of each kind."""
    return start_cluster(broker_kind(request), shared_db, server_factory)


@pytest.mark.gen_test(timeout=120)
async def test_message_and_notification_cross_processes_exactly_once(cluster):
    p1, p2, p3 = cluster
    api1 = ApiClient(p1.url)
    alice, bob = await register(api1, "alice"), await register(api1, "bob")
    chat_id = await open_private_chat(api1, alice, bob)

    a_tab1 = await WSClient.connect(p1.ws_url, "/ws/chat", alice["token"])
    a_tab2 = await WSClient.connect(p3.ws_url, "/ws/chat", alice["token"])
    b_chat = await WSClient.connect(p2.ws_url, "/ws/chat", bob["token"])
    b_sse = await SSEClient.connect("127.0.0.1", p3.port, "/sse/notifications", bob["token"])
    assert b_sse.status == 200
    assert (await b_sse.next_type("unread"))["total"] == 0
    # Every socket is live once it answers a ping (its subscription is registered).
    for ws in (a_tab1, a_tab2, b_chat):
        await ws.request({"type": "ping"}, "pong")

    first = (await a_tab1.request({"type": "send_message", "chat_id": chat_id, "content": "hello from p1",
                                   "client_id": "m1"}, "message_ack"))["message"]
    assert (await b_chat.recv_type("message"))["message"] == first
    assert (await a_tab2.recv_type("message"))["message"] == first
    note = await b_sse.next_type("new_message")
    assert note["chat_id"] == chat_id and note["content_preview"] == "hello from p1"

    # Sentinel: the next message is the next thing each stream gets (nothing came twice).
    second = (await a_tab1.request({"type": "send_message", "chat_id": chat_id, "content": "second",
                                    "client_id": "m2"}, "message_ack"))["message"]
    assert (await b_chat.recv_type("message"))["message"] == second
    assert (await a_tab2.recv_type("message"))["message"] == second
    assert (await b_sse.next_type("new_message"))["content_preview"] == "second"

    # The sender's own socket got acks, not copies: its next message frame is from bob.
    reply = (await b_chat.request({"type": "send_message", "chat_id": chat_id, "content": "reply from p2",
                                   "client_id": "r1"}, "message_ack"))["message"]
    assert (await a_tab1.recv_type("message"))["message"] == reply
    assert (await a_tab2.recv_type("message"))["message"] == reply
    for ws in (a_tab1, a_tab2, b_chat):
        ws.close()
    b_sse.close()


@pytest.mark.gen_test(timeout=120)
async def test_large_notification_crosses_processes(cluster):
    # Over NOTIFY's 8000-byte payload cap: the PostgreSQL broker sends it by id.
    p1, p2, p3 = cluster
    api1 = ApiClient(p1.url)
    bob = await register(api1, "bob")
    b_ws = await WSClient.connect(p2.ws_url, "/ws/notifications", bob["token"])
    assert (await b_ws.recv_type("unread"))["total"] == 0
    b_sse = await SSEClient.connect("127.0.0.1", p3.port, "/sse/notifications", bob["token"])
    assert (await b_sse.next_type("unread"))["total"] == 0

    blob = {"rows": [{"n": i, "text": "données " * 8} for i in range(300)]}
    (big_id,) = await publish_notification(api1, [bob["id"]], "a large one", blob)
    (small_id,) = await publish_notification(api1, [bob["id"]], "sentinel")

    for next_of in (b_ws.recv_type, b_sse.next_type):
        big = await next_of("announcement")
        assert big["id"] == big_id and big["data"] == blob and big["message"] == "a large one"
        assert len(str(big["data"]).encode()) > 8000
        assert (await next_of("announcement"))["id"] == small_id
    b_ws.close()
    b_sse.close()
