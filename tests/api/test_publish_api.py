"""POST /api/notifications: the publish API for backends (acceptance point 7)."""
import json

import pytest

from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN
from tests.support.streams import is_id, of_type, sentinel, sse_until, ws_until

SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


async def publish(api, body, headers=SERVICE):
    """POST the publish API; (status, json)."""
    return await api.call("POST", "/api/notifications", body, headers=headers)


@pytest.mark.gen_test(timeout=90)
async def test_publish_to_users_reaches_ws_and_sse_only_of_those_users(api, users, ws_connect, http_port):
    alice, bob, carol = await users("alice", "bob", "carol")
    bob_ws = await ws_connect("/ws/notifications", bob["token"])
    await bob_ws.recv_type("unread")
    bob_sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", bob["token"])
    await bob_sse.next_type("unread")
    carol_ws = await ws_connect("/ws/notifications", carol["token"])
    await carol_ws.recv_type("unread")
    alice_ws = await ws_connect("/ws/notifications", alice["token"])
    await alice_ws.recv_type("unread")

    status, body = await publish(api, {"user_ids": [bob["id"], carol["id"], bob["id"]],
                                       "message": "Your invoice is ready", "data": {"invoice": 42}})
    assert status == 202 and len(body["ids"]) == 2 and body["ids"] == sorted(body["ids"])
    bob_id, carol_id = body["ids"]
    got = await bob_ws.recv()
    assert set(got) == {"id", "type", "message", "timestamp", "data"}
    assert got["id"] == bob_id and got["type"] == "announcement" and got["message"] == "Your invoice is ready"
    assert got["data"] == {"invoice": 42} and got["timestamp"].endswith("Z")
    event = await bob_sse.next_event()
    assert event["id"] == str(bob_id) and json.loads(event["data"]) == got
    carol_got = await carol_ws.recv()
    assert carol_got["id"] == carol_id and {**carol_got, "id": bob_id} == got
    # Alice was not addressed: the next frame on her stream is her own sentinel
    probe = await sentinel(api, alice)
    assert (await alice_ws.recv())["id"] == probe["id"]
    # stored: it is in Bob's history and replays from an older id
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    assert history["notifications"][0]["id"] == bob_id and history["notifications"][0]["read"] is False
    replay = await ws_connect("/ws/notifications", bob["token"], last_event_id=str(bob_id - 1))
    await replay.recv_type("unread")
    assert (await replay.recv())["id"] == bob_id
    bob_sse.close()


@pytest.mark.gen_test(timeout=90)
async def test_broadcast_reaches_everyone_live_and_on_replay(api, users, ws_connect, http_port, services):
    alice, bob = await users("alice", "bob")
    alice_ws = await ws_connect("/ws/notifications", alice["token"])
    await alice_ws.recv_type("unread")
    bob_sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", bob["token"])
    await bob_sse.next_type("unread")
    before = await sentinel(api, bob)  # Bob's last seen id before he goes away
    await sse_until(bob_sse, is_id(before["id"]))
    bob_sse.close()

    status, body = await publish(api, {"broadcast": True, "type": "maintenance",
                                       "message": "Down for 5 minutes at 22:00"})
    assert status == 202 and len(body["ids"]) == 1  # one row for everyone
    (bid,) = body["ids"]
    frame = await alice_ws.recv()
    assert frame["id"] == bid and frame["type"] == "maintenance" and frame["message"] == "Down for 5 minutes at 22:00"
    from models import Notification
    rows = await services.dbx.read(lambda: Notification.select().where(Notification.id == bid).count())
    assert rows == 1

    # Bob reconnects with his older last id: the broadcast is replayed to him, exactly once
    for transport in ("ws", "sse"):
        if transport == "ws":
            ws = await ws_connect("/ws/notifications", bob["token"], last_event_id=str(before["id"]))
            await ws.recv_type("unread")
            probe = await sentinel(api, bob)
            frames = await ws_until(ws, is_id(probe["id"]))
        else:
            sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", bob["token"],
                                          headers={"Last-Event-ID": str(before["id"])})
            await sse.next_type("unread")
            probe = await sentinel(api, bob)
            frames = [e["data"] for e in await sse_until(sse, is_id(probe["id"]))]
            sse.close()
        assert [f["id"] for f in frames if "id" in f] == [bid] + [f["id"] for f in of_type(frames, "test")]
        assert of_type(frames, "maintenance")[0]["message"] == "Down for 5 minutes at 22:00"
    # a user who registers later also sees it in history (it is for everyone)
    (carol,) = await users("carol")
    status, history = await api.call("GET", "/api/notifications", token=carol["token"])
    assert [n["id"] for n in history["notifications"]] == [bid]


