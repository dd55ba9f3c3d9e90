"""Shared helpers of the notification-stream tests (chats, sentinels, reading until a frame)."""
from __future__ import annotations

import asyncio
import time

import jwt

NOTIFICATION_KEYS = {"id", "type", "message", "chat_id", "sender_id", "sender_name",
                     "content_preview", "message_type", "timestamp"}


async def open_chat(api, alice: dict, bob: dict) -> int:
    """The private chat of ``alice`` and ``bob`` (created by alice); its id."""
    status, body = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    assert status == 200, (status, body)
    return body["chat"]["id"]


async def send(api, user: dict, chat_id: int, content: str) -> dict:
    """Send ``content`` over HTTP as ``user``; the stored message."""
    status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content},
                                  token=user["token"])
    assert status == 201, (status, body)
    return body["message"]


async def sentinel(api, user: dict) -> dict:
    """A ``test`` notification to ``user`` itself: a later event that IS delivered on its streams."""
    status, body = await api.call("POST", "/api/notifications/test", token=user["token"])
    assert status == 201, (status, body)
    return body["notification"]


async def ws_until(ws, predicate, timeout: float = 15.0) -> list:
    """Frames of ``ws`` up to and including the first one matching ``predicate``."""
    frames = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"no matching frame; got {frames}"
        frame = await ws.recv(left)
        assert frame is not None, f"closed ({ws.conn.close_code}) after {frames}"
        frames.append(frame)
        if predicate(frame):
            return frames


async def sse_until(sse, predicate, timeout: float = 15.0) -> list:
    """Events (``{"id","event","data"(parsed)}``) of ``sse`` up to the first whose data matches."""
    import json
    events = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"no matching event; got {events}"
        event = await sse.next_event(left)
        assert event is not None, f"stream ended after {events}"
        event = {**event, "data": json.loads(event["data"])}
        events.append(event)
        if predicate(event["data"]):
            return events


def is_id(nid):
    """A predicate: the frame is the notification with id ``nid``."""
    return lambda frame: frame.get("id") == nid


def of_type(frames, *types) -> list:
    """The frames whose ``type`` is one of ``types``."""
    return [f for f in frames if f.get("type") in types]


def expired_token(secret: str, user_id: int) -> str:
    """A correctly signed token for ``user_id`` that expired a minute ago."""
    now = int(time.time())
    return jwt.encode({"typ": "access", "sub": str(user_id), "sid": "0" * 32, "jti": "j", "ver": 1,
                       "iss": "squall:any", "iat": now - 3600, "nbf": now - 3600, "exp": now - 60},
                      secret, algorithm="HS256")


async def wait_until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition()`` (server-side state changes after a close are asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
