"""/ws/chat between real clients: acks, delivery, idempotent sends, membership, group chat, typing, receipts."""
import asyncio
import json

import pytest

from tests.support.clients import SSEClient


async def open_private(api, a, b):
    """The private chat of ``a`` and ``b``."""
    status, data = await api.call("POST", "/api/chats", {"user_id": b["id"]}, token=a["token"])
    assert status == 200, data
    return data["chat"]


async def open_group(api, owner, others, title="Group"):
    """A new group chat of ``owner`` and ``others``."""
    status, data = await api.call("POST", "/api/chats", {"member_ids": [u["id"] for u in others], "title": title},
                                  token=owner["token"])
    assert status == 201, data
    return data["chat"]


async def history(api, user, chat_id):
    """Every stored message of a chat (up to 200), oldest first."""
    status, page = await api.call("GET", f"/api/chats/{chat_id}/messages?limit=200", token=user["token"])
    assert status == 200, page
    return page["messages"]


@pytest.mark.gen_test(timeout=60)
async def test_ack_delivery_and_history(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    a = await ws_connect("/ws/chat", alice["token"])
    a2 = await ws_connect("/ws/chat", alice["token"])  # alice's second tab
    b = await ws_connect("/ws/chat", bob["token"])
    ack = await a.request({"type": "send_message", "chat_id": chat["id"], "content": "hello bob",
                           "message_type": "text_message", "client_id": "k-1"}, "message_ack")
    stored = ack["message"]
    assert ack["client_id"] == "k-1"
    assert stored["chat_id"] == chat["id"] and stored["sender_id"] == alice["id"]
    assert stored["sender_name"] == "Alice" and stored["content"] == "hello bob" and stored["client_id"] == "k-1"
    assert (await b.recv_type("message")) == {"type": "message", "message": stored}
    assert (await a2.recv_type("message"))["message"] == stored  # the sender's other tabs too
    assert await history(api, bob, chat["id"]) == [stored]
    # the sending socket got the ack, not a copy: its next chat frame is bob's reply
    reply = await b.request({"type": "send_message", "chat_id": chat["id"], "content": "hi"}, "message_ack")
    assert reply["client_id"] is None
    nxt = await a.recv()
    assert nxt == {"type": "message", "message": reply["message"]}


@pytest.mark.gen_test(timeout=60)
async def test_send_by_recipient_id_opens_the_private_chat(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    ack = await a.request({"type": "send_message", "recipient_id": bob["id"], "content": "first"}, "message_ack")
    got = await b.recv_type("message")
    assert got["message"] == ack["message"]
    chat = await open_private(api, bob, alice)
    assert chat["id"] == ack["message"]["chat_id"]
    ack2 = await a.request({"type": "send_message", "recipient_id": bob["id"], "content": "second"}, "message_ack")
    assert ack2["message"]["chat_id"] == chat["id"]


@pytest.mark.gen_test(timeout=60)
async def test_ping_pong(ws_connect, users):
    (alice,) = await users("alice")
    a = await ws_connect("/ws/chat", alice["token"])
    assert await a.request({"type": "ping"}, "pong") == {"type": "pong"}


@pytest.mark.gen_test(timeout=60)
async def test_same_client_id_twice_over_ws(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    frame = {"type": "send_message", "chat_id": chat["id"], "content": "once", "client_id": "dup-1"}
    first = await a.request(frame, "message_ack")
    second = await a.request({**frame, "content": "changed on retry"}, "message_ack")
    assert first == second and first["message"]["content"] == "once"
    # two copies sent back to back (the socket handles its frames in order)
    await a.send({**frame, "client_id": "dup-2"})
    await a.send({**frame, "client_id": "dup-2"})
    third = await a.recv_type("message_ack")
    fourth = await a.recv_type("message_ack")
    assert third == fourth and third["message"]["id"] != first["message"]["id"]
    stored = await history(api, alice, chat["id"])
    assert [m["id"] for m in stored] == [first["message"]["id"], third["message"]["id"]]
    # bob saw each message once: the next frames are the two messages, then the sentinel
    assert (await b.recv())["message"]["id"] == first["message"]["id"]
    assert (await b.recv())["message"]["id"] == third["message"]["id"]
    sentinel = await a.request({"type": "send_message", "chat_id": chat["id"], "content": "sentinel"}, "message_ack")
    assert (await b.recv())["message"]["id"] == sentinel["message"]["id"]


@pytest.mark.gen_test(timeout=60)
async def test_same_client_id_twice_over_http(api, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    url = f"/api/chats/{chat['id']}/messages"
    s1, r1 = await api.call("POST", url, {"content": "once", "client_id": "h-1"}, token=alice["token"])
    s2, r2 = await api.call("POST", url, {"content": "once", "client_id": "h-1"}, token=alice["token"])
    assert s1 == 201 and s2 == 201 and r1 == r2
    # another sender may use the same client id: ids are per sender
    s3, r3 = await api.call("POST", url, {"content": "bob's", "client_id": "h-1"}, token=bob["token"])
    assert s3 == 201 and r3["message"]["id"] != r1["message"]["id"]
    assert [m["id"] for m in await history(api, alice, chat["id"])] == [r1["message"]["id"], r3["message"]["id"]]
    # concurrent retries reach the writer together and share one group commit
    results = await asyncio.gather(*(api.call("POST", url, {"content": "burst", "client_id": "h-2"},
                                              token=alice["token"]) for _ in range(5)))
    assert {s for s, _ in results} == {201}
    assert len({json.dumps(r, sort_keys=True) for _, r in results}) == 1
    assert [m["client_id"] for m in await history(api, alice, chat["id"])] == ["h-1", "h-1", "h-2"]


@pytest.mark.gen_test(timeout=60)
async def test_same_client_id_mixed_ws_and_http(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    url = f"/api/chats/{chat['id']}/messages"
    a = await ws_connect("/ws/chat", alice["token"])
    ack = await a.request({"type": "send_message", "chat_id": chat["id"], "content": "x", "client_id": "m-1"},
                          "message_ack")
    status, resp = await api.call("POST", url, {"content": "x", "client_id": "m-1"}, token=alice["token"])
    assert status == 201 and resp["message"] == ack["message"]
    status, resp = await api.call("POST", url, {"content": "y", "client_id": "m-2"}, token=alice["token"])
    # an HTTP send reaches every chat socket of the members, the sender's own included
    assert await a.recv() == {"type": "message", "message": resp["message"]}
    ack2 = await a.request({"type": "send_message", "chat_id": chat["id"], "content": "y", "client_id": "m-2"},
                           "message_ack")
    assert ack2["message"] == resp["message"] and ack2["client_id"] == "m-2"
    assert [m["client_id"] for m in await history(api, bob, chat["id"])] == ["m-1", "m-2"]


@pytest.mark.gen_test(timeout=60)
async def test_non_member_is_refused_everywhere(api, ws_connect, users, http_port):
    alice, bob, eve = await users("alice", "bob", "eve")
    chat = await open_private(api, alice, bob)
    status, sent = await api.call("POST", f"/api/chats/{chat['id']}/messages", {"content": "secret"},
                                  token=alice["token"])
    assert status == 201
    secret = sent["message"]
    cid = chat["id"]
    for method, path, body in [("GET", f"/api/chats/{cid}", None),
                               ("GET", f"/api/chats/{cid}/messages", None),
                               ("GET", f"/api/chats/{cid}/messages?before_id={secret['id'] + 1}", None),
                               ("POST", f"/api/chats/{cid}/messages", {"content": "let me in"}),
                               ("POST", f"/api/chats/{cid}/read", {"message_id": secret["id"]}),
                               ("POST", f"/api/chats/{cid}/typing", {})]:
        status, err = await api.call(method, path, body, token=eve["token"])
        assert status == 403 and err["error"]["code"] == "not_a_member", (path, err)
        assert "secret" not in str(err)

    e = await ws_connect("/ws/chat", eve["token"])
    for frame in [{"type": "send_message", "chat_id": cid, "content": "let me in", "client_id": "e1"},
                  {"type": "join_chat", "chat_id": cid},
                  {"type": "leave_chat", "chat_id": cid},
                  {"type": "typing", "chat_id": cid},
                  {"type": "mark_read", "chat_id": cid, "message_id": secret["id"]}]:
        err = await e.request(frame, "error")
        assert err["code"] == "not_a_member", (frame, err)

    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", eve["token"], chat_id=cid)
    assert sse.status == 403
    assert '"not_a_member"' in await sse.body_text()
    sse.close()

    # eve's own streams never carry the chat's traffic: a new message, a typing event and a
    # read receipt in alice and bob's chat, then a sentinel message to eve, which comes next
    eve_sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", eve["token"])
    assert eve_sse.status == 200
    b = await ws_connect("/ws/chat", bob["token"])
    await api.call("POST", f"/api/chats/{cid}/messages", {"content": "secret 2"}, token=alice["token"])
    await b.recv_type("message")
    await api.call("POST", f"/api/chats/{cid}/typing", {}, token=alice["token"])
    await b.recv_type("typing")
    await api.call("POST", f"/api/chats/{cid}/read", {"message_id": secret["id"]}, token=bob["token"])
    own = await open_private(api, alice, eve)
    status, sentinel = await api.call("POST", f"/api/chats/{own['id']}/messages", {"content": "hi eve"},
                                      token=alice["token"])
    assert (await e.recv()) == {"type": "message", "message": sentinel["message"]}
    chat_events = []
    while True:
        data = await eve_sse.next_json()
        if data["type"] in ("message", "typing", "read"):
            chat_events.append(data)
            break
    assert chat_events == [{"type": "message", "message": sentinel["message"]}]
    eve_sse.close()
    # nothing eve did was stored
    assert [m["content"] for m in await history(api, alice, cid)] == ["secret", "secret 2"]

    # replay on reconnect only covers eve's own chats
    e2 = await ws_connect("/ws/chat", eve["token"], last_event_id="0")
    assert (await e2.recv_type("message"))["message"]["id"] == sentinel["message"]["id"]


@pytest.mark.gen_test(timeout=60)
async def test_payload_cannot_impersonate(api, ws_connect, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat = await open_private(api, alice, bob)
    ac = await open_private(api, alice, carol)
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    ack = await a.request({"type": "send_message", "chat_id": chat["id"], "content": "forged?",
                           "sender_id": bob["id"], "sender_name": "Bob", "user_id": bob["id"], "id": 1},
                          "message_ack")
    assert ack["message"]["sender_id"] == alice["id"] and ack["message"]["sender_name"] == "Alice"
    # over HTTP the URL names the chat: chat_id, recipient_id and sender_id in the body are ignored
    status, resp = await api.call("POST", f"/api/chats/{chat['id']}/messages",
                                  {"content": "forged 2", "sender_id": bob["id"], "chat_id": ac["id"],
                                   "recipient_id": carol["id"]}, token=alice["token"])
    assert status == 201 and resp["message"]["sender_id"] == alice["id"] and resp["message"]["chat_id"] == chat["id"]
    assert [m["sender_id"] for m in await history(api, bob, chat["id"])] == [alice["id"], alice["id"]]
    assert await history(api, carol, ac["id"]) == []
    # typing and read receipts carry the authenticated user, whatever the frame says
    await a.send({"type": "typing", "chat_id": chat["id"], "user_id": bob["id"], "user_name": "Bob"})
    typing = await b.recv_type("typing")
    assert typing["user_id"] == alice["id"] and typing["user_name"] == "Alice"
    await a.send({"type": "mark_read", "chat_id": chat["id"], "message_id": resp["message"]["id"],
                  "user_id": bob["id"]})
    receipt = await b.recv_type("read")
    assert receipt["user_id"] == alice["id"]
    status, unread = await api.call("GET", "/api/unread", token=bob["token"])
    assert unread["total"] == 2  # alice's mark_read did not touch bob's read position
    status, unread = await api.call("POST", f"/api/chats/{chat['id']}/read", {"message_id": resp["message"]["id"],
                                                                             "user_id": bob["id"]},
                                    token=carol["token"])
    assert status == 403


@pytest.mark.gen_test(timeout=60)
async def test_group_chat_delivery_unread_and_mark_read(api, ws_connect, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    group = await open_group(api, alice, [bob, carol], "Trio")
    gid = group["id"]
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    c = await ws_connect("/ws/chat", carol["token"])
    m1 = (await a.request({"type": "send_message", "chat_id": gid, "content": "hi all"}, "message_ack"))["message"]
    assert (await b.recv_type("message"))["message"] == m1
    assert (await c.recv_type("message"))["message"] == m1
    m2 = (await b.request({"type": "send_message", "chat_id": gid, "content": "hi from bob"}, "message_ack"))["message"]
    assert (await a.recv_type("message"))["message"] == m2
    assert (await c.recv_type("message"))["message"] == m2

    async def unread(user):
        status, data = await api.call("GET", "/api/unread", token=user["token"])
        assert status == 200
        return data["total"], data["chats"].get(str(gid), 0)

    assert await unread(alice) == (1, 1)
    assert await unread(bob) == (0, 0)  # sending read the chat up to bob's own message
    assert await unread(carol) == (2, 2)

    await c.send({"type": "mark_read", "chat_id": gid, "message_id": m1["id"]})
    for other in (a, b):
        receipt = await other.recv_type("read")
        assert receipt == {"type": "read", "chat_id": gid, "user_id": carol["id"], "message_id": m1["id"]}
    assert await unread(carol) == (1, 1)
    assert await unread(alice) == (1, 1) and await unread(bob) == (0, 0)

    status, _ = await api.call("POST", f"/api/chats/{gid}/read", {"message_id": m2["id"]}, token=alice["token"])
    assert status == 200
    assert await unread(alice) == (0, 0)
    assert await unread(bob) == (0, 0) and await unread(carol) == (1, 1)
    status, chats = await api.call("GET", "/api/chats", token=carol["token"])
    assert chats["chats"][0]["id"] == gid and chats["chats"][0]["unread_count"] == 1
    assert chats["chats"][0]["last_message"] == m2


@pytest.mark.gen_test(timeout=60)
async def test_typing_and_receipts_reach_others_not_the_sender(api, ws_connect, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    gid = (await open_group(api, alice, [bob, carol]))["id"]
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    c = await ws_connect("/ws/chat", carol["token"])
    m1 = (await b.request({"type": "send_message", "chat_id": gid, "content": "one"}, "message_ack"))["message"]
    assert (await a.recv())["message"] == m1
    assert (await c.recv())["message"] == m1

    await a.send({"type": "typing", "chat_id": gid})
    expected = {"type": "typing", "chat_id": gid, "user_id": alice["id"], "user_name": "Alice"}
    assert await b.recv() == expected
    assert await c.recv() == expected
    await a.send({"type": "mark_read", "chat_id": gid, "message_id": m1["id"]})
    receipt = {"type": "read", "chat_id": gid, "user_id": alice["id"], "message_id": m1["id"]}
    assert await b.recv() == receipt
    assert await c.recv() == receipt
    # HTTP typing takes the same path (carol: alice's next typing within 2 s would be dropped)
    status, ok = await api.call("POST", f"/api/chats/{gid}/typing", {}, token=carol["token"])
    assert status == 200 and ok == {"ok": True}
    by_carol = {"type": "typing", "chat_id": gid, "user_id": carol["id"], "user_name": "Carol"}
    assert await a.recv() == by_carol
    assert await b.recv() == by_carol
    # sentinel: the next frame alice gets is carol's message, so none of her own events came back
    m2 = (await c.request({"type": "send_message", "chat_id": gid, "content": "sentinel"}, "message_ack"))["message"]
    assert await a.recv() == {"type": "message", "message": m2}


@pytest.mark.gen_test(timeout=60)
async def test_join_and_leave(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    chat = await open_private(api, alice, bob)
    a = await ws_connect("/ws/chat", alice["token"])
    assert await a.request({"type": "join_chat", "chat_id": chat["id"]}, "joined") == {"type": "joined",
                                                                                        "chat_id": chat["id"]}
    assert await a.request({"type": "leave_chat", "chat_id": chat["id"]}, "left") == {"type": "left",
                                                                                      "chat_id": chat["id"]}
