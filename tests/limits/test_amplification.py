"""Amplification limits, each at and just past its bound: group size, groups per hour, typing
fan-out, mark_read coalescing, test notifications; GET /api/chats pages without gaps or repeats."""
import asyncio

import pytest

from tests.support.clients import DEFAULT_TIMEOUT


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("config_overrides", [{"max_group_members": 5, "groups_per_hour": 3}])
async def test_group_size_and_groups_per_hour(api, users):
    alice, *others = await users("alice", "b", "c", "d", "e", "f")
    ids = [u["id"] for u in others]
    status, body = await api.call("POST", "/api/chats", {"member_ids": ids[:4], "title": "five"}, token=alice["token"])
    assert status == 201 and len(body["chat"]["members"]) == 5
    status, body = await api.call("POST", "/api/chats", {"member_ids": ids, "title": "six"}, token=alice["token"])
    assert status == 400 and body["error"]["code"] == "too_many_members"
    for n in range(2):  # 3 per hour: the first group above was one
        status, body = await api.call("POST", "/api/chats", {"member_ids": ids[:1], "title": f"g{n}"},
                                      token=alice["token"])
        assert status == 201
    status, body = await api.call("POST", "/api/chats", {"member_ids": ids[:1], "title": "one too many"},
                                  token=alice["token"])
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert int(api.last_headers["Retry-After"]) >= 1 and body["error"]["retry_after"] >= 1
    # another user is not affected; private chats are not groups
    status, body = await api.call("POST", "/api/chats", {"member_ids": [alice["id"]], "title": "b's"},
                                  token=others[0]["token"])
    assert status == 201
    status, body = await api.call("POST", "/api/chats", {"user_id": ids[1]}, token=alice["token"])
    assert status == 200


async def sentinel(sender, chat_id, n):
    return (await sender.request({"type": "send_message", "chat_id": chat_id, "content": f"sentinel {n}"},
                                 "message_ack"))["message"]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"typing_interval": 1.0}])
async def test_typing_is_fanned_out_at_most_once_per_interval(api, users, ws_connect):
    alice, bob = await users("alice", "bob")
    status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = data["chat"]["id"]
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    for _ in range(50):
        await a.send({"type": "typing", "chat_id": chat_id})
    m = await sentinel(a, chat_id, 1)
    frames = []
    while True:
        frame = await b.recv()
        if frame["type"] == "message" and frame["message"]["id"] == m["id"]:
            break
        frames.append(frame)
    assert [f["type"] for f in frames] == ["typing"]  # 49 dropped silently; no error to the sender
    # past the interval, the next one goes out
    await asyncio.sleep(1.05)
    await a.send({"type": "typing", "chat_id": chat_id})
    assert (await b.recv())["type"] == "typing"
    # per chat: typing in another chat is not throttled by this one
    carol, = await users("carol")
    status, data = await api.call("POST", "/api/chats", {"member_ids": [bob["id"], carol["id"]], "title": "g"},
                                  token=alice["token"])
    await a.send({"type": "typing", "chat_id": data["chat"]["id"]})
    assert (await b.recv_type("typing"))["chat_id"] == data["chat"]["id"]


@pytest.mark.gen_test(timeout=60)
async def test_mark_read_is_coalesced_latest_position_wins_and_receipts_go_out(api, users, ws_connect, config):
    assert config.mark_read_interval == 0.5
    alice, bob = await users("alice", "bob")
    status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = data["chat"]["id"]
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    sent = [await sentinel(b, chat_id, n) for n in range(5)]
    for m in sent:
        assert (await a.recv_type("message"))["message"]["id"] == m["id"]
    for m in sent:  # five positions in a burst: one write now, one write 0.5 s later with the last
        await a.send({"type": "mark_read", "chat_id": chat_id, "message_id": m["id"]})
    receipts = [await b.recv_type("read"), await b.recv_type("read")]
    assert [r["message_id"] for r in receipts] == [sent[0]["id"], sent[4]["id"]]
    last = await sentinel(a, chat_id, "after")
    assert (await b.recv_type("message", "read"))["message"]["id"] == last["id"]  # no third receipt
    # HTTP callers in a burst all get the coalesced (latest) position
    results = await asyncio.gather(*[api.call("POST", f"/api/chats/{chat_id}/read", {"message_id": m["id"]},
                                              token=bob["token"]) for m in sent[:3]])
    assert all(status == 200 for status, _ in results)
    status, state = await api.call("GET", f"/api/chats/{chat_id}", token=bob["token"])
    assert state["chat"]["unread_count"] == 1  # alice's "after" message
    status, unread = await api.call("GET", "/api/unread", token=alice["token"])
    assert unread["chats"].get(str(chat_id), 0) == 0


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"test_notifications_per_minute": 3}])
async def test_test_notifications_are_rate_limited(api, users):
    alice, bob = await users("alice", "bob")
    for _ in range(3):
        status, body = await api.call("POST", "/api/notifications/test", {}, token=alice["token"])
        assert status == 201
    status, body = await api.call("POST", "/api/notifications/test", {}, token=alice["token"])
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert 1 <= int(api.last_headers["Retry-After"]) <= 20
    status, body = await api.call("POST", "/api/notifications/test", {}, token=bob["token"])
    assert status == 201


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("config_overrides", [{"groups_per_hour": 1000, "chats_page_size": 40}])
async def test_chats_page_through_300_without_gap_or_repeat(api, users):
    alice, bob = await users("alice", "bob")
    created = []
    for n in range(300):
        status, body = await api.call("POST", "/api/chats", {"member_ids": [bob["id"]], "title": f"g{n}"},
                                      token=alice["token"])
        assert status == 201
        created.append(body["chat"]["id"])
    status, first = await api.call("GET", "/api/chats", token=alice["token"])
    assert len(first["chats"]) == 40  # the default page size
    seen, before, pages = [], None, 0
    while True:
        path = "/api/chats?limit=7" + (f"&before={before}" if before else "")
        status, page = await api.call("GET", path, token=alice["token"])
        assert status == 200
        seen += [c["id"] for c in page["chats"]]
        pages += 1
        before = page["next_before"]
        if before is None:
            break
    assert pages == 43  # 42 full pages and one of 6
    assert len(seen) == len(set(seen)) == 300
    assert seen == [c["id"] for c in first["chats"]] + seen[40:]
    assert sorted(seen) == sorted(created)
    status, page = await api.call("GET", "/api/chats?limit=500", token=alice["token"])
    assert [c["id"] for c in page["chats"]] == seen and page["next_before"] is None
    status, page = await api.call("GET", "/api/chats?limit=501", token=alice["token"])
    assert status == 400 and page["error"]["code"] == "validation_error"
    assert DEFAULT_TIMEOUT  # the client's per-call timeout bounds each page
