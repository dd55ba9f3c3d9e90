"""Web Push at the protocol level (issue 11, acceptance 5): a test push service on 127.0.0.1.

The push service verifies the VAPID JWT against ``/api/push/key`` and decrypts each payload
with the test browser's private key. Pushes go out only while the user has no stream open.
"""
import asyncio
from urllib.parse import urlencode

import pytest

from tests.conftest import SERVICE_TOKEN
from tests.support.push_service import BrowserKeys, PushServer, verify_vapid
from tests.support.streams import open_chat, send, wait_until
from tests.support.push_service import subscribe


@pytest.fixture
def config_overrides():
    # one push thread: pushes leave in the order they were queued
    return {"push_allow_http": True, "push_threads": 1, "max_push_subscriptions": 2, "poll_presence_grace": 1.0}


@pytest.fixture
def push_server(io_loop):
    server = io_loop.run_sync(PushServer.start)
    yield server
    server.stop()


@pytest.mark.gen_test(timeout=90)
async def test_push_only_while_no_stream_is_open_signed_and_encrypted(api, users, ws_connect, push_server, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    status, key = await api.call("GET", "/api/push/key")
    assert status == 200 and len(key["public_key"]) == 87  # 65 bytes, base64url
    endpoint = push_server.endpoint("bob1")
    keys = await subscribe(api, bob, endpoint)
    status, listed = await api.call("GET", "/api/push/subscriptions", token=bob["token"])
    assert [s["endpoint"] for s in listed["subscriptions"]] == [endpoint]

    # No stream open anywhere: the message is pushed.
    await send(api, alice, chat_id, "are you there? " + "x" * 300)
    ((path, headers, body),) = await push_server.wait_for(1)
    assert path == "/push/bob1"
    claims = verify_vapid(headers["Authorization"], key["public_key"], endpoint)
    assert claims["aud"] == f"http://127.0.0.1:{push_server.port}"
    assert headers["Content-Encoding"] == "aes128gcm"
    assert headers["Topic"] == f"chat-{chat_id}" and headers["Urgency"] == "high"
    assert int(headers["Ttl"]) == services.config.push_ttl
    payload = keys.decrypt(body)
    assert len(body) < 4096
    assert set(payload) == {"type", "id", "title", "body", "chat_id", "url", "tag"}
    assert payload["type"] == "new_message" and payload["title"] == "Alice"
    assert payload["body"].startswith("are you there? x") and payload["body"].endswith("...")
    assert (payload["chat_id"], payload["url"], payload["tag"]) == (chat_id, f"/chat/{chat_id}", f"chat-{chat_id}")
    status, notes = await api.call("GET", "/api/notifications", token=bob["token"])
    assert payload["id"] == notes["notifications"][0]["id"]

    # A notification stream is open: nothing is pushed.
    notes_ws = await ws_connect("/ws/notifications", bob["token"])
    await notes_ws.recv_type("unread")
    await send(api, alice, chat_id, "while you look")
    await notes_ws.recv_type("new_message")
    # A long-poll between two polls counts as open for the grace period.
    notes_ws.close()
    await wait_until(lambda: not services.registry.has_user("notify", bob["id"]), what="stream closed")
    status, _ = await api.call("GET", "/poll/notifications?timeout=0", token=bob["token"])
    assert status == 200
    await send(api, alice, chat_id, "between polls")
    # Once the grace period is over, the next message is pushed, and it is the only one.
    await wait_until(lambda: not services.poll_presence.is_leased(bob["id"], 0), what="poll grace over")
    await send(api, alice, chat_id, "gone again")
    pushes = await push_server.wait_for(2)
    assert keys.decrypt(pushes[1][2])["body"] == "gone again"

    # A backend notification with "push": true is pushed too (its own topic, normal urgency).
    status, out = await api.call("POST", "/api/notifications",
                                 {"user_ids": [bob["id"]], "type": "announcement", "message": "deploy done",
                                  "push": True}, token=SERVICE_TOKEN)
    assert status == 202
    _, headers, body = (await push_server.wait_for(3))[2]
    assert keys.decrypt(body) == {"type": "announcement", "id": out["ids"][0], "title": "Squall",
                                  "body": "deploy done", "chat_id": None, "url": "/", "tag": "type-announcement"}
    assert headers["Topic"] == "type-announcement" and headers["Urgency"] == "normal"
    await wait_until(lambda: services.metrics.metrics.pushes["sent"] == 3, what="three sent")


@pytest.mark.gen_test(timeout=60)
async def test_gone_subscription_is_deleted_and_503_is_retried(api, users, push_server, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    services.push.backoff_first = 0.05
    keys = await subscribe(api, bob, push_server.endpoint("flaky"))
    push_server.statuses = [503, 503]
    await send(api, alice, chat_id, "third time lucky")
    pushes = await push_server.wait_for(3)
    assert [p[0] for p in pushes] == ["/push/flaky"] * 3
    assert {keys.decrypt(p[2])["body"] for p in pushes} == {"third time lucky"}
    await wait_until(lambda: services.metrics.metrics.pushes["sent"] == 1, what="sent")
    assert services.metrics.metrics.push_retries == 2

    push_server.statuses = [410]
    await send(api, alice, chat_id, "anyone?")
    await push_server.wait_for(4)
    await wait_until(lambda: services.metrics.metrics.pushes["gone"] == 1, what="gone")
    status, listed = await api.call("GET", "/api/push/subscriptions", token=bob["token"])
    assert listed["subscriptions"] == []
    assert (await services.preferences.get(bob["id"])).subscriptions == 0


@pytest.mark.gen_test(timeout=60)
async def test_no_push_when_push_off_dnd_or_muted(api, users, push_server, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    keys = await subscribe(api, bob, push_server.endpoint("quiet"))
    await api.call("PATCH", "/api/me/preferences", {"push": False}, token=bob["token"])
    await send(api, alice, chat_id, "push off")
    await api.call("PATCH", "/api/me/preferences", {"push": True, "dnd_until": "2999-01-01T00:00:00Z"},
                   token=bob["token"])
    await send(api, alice, chat_id, "in dnd")
    await api.call("PATCH", "/api/me/preferences", {"dnd_until": None}, token=bob["token"])
    await api.call("PUT", f"/api/chats/{chat_id}/mute", {"until": None}, token=bob["token"])
    await send(api, alice, chat_id, "muted chat")
    await api.call("DELETE", f"/api/chats/{chat_id}/mute", token=bob["token"])
    await send(api, alice, chat_id, "pushed")
    (push,) = await push_server.wait_for(1)
    assert keys.decrypt(push[2])["body"] == "pushed"


@pytest.mark.gen_test(timeout=30)
async def test_subscriptions_are_validated_and_limited(api, users, push_server, services):
    from tornado_app.config import Config
    from tornado_app.services.outbound.push import PushService
    alice, bob = await users("alice", "bob")
    good = BrowserKeys().subscription(push_server.endpoint("a"))
    bad_bodies = [
        {**good, "endpoint": "ftp://127.0.0.1/x"},
        {**good, "endpoint": "http://" + "a" * 2050},
        {**good, "endpoint": 5},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"][:-4], "auth": good["keys"]["auth"]}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"], "auth": good["keys"]["auth"] + "AAAA"}},
        {**good, "keys": {"p256dh": "!!!", "auth": good["keys"]["auth"]}},
        {"endpoint": good["endpoint"]},
    ]
    for body in bad_bodies:
        status, error = await api.call("POST", "/api/push/subscriptions", body, token=alice["token"])
        assert status == 400 and error["error"]["code"] == "invalid_subscription", body
    # Without --push-allow-http only https endpoints are accepted.
    strict = PushService(Config(), services.dbx, services.hub, services.preferences, services.metrics.metrics)
    with pytest.raises(Exception) as refused:
        strict.validate(good)
    assert "https" in str(refused.value)
    for endpoint in ("https://fcm.googleapis.com/fcm/send/x", "https://web.push.apple.com/QO",
                     "https://updates.push.services.mozilla.com/wpush/v2/x"):
        assert strict.validate({**good, "endpoint": endpoint})["endpoint"] == endpoint
    for endpoint in ("https://push.example.com/x", "https://10.0.0.1/x", "https://fcm.googleapis.com.evil.net/x",
                     "https://localhost/x"):
        with pytest.raises(Exception) as refused:
            strict.validate({**good, "endpoint": endpoint})
        assert "push service" in str(refused.value), endpoint
    anywhere = PushService(Config(push_hosts=("*",)), services.dbx, services.hub, services.preferences,
                           services.metrics.metrics)
    assert anywhere.validate({**good, "endpoint": "https://push.example.com/x"})
    anywhere._pool.shutdown()
    strict._pool.shutdown()

    # At the limit (2) and past it: the oldest is replaced.
    for name in ("a", "b", "c"):
        await subscribe(api, alice, push_server.endpoint(name))
    status, listed = await api.call("GET", "/api/push/subscriptions", token=alice["token"])
    assert [s["endpoint"][-1] for s in listed["subscriptions"]] == ["c", "b"]
    # The same endpoint subscribed by another user moves to them.
    await subscribe(api, bob, push_server.endpoint("c"))
    status, listed = await api.call("GET", "/api/push/subscriptions", token=alice["token"])
    assert [s["endpoint"][-1] for s in listed["subscriptions"]] == ["b"]
    gone = "/api/push/subscriptions?" + urlencode({"endpoint": push_server.endpoint("b")})
    status, _ = await api.call("DELETE", gone, token=alice["token"])
    assert status == 200
    status, _ = await api.call("DELETE", gone, token=alice["token"])
    assert status == 404
    status, _ = await api.call("POST", "/api/push/subscriptions", good)
    assert status == 401


@pytest.mark.gen_test(timeout=30)
async def test_vapid_key_is_generated_once_and_shared(services, api):
    from models import Setting
    status, key = await api.call("GET", "/api/push/key")
    stored = await services.dbx.read(lambda: Setting.get(Setting.key == "vapid_private_key").value)
    await services.push.start()  # a second start (or a second process) reads the same key
    assert services.push.public_key == key["public_key"]
    assert stored not in key["public_key"] and len(stored) == 43
    await asyncio.sleep(0)
