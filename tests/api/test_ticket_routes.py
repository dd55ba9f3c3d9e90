"""Stream tickets are for streams (issue 20, item 5): accepted on /ws/*, /sse/* and /poll/* only.

A ticket used to be accepted by every authenticated route (``GET /api/me/preferences?ticket=…``
answered 200), which made it a second, URL-borne access token. Elsewhere it is now 401
``invalid_ticket``, refused before it is spent.
"""
from __future__ import annotations

import json

import pytest
import tornado.websocket

from tests.support.clients import SSEClient

API_ROUTES = [("GET", "/api/me"), ("GET", "/api/me/preferences"), ("GET", "/api/chats"),
              ("GET", "/api/unread"), ("GET", "/api/notifications"), ("POST", "/api/stream-ticket"),
              ("POST", "/api/auth/logout-all"), ("PATCH", "/api/me/preferences"),
              ("PUT", "/api/chats/1/mute")]
STREAM_ROUTES = ["/ws/chat", "/ws/notifications", "/sse/notifications", "/sse/chat",
                 "/poll/notifications", "/poll/chat"]


async def ticket_of(api, token) -> str:
    status, data = await api.call("POST", "/api/stream-ticket", {}, token=token)
    assert status == 200, data
    return data["ticket"]


async def opens(api, http_port, path: str, ticket: str) -> None:
    """``path`` opened with ``?ticket=`` (a WebSocket upgrade, an SSE stream, a poll that answers)."""
    if path.startswith("/ws/"):
        conn = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{http_port}{path}?ticket={ticket}")
        conn.write_message('{"type":"ping"}')
        while json.loads(await conn.read_message())["type"] != "pong":
            pass
        conn.close()
    elif path.startswith("/sse/"):
        sse = await SSEClient.connect("127.0.0.1", http_port, path, ticket=ticket)
        assert sse.status == 200, path
        await sse.next_type("unread")
        sse.close()
    else:
        status, data = await api.call("GET", f"{path}?ticket={ticket}&timeout=0")
        assert status == 200 and "events" in data, (path, data)


@pytest.mark.gen_test(timeout=60)
async def test_a_ticket_on_an_api_route_is_401_invalid_ticket(api, users, http_port):
    (alice,) = await users("alice")
    ticket = await ticket_of(api, alice["token"])
    for method, path in API_ROUTES:
        body = {} if method != "GET" else None
        status, err = await api.call(method, f"{path}?ticket={ticket}", body)
        assert status == 401 and err["error"]["code"] == "invalid_ticket", (method, path, err)
        assert api.last_headers["WWW-Authenticate"] == 'Bearer realm="squall"'
        # a ticket next to a valid header is refused too: a ticket is never an API credential
        status, err = await api.call(method, f"{path}?ticket={ticket}", body, token=alice["token"])
        assert status == 401 and err["error"]["code"] == "invalid_ticket", (method, path, err)
    # refused before it was spent: the same ticket still opens a stream
    await opens(api, http_port, "/sse/notifications", ticket)
    # and the access token alone still works on the API
    status, me = await api.call("GET", "/api/me", token=alice["token"])
    assert status == 200 and me["id"] == alice["id"]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("path", STREAM_ROUTES)
async def test_a_ticket_opens_each_stream_and_poll_route_once(api, users, http_port, path):
    (alice,) = await users("alice")
    ticket = await ticket_of(api, alice["token"])
    await opens(api, http_port, path, ticket)
    status, err = await api.call("GET", f"{path}?ticket={ticket}&timeout=0")  # single use
    assert status == 401 and err["error"]["code"] == "invalid_ticket", err
