"""/sse/chat + HTTP: a whole chat without WebSockets, and one "M-N" Last-Event-ID resuming both kinds.

Acceptance point 6 of the notification-streams issue.
"""
import json

import pytest

from tests.support.clients import SSEClient
from tests.support.streams import is_id, of_type, open_chat, send, sentinel, sse_until, wait_until


async def chat_stream(http_port, user, **kw):
    """An open /sse/chat stream of ``user`` whose first event (unread) has been read."""
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", user["token"], **kw)
    assert sse.status == 200, sse.status
    first = await sse.next_event()
    assert first["id"] is None and json.loads(first["data"])["type"] == "unread"
    return sse


def split_id(event_id: str):
    """``"M-N"`` → (M, N)."""
    m, n = event_id.split("-")
    return int(m), int(n)


@pytest.mark.gen_test(timeout=90)
async def test_chat_entirely_over_sse_and_http_like_websocket(api, users, http_port, ws_connect, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    # Alice looks at the chat through /sse/chat?chat_id=N; Bob has the chat list open (no chat).
    a = await chat_stream(http_port, alice, chat_id=str(chat_id))
    await wait_until(lambda: services.registry.is_active(alice["id"], chat_id), what="alice's presence")
    b = await chat_stream(http_port, bob)
    bob_ws = await ws_connect("/ws/chat", bob["token"])  # the WebSocket path, for comparison

    # send (HTTP) → receive (SSE): the same frame the WebSocket gets, with an "M-N" id
    sent = await send(api, bob, chat_id, "hello over http")
    event = await a.next_event()
    while json.loads(event["data"])["type"] == "presence":  # Bob's streams made him online (issue 25)
        event = await a.next_event()
    frame = json.loads(event["data"])
    assert frame == {"type": "message", "message": sent}
    assert split_id(event["id"])[0] == sent["id"]
    assert await bob_ws.recv_type("message") == frame

    # presence: Alice is active in the chat, so no notification; the sentinel comes next
    probe = await sentinel(api, alice)
    events = await sse_until(a, is_id(probe["id"]))
    assert of_type([e["data"] for e in events], "new_message") == []
    assert split_id(events[-1]["id"]) == (sent["id"], probe["id"])

    # Bob is not active: Alice's reply reaches him as a message AND a notification, on one stream
    reply = await send(api, alice, chat_id, "hi bob, from sse land")
    events = await sse_until(b, lambda d: d.get("type") == "new_message")
    kinds = [e["data"]["type"] for e in events]
    assert "message" in kinds and kinds[-1] == "new_message"
    note = events[-1]
    assert note["data"]["content_preview"] == "hi bob, from sse land"
    assert split_id(note["id"]) == (reply["id"], note["data"]["id"])

    # typing over HTTP → typing frame on the other's stream (no id: it is not resumable)
    status, _ = await api.call("POST", f"/api/chats/{chat_id}/typing", token=bob["token"])
    assert status == 200
    events = await sse_until(a, lambda d: d.get("type") == "typing")
    assert events[-1]["data"] == {"type": "typing", "chat_id": chat_id, "user_id": bob["id"],
                                          "user_name": "Bob"}
    # read over HTTP → read receipt on the other's stream, unread state on the reader's
    status, body = await api.call("POST", f"/api/chats/{chat_id}/read", {"message_id": reply["id"]},
                                  token=bob["token"])
    assert status == 200 and body == {"chat_id": chat_id, "message_id": reply["id"]}
    receipt = await a.next_type("read")
    assert receipt == {"type": "read", "chat_id": chat_id, "user_id": bob["id"], "message_id": reply["id"]}
    assert await bob_ws.recv_type("typing", "read", "message") is not None
    # the new message raised Bob's count to 1; his read brings it back to 0
    events = await sse_until(b, lambda d: d.get("type") == "unread" and d["total"] == 0)
    assert [e["data"]["total"] for e in events if e["data"]["type"] == "unread"] == [1, 0]

    # closing Alice's stream ends her presence: the next message notifies her
    a.close()
    await wait_until(lambda: not services.registry.is_active(alice["id"], chat_id), what="presence to end")
    a2 = await chat_stream(http_port, alice)
    await send(api, bob, chat_id, "are you still there?")
    note = await a2.next_type("new_message")
    assert note["content_preview"] == "are you still there?"
    a2.close()
    b.close()


@pytest.mark.gen_test(timeout=90)
async def test_one_last_event_id_resumes_messages_and_notifications(api, users, http_port):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    b = await chat_stream(http_port, bob)
    first = await send(api, alice, chat_id, "before going away")
    events = await sse_until(b, lambda d: d.get("type") == "new_message")
    last_id = b.last_event_id
    assert split_id(last_id) == (first["id"], events[-1]["data"]["id"])
    b.close()

    # while Bob is away: two messages (each with a stored notification) and a published notice
    m1 = await send(api, alice, chat_id, "missed one")
    m2 = await send(api, alice, chat_id, "missed two")
    status, published = await api.call("POST", "/api/notifications",
                                       {"user_ids": [bob["id"]], "message": "maintenance at 6"},
                                       headers={"Authorization": "Bearer test-service-token"})
    assert status == 202

    b = await chat_stream(http_port, bob, headers={"Last-Event-ID": last_id})
    events = await sse_until(b, is_id(published["ids"][0]))
    frames = [e["data"] for e in events]
    assert [f["message"]["id"] for f in of_type(frames, "message")] == [m1["id"], m2["id"]]
    notes = of_type(frames, "new_message", "announcement")
    assert [n.get("content_preview", n["message"]) for n in notes] == ["missed one", "missed two",
                                                                       "maintenance at 6"]
    # every replayed event has an id that would resume right after it
    cursors = [split_id(e["id"]) for e in events]
    assert cursors == sorted(cursors) and cursors[-1] == (m2["id"], published["ids"][0])
    # then live, with nothing twice
    live = await send(api, alice, chat_id, "live again")
    probe = await sentinel(api, bob)
    events = await sse_until(b, is_id(probe["id"]))
    frames = [e["data"] for e in events]
    assert [f["message"]["id"] for f in of_type(frames, "message")] == [live["id"]]
    assert [n["content_preview"] for n in of_type(frames, "new_message")] == ["live again"]
    b.close()


@pytest.mark.gen_test(timeout=90)
async def test_fresh_stream_ids_resume_from_now_even_for_events_during_start(api, users, http_port, services):
    """An event that arrives while a fresh /sse/chat starts carries "M-N" with M = now, not 0."""
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    old = [await send(api, alice, chat_id, f"old {i}") for i in range(3)]
    original = services.open_state.state
    raised = []

    async def state(user_id, baseline):  # the batched read of the unread state and the baseline
        raised.append(await services.notifications.notify_user(bob["id"], "test", "while starting"))
        return await original(user_id, baseline)
    services.open_state.state = state
    b = await chat_stream(http_port, bob)
    event = await b.next_event()
    del services.open_state.state
    assert json.loads(event["data"])["id"] == raised[0]["id"]
    assert split_id(event["id"]) == (old[-1]["id"], raised[0]["id"])
    b.close()
    # resuming from that id replays nothing old
    b = await chat_stream(http_port, bob, headers={"Last-Event-ID": event["id"]})
    probe = await sentinel(api, bob)
    events = await sse_until(b, is_id(probe["id"]))
    assert [e["data"]["id"] for e in events] == [probe["id"]]
    b.close()


@pytest.mark.gen_test(timeout=60)
async def test_sse_chat_presence_needs_membership(api, users, http_port):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat_id = await open_chat(api, alice, bob)
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", carol["token"], chat_id=str(chat_id))
    assert sse.status == 403
    assert json.loads(await sse.body_text())["error"]["code"] == "not_a_member"
    sse.close()
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", alice["token"], chat_id="abc")
    assert sse.status == 400
    sse.close()
