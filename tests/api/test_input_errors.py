"""Bad input on every path gets its documented error, and the server and other connections keep working."""
import asyncio
import json

import pytest

from tests.support.clients import SSEClient
from tests.support.checks import GOOD, assert_still_works, setup_pair


def ws_bad_frames(chat_id, alice_id, bob_id):
    """(frame, expected code, expected client_id) for every kind of bad frame."""
    send = {"type": "send_message", "chat_id": chat_id, "client_id": "cid"}
    return [
        ("this is not json", "bad_json", None),
        ("[1, 2, 3]", "bad_json", None),
        ('"just a string"', "bad_json", None),
        ("[" * 50_000, "bad_json", None),  # nested past the parser's recursion limit
        (b"\x00\x01binary", "bad_json", None),
        ({"no": "type"}, "missing_type", None),
        ({"type": 7}, "missing_type", None),
        ({"type": "explode"}, "unknown_type", None),
        ({"type": "explode", "client_id": "x9"}, "unknown_type", "x9"),
        ({"type": "send_message", "chat_id": chat_id}, "invalid_content", None),
        ({**send, "content": 12}, "invalid_content", "cid"),
        ({**send, "content": None}, "invalid_content", "cid"),
        ({**send, "content": ""}, "empty_content", "cid"),
        ({**send, "content": " \n\t "}, "empty_content", "cid"),
        ({**send, "content": "x" * 4001}, "content_too_long", "cid"),
        ({**send, "content": "ok", "message_type": "Bad Type"}, "invalid_message_type", "cid"),
        ({**send, "content": "ok", "message_type": 3}, "invalid_message_type", "cid"),
        ({**send, "content": "ok", "client_id": "c" * 65}, "invalid_client_id", "c" * 65),
        ({**send, "content": "ok", "client_id": 42}, "invalid_client_id", None),
        ({"type": "send_message", "content": "ok"}, "validation_error", None),
        ({"type": "send_message", "content": "ok", "chat_id": chat_id, "recipient_id": bob_id}, "validation_error",
         None),
        ({**send, "content": "ok", "chat_id": str(chat_id)}, "validation_error", "cid"),
        ({**send, "content": "ok", "chat_id": True}, "validation_error", "cid"),
        ({**send, "content": "ok", "chat_id": 999999}, "chat_not_found", "cid"),
        ({"type": "send_message", "content": "ok", "recipient_id": 999999}, "user_not_found", None),
        ({"type": "send_message", "content": "ok", "recipient_id": alice_id}, "validation_error", None),
        ({"type": "join_chat"}, "validation_error", None),
        ({"type": "join_chat", "chat_id": 999999}, "chat_not_found", None),
        ({"type": "leave_chat", "chat_id": "x"}, "validation_error", None),
        ({"type": "typing"}, "validation_error", None),
        ({"type": "typing", "chat_id": 999999}, "chat_not_found", None),
        ({"type": "mark_read", "chat_id": chat_id}, "validation_error", None),
        ({"type": "mark_read", "chat_id": chat_id, "message_id": "1"}, "validation_error", None),
        ({"type": "mark_read", "chat_id": chat_id, "message_id": 10 ** 12}, "message_not_found", None),
        ({"type": "mark_read", "chat_id": 999999, "message_id": 1}, "chat_not_found", None),
    ]


@pytest.mark.gen_test(timeout=120)
async def test_bad_ws_frames_get_error_frames_and_the_socket_keeps_working(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    for n, (frame, code, client_id) in enumerate(ws_bad_frames(chat_id, alice["id"], bob["id"])):
        if isinstance(frame, bytes):
            await a.conn.write_message(frame, binary=True)
        else:
            await a.send(frame)
        err = await a.recv()
        assert err["type"] == "error", (frame, err)
        assert err["code"] == code, (frame, err)
        assert err["client_id"] == client_id, (frame, err)
        assert isinstance(err["message"], str) and err["message"]
        await assert_still_works(a, b, chat_id, n)
    status, page = await api.call("GET", f"/api/chats/{chat_id}/messages?limit=200", token=bob["token"])
    assert all(m["content"].startswith(GOOD) for m in page["messages"])


@pytest.mark.gen_test(timeout=60)
async def test_content_limit_is_in_characters(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    ack = await a.request({"type": "send_message", "chat_id": chat_id, "content": "é" * 4000}, "message_ack")
    assert len(ack["message"]["content"]) == 4000
    status, resp = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": "ü" * 4000},
                                  token=alice["token"])
    assert status == 201
    status, err = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": "ü" * 4001},
                                 token=alice["token"])
    assert status == 400 and err["error"]["code"] == "content_too_long"


