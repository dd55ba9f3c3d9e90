"""Mutes, preferences and push presence across two processes with the Redis broker (issue 11, acceptance 2)."""
from __future__ import annotations

import pytest

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.push_service import BrowserKeys, PushServer
from tests.support.scaleout import open_private_chat, publish_notification, register, send_http, start_cluster

METRICS_TOKEN = "metrics-token-for-the-push-test"


@pytest.fixture
def cluster(shared_db, server_factory):
    """Two servers sharing a PostgreSQL database and a Redis broker."""
    return start_cluster("redis", shared_db, server_factory, count=2, PUSH_ALLOW_HTTP="1", PRESENCE_TTL="3",
                         METRICS_TOKEN=METRICS_TOKEN)


async def wait_for_metric(api: ApiClient, line: str, timeout: float = 15.0) -> None:
    """Read /metrics until it has ``line`` (a state the server reaches by itself)."""
    import asyncio
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, text = await api.call("GET", "/metrics", token=METRICS_TOKEN)
        if status == 200 and line in text.splitlines():
            return
        assert asyncio.get_running_loop().time() < deadline, f"no {line!r} in /metrics"
        await asyncio.sleep(0.05)


async def until_announcement(stream_next, sentinel_id):
    """Frames up to the announcement ``sentinel_id``."""
    frames = []
    while True:
        frame = await stream_next()
        frames.append(frame)
        if frame.get("id") == sentinel_id:
            return frames


@pytest.mark.gen_test(timeout=120)
async def test_mute_and_unmute_cross_processes(cluster):
    p1, p2 = cluster
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice, bob = await register(api1, "alice"), await register(api1, "bob")
    chat_id = await open_private_chat(api1, alice, bob)
    b_chat = await WSClient.connect(p2.ws_url, "/ws/chat", bob["token"])
    b_notes = await WSClient.connect(p2.ws_url, "/ws/notifications", bob["token"])
    await b_notes.recv_type("unread")
    b_sse_chat = await SSEClient.connect("127.0.0.1", p1.port, "/sse/chat", bob["token"])
    await b_sse_chat.next_type("unread")
    b_sse_notes = await SSEClient.connect("127.0.0.1", p1.port, "/sse/notifications", bob["token"])
    await b_sse_notes.next_type("unread")

    # p2 learns the chat's mutes (none) with a first message: a notification.
    await send_http(api2, alice, chat_id, "before")
    assert (await b_notes.recv_type("new_message"))["content_preview"] == "before"
    assert (await b_chat.recv_type("message"))["message"]["content"] == "before"
    assert (await b_sse_chat.next_type("message"))["message"]["content"] == "before"

    # Bob mutes on p1; p2's cache hears of it over the broker.
    status, state = await api1.call("PUT", f"/api/chats/{chat_id}/mute", {"until": None}, token=bob["token"])
    assert status == 200 and state["muted"] is True
    assert (await b_notes.recv_type("mute"))["muted"] is True  # the event reached p2's stream
    m = await send_http(api2, alice, chat_id, "muted now")
    assert (await b_chat.recv_type("message"))["message"]["id"] == m["id"]
    assert (await b_sse_chat.next_type("message"))["message"]["id"] == m["id"]
    (sentinel,) = await publish_notification(api2, [bob["id"]], "sentinel")
    ws_frames = await until_announcement(b_notes.recv, sentinel)
    sse_frames = await until_announcement(b_sse_notes.next_json, sentinel)
    for frames in (ws_frames, sse_frames):
        assert [f for f in frames if f.get("type") == "new_message" and f["content_preview"] == "muted now"] == []
        unread = [f for f in frames if f.get("type") == "unread"][-1]
        assert unread["total"] == 0 and unread["muted"] == {str(chat_id): 2}

    # Unmute on p1: the next message sent on p2 notifies again and counts in the total.
    status, state = await api1.call("DELETE", f"/api/chats/{chat_id}/mute", token=bob["token"])
    assert status == 200 and state["muted"] is False
    assert (await b_notes.recv_type("mute"))["muted"] is False
    await send_http(api2, alice, chat_id, "after")
    assert (await b_notes.recv_type("new_message"))["content_preview"] == "after"
    assert (await b_notes.recv_type("unread")) == {"type": "unread", "total": 3, "chats": {str(chat_id): 3}}
    assert (await b_sse_notes.next_type("new_message"))["content_preview"] == "after"

    # A preferences change on p1 reaches the stream on p2.
    status, _ = await api1.call("PATCH", "/api/me/preferences", {"sound": False}, token=bob["token"])
    assert status == 200
    assert (await b_notes.recv_type("preferences"))["sound"] is False
    for stream in (b_chat, b_notes):
        stream.close()
    b_sse_chat.close()
    b_sse_notes.close()


@pytest.mark.gen_test(timeout=120)
async def test_no_push_while_a_stream_is_open_on_another_process(cluster):
    p1, p2 = cluster
    api1 = ApiClient(p1.url)
    alice, bob = await register(api1, "alice"), await register(api1, "bob")
    chat_id = await open_private_chat(api1, alice, bob)
    push = await PushServer.start()
    try:
        keys = BrowserKeys()
        status, _ = await api1.call("POST", "/api/push/subscriptions", keys.subscription(push.endpoint("bob")),
                                    token=bob["token"])
        assert status == 201
        b_notes = await WSClient.connect(p2.ws_url, "/ws/notifications", bob["token"])
        await b_notes.recv_type("unread")
        await send_http(api1, alice, chat_id, "you are on p2")  # p1 asks the broker: bob is online
        assert (await b_notes.recv_type("new_message"))["content_preview"] == "you are on p2"
        # p1 decides after delivering: wait until it has counted the push it did not send
        await wait_for_metric(api1, "squall_push_skipped_online_total 1.0")
        b_notes.close()
        await b_notes.conn.read_message()  # closed
        # Once p2 has dropped the claim, p1 pushes.
        for attempt in range(50):
            await send_http(api1, alice, chat_id, f"gone {attempt}")
            try:
                (first,) = await push.wait_for(1, timeout=0.5)
                break
            except AssertionError:
                continue
        body = keys.decrypt(first[2])["body"]
        assert body.startswith("gone "), body  # never the message sent while bob was on p2
    finally:
        push.stop()
