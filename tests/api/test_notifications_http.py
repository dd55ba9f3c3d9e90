"""Notifications over HTTP: history (newest first, paging), clear, read, the test event; stream auth.

Also acceptance point 8: bad tokens on every stream get 401 JSON before any stream data, and one
user's stream never carries another user's notification.
"""
import json

import pytest
import tornado.httpclient
import tornado.websocket

from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN
from tests.support.streams import expired_token, is_id, open_chat, send, sentinel, sse_until, ws_until

SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def history(api, user, **query):
    """The ids of ``user``'s notification history page."""
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, body = await api.call("GET", "/api/notifications" + ("?" + qs if qs else ""), token=user["token"])
    assert status == 200, body
    return body["notifications"]


async def make_notifications(api, alice, bob, n_messages=3):
    """Bob gets ``n_messages`` new-message notifications and a broadcast; their ids, oldest first."""
    chat_id = await open_chat(api, alice, bob)
    for i in range(n_messages):
        await send(api, alice, chat_id, f"message {i}")
    status, body = await api.call("POST", "/api/notifications", {"broadcast": True, "message": "for all"},
                                  headers=SERVICE)
    assert status == 202
    ids = [n["id"] for n in await history(api, bob)][::-1]
    assert len(ids) == n_messages + 1 and ids[-1] == body["ids"][0]
    return chat_id, ids


@pytest.mark.gen_test(timeout=60)
async def test_history_newest_first_with_paging(api, users):
    alice, bob = await users("alice", "bob")
    chat_id, ids = await make_notifications(api, alice, bob, 4)
    items = await history(api, bob)
    assert [n["id"] for n in items] == ids[::-1]
    assert items[0]["type"] == "announcement" and items[1]["type"] == "new_message"
    assert items[1]["content_preview"] == "message 3" and items[1]["chat_id"] == chat_id
    assert all(n["read"] is False for n in items)
    page1 = await history(api, bob, limit=2)
    page2 = await history(api, bob, limit=2, before_id=page1[-1]["id"])
    page3 = await history(api, bob, limit=2, before_id=page2[-1]["id"])
    assert [n["id"] for n in page1 + page2 + page3] == ids[::-1]
    assert page3 == [items[-1]]
    # Alice got none of Bob's notifications, only the broadcast
    assert [n["id"] for n in await history(api, alice)] == [ids[-1]]
    for query in ("limit=0", "limit=201", "limit=x", "before_id=0", "before_id=abc"):
        status, body = await api.call("GET", f"/api/notifications?{query}", token=bob["token"])
        assert status == 400 and body["error"]["code"] == "validation_error", query


@pytest.mark.gen_test(timeout=60)
async def test_read_all_and_by_ids_per_user_for_broadcasts(api, users):
    alice, bob = await users("alice", "bob")
    chat_id, ids = await make_notifications(api, alice, bob, 3)
    broadcast = ids[-1]
    status, body = await api.call("POST", "/api/notifications/read", {"ids": [ids[0], broadcast]},
                                  token=bob["token"])
    assert status == 200 and body == {"read": 2}
    read = {n["id"]: n["read"] for n in await history(api, bob)}
    assert read == {ids[0]: True, ids[1]: False, ids[2]: False, broadcast: True}
    # Bob reading the broadcast does not read it for Alice
    assert [(n["id"], n["read"]) for n in await history(api, alice)] == [(broadcast, False)]
    # someone else's ids are not touched
    status, body = await api.call("POST", "/api/notifications/read", {"ids": [ids[1]]}, token=alice["token"])
    assert status == 200 and body == {"read": 0}
    status, body = await api.call("POST", "/api/notifications/read", token=bob["token"])
    assert status == 200
    assert all(n["read"] for n in await history(api, bob))
    # marking the chat read also marks its new-message notifications read
    more = await send(api, alice, chat_id, "one more")
    assert (await history(api, bob))[0]["read"] is False
    await api.call("POST", f"/api/chats/{chat_id}/read", {"message_id": more["id"]}, token=bob["token"])
    assert (await history(api, bob))[0]["read"] is True


