"""Storage quota (issue 20, item 12): at most --messages-per-user-per-day messages per user and
UTC day, over HTTP and WebSocket; 429 quota_exceeded (HTTP) or an error frame (the socket stays usable).
"""
import asyncio
import time

import pytest

from tests.support.streams import open_chat
from tornado_app.errors import RateLimited
from tornado_app.services.operations.usage import DAY_SECONDS, MessageQuota

QUOTA = 3


@pytest.fixture
def config_overrides():
    return {"messages_per_user_per_day": QUOTA}


async def http_send(api, user, chat_id, content, **extra):
    return await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content, **extra},
                          token=user["token"])


def seconds_to_utc_midnight() -> float:
    return DAY_SECONDS - time.time() % DAY_SECONDS


@pytest.mark.gen_test(timeout=30)
async def test_http_sends_up_to_the_quota_pass_and_the_next_is_429_quota_exceeded(api, users):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    # A resend of a stored client_id stores nothing, so it does not count.
    status, first = await http_send(api, alice, chat_id, "m1", client_id="c1")
    assert status == 201
    status, again = await http_send(api, alice, chat_id, "m1", client_id="c1")
    assert status == 201 and again["message"]["id"] == first["message"]["id"]
    for n in range(2, QUOTA + 1):
        status, body = await http_send(api, alice, chat_id, f"m{n}")
        assert status == 201, (n, body)
    status, body = await http_send(api, alice, chat_id, "one too many")
    assert status == 429 and set(body) == {"error"} and body["error"]["code"] == "quota_exceeded", body
    retry_after = int(api.last_headers["Retry-After"])
    assert body["error"]["retry_after"] == retry_after
    assert abs(retry_after - seconds_to_utc_midnight()) <= 5  # the window is the UTC day
    # nothing was stored past the quota
    _, history = await api.call("GET", f"/api/chats/{chat_id}/messages", token=bob["token"])
    assert [m["content"] for m in history["messages"]] == ["m1", "m2", "m3"]
    # another user is not affected
    status, _ = await http_send(api, bob, chat_id, "bob still sends")
    assert status == 201


@pytest.mark.gen_test(timeout=30)
async def test_ws_send_past_the_quota_is_an_error_frame_and_the_socket_stays_usable(api, users, ws_connect):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    a_ws = await ws_connect("/ws/chat", alice["token"])
    b_ws = await ws_connect("/ws/chat", bob["token"])
    for ws in (a_ws, b_ws):
        await ws.request({"type": "ping"}, "pong")
    for n in range(1, QUOTA + 1):
        ack = await a_ws.request({"type": "send_message", "chat_id": chat_id, "content": f"w{n}",
                                  "client_id": f"w{n}"}, "message_ack", "error")
        assert ack["type"] == "message_ack", ack
    error = await a_ws.request({"type": "send_message", "chat_id": chat_id, "content": "w4",
                                "client_id": "w4"}, "message_ack", "error")
    assert error["type"] == "error" and error["code"] == "quota_exceeded" and error["client_id"] == "w4", error
    assert 1 <= error["retry_after"] <= DAY_SECONDS
    # the same connection still works: typing reaches bob, ping answers, reads are stored
    await a_ws.send({"type": "typing", "chat_id": chat_id})
    typing = await b_ws.recv_type("typing")
    assert typing["user_id"] == alice["id"] and typing["chat_id"] == chat_id
    await a_ws.request({"type": "ping"}, "pong")
    # HTTP sends of the same user are refused too (one quota for every transport)
    status, body = await http_send(api, alice, chat_id, "over http")
    assert status == 429 and body["error"]["code"] == "quota_exceeded"
    # bob (and his socket) unaffected
    ack = await b_ws.request({"type": "send_message", "chat_id": chat_id, "content": "hi", "client_id": "b1"},
                             "message_ack", "error")
    assert ack["type"] == "message_ack", ack


@pytest.mark.gen_test(timeout=30)
async def test_the_count_starts_from_the_messages_stored_today_and_resets_at_utc_midnight(api, users, services):
    """A new process (a fresh counter) reads what the user stored today; the next UTC day starts at 0."""
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    for n in range(QUOTA):
        status, _ = await http_send(api, alice, chat_id, f"m{n}")
        assert status == 201
    now = time.time()
    fresh = MessageQuota(services.dbx, QUOTA, clock=lambda: now)
    with pytest.raises(RateLimited) as refused:
        await fresh.reserve(alice["id"])
    assert refused.value.code == "quota_exceeded"
    await fresh.reserve(bob["id"])  # bob has stored nothing today
    tomorrow = MessageQuota(services.dbx, QUOTA, clock=lambda: now + DAY_SECONDS)
    for _ in range(QUOTA):
        await tomorrow.reserve(alice["id"])
    with pytest.raises(RateLimited):
        await tomorrow.reserve(alice["id"])
    # one counter crossing midnight forgets yesterday's count
    clock = [now]
    rolling = MessageQuota(services.dbx, QUOTA, clock=lambda: clock[0])
    with pytest.raises(RateLimited):
        await rolling.reserve(alice["id"])
    clock[0] = (now // DAY_SECONDS + 1) * DAY_SECONDS  # 00:00 UTC
    await rolling.reserve(alice["id"])


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_first_sends_of_a_day_read_the_count_once_and_never_pass_the_quota(api, users, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    results = await asyncio.gather(*[http_send(api, alice, chat_id, f"c{n}") for n in range(QUOTA + 4)])
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * QUOTA + [429] * 4, results
    assert {body["error"]["code"] for status, body in results if status == 429} == {"quota_exceeded"}

    def stored():
        from models import Message
        return Message.select().where(Message.sender == alice["id"]).count()
    assert await services.dbx.read(stored) == QUOTA

