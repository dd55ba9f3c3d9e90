"""Two users with a private chat and a /ws/chat socket each, and the checks that they still work."""
from __future__ import annotations

import time

from tests.support.clients import WSClient


async def closed(ws: WSClient, timeout: float = 1.0):
    """Wait (skipping frames) until ``ws`` is closed; ``(code, reason)``."""
    deadline = time.monotonic() + timeout
    while await ws.recv(max(0.01, deadline - time.monotonic())) is not None:
        pass
    return ws.conn.close_code, ws.conn.close_reason


GOOD = "good after bad"


async def setup_pair(api, ws_connect, users):
    """Alice and Bob with a private chat and a /ws/chat socket each."""
    alice, bob = await users("alice", "bob")
    status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    assert status == 200
    a = await ws_connect("/ws/chat", alice["token"])
    b = await ws_connect("/ws/chat", bob["token"])
    return alice, bob, data["chat"]["id"], a, b


async def assert_still_works(a, b, chat_id, n):
    """Alice's socket still sends, and Bob's socket still receives."""
    ack = await a.request({"type": "send_message", "chat_id": chat_id, "content": f"{GOOD} {n}",
                           "client_id": f"good-{n}"}, "message_ack")
    got = await b.recv_type("message")
    assert got["message"] == ack["message"]
