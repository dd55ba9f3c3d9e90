"""Every number from a URL, query, body or frame is an integer in 1..2**63-1 (0 where documented),
checked before any query: 400 with the documented code, never a 500, on SQLite and PostgreSQL."""
import asyncio

import pytest
import tornado.httpclient
import tornado.websocket

from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN
from tests.support.checks import assert_still_works, setup_pair

BIG = 2 ** 63  # one past the largest id
HUGE = 10 ** 30
BAD_QUERY_NUMBERS = ["0", "-1", str(BIG), "99999999999999999999", "1e3", "abc", "1.5", "٣", "0x10", "+-1"]
BAD_JSON_NUMBERS = [0, -1, BIG, HUGE, -HUGE, 1.5, "1", True, None, [1], {"a": 1}]


def http_cases(chat_id, bob_id):
    """(method, path, body, token kind, expected code) for every route that takes a number."""
    cases = []
    for raw in BAD_QUERY_NUMBERS:
        q = raw.replace(" ", "%20")
        cases += [
            ("GET", f"/api/chats?limit={q}", None, "user", "validation_error"),
            ("GET", f"/api/chats?before={q}", None, "user", "validation_error"),
            ("GET", f"/api/chats/{chat_id}/messages?before_id={q}", None, "user", "validation_error"),
            ("GET", f"/api/chats/{chat_id}/messages?limit={q}", None, "user", "validation_error"),
            ("GET", f"/api/notifications?before_id={q}", None, "user", "validation_error"),
            ("GET", f"/api/notifications?limit={q}", None, "user", "validation_error"),
            ("GET", f"/api/users?q=a&limit={q}", None, "user", "validation_error"),
        ]
    for value in BAD_JSON_NUMBERS:
        cases += [
            ("POST", "/api/chats", {"user_id": value}, "user", "validation_error"),
            ("POST", "/api/chats", {"member_ids": [bob_id, value], "title": "t"}, "user", "validation_error"),
            ("POST", f"/api/chats/{chat_id}/read", {"message_id": value}, "user", "validation_error"),
            ("POST", "/api/notifications/read", {"ids": [value]}, "user", "validation_error"),
            ("POST", "/api/notifications/clear", {"ids": [value]}, "user", "validation_error"),
            ("POST", "/api/notifications", {"user_ids": [value], "message": "m"}, "service", "validation_error"),
        ]
    cases += [
        ("GET", "/api/chats/0", None, "user", "validation_error"),
        ("GET", "/api/chats/0/messages", None, "user", "validation_error"),
        ("POST", "/api/chats/0/messages", {"content": "x"}, "user", "validation_error"),
        ("POST", "/api/chats/0/read", {"message_id": 1}, "user", "validation_error"),
        ("POST", "/api/chats/0/typing", {}, "user", "validation_error"),
        ("GET", "/api/chats/" + "9" * 19, None, "user", "not_found"),  # no such route: 19 digits and more
        ("GET", "/api/chats?before=999999", None, "user", "validation_error"),  # not one of the caller's chats
        ("POST", "/api/notifications/read", {"ids": "1"}, "user", "validation_error"),
        ("POST", "/api/notifications/clear", {"ids": [1] * 10001}, "user", "validation_error"),
    ]
    return cases


@pytest.mark.gen_test(timeout=120)
async def test_bad_numbers_on_every_http_route_are_400_never_500(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    tokens = {"user": alice["token"], "service": SERVICE_TOKEN}
    for n, (method, path, body, who, code) in enumerate(http_cases(chat_id, bob["id"])):
        status, resp = await api.call(method, path, body, token=tokens[who])
        expected = 404 if code == "not_found" else 400
        assert status == expected and resp["error"]["code"] == code, (method, path, body, status, resp)
    await assert_still_works(a, b, chat_id, "after-http")
    # the largest id is accepted, just unknown
    status, resp = await api.call("GET", f"/api/notifications?before_id={BIG - 1}", token=alice["token"])
    assert status == 200
    status, resp = await api.call("POST", "/api/notifications/read", {"ids": [BIG - 1]}, token=alice["token"])
    assert status == 200 and resp == {"read": 0}


def frame_cases(chat_id):
    cases = []
    for value in BAD_JSON_NUMBERS:
        cases += [
            {"type": "send_message", "chat_id": value, "content": "x", "client_id": "n1"},
            {"type": "send_message", "recipient_id": value, "content": "x", "client_id": "n2"},
            {"type": "join_chat", "chat_id": value},
            {"type": "leave_chat", "chat_id": value},
            {"type": "typing", "chat_id": value},
            {"type": "mark_read", "chat_id": value, "message_id": 1},
            {"type": "mark_read", "chat_id": chat_id, "message_id": value},
        ]
    return cases


@pytest.mark.gen_test(timeout=120)
async def test_bad_numbers_in_frames_get_error_frames_and_the_socket_stays_open(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    for n, frame in enumerate(frame_cases(chat_id)):
        if frame.get("chat_id") is None and "recipient_id" not in frame:
            continue  # chat_id missing is a different (also 400) case, covered in test_input_errors
        err = await a.request(frame, "error")
        assert err["code"] == "validation_error", (frame, err)
        assert err["client_id"] == frame.get("client_id"), (frame, err)
    await assert_still_works(a, b, chat_id, "after-frames")


BAD_RESUME = ["-1", str(BIG), "99999999999999999999", "x", "1.0", "1-", "-", "1-2-3", str(BIG) + "-1", "1-" + str(BIG)]


@pytest.mark.gen_test(timeout=120)
async def test_bad_last_event_ids_are_400_invalid_last_event_id_on_every_stream(api, ws_connect, users, ws_url,
                                                                                http_port, services):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    baseline = services.registry.count()
    for raw in BAD_RESUME:
        for path in ("/ws/chat", "/ws/notifications"):
            if path == "/ws/notifications" and raw.count("-") == 1 and not raw.startswith("-") \
                    and raw.split("-")[1].isdigit() and int(raw.split("-")[1]) < BIG:
                continue  # "M-N" is accepted there (N is used)
            with pytest.raises(tornado.httpclient.HTTPClientError) as info:
                await asyncio.wait_for(tornado.websocket.websocket_connect(
                    f"{ws_url}{path}?access_token={alice['token']}&last_event_id={raw}"), 10)
            assert info.value.code == 400, (path, raw)
            assert b"invalid_last_event_id" in info.value.response.body, (path, raw)
        for path in ("/sse/chat", "/sse/notifications"):
            for how in ("query", "header"):
                if how == "query":
                    sse = await SSEClient.connect("127.0.0.1", http_port, path, alice["token"], last_event_id=raw)
                else:
                    sse = await SSEClient.connect("127.0.0.1", http_port, path, alice["token"],
                                                  headers={"Last-Event-ID": raw})
                assert sse.status == 400, (path, raw, how)
                assert '"invalid_last_event_id"' in await sse.body_text(), (path, raw, how)
                sse.close()
    for raw in ("0", str(HUGE), "-5", "x"):
        sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", alice["token"], chat_id=raw)
        assert sse.status == 400 and '"validation_error"' in await sse.body_text(), raw
        sse.close()
    assert services.registry.count() == baseline
    # 0 is a valid position ("from the start"), as documented
    ws = await ws_connect("/ws/notifications", alice["token"], last_event_id="0")
    assert (await ws.recv())["type"] == "unread"
    await assert_still_works(a, b, chat_id, "after-resume")
