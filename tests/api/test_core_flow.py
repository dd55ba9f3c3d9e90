"""The core paths end to end: a chat message over /ws/chat, a notification on both streams."""
import pytest

from tests.support.clients import SSEClient


@pytest.mark.gen_test(timeout=30)
async def test_ws_chat_message_ack_and_delivery(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    ack = await a.request({"type": "send_message", "recipient_id": bob["id"], "content": "hi bob",
                           "client_id": "c-1"}, "message_ack")
    assert ack["client_id"] == "c-1"
    assert ack["message"]["content"] == "hi bob" and ack["message"]["sender_id"] == alice["id"]
    got = await b.recv_type("message")
    assert got["message"] == ack["message"]
    status, page = await api.call("GET", f"/api/chats/{ack['message']['chat_id']}/messages", token=bob["token"])
    assert status == 200 and [m["id"] for m in page["messages"]] == [ack["message"]["id"]]


@pytest.mark.gen_test(timeout=30)
async def test_notification_reaches_ws_and_sse(api, ws_connect, users, http_port):
    alice, bob = await users("alice", "bob")
    ws = await ws_connect("/ws/notifications", bob["token"])
    assert (await ws.recv_type("unread"))["total"] == 0
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", bob["token"])
    assert sse.status == 200
    assert (await sse.next_type("unread"))["total"] == 0
    status, chat = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    status, sent = await api.call("POST", f"/api/chats/{chat['chat']['id']}/messages",
                                  {"content": "Hey, are you there?"}, token=alice["token"])
    assert status == 201
    n1 = await ws.recv_type("new_message")
    n2 = await sse.next_type("new_message")
    assert n1 == n2
    assert n1["sender_name"] == "Alice" and n1["content_preview"] == "Hey, are you there?"
    assert sse.last_event_id == str(n1["id"])
    sse.close()
