"""The service API on two processes sharing PostgreSQL and the Redis broker (issue 22, acceptance 5).

Removing a group member stops that member's streams on both processes receiving the chat at
once, and both processes' membership checks refuse the member (who keeps the history up to the removal); revoking a user closes every
stream of the user on both processes (4001 ``logged_out`` on WebSockets, ``auth_expired`` on SSE).
The users are the product's: its backend's tokens (``--auth-mode both``) open their streams.
"""
from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import jwt
import pytest

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.scaleout import SERVICE_TOKEN, start_cluster


PRODUCT = {"AUTH_MODE": "both", "EXTERNAL_JWT_SECRET": "product-secret-" + "p" * 32,
           "EXTERNAL_JWT_ISSUER": "https://product.example", "EXTERNAL_JWT_AUDIENCE": "squall"}


@pytest.fixture
def cluster(shared_db, server_factory):
    """Two servers, one PostgreSQL database, the Redis broker."""
    return start_cluster("redis", shared_db, server_factory, count=2, **PRODUCT)


def product_token(sub: str, iat: int = None) -> str:
    """A token of the product's backend for its user ``sub`` (HS256)."""
    iat = int(time.time()) - 5 if iat is None else iat
    return jwt.encode({"sub": sub, "iss": PRODUCT["EXTERNAL_JWT_ISSUER"], "aud": PRODUCT["EXTERNAL_JWT_AUDIENCE"],
                       "iat": iat, "exp": iat + 600}, PRODUCT["EXTERNAL_JWT_SECRET"], algorithm="HS256")


async def svc(api, method, path, body=None):
    status, out = await api.call(method, path, body, token=SERVICE_TOKEN)
    assert status in (200, 201), (method, path, status, out)
    return out


async def closed(ws: WSClient, timeout: float = 5.0):
    """Wait (skipping frames) until ``ws`` is closed; ``(code, reason)``."""
    deadline = time.monotonic() + timeout
    while await ws.recv(max(0.01, deadline - time.monotonic())) is not None:
        pass
    return ws.conn.close_code, ws.conn.close_reason


def ext(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.mark.gen_test(timeout=90)
async def test_removed_member_stops_receiving_at_once_on_both_processes(cluster):
    p1, p2 = cluster
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    ann, bob, cid = ext("ann"), ext("bob"), ext("cid")
    chat = (await svc(api1, "POST", "/api/service/chats", {"kind": "group", "key": ext("team"), "title": "Team",
                                                           "members": [ann, bob, cid]}))["chat"]
    ids = {m["external_id"]: m["id"] for m in chat["members"]}
    other = (await svc(api1, "POST", "/api/service/chats", {"kind": "private", "members": [cid, ann]}))["chat"]
    ann_ws = await WSClient.connect(p2.ws_url, "/ws/chat", product_token(ann))
    bob_ws = await WSClient.connect(p1.ws_url, "/ws/chat", product_token(bob))
    cid_token = product_token(cid)
    cid_ws1 = await WSClient.connect(p1.ws_url, "/ws/chat", cid_token)
    cid_ws2 = await WSClient.connect(p2.ws_url, "/ws/chat", cid_token)
    cid_sse2 = await SSEClient.connect("127.0.0.1", p2.port, "/sse/chat", cid_token)
    assert cid_sse2.status == 200
    await cid_sse2.next_type("unread")
    for ws in (bob_ws, cid_ws1, cid_ws2):  # joined: both processes cache the chat's members
        await ws.request({"type": "join_chat", "chat_id": chat["id"]}, "joined")
    before = await ann_ws.request({"type": "send_message", "chat_id": chat["id"], "content": "before",
                                   "client_id": "b"}, "message_ack")
    for next_of in (bob_ws.recv_type, cid_ws1.recv_type, cid_ws2.recv_type, cid_sse2.next_type):
        assert (await next_of("message"))["message"]["id"] == before["message"]["id"]

    await svc(api1, "DELETE", f"/api/service/chats/{chat['id']}/members/{quote(cid, safe='')}")
    # at once: sent on the other process right after the answer, it reaches Bob but not Cid
    after = await ann_ws.request({"type": "send_message", "chat_id": chat["id"], "content": "after",
                                  "client_id": "a"}, "message_ack", "error")
    assert after["type"] == "message_ack"
    assert (await bob_ws.recv_type("message"))["message"]["content"] == "after"
    sentinel = (await svc(api2, "POST", f"/api/service/chats/{other['id']}/messages",
                          {"content": "sentinel", "client_id": "s"}))["message"]
    for next_of in (cid_ws1.recv_type, cid_ws2.recv_type, cid_sse2.next_type):
        assert (await next_of("chat_members"))["removed"] == [ids[cid]]
        assert (await next_of("message"))["message"]["id"] == sentinel["id"]  # not "after"
    # both processes' membership checks refuse Cid now
    for ws in (cid_ws1, cid_ws2):
        err = await ws.request({"type": "send_message", "chat_id": chat["id"], "content": "x"}, "error")
        assert err["code"] == "not_a_member"
    # ... and both keep the history up to the removal for Cid, never "after" (issue 25)
    for api in (api1, api2):
        status, out = await api.call("GET", f"/api/chats/{chat['id']}/messages", token=cid_token)
        assert status == 200 and [m["id"] for m in out["messages"]] == [before["message"]["id"]]
    for ws in (ann_ws, bob_ws, cid_ws1, cid_ws2):
        ws.close()
    cid_sse2.close()


@pytest.mark.gen_test(timeout=90)
async def test_revoke_closes_the_users_streams_on_both_processes(cluster):
    p1, p2 = cluster
    api1 = ApiClient(p1.url)
    dee = ext("dee")
    await svc(api1, "PUT", f"/api/service/users/{quote(dee, safe='')}", {"display_name": "Dee"})
    token = product_token(dee)
    ws1 = await WSClient.connect(p1.ws_url, "/ws/chat", token)
    ws2 = await WSClient.connect(p2.ws_url, "/ws/notifications", token)
    sse1 = await SSEClient.connect("127.0.0.1", p1.port, "/sse/notifications", token)
    sse2 = await SSEClient.connect("127.0.0.1", p2.port, "/sse/chat", token)
    await ws1.request({"type": "ping"}, "pong")
    await ws2.recv_type("unread")
    for sse in (sse1, sse2):
        assert sse.status == 200
        await sse.next_type("unread")
    out = await svc(api1, "POST", f"/api/service/users/{quote(dee, safe='')}/revoke", {})
    assert out["revoked"] is True
    assert await closed(ws1) == (4001, "logged_out")
    assert await closed(ws2) == (4001, "logged_out")
    for sse in (sse1, sse2):
        assert (await sse.next_type("auth_expired"))["reason"] == "logged_out"
        sse.close()
    # tokens issued before now are refused by both processes
    for p in cluster:
        status, out = await ApiClient(p.url).call("GET", "/api/chats", token=token)
        assert status == 401 and out["error"]["code"] == "token_revoked"