@pytest.mark.gen_test(timeout=60)
async def test_clear_by_type_leaves_the_other_notifications(api, users, ws_connect):
    """The test page's Clear: ``{"type": "test"}`` hides the test events only (issue 20, item 16)."""
    alice, bob = await users("alice", "bob")
    chat_id, ids = await make_notifications(api, alice, bob, 2)
    tests = []
    for _ in range(2):
        status, body = await api.call("POST", "/api/notifications/test", token=bob["token"])
        assert status == 201
        tests.append(body["notification"]["id"])
    before = await history(api, bob)
    assert [n["id"] for n in before] == ids[::-1]  # the history never lists test events
    status, body = await api.call("POST", "/api/notifications/clear", {"type": "test"}, token=bob["token"])
    assert status == 200 and body == {"cleared": 2}
    assert await history(api, bob) == before  # messages and the broadcast stay
    # a cleared test event is not replayed either; the others are
    ws = await ws_connect("/ws/notifications", bob["token"], last_event_id=ids[0])
    replayed = []
    while len(replayed) < len(ids) - 1:
        frame = await ws.recv()
        if "id" in frame:
            replayed.append(frame["id"])
    await send(api, alice, chat_id, "after the clear")
    while True:
        frame = await ws.recv()
        if frame.get("type") == "new_message":
            break
        assert frame.get("type") != "test", frame
    assert replayed == ids[1:] and not set(tests) & set(replayed)
    for bad in ({"type": ""}, {"type": 5}, {"type": "x" * 65}):
        status, err = await api.call("POST", "/api/notifications/clear", bad, token=bob["token"])
        assert status == 400 and err["error"]["code"] == "validation_error", bad
    status, body = await api.call("POST", "/api/notifications/clear", {"type": "x" * 64}, token=bob["token"])
    assert status == 200 and body == {"cleared": 0}
    assert len(await history(api, bob)) == len(ids) + 1


@pytest.mark.gen_test(timeout=60)
async def test_clear_all_and_by_ids_including_broadcasts(api, users):
    alice, bob = await users("alice", "bob")
    chat_id, ids = await make_notifications(api, alice, bob, 3)
    broadcast = ids[-1]
    status, body = await api.call("POST", "/api/notifications/clear", {"ids": [ids[1], broadcast]},
                                  token=bob["token"])
    assert status == 200 and body == {"cleared": 2}
    assert [n["id"] for n in await history(api, bob)] == [ids[2], ids[0]]
    assert [n["id"] for n in await history(api, alice)] == [broadcast]  # cleared for Bob only
    status, body = await api.call("POST", "/api/notifications/clear", {}, token=bob["token"])
    assert status == 200
    assert await history(api, bob) == []
    # a later notification shows again; clearing all also hides broadcasts
    status, pub = await api.call("POST", "/api/notifications", {"broadcast": True, "message": "second"},
                                 headers=SERVICE)
    await send(api, alice, chat_id, "after clearing")
    assert [n["type"] for n in await history(api, bob)] == ["new_message", "announcement"]
    status, body = await api.call("POST", "/api/notifications/clear", token=bob["token"])
    assert status == 200 and body["cleared"] >= 2
    assert await history(api, bob) == []
    for bad in ({"ids": "1"}, {"ids": [1, "2"]}, {"ids": [True]}):
        status, body = await api.call("POST", "/api/notifications/clear", bad, token=bob["token"])
        assert status == 400 and body["error"]["code"] == "validation_error", bad
        status, body = await api.call("POST", "/api/notifications/read", bad, token=bob["token"])
        assert status == 400 and body["error"]["code"] == "validation_error", bad


@pytest.mark.gen_test(timeout=60)
async def test_test_event_goes_to_own_streams(api, users, ws_connect):
    (bob,) = await users("bob")
    ws = await ws_connect("/ws/notifications", bob["token"])
    await ws.recv_type("unread")
    status, body = await api.call("POST", "/api/notifications/test", token=bob["token"])
    assert status == 201
    item = body["notification"]
    assert item["type"] == "test" and item["message"] == "Test notification"
    assert isinstance(item["data"]["sent_at_ms"], int)
    assert await ws.recv() == item


