"""The chat HTTP API over real HTTP: chats, history paging, sending, read state, unread counts."""
import asyncio
import re

import pytest

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def open_private(api, a, b):
    """The private chat of users ``a`` and ``b`` (opened by ``a``)."""
    status, data = await api.call("POST", "/api/chats", {"user_id": b["id"]}, token=a["token"])
    assert status == 200, data
    return data["chat"]


async def send(api, user, chat_id, content, **extra):
    """POST a message; returns the stored message."""
    status, data = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content, **extra},
                                  token=user["token"])
    assert status == 201, data
    return data["message"]


@pytest.mark.gen_test(timeout=60)
async def test_private_chat_find_or_create(api, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    assert chat["kind"] == "private"
    assert chat["title"] == "Bob"  # a private chat is titled by the other member
    assert sorted(m["id"] for m in chat["members"]) == sorted([alice["id"], bob["id"]])
    assert chat["last_message"] is None and chat["unread_count"] == 0
    assert ISO_Z.match(chat["created_at"])
    again = await open_private(api, bob, alice)
    assert again["id"] == chat["id"] and again["title"] == "Alice"
    status, one = await api.call("GET", f"/api/chats/{chat['id']}", token=bob["token"])
    assert status == 200 and one["chat"]["id"] == chat["id"]


@pytest.mark.gen_test(timeout=60)
async def test_group_chat_create(api, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    status, data = await api.call("POST", "/api/chats", {"member_ids": [bob["id"], carol["id"]], "title": " Team "},
                                  token=alice["token"])
    assert status == 201, data
    chat = data["chat"]
    assert chat["kind"] == "group" and chat["title"] == "Team"
    assert sorted(m["id"] for m in chat["members"]) == sorted(u["id"] for u in (alice, bob, carol))
    # a second group with the same members is a new chat
    status, data2 = await api.call("POST", "/api/chats", {"member_ids": [bob["id"]], "title": "Team"},
                                   token=alice["token"])
    assert status == 201 and data2["chat"]["id"] != chat["id"]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("body, status, code", [
    ({}, 400, "validation_error"),
    ({"user_id": "2"}, 400, "validation_error"),
    ({"user_id": True}, 400, "validation_error"),
    ({"user_id": 0}, 400, "validation_error"),
    ({"user_id": 999999}, 404, "user_not_found"),
    ({"member_ids": "1,2", "title": "x"}, 400, "validation_error"),
    ({"member_ids": [1, "2"], "title": "x"}, 400, "validation_error"),
    ({"member_ids": [999999], "title": "x"}, 404, "user_not_found"),
    ({"member_ids": [999999]}, 400, "validation_error"),
    ({"member_ids": [999999], "title": "   "}, 400, "validation_error"),
    ({"member_ids": [999999], "title": "t" * 129}, 400, "validation_error"),
    ({"member_ids": [], "title": "alone"}, 400, "validation_error"),
])
async def test_create_chat_errors(api, users, body, status, code):
    (alice,) = await users("alice")
    got, err = await api.call("POST", "/api/chats", body, token=alice["token"])
    assert got == status and err["error"]["code"] == code, err


@pytest.mark.gen_test(timeout=60)
async def test_private_chat_with_oneself_refused(api, users):
    (alice,) = await users("alice")
    status, err = await api.call("POST", "/api/chats", {"user_id": alice["id"]}, token=alice["token"])
    assert status == 400 and err["error"]["code"] == "validation_error"


@pytest.mark.gen_test(timeout=60)
async def test_send_and_message_shape(api, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    msg = await send(api, alice, chat["id"], "héllo ✓", client_id="c1")
    assert set(msg) == {"id", "chat_id", "sender_id", "sender_name", "content", "message_type", "client_id",
                        "created_at"}
    assert msg["chat_id"] == chat["id"] and msg["sender_id"] == alice["id"] and msg["sender_name"] == "Alice"
    assert msg["content"] == "héllo ✓" and msg["message_type"] == "text_message" and msg["client_id"] == "c1"
    assert ISO_Z.match(msg["created_at"])
    other = await send(api, bob, chat["id"], "image here", message_type="image_link")
    assert other["message_type"] == "image_link" and other["client_id"] is None
    status, page = await api.call("GET", f"/api/chats/{chat['id']}/messages", token=bob["token"])
    assert status == 200 and page["messages"] == [msg, other]


@pytest.mark.gen_test(timeout=60)
async def test_history_paging(api, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    sent = [await send(api, alice if i % 2 else bob, chat["id"], f"m{i}") for i in range(205)]
    ids = [m["id"] for m in sent]
    assert ids == sorted(ids)
    url = f"/api/chats/{chat['id']}/messages"

    status, page = await api.call("GET", url, token=alice["token"])
    assert status == 200 and [m["id"] for m in page["messages"]] == ids[-50:]  # default 50, newest page

    status, page = await api.call("GET", url + "?limit=200", token=alice["token"])
    assert [m["id"] for m in page["messages"]] == ids[-200:]

    # walk backwards with before_id until the start
    seen, before = [], None
    while True:
        q = "?limit=60" + (f"&before_id={before}" if before else "")
        status, page = await api.call("GET", url + q, token=bob["token"])
        assert status == 200
        chunk = [m["id"] for m in page["messages"]]
        if not chunk:
            break
        assert chunk == sorted(chunk) and len(chunk) <= 60
        seen = chunk + seen
        before = chunk[0]
    assert seen == ids

    status, page = await api.call("GET", url + f"?before_id={ids[3]}&limit=2", token=bob["token"])
    assert [m["content"] for m in page["messages"]] == ["m1", "m2"]

    for q in ("?limit=201", "?limit=0", "?limit=abc", "?before_id=0", "?before_id=x", "?limit=-5"):
        status, err = await api.call("GET", url + q, token=alice["token"])
        assert status == 400 and err["error"]["code"] == "validation_error", (q, err)


@pytest.mark.gen_test(timeout=60)
async def test_chat_list_order_last_message_and_unread(api, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    ab = await open_private(api, alice, bob)
    ac = await open_private(api, alice, carol)
    await send(api, bob, ab["id"], "from bob 1")
    await send(api, bob, ab["id"], "from bob 2")
    last = await send(api, carol, ac["id"], "from carol")
    status, data = await api.call("GET", "/api/chats", token=alice["token"])
    assert status == 200
    chats = data["chats"]
    assert [c["id"] for c in chats] == [ac["id"], ab["id"]]  # most recent activity first
    assert chats[0]["last_message"] == last and chats[0]["unread_count"] == 1
    assert chats[1]["last_message"]["content"] == "from bob 2" and chats[1]["unread_count"] == 2
    for c in chats:
        assert set(c) >= {"id", "kind", "title", "members", "last_message", "unread_count"}
    await send(api, alice, ab["id"], "reply")
    status, data = await api.call("GET", "/api/chats", token=alice["token"])
    assert [c["id"] for c in data["chats"]] == [ab["id"], ac["id"]]
    status, data = await api.call("GET", "/api/chats", token=carol["token"])
    assert [c["id"] for c in data["chats"]] == [ac["id"]] and data["chats"][0]["unread_count"] == 0


@pytest.mark.gen_test(timeout=60)
async def test_mark_read_and_unread(api, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    ab = await open_private(api, alice, bob)
    ac = await open_private(api, alice, carol)
    m1 = await send(api, bob, ab["id"], "one")
    m2 = await send(api, bob, ab["id"], "two")
    await send(api, bob, ab["id"], "three")
    await send(api, carol, ac["id"], "hi")
    status, unread = await api.call("GET", "/api/unread", token=alice["token"])
    assert status == 200
    assert unread == {"total": 4, "chats": {str(ab["id"]): 3, str(ac["id"]): 1}}
    status, unread = await api.call("GET", "/api/unread", token=bob["token"])
    assert unread["total"] == 0

    status, res = await api.call("POST", f"/api/chats/{ab['id']}/read", {"message_id": m2["id"]},
                                 token=alice["token"])
    assert status == 200 and res == {"chat_id": ab["id"], "message_id": m2["id"]}
    status, unread = await api.call("GET", "/api/unread", token=alice["token"])
    assert unread["total"] == 2 and unread["chats"][str(ab["id"])] == 1
    # the read position only moves forward
    status, res = await api.call("POST", f"/api/chats/{ab['id']}/read", {"message_id": m1["id"]},
                                 token=alice["token"])
    assert status == 200 and res["message_id"] == m2["id"]
    status, unread = await api.call("GET", "/api/unread", token=alice["token"])
    assert unread["chats"][str(ab["id"])] == 1
    status, data = await api.call("GET", "/api/chats", token=alice["token"])
    assert {c["id"]: c["unread_count"] for c in data["chats"]} == {ab["id"]: 1, ac["id"]: 1}


@pytest.mark.gen_test(timeout=60)
async def test_mark_read_errors(api, users):
    alice, bob = await users("alice", "bob")
    ab = await open_private(api, alice, bob)
    msg = await send(api, bob, ab["id"], "one")
    other = await open_private(api, bob, (await users("carol"))[0])
    foreign = await send(api, bob, other["id"], "elsewhere")
    url = f"/api/chats/{ab['id']}/read"
    for body, status, code in [({}, 400, "validation_error"), ({"message_id": "1"}, 400, "validation_error"),
                               ({"message_id": -1}, 400, "validation_error"),
                               ({"message_id": msg["id"] + 10_000}, 404, "message_not_found"),
                               ({"message_id": foreign["id"]}, 404, "message_not_found")]:
        got, err = await api.call("POST", url, body, token=alice["token"])
        assert got == status and err["error"]["code"] == code, (body, err)
    got, err = await api.call("POST", url, raw=b"{oops", token=alice["token"])
    assert got == 400 and err["error"]["code"] == "bad_json"
    got, err = await api.call("POST", "/api/chats/999999/read", {"message_id": msg["id"]}, token=alice["token"])
    assert got == 404 and err["error"]["code"] == "chat_not_found"


@pytest.mark.gen_test(timeout=60)
async def test_unknown_chat_is_404_everywhere(api, users):
    (alice,) = await users("alice")
    for method, path, body in [("GET", "/api/chats/999999", None),
                               ("GET", "/api/chats/999999/messages", None),
                               ("POST", "/api/chats/999999/messages", {"content": "hi"}),
                               ("POST", "/api/chats/999999/read", {"message_id": 1}),
                               ("POST", "/api/chats/999999/typing", {})]:
        status, err = await api.call(method, path, body, token=alice["token"])
        assert status == 404 and err["error"]["code"] == "chat_not_found", (path, err)


@pytest.mark.gen_test(timeout=60)
async def test_every_chat_route_needs_a_token(api):
    for method, path in [("GET", "/api/chats"), ("POST", "/api/chats"), ("GET", "/api/chats/1"),
                         ("GET", "/api/chats/1/messages"), ("POST", "/api/chats/1/messages"),
                         ("POST", "/api/chats/1/read"), ("POST", "/api/chats/1/typing"),
                         ("GET", "/api/unread"), ("GET", "/api/me"), ("GET", "/api/users")]:
        status, err = await api.call(method, path, {} if method == "POST" else None)
        assert status == 401 and err["error"]["code"] == "unauthorized", (path, err)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"rate_limit_per_second": 0.01, "rate_limit_burst": 3}])
async def test_sending_is_rate_limited(api, users, ws_connect, config_overrides):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    for i in range(3):
        await send(api, alice, chat["id"], f"m{i}")
    status, err = await api.call("POST", f"/api/chats/{chat['id']}/messages", {"content": "too fast"},
                                 token=alice["token"])
    assert status == 429 and err["error"]["code"] == "rate_limited"
    retry = int(api.last_headers["Retry-After"])
    assert 1 <= retry <= 101 and err["error"]["retry_after"] == retry  # one token at 0.01/s
    ws = await ws_connect("/ws/chat", alice["token"])
    err = await ws.request({"type": "send_message", "chat_id": chat["id"], "content": "x", "client_id": "r1"},
                           "error", "message_ack")
    assert err["type"] == "error" and err["code"] == "rate_limited" and err["client_id"] == "r1"
    # the limit is per user: bob still sends
    await send(api, bob, chat["id"], "bob is fine")
    status, page = await api.call("GET", f"/api/chats/{chat['id']}/messages", token=bob["token"])
    assert [m["content"] for m in page["messages"]] == ["m0", "m1", "m2", "bob is fine"]


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_private_chat_opens_find_one_chat(api, users):
    alice, bob = await users("alice", "bob")
    calls = [api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"]) for _ in range(4)]
    calls += [api.call("POST", "/api/chats", {"user_id": alice["id"]}, token=bob["token"]) for _ in range(4)]
    results = await asyncio.gather(*calls)
    assert {status for status, _ in results} == {200}
    assert len({data["chat"]["id"] for _, data in results}) == 1
    status, chats = await api.call("GET", "/api/chats", token=alice["token"])
    assert len(chats["chats"]) == 1