@pytest.mark.gen_test(timeout=120)
async def test_bad_http_sends(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    url = f"/api/chats/{chat_id}/messages"
    cases = [
        (b"{broken", 400, "bad_json"),
        (b"[]", 400, "bad_json"),
        (b"\xc3\x28", 400, "bad_json"),
        (b"[" * 50_000, 400, "bad_json"),
        (b"", 400, "invalid_content"),
        (b"{}", 400, "invalid_content"),
        (b'{"content": 5}', 400, "invalid_content"),
        (b'{"content": ""}', 400, "empty_content"),
        (('{"content": "' + "y" * 4001 + '"}').encode(), 400, "content_too_long"),
        (b'{"content": "ok", "message_type": "NO"}', 400, "invalid_message_type"),
        (b'{"content": "ok", "client_id": 5}', 400, "invalid_client_id"),
        (b'{"content": "ok", "client_id": ""}', 400, "invalid_client_id"),
        (('{"content": "' + "z" * 70_000 + '"}').encode(), 413, "payload_too_large"),
    ]
    for n, (raw, status, code) in enumerate(cases):
        got, err = await api.call("POST", url, raw=raw, token=alice["token"])
        assert got == status, (raw[:40], err)
        assert set(err) == {"error"} and err["error"]["code"] == code, (raw[:40], err)
        await assert_still_works(a, b, chat_id, n)
    got, err = await api.call("POST", "/api/chats", raw=b"{nope", token=alice["token"])
    assert got == 400 and err["error"]["code"] == "bad_json"


@pytest.mark.gen_test(timeout=60)
async def test_oversize_frame_closes_1009_and_others_keep_working(api, ws_connect, users, config):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    a2 = await ws_connect("/ws/chat", alice["token"])
    big = '{"type":"send_message","chat_id":%d,"content":"%s"}' % (chat_id, "x" * (config.max_frame_bytes + 1))
    await a.send(big)
    assert await a.recv() is None
    assert a.conn.close_code == 1009
    # the other sockets, and new ones, still work
    await assert_still_works(a2, b, chat_id, "after-1009")
    a3 = await ws_connect("/ws/chat", alice["token"])
    await assert_still_works(a3, b, chat_id, "new-socket")
    status, page = await api.call("GET", f"/api/chats/{chat_id}/messages", token=alice["token"])
    assert [m["client_id"] for m in page["messages"]] == ["good-after-1009", "good-new-socket"]


@pytest.mark.gen_test(timeout=60)
async def test_bad_tokens_leave_other_connections_working(api, ws_connect, users, ws_url, http_port):
    import tornado.httpclient
    import tornado.websocket
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    for n, path in enumerate(["/ws/chat", "/ws/chat?access_token=bad", "/ws/notifications?access_token=x.y.z"]):
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await asyncio.wait_for(tornado.websocket.websocket_connect(ws_url + path), 10)
        assert info.value.code == 401
        await assert_still_works(a, b, chat_id, f"ws-{n}")
    for n, (path, token) in enumerate([("/sse/chat", None), ("/sse/chat", "bad"), ("/sse/notifications", "bad")]):
        sse = await SSEClient.connect("127.0.0.1", http_port, path, token)
        assert sse.status == 401
        assert '"error"' in await sse.body_text()
        sse.close()
        await assert_still_works(a, b, chat_id, f"sse-{n}")


HUGE = 10 ** 30  # beyond any database integer


@pytest.mark.gen_test(timeout=60)
async def test_out_of_range_ids_are_validation_errors(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    frames = [{"type": "send_message", "chat_id": HUGE, "content": "x"},
              {"type": "send_message", "recipient_id": HUGE, "content": "x"},
              {"type": "join_chat", "chat_id": HUGE},
              {"type": "typing", "chat_id": HUGE},
              {"type": "mark_read", "chat_id": chat_id, "message_id": HUGE},
              {"type": "mark_read", "chat_id": 2 ** 63, "message_id": 1}]
    for n, frame in enumerate(frames):
        err = await a.request(frame, "error")
        assert err["code"] == "validation_error", (frame, err)
        await assert_still_works(a, b, chat_id, f"id-{n}")
    for method, path, body in [("GET", f"/api/chats/{chat_id}/messages?before_id={HUGE}", None),
                               ("POST", "/api/chats", {"user_id": HUGE}),
                               ("POST", "/api/chats", {"member_ids": [bob["id"], HUGE], "title": "t"}),
                               ("POST", f"/api/chats/{chat_id}/read", {"message_id": HUGE})]:
        status, err = await api.call(method, path, body, token=alice["token"])
        assert status == 400 and err["error"]["code"] == "validation_error", (path, body, err)
    # the largest 64-bit id is valid, just unknown
    status, err = await api.call("POST", "/api/chats", {"user_id": 2 ** 63 - 1}, token=alice["token"])
    assert status == 404 and err["error"]["code"] == "user_not_found"


BAD_TEXT = ["nul\u0000inside", "lone \ud800 surrogate"]


@pytest.mark.gen_test(timeout=60)
async def test_text_that_no_database_can_store_is_refused(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    for n, text in enumerate(BAD_TEXT):
        for field in ("content", "client_id"):
            frame = {"type": "send_message", "chat_id": chat_id, "content": "ok", "client_id": "c"}
            frame[field] = text
            await a.send(json.dumps(frame))  # json.dumps escapes both as \\uXXXX
            err = await a.recv_type("error", "message_ack")
            assert err["type"] == "error" and err["code"] == "invalid_text", (field, text, err)
            status, resp = await api.call("POST", f"/api/chats/{chat_id}/messages", raw=json.dumps(frame).encode(),
                                          token=alice["token"])
            assert status == 400 and resp["error"]["code"] == "invalid_text", (field, text, resp)
            await assert_still_works(a, b, chat_id, f"text-{n}-{field}")
        for path, body in [("/api/auth/register", {"username": "zed_x", "password": "password123",
                                                   "display_name": text}),
                           ("/api/auth/register", {"username": "zed_y", "password": "pass" + text}),
                           ("/api/auth/login", {"username": "zed_y", "password": "pass" + text}),
                           ("/api/chats", {"member_ids": [bob["id"]], "title": text})]:
            status, resp = await api.call("POST", path, raw=json.dumps(body).encode(), token=alice["token"])
            assert status == 400 and resp["error"]["code"] == "invalid_text", (path, text, resp)
