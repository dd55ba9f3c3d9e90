"""Error frames echo the frame's ``client_id`` whenever it is a string, whatever else is wrong."""
import json

import pytest

from tests.support.checks import assert_still_works, setup_pair


def bad_frames(chat_id):
    """Frames that each cause an error, every one carrying client_id "e-1"."""
    cid = {"client_id": "e-1"}
    return [
        ({"chat_id": chat_id, "content": "x", **cid}, "missing_type"),  # the example: no type
        ({"type": None, **cid}, "missing_type"),
        ({"type": 5, "content": "x", **cid}, "missing_type"),
        ({"type": ["send_message"], **cid}, "missing_type"),
        ({"type": "nope", **cid}, "unknown_type"),
        ({"type": "send_message", "chat_id": chat_id, "content": "nul\u0000", **cid}, "invalid_text"),
        ({"type": "send_message", "chat_id": chat_id, "content": 5, **cid}, "invalid_content"),
        ({"type": "send_message", "chat_id": chat_id, "content": "", **cid}, "empty_content"),
        ({"type": "send_message", "chat_id": 2 ** 64, "content": "x", **cid}, "validation_error"),
        ({"type": "send_message", "chat_id": 999999, "content": "x", **cid}, "chat_not_found"),
        ({"type": "send_message", "content": "x", **cid}, "validation_error"),
        ({"type": "join_chat", "chat_id": "1", **cid}, "validation_error"),
        ({"type": "leave_chat", "chat_id": 0, **cid}, "validation_error"),
        ({"type": "typing", "chat_id": 10 ** 30, **cid}, "validation_error"),
        ({"type": "mark_read", "chat_id": chat_id, "message_id": -1, **cid}, "validation_error"),
        ({"type": "mark_read", "chat_id": chat_id, "message_id": 10 ** 12, **cid}, "message_not_found"),
    ]


@pytest.mark.gen_test(timeout=60)
async def test_error_frames_echo_the_client_id_on_ws_chat(api, ws_connect, users):
    alice, bob, chat_id, a, b = await setup_pair(api, ws_connect, users)
    for n, (frame, code) in enumerate(bad_frames(chat_id)):
        await a.send(json.dumps(frame))
        err = await a.recv_type("error")
        assert err["code"] == code, (frame, err)
        assert err["client_id"] == "e-1", (frame, err)
    # a client_id that is not a string, or not storable text, is not echoed
    for frame in ({"client_id": 7}, {"client_id": "bad\u0000id"}, {"type": "nope", "client_id": ["e"]}):
        await a.send(json.dumps(frame))
        err = await a.recv_type("error")
        assert err["client_id"] is None, (frame, err)
    await assert_still_works(a, b, chat_id, "after-echo")


@pytest.mark.gen_test(timeout=60)
async def test_error_frames_echo_the_client_id_on_ws_notifications(ws_connect, users):
    alice, = await users("alice")
    ws = await ws_connect("/ws/notifications", alice["token"])
    assert (await ws.recv())["type"] == "unread"
    for frame, code in [({"client_id": "n-1"}, "missing_type"), ({"type": "send_message", "client_id": "n-1"},
                                                                   "unknown_type")]:
        err = await ws.request(frame, "error")
        assert err["code"] == code and err["client_id"] == "n-1", err
    assert await ws.request({"type": "ping"}, "pong") == {"type": "pong"}