@pytest.mark.gen_test(timeout=60)
async def test_notification_routes_need_a_user_token(api, users, services):
    (bob,) = await users("bob")
    for method, path in (("GET", "/api/notifications"), ("POST", "/api/notifications/clear"),
                         ("POST", "/api/notifications/read"), ("POST", "/api/notifications/test")):
        for token in (None, "garbage", expired_token(services.config.jwt_secret, bob["id"])):
            status, body = await api.call(method, path, token=token)
            assert status == 401 and set(body["error"]) == {"code", "message"}, (method, path, body)


# 8 ------------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_bad_tokens_on_every_stream_get_401_json_before_any_data(api, users, services, http_port, ws_url):
    (bob,) = await users("bob")
    bad = {"absent": None, "garbage": "garbage",
           "expired": expired_token(services.config.jwt_secret, bob["id"]),
           "other secret": expired_token("x" * 48, bob["id"]).rsplit(".", 1)[0] + ".c2lnbmF0dXJl"}
    codes = {"absent": "unauthorized", "garbage": "invalid_token", "expired": "token_expired",
             "other secret": "invalid_token"}
    for name, token in bad.items():
        # /ws/notifications: refused at the handshake, no upgrade
        query = f"?access_token={token}" if token else ""
        status, body = await api.call("GET", "/ws/notifications" + query, headers=UPGRADE)
        assert status == 401 and body["error"]["code"] == codes[name], (name, body)
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await tornado.websocket.websocket_connect(f"{ws_url}/ws/notifications{query}")
        assert info.value.code == 401
        # the SSE streams: a JSON error with a length, never an event stream
        for path in ("/sse/notifications", "/sse/chat"):
            sse = await SSEClient.connect("127.0.0.1", http_port, path, token)
            assert sse.status == 401, (name, path)
            assert sse.headers["content-type"].startswith("application/json")
            assert sse.headers.get("www-authenticate", "").startswith("Bearer")
            text = await sse.body_text()
            assert json.loads(text)["error"]["code"] == codes[name]
            assert "retry:" not in text and "data:" not in text
            sse.close()
    # the token in an Authorization header works for the SSE streams and the WS handshake
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications",
                                  headers={"Authorization": f"Bearer {bob['token']}"})
    assert sse.status == 200 and (await sse.next_type("unread"))["total"] == 0
    sse.close()


@pytest.mark.gen_test(timeout=90)
async def test_a_stream_never_carries_another_users_notification(api, users, ws_connect, http_port):
    alice, bob, carol = await users("alice", "bob", "carol")
    bob_ws = await ws_connect("/ws/notifications", bob["token"])
    await bob_ws.recv_type("unread")
    bob_sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", bob["token"])
    await bob_sse.next_type("unread")
    bob_chat = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", bob["token"])
    await bob_chat.next_type("unread")
    carol_ws = await ws_connect("/ws/notifications", carol["token"])
    await carol_ws.recv_type("unread")

    # Carol gets a chat notification, a published one and a test event; Bob none of them
    chat_id = await open_chat(api, alice, carol)
    await send(api, alice, chat_id, "for carol only")
    await api.call("POST", "/api/notifications", {"user_ids": [carol["id"]], "message": "carol's"},
                   headers=SERVICE)
    await sentinel(api, carol)
    carol_frames = await ws_until(carol_ws, lambda f: f.get("type") == "test")
    assert {f["type"] for f in carol_frames} == {"new_message", "announcement", "unread", "test"}
    probe = await sentinel(api, bob)
    assert [f["id"] for f in await ws_until(bob_ws, is_id(probe["id"]))] == [probe["id"]]
    assert [e["data"]["id"] for e in await sse_until(bob_sse, is_id(probe["id"]))] == [probe["id"]]
    events = await sse_until(bob_chat, is_id(probe["id"]))
    assert [e["data"].get("id") for e in events] == [probe["id"]]  # no message, no unread of Carol's
    # and Carol's resume from 0 replays only her own
    carol_replay = await ws_connect("/ws/notifications", carol["token"], last_event_id="0")
    await carol_replay.recv_type("unread")
    replayed = await ws_until(carol_replay, lambda f: f.get("type") == "test")
    assert probe["id"] not in [f.get("id") for f in replayed]
    for sse in (bob_sse, bob_chat):
        sse.close()