@pytest.mark.gen_test(timeout=60)
async def test_user_token_and_missing_token_are_not_service_tokens(api, users):
    (bob,) = await users("bob")
    body = {"broadcast": True, "message": "hi"}
    for headers in ({"Authorization": f"Bearer {bob['token']}"}, {}, {"Authorization": "Bearer wrong"},
                    {"Authorization": SERVICE_TOKEN}):
        status, resp = await publish(api, body, headers=headers)
        assert status == 403, (headers, resp)
        assert resp["error"]["code"] == "invalid_service_token"
    # the service token in the query string is not accepted either
    status, resp = await api.call("POST", f"/api/notifications?access_token={SERVICE_TOKEN}", body)
    assert status == 403
    # and the service token is not a user token
    status, resp = await api.call("GET", "/api/notifications", token=SERVICE_TOKEN)
    assert status == 401
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    assert history["notifications"] == []


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"service_token": ""}])
async def test_publish_disabled_without_service_token(api, users, config_overrides):
    (bob,) = await users("bob")
    for headers in (SERVICE, {"Authorization": "Bearer "}, {}, {"Authorization": f"Bearer {bob['token']}"}):
        status, resp = await publish(api, {"user_ids": [bob["id"]], "message": "hi"}, headers=headers)
        assert status == 403 and resp["error"]["code"] == "publish_disabled", resp


@pytest.mark.gen_test(timeout=60)
async def test_publish_validation_errors(api, users):
    (bob,) = await users("bob")
    cases = [
        {"message": "no target"},
        {"user_ids": [bob["id"]], "broadcast": True, "message": "both"},
        {"user_ids": [], "message": "empty"},
        {"user_ids": "1", "message": "not a list"},
        {"user_ids": [bob["id"], "x"], "message": "not ids"},
        {"user_ids": [True], "message": "bool is not an id"},
        {"broadcast": "yes", "message": "not a bool"},
        {"broadcast": True},
        {"broadcast": True, "message": ""},
        {"broadcast": True, "message": "   "},
        {"broadcast": True, "message": 5},
        {"broadcast": True, "message": "x" * 1001},
        {"broadcast": True, "message": "m", "type": ""},
        {"broadcast": True, "message": "m", "type": "t" * 65},
        {"broadcast": True, "message": "m", "type": 3},
        {"broadcast": True, "message": "m", "type": "new_message"},
        {"broadcast": True, "message": "m", "type": "unread"},
        {"broadcast": True, "message": "m", "type": "resync"},
        {"broadcast": True, "message": "m", "data": [1, 2]},
        {"broadcast": True, "message": "m", "data": "text"},
    ]
    for body in cases:
        status, resp = await publish(api, body)
        assert status == 400, (body, resp)
        assert set(resp["error"]) == {"code", "message"} and resp["error"]["code"] == "validation_error"
    status, resp = await api.call("POST", "/api/notifications", raw=b"{not json", headers=SERVICE)
    assert status == 400 and resp["error"]["code"] == "bad_json"
    status, resp = await api.call("POST", "/api/notifications", raw=b"[1]", headers=SERVICE)
    assert status == 400 and resp["error"]["code"] == "bad_json"
    status, resp = await publish(api, {"user_ids": [bob["id"], 987654], "message": "unknown user"})
    assert status == 404 and resp["error"]["code"] == "user_not_found"
    # nothing was stored by any refused request
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    assert history["notifications"] == []
