"""The service API for the product's backend, /api/service/* (issue 22, acceptance 4).

Every route: success, idempotency, each bad field (400 with its code), an unknown external id
(404), a user's token instead of the service token (403), no token. The users it creates get
Squall sessions straight from the in-process services, to open real streams.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import quote

import jwt
import pytest
import tornado.httpclient

from models import ChatMember, Message, Notification, RefreshToken, User, UserPreference
from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN
from tornado_app.config import Config
from tornado_app.services.chat.service import LEFT_MEMORY
from tornado_app.services.delivery.control import MembersChanged
from tornado_app.services.delivery.events import CHAT, dumps
from tornado_app.services.identity.users import tombstone, username_key
from tornado_app.startup import service_token_warning


def ext(name: str) -> str:
    """A fresh external id."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def path_of(external_id: str) -> str:
    return quote(external_id, safe="")


async def svc(api, method, path, body=None, token=SERVICE_TOKEN):
    return await api.call(method, path, body, token=token)


async def put_user(api, external_id, **fields):
    status, body = await svc(api, "PUT", f"/api/service/users/{path_of(external_id)}", fields)
    assert status in (200, 201), (status, body)
    return body["user"]


async def session_of(services, user_id: int) -> str:
    """An access token of a new session of ``user_id`` (what the product's page would hold)."""
    return (await services.sessions.create(await services.users.get(user_id)))["access_token"]


async def closed(ws, timeout: float = 5.0):
    """Wait (skipping frames) until ``ws`` is closed; ``(code, reason)``."""
    deadline = time.monotonic() + timeout
    while await ws.recv(max(0.01, deadline - time.monotonic())) is not None:
        pass
    return ws.conn.close_code, ws.conn.close_reason


async def group(api, key, members, title="Team"):
    status, body = await svc(api, "POST", "/api/service/chats",
                             {"kind": "group", "key": key, "members": members, "title": title})
    assert status in (200, 201), (status, body)
    return body["chat"]


# Users ------------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_upsert_creates_then_updates_and_repeats(api):
    eid = "org/42 é" + uuid.uuid4().hex[:6]  # a slash and a non-ASCII letter, percent-encoded in the path
    url = f"/api/service/users/{path_of(eid)}"
    status, body = await svc(api, "PUT", url, {"display_name": "Ann", "avatar_url": "https://cdn.example/a.png"})
    assert status == 201, body
    user = body["user"]
    assert user["external_id"] == eid and user["display_name"] == "Ann" and user["kind"] == "external"
    assert user["avatar_url"] == "https://cdn.example/a.png" and user["disabled"] is False
    status, again = await svc(api, "PUT", url, {"display_name": "Ann", "avatar_url": "https://cdn.example/a.png"})
    assert status == 200 and again["user"] == user
    status, renamed = await svc(api, "PUT", url, {"display_name": "Ann B."})
    assert status == 200 and renamed["user"] == {**user, "display_name": "Ann B."}  # the avatar stays
    status, cleared = await svc(api, "PUT", url, {"avatar_url": None})
    assert status == 200 and cleared["user"]["avatar_url"] is None and cleared["user"]["display_name"] == "Ann B."
    status, empty = await svc(api, "PUT", url, {})
    assert status == 200 and empty["user"] == cleared["user"]
    # a new user without a name is named by its id
    other = ext("bare")
    assert (await put_user(api, other))["display_name"] == other


@pytest.mark.parametrize("body, code", [
    ({"display_name": 5}, "invalid_display_name"),
    ({"display_name": "a\nb"}, "invalid_display_name"),
    ({"display_name": "x" * 65}, "invalid_display_name"),
    ({"avatar_url": "javascript:alert(1)"}, "invalid_avatar_url"),
    ({"avatar_url": 5}, "invalid_avatar_url"),
    ({"avatar_url": "https://user:pw@cdn.example/a.png"}, "invalid_avatar_url"),
    ({"avatar_url": "https://cdn.example/" + "a" * 2030}, "invalid_avatar_url"),
    ({"disabled": "yes"}, "invalid_disabled"),
    ({"disabled": 1}, "invalid_disabled"),
])
@pytest.mark.gen_test(timeout=30)
async def test_upsert_bad_fields(api, body, code):
    eid = ext("bad")
    status, out = await svc(api, "PUT", f"/api/service/users/{path_of(eid)}", body)
    assert status == 400 and out["error"]["code"] == code, out
    # nothing was created
    status, out = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 404 and out["error"]["code"] == "user_not_found"


@pytest.mark.gen_test(timeout=30)
async def test_external_id_in_path_at_and_past_its_length(api):
    longest = "x" * 255
    assert (await put_user(api, longest))["external_id"] == longest
    for bad in ("x" * 256, "a\nb", "tab\there", "\u202ereversed"):
        for method, suffix in (("PUT", ""), ("DELETE", ""), ("POST", "/revoke"), ("GET", "/chats")):
            status, out = await svc(api, method, f"/api/service/users/{path_of(bad)}{suffix}",
                                    {} if method in ("PUT", "POST") else None)
            assert status == 400 and out["error"]["code"] == "invalid_external_id", (method, bad, out)
    status, out = await api.call("PUT", "/api/service/users/x", raw=b"{nope", token=SERVICE_TOKEN)
    assert status == 400 and out["error"]["code"] == "bad_json"


@pytest.mark.gen_test(timeout=60)
async def test_disabling_a_user_ends_their_streams_and_refuses_them(api, services, ws_connect, http_port):
    eid = ext("dis")
    user = await put_user(api, eid, display_name="Dee")
    token = await session_of(services, user["id"])
    ws = await ws_connect("/ws/chat", token)
    await ws.request({"type": "ping"}, "pong")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", token)
    await sse.next_type("unread")
    status, body = await svc(api, "PUT", f"/api/service/users/{path_of(eid)}", {"disabled": True})
    assert status == 200 and body["user"]["disabled"] is True
    assert (await closed(ws))[0] == 4001
    assert (await sse.next_type("auth_expired"))["reason"] == "account_disabled"
    status, out = await api.call("GET", "/api/chats", token=token)
    assert status == 401 and out["error"]["code"] == "account_disabled"
    # enabled again: a new session works
    status, body = await svc(api, "PUT", f"/api/service/users/{path_of(eid)}", {"disabled": False})
    assert status == 200 and body["user"]["disabled"] is False
    status, _ = await api.call("GET", "/api/chats", token=await session_of(services, user["id"]))
    assert status == 200
    sse.close()


@pytest.mark.gen_test(timeout=60)
async def test_delete_erases_the_account_and_the_id_becomes_a_new_user(api, services, ws_connect, http_port):
    ann, bob = ext("ann"), ext("bob")
    a = await put_user(api, ann, display_name="Ann", avatar_url="https://cdn.example/ann.png")
    b = await put_user(api, bob, display_name="Bob")
    chat = await group(api, ext("k"), [ann, bob])
    status, out = await svc(api, "POST", f"/api/service/chats/{chat['id']}/messages",
                            {"sender": ann, "content": "hi from Ann", "client_id": "c1"})
    assert status == 201
    sent = out["message"]
    status, _ = await svc(api, "POST", "/api/notifications", {"external_ids": [ann], "message": "for Ann"})
    assert status == 202
    await services.preferences.update(a["id"], {"muted_types": ["promo"]})
    a_token, b_token = await session_of(services, a["id"]), await session_of(services, b["id"])
    a_ws = await ws_connect("/ws/chat", a_token)
    await a_ws.request({"type": "ping"}, "pong")
    a_sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", a_token)
    await a_sse.next_type("unread")
    b_ws = await ws_connect("/ws/chat", b_token)
    await b_ws.request({"type": "ping"}, "pong")

    status, out = await svc(api, "DELETE", f"/api/service/users/{path_of(ann)}")
    assert status == 200 and out == {"deleted": True, "id": a["id"]}
    assert (await closed(a_ws))[0] == 4001
    assert (await a_sse.next_type("auth_expired"))["reason"] == "account_deleted"
    event = await b_ws.recv_type("chat_members")
    assert event["chat_id"] == chat["id"] and event["removed"] == [a["id"]]
    # the old token is refused; the row stays, erased
    status, out = await api.call("GET", "/api/chats", token=a_token)
    assert status == 401 and out["error"]["code"] == "account_deleted"
    row = await services.dbx.read(User.get_by_id, a["id"])
    assert (row.kind, row.display_name, row.external_id, row.avatar_url) == ("deleted", "Deleted user",
                                                                             tombstone(ann), None)
    counts = await services.dbx.read(lambda: [model.select().where(field == a["id"]).count() for model, field in (
        (ChatMember, ChatMember.user), (Notification, Notification.recipient),
        (UserPreference, UserPreference.user), (RefreshToken, RefreshToken.user))])
    assert counts == [0, 0, 0, 0]
    # the message stays, as "Deleted user"; the chat lists Bob alone
    history = await services.chat.history(b["id"], chat["id"])
    assert [(m["id"], m["content"], m["sender_name"]) for m in history] == [(sent["id"], "hi from Ann", "Deleted user")]
    status, view = await svc(api, "GET", f"/api/service/users/{path_of(bob)}/chats")
    assert [m["external_id"] for m in view["chats"][0]["members"]] == [bob]
    assert view["chats"][0]["last_message"]["sender_name"] == "Deleted user"
    # gone: a second delete, revoke and listing answer 404
    for method, suffix in (("DELETE", ""), ("POST", "/revoke"), ("GET", "/chats")):
        status, out = await svc(api, method, f"/api/service/users/{path_of(ann)}{suffix}",
                                {} if method in ("PUT", "POST") else None)
        assert status == 404 and out["error"]["code"] == "user_not_found"
    # the same external id is a new user, with nothing of the old one
    status, out = await svc(api, "PUT", f"/api/service/users/{path_of(ann)}", {})
    assert status == 201 and out["user"]["id"] != a["id"] and out["user"]["display_name"] == ann
    status, view = await svc(api, "GET", f"/api/service/users/{path_of(ann)}/chats")
    assert status == 200 and view["chats"] == [] and view["unread_total"] == 0
    a_sse.close()


@pytest.mark.gen_test(timeout=60)
async def test_revoke_closes_streams_and_refuses_older_tokens(api, services, ws_connect, http_port):
    eid = ext("rev")
    user = await put_user(api, eid)
    token = await session_of(services, user["id"])
    ws = await ws_connect("/ws/notifications", token)
    await ws.recv_type("unread")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", token)
    assert sse.status == 200
    status, out = await svc(api, "POST", f"/api/service/users/{path_of(eid)}/revoke", {})
    assert status == 200 and out["revoked"] is True and out["id"] == user["id"]
    assert await closed(ws) == (4001, "logged_out")
    assert (await sse.next_type("auth_expired"))["reason"] == "logged_out"
    status, out = await api.call("GET", "/api/chats", token=token)
    assert status == 401
    # a token issued afterwards works; revoking again is fine (and ends it too)
    await asyncio.sleep(1.1)  # revocation is to the second: a token of the same second is "before now"
    fresh = await session_of(services, user["id"])
    status, _ = await api.call("GET", "/api/chats", token=fresh)
    assert status == 200
    status, out = await svc(api, "POST", f"/api/service/users/{path_of(eid)}/revoke", {})
    assert status == 200
    status, _ = await api.call("GET", "/api/chats", token=fresh)
    assert status == 401
    sse.close()


# Chats ------------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_create_chat_is_idempotent_by_key_and_provisions_members(api):
    ann, bob, cid = ext("ann"), ext("bob"), ext("cid")
    await put_user(api, ann, display_name="Ann")
    key = ext("support")
    body = {"kind": "group", "key": key, "members": [ann, bob, cid], "title": " Support "}
    status, first = await svc(api, "POST", "/api/service/chats", body)
    assert status == 201, first
    chat = first["chat"]
    assert chat["kind"] == "group" and chat["title"] == "Support" and chat["key"] == key
    assert sorted(m["external_id"] for m in chat["members"]) == sorted([ann, bob, cid])
    names = {m["external_id"]: m["display_name"] for m in chat["members"]}
    assert names[ann] == "Ann" and names[bob] == bob  # bob was provisioned just in time
    # same key, same members (any order, repeats) -> the same chat, 200
    status, again = await svc(api, "POST", "/api/service/chats", {**body, "members": [cid, bob, ann, bob]})
    assert status == 200 and again["chat"] == chat
    # same key, other members -> 409
    status, out = await svc(api, "POST", "/api/service/chats", {**body, "members": [ann, bob]})
    assert status == 409 and out["error"]["code"] == "chat_key_conflict"
    status, out = await svc(api, "POST", "/api/service/chats", {**body, "kind": "private", "members": [ann, bob]})
    assert status == 409 and out["error"]["code"] == "chat_key_conflict"
    # private chats: one per pair, with or without a key
    status, p1 = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [ann, bob]})
    assert status == 201 and p1["chat"]["kind"] == "private" and p1["chat"]["key"] is None
    status, p2 = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [bob, ann]})
    assert status == 200 and p2["chat"]["id"] == p1["chat"]["id"]
    status, p3 = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [bob, ann],
                                                                 "key": "pair-key-" + key})
    assert status == 200 and p3["chat"]["id"] == p1["chat"]["id"] and p3["chat"]["key"] == "pair-key-" + key
    status, out = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [bob, ann],
                                                                 "key": "another-" + key})
    assert status == 409 and out["error"]["code"] == "chat_key_conflict"


@pytest.mark.parametrize("body, code", [
    ({"kind": "room", "members": ["a", "b"], "key": "k"}, "invalid_kind"),
    ({"members": ["a", "b"], "key": "k"}, "invalid_kind"),
    ({"kind": "group", "members": "a", "key": "k", "title": "T"}, "invalid_members"),
    ({"kind": "group", "members": [], "key": "k", "title": "T"}, "invalid_members"),
    ({"kind": "private", "members": ["a"]}, "invalid_members"),
    ({"kind": "private", "members": ["a", "a"]}, "invalid_members"),
    ({"kind": "private", "members": ["a", "b", "c"]}, "invalid_members"),
    ({"kind": "group", "members": ["a", 5], "key": "k", "title": "T"}, "invalid_external_id"),
    ({"kind": "group", "members": ["a", "x" * 256], "key": "k", "title": "T"}, "invalid_external_id"),
    ({"kind": "group", "members": ["a", "b"], "title": "T"}, "invalid_key"),
    ({"kind": "group", "members": ["a", "b"], "key": "", "title": "T"}, "invalid_key"),
    ({"kind": "group", "members": ["a", "b"], "key": "k" * 256, "title": "T"}, "invalid_key"),
    ({"kind": "group", "members": ["a", "b"], "key": "a\nb", "title": "T"}, "invalid_key"),
    ({"kind": "private", "members": ["a", "b"], "key": 7}, "invalid_key"),
    ({"kind": "group", "members": ["a", "b"], "key": "k"}, "invalid_title"),
    ({"kind": "group", "members": ["a", "b"], "key": "k", "title": "  "}, "invalid_title"),
    ({"kind": "group", "members": ["a", "b"], "key": "k", "title": "t" * 129}, "invalid_title"),
    ({"kind": "group", "members": [f"m{i}" for i in range(257)], "key": "k", "title": "T"}, "too_many_members"),
])
@pytest.mark.gen_test(timeout=30)
async def test_create_chat_bad_fields(api, body, code):
    status, out = await svc(api, "POST", "/api/service/chats", body)
    assert status == 400 and out["error"]["code"] == code, out


@pytest.mark.gen_test(timeout=60)
async def test_group_of_max_members(api, config):
    members = [ext(f"m{i}") for i in range(config.max_group_members)]
    chat = await group(api, ext("big"), members)
    assert len(chat["members"]) == config.max_group_members
    status, out = await svc(api, "POST", f"/api/service/chats/{chat['id']}/members", {"external_ids": [ext("one")]})
    assert status == 400 and out["error"]["code"] == "too_many_members"


@pytest.mark.gen_test(timeout=60)
async def test_members_add_and_remove(api, services, ws_connect):
    ann, bob, cid = ext("ann"), ext("bob"), ext("cid")
    chat = await group(api, ext("k"), [ann, bob])
    ids = {m["external_id"]: m["id"] for m in chat["members"]}
    ann_ws = await ws_connect("/ws/chat", await session_of(services, ids[ann]))
    await ann_ws.request({"type": "ping"}, "pong")
    url = f"/api/service/chats/{chat['id']}/members"
    status, out = await svc(api, "POST", url, {"external_ids": [cid, bob]})
    assert status == 200 and out["added"] == [cid]
    assert sorted(m["external_id"] for m in out["chat"]["members"]) == sorted([ann, bob, cid])
    cid_id = next(m["id"] for m in out["chat"]["members"] if m["external_id"] == cid)
    event = await ann_ws.recv_type("chat_members")
    assert event["chat_id"] == chat["id"] and [u["id"] for u in event["added"]] == [cid_id] and event["removed"] == []
    status, again = await svc(api, "POST", url, {"external_ids": [cid]})
    assert status == 200 and again["added"] == [] and again["chat"] == out["chat"]
    cid_ws = await ws_connect("/ws/chat", await session_of(services, cid_id))
    await cid_ws.request({"type": "join_chat", "chat_id": chat["id"]}, "joined")

    status, out = await svc(api, "DELETE", f"{url}/{path_of(cid)}")
    assert status == 200 and out["removed"] is True
    assert sorted(m["external_id"] for m in out["chat"]["members"]) == sorted([ann, bob])
    assert (await cid_ws.recv_type("chat_members"))["removed"] == [cid_id]
    assert (await ann_ws.recv_type("chat_members"))["removed"] == [cid_id]
    status, out = await svc(api, "DELETE", f"{url}/{path_of(cid)}")
    assert status == 200 and out["removed"] is False
    # the removed member gets nothing more of the chat and may no longer use it
    status, _ = await svc(api, "POST", f"/api/service/chats/{chat['id']}/messages", {"content": "after"})
    assert status == 201
    assert (await ann_ws.recv_type("message"))["message"]["content"] == "after"
    # an event computed from the older member list (a send under way on another process) is gated too
    await services.hub.publish(CHAT, [ids[ann], cid_id], dumps({"type": "typing", "chat_id": chat["id"],
                                                                "user_id": ids[ann], "user_name": "Ann"}),
                               chat_id=chat["id"])
    assert (await ann_ws.recv_type("typing"))["chat_id"] == chat["id"]
    await cid_ws.send({"type": "send_message", "chat_id": chat["id"], "content": "x"})
    err = await cid_ws.recv()  # its next frame: neither "after" nor the typing came first
    assert err["type"] == "error" and err["code"] == "not_a_member"
    assert not services.registry.is_active(cid_id, chat["id"])
    # their list still has the group, as a former member's: no members, nothing after the removal
    status, listed = await svc(api, "GET", f"/api/service/users/{cid}/chats")
    assert status == 200, listed
    former = {c["id"]: c for c in listed["chats"]}[chat["id"]]
    assert former["member"] is False and former["members"] == [] and former["unread_count"] == 0
    # removed before any message: none to show ("after" came later), no removal message either
    assert former["last_message"] is None and former["removed_at_message_id"] is None


@pytest.mark.gen_test(timeout=60)
async def test_members_routes_bad_input_and_private_chats(api):
    ann, bob = ext("ann"), ext("bob")
    chat = await group(api, ext("k"), [ann, bob])
    url = f"/api/service/chats/{chat['id']}/members"
    for body, code in (({}, "invalid_external_ids"), ({"external_ids": []}, "invalid_external_ids"),
                       ({"external_ids": "a"}, "invalid_external_ids"),
                       ({"external_ids": [7]}, "invalid_external_id"),
                       ({"external_ids": ["x" * 256]}, "invalid_external_id"),
                       ({"external_ids": [f"m{i}" for i in range(257)]}, "too_many_external_ids")):
        status, out = await svc(api, "POST", url, body)
        assert status == 400 and out["error"]["code"] == code, (body, out)
    status, out = await svc(api, "DELETE", f"{url}/{path_of('x' * 256)}")
    assert status == 400 and out["error"]["code"] == "invalid_external_id"
    status, out = await svc(api, "DELETE", f"{url}/{path_of(ext('nobody'))}")
    assert status == 404 and out["error"]["code"] == "user_not_found"
    for method, path, body in (("POST", "/api/service/chats/999999/members", {"external_ids": [ann]}),
                               ("DELETE", f"/api/service/chats/999999/members/{path_of(ann)}", None),
                               ("POST", "/api/service/chats/999999/messages", {"content": "x"})):
        status, out = await svc(api, method, path, body)
        assert status == 404 and out["error"]["code"] == "chat_not_found", (path, out)
    status, p = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [ann, bob]})
    private = p["chat"]["id"]
    status, out = await svc(api, "POST", f"/api/service/chats/{private}/members", {"external_ids": [ext("c")]})
    assert status == 409 and out["error"]["code"] == "not_a_group"
    status, out = await svc(api, "DELETE", f"/api/service/chats/{private}/members/{path_of(ann)}")
    assert status == 409 and out["error"]["code"] == "not_a_group"


@pytest.mark.gen_test(timeout=60)
async def test_user_chats_with_unread_counts(api, services):
    ann, bob = ext("ann"), ext("bob")
    chat = await group(api, ext("k"), [ann, bob])
    for i in range(3):
        status, _ = await svc(api, "POST", f"/api/service/chats/{chat['id']}/messages",
                              {"sender": ann, "content": f"m{i}"})
        assert status == 201
    status, _ = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [ann, bob]})
    status, out = await svc(api, "GET", f"/api/service/users/{path_of(bob)}/chats")
    assert status == 200 and out["unread_total"] == 3 and out["next_before"] is None
    by_id = {c["id"]: c for c in out["chats"]}
    assert by_id[chat["id"]]["unread_count"] == 3 and by_id[chat["id"]]["key"] == chat["key"]
    assert {m["external_id"] for m in by_id[chat["id"]]["members"]} == {ann, bob}
    # the user API's shapes are untouched by the service's additions
    bob_token = await session_of(services, next(m["id"] for m in chat["members"] if m["external_id"] == bob))
    status, mine = await api.call("GET", "/api/chats", token=bob_token)
    assert status == 200 and all("external_id" not in m and "key" not in c for c in mine["chats"] for m in c["members"])
    assert len(by_id) == 2
    status, out = await svc(api, "GET", f"/api/service/users/{path_of(ann)}/chats")
    assert out["unread_total"] == 0
    status, page = await svc(api, "GET", f"/api/service/users/{path_of(bob)}/chats?limit=1")
    assert status == 200 and len(page["chats"]) == 1 and page["next_before"] == page["chats"][0]["id"]
    status, out = await svc(api, "GET", f"/api/service/users/{path_of(bob)}/chats?limit=0")
    assert status == 400


# Messages ---------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_system_and_user_messages_reach_members_over_a_websocket(api, services, ws_connect):
    ann, bob = ext("ann"), ext("bob")
    chat = await group(api, ext("k"), [ann, bob], title="Orders")
    ids = {m["external_id"]: m["id"] for m in chat["members"]}
    bob_ws = await ws_connect("/ws/chat", await session_of(services, ids[bob]))
    await bob_ws.request({"type": "ping"}, "pong")
    url = f"/api/service/chats/{chat['id']}/messages"
    status, out = await svc(api, "POST", url, {"content": "Your order has shipped", "client_id": "ship-1"})
    assert status == 201, out
    system = out["message"]
    assert system["sender_name"] == "System" and system["message_type"] == "system_message"
    got = (await bob_ws.recv_type("message"))["message"]
    assert got == system
    # the same client_id again: the same message, 200, delivered once
    status, again = await svc(api, "POST", url, {"content": "Your order has shipped", "client_id": "ship-1"})
    assert status == 200 and again["message"] == system
    # one system user, created once
    status, out = await svc(api, "POST", url, {"content": "second", "client_id": "ship-2",
                                               "message_type": "order_update"})
    assert status == 201 and out["message"]["sender_id"] == system["sender_id"]
    assert out["message"]["message_type"] == "order_update"
    assert (await bob_ws.recv_type("message"))["message"]["content"] == "second"  # not the repeat first
    # as a member
    status, out = await svc(api, "POST", url, {"sender": ann, "content": "hello Bob", "client_id": "a-1"})
    assert status == 201 and out["message"]["sender_id"] == ids[ann]
    assert (await bob_ws.recv_type("message"))["message"] == out["message"]
    status, again = await svc(api, "POST", url, {"sender": ann, "content": "hello Bob", "client_id": "a-1"})
    assert status == 200 and again["message"] == out["message"]
    rows = await services.dbx.read(lambda: User.select().where(User.kind == "system").count())
    assert rows == 1
    # a system user is nobody's login
    assert await services.dbx.read(lambda: User.get(User.username_key == username_key("~system")).password_hash) == ""


@pytest.mark.parametrize("body, status_code, code", [
    ({"content": 5}, 400, "invalid_content"),
    ({"content": "  "}, 400, "empty_content"),
    ({"content": "x" * 4001}, 400, "content_too_long"),
    ({"content": "x", "message_type": "Bad Type"}, 400, "invalid_message_type"),
    ({"content": "x", "client_id": ""}, 400, "invalid_client_id"),
    ({"content": "x", "client_id": "c" * 65}, 400, "invalid_client_id"),
    ({"content": "x", "sender": 5}, 400, "invalid_sender"),
    ({"content": "x", "sender": "x" * 256}, 400, "invalid_external_id"),
    ({"content": "x", "sender": "nobody-at-all"}, 404, "user_not_found"),
    ({"content": "x", "sender": "OUTSIDER"}, 403, "not_a_member"),
])
@pytest.mark.gen_test(timeout=30)
async def test_post_message_bad_fields(api, body, status_code, code):
    chat = await group(api, ext("k"), [ext("ann"), ext("bob")])
    if body.get("sender") == "OUTSIDER":
        body = {**body, "sender": (await put_user(api, ext("out")))["external_id"]}
    status, out = await svc(api, "POST", f"/api/service/chats/{chat['id']}/messages", body)
    assert status == status_code and out["error"]["code"] == code, out


@pytest.mark.gen_test(timeout=30)
async def test_message_content_at_its_limit(api, config):
    chat = await group(api, ext("k"), [ext("ann")])
    status, out = await svc(api, "POST", f"/api/service/chats/{chat['id']}/messages",
                            {"content": "x" * config.max_message_length})
    assert status == 201


# Publish to external ids ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_publish_to_external_ids(api, services, ws_connect, users):
    ann, bob = ext("ann"), ext("bob")
    a, b = await put_user(api, ann), await put_user(api, bob)
    (carol,) = await users("carol")
    a_ws = await ws_connect("/ws/notifications", await session_of(services, a["id"]))
    await a_ws.recv_type("unread")
    await services.preferences.update(b["id"], {"muted_types": ["promo"]})
    status, out = await svc(api, "POST", "/api/notifications",
                            {"user_ids": [carol["id"]], "external_ids": [ann, bob, ann], "type": "promo",
                             "message": "Sale"})
    assert status == 202, out
    assert len(out["ids"]) == 2 and out["skipped"] == [b["id"]] and out["skipped_external_ids"] == [bob]
    got = await a_ws.recv_type("promo")
    assert got["id"] == out["ids"][1] and got["message"] == "Sale"
    # unknown external ids: 404 and nothing stored
    before = await services.notifications.latest_id(a["id"])
    status, out = await svc(api, "POST", "/api/notifications",
                            {"external_ids": [ann, "nobody-" + ann], "message": "x"})
    assert status == 404 and out["error"]["code"] == "user_not_found" and "nobody-" + ann in out["error"]["message"]
    assert await services.notifications.latest_id(a["id"]) == before
    for body, code in (({"external_ids": [], "message": "x"}, "invalid_external_ids"),
                       ({"external_ids": ann, "message": "x"}, "invalid_external_ids"),
                       ({"external_ids": [5], "message": "x"}, "invalid_external_id"),
                       ({"external_ids": ["x" * 256], "message": "x"}, "invalid_external_id"),
                       ({"external_ids": [ann], "broadcast": True, "message": "x"}, "validation_error"),
                       ({"external_ids": [ann], "user_ids": "x", "message": "x"}, "validation_error"),
                       ({"external_ids": [ann], "user_ids": [{"a": 1}], "message": "x"}, "validation_error"),
                       ({"external_ids": [ann], "user_ids": [True], "message": "x"}, "validation_error"),
                       ({"external_ids": [ann]}, "validation_error")):
        status, out = await svc(api, "POST", "/api/notifications", body)
        assert status == 400 and out["error"]["code"] == code, (body, out)


@pytest.mark.gen_test(timeout=60)
async def test_publish_external_ids_at_and_past_the_limit(api, services, config):
    most = config.max_publish_external_ids
    assert most == 1000  # the documented default
    prefix = ext("many")

    def make():
        User.insert_many([{"username": f"~{prefix}{i}"[:32], "username_key": f"~{prefix}{i}"[:32],
                           "display_name": "x", "password_hash": "", "external_id": f"{prefix}-{i}",
                           "kind": "external"} for i in range(most + 1)]).execute()
    await services.dbx.write(make)
    ids = [f"{prefix}-{i}" for i in range(most + 1)]
    status, out = await svc(api, "POST", "/api/notifications", {"external_ids": ids[:most], "message": "all"})
    assert status == 202 and len(out["ids"]) == most
    status, out = await svc(api, "POST", "/api/notifications", {"external_ids": ids, "message": "all"})
    assert status == 400 and out["error"]["code"] == "too_many_external_ids"


# Authentication ---------------------------------------------------------------------------------

ROUTES = [
    ("PUT", "/api/service/users/u1", {}),
    ("DELETE", "/api/service/users/u1", None),
    ("POST", "/api/service/users/u1/revoke", {}),
    ("GET", "/api/service/users/u1/chats", None),
    ("POST", "/api/service/chats", {"kind": "private", "members": ["u1", "u2"]}),
    ("POST", "/api/service/chats/1/members", {"external_ids": ["u3"]}),
    ("DELETE", "/api/service/chats/1/members/u1", None),
    ("POST", "/api/service/chats/1/messages", {"content": "x"}),
    ("POST", "/api/notifications", {"external_ids": ["u1"], "message": "x"}),
]


@pytest.mark.parametrize("method, path, body", ROUTES)
@pytest.mark.gen_test(timeout=30)
async def test_user_token_or_no_token_is_refused(api, users, services, method, path, body):
    (alice,) = await users("alice")
    for token in (alice["token"], None, "not-the-service-token"):
        status, out = await api.call(method, path, body, token=token)
        assert status == 403 and out["error"]["code"] == "invalid_service_token", (token, out)
    # and nothing happened
    assert await services.dbx.read(lambda: User.select().where(User.external_id.is_null(False)).count()) == 0


@pytest.mark.gen_test(timeout=30)
async def test_removal_gate_forgets_after_its_memory_and_after_a_broker_gap(services):
    chat = services.chat
    chat.on_members_changed(MembersChanged(7, (), (5,)))
    assert chat.admitted(7, [5, 6]) == [6] and chat.admitted(8, [5, 6]) == [5, 6]
    chat.on_members_changed(MembersChanged(7, (5,), ()))  # added back
    assert chat.admitted(7, [5, 6]) == [5, 6]
    chat.on_members_changed(MembersChanged(7, (), (5,)))
    chat._left[(7, 5)] -= LEFT_MEMORY  # as if removed LEFT_MEMORY seconds ago
    assert chat.admitted(7, [5, 6]) == [5, 6]
    chat.on_members_changed(MembersChanged(7, (), (5,)))
    services.hub._gap()  # the broker reconnected: control messages may have been lost
    assert chat.admitted(7, [5, 6]) == [5, 6]


@pytest.mark.gen_test(timeout=30)
async def test_bodies_are_bounded(api, config):
    chat = await group(api, ext("k"), [ext("ann")])
    for method, path in (("PUT", f"/api/service/users/{ext('big')}"), ("POST", "/api/service/chats"),
                         ("POST", f"/api/service/chats/{chat['id']}/messages")):
        status, out = await api.call(method, path, raw=b'{"x":"' + b"a" * config.max_body_bytes + b'"}',
                                     token=SERVICE_TOKEN)
        assert status == 413 and out["error"]["code"] == "payload_too_large", (path, out)


PRODUCT = {"auth_mode": "both", "external_jwt_secret": "product-secret-" + "p" * 32,
           "external_jwt_issuer": "https://product.example", "external_jwt_audience": "squall"}


def product_token(sub: str, iat: int) -> str:
    """A token minted by the product's backend (HS256)."""
    return jwt.encode({"sub": sub, "iss": PRODUCT["external_jwt_issuer"], "aud": PRODUCT["external_jwt_audience"],
                       "iat": iat, "exp": iat + 600, "name": "Pat"}, PRODUCT["external_jwt_secret"], algorithm="HS256")


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_the_products_tokens_revoked_disabled_and_deleted(api, ws_connect):
    eid = ext("pat")
    old = product_token(eid, int(time.time()) - 5)
    status, _ = await api.call("GET", "/api/chats", token=old)  # provisioned just in time
    assert status == 200
    ws = await ws_connect("/ws/chat", old)
    await ws.request({"type": "ping"}, "pong")
    status, out = await svc(api, "POST", f"/api/service/users/{path_of(eid)}/revoke", {})
    assert status == 200
    assert await closed(ws) == (4001, "logged_out")
    status, out = await api.call("GET", "/api/chats", token=old)
    assert status == 401 and out["error"]["code"] == "token_revoked"
    fresh = product_token(eid, int(time.time()) + 1)  # issued after the revocation (to the second)
    status, _ = await api.call("GET", "/api/chats", token=fresh)
    assert status == 200
    ws = await ws_connect("/ws/chat", fresh)
    await ws.request({"type": "ping"}, "pong")
    status, out = await svc(api, "PUT", f"/api/service/users/{path_of(eid)}", {"disabled": True})
    assert status == 200
    assert await closed(ws) == (4001, "account_disabled")
    status, out = await api.call("GET", "/api/chats", token=fresh)
    assert status == 401 and out["error"]["code"] == "account_disabled"
    status, out = await svc(api, "PUT", f"/api/service/users/{path_of(eid)}", {"disabled": False})
    ws = await ws_connect("/ws/chat", fresh)
    await ws.request({"type": "ping"}, "pong")
    status, out = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200
    assert await closed(ws) == (4001, "account_deleted")


# The security review of the service API (issue 22): each defect it found, shown fixed -----------


async def user_count(services) -> int:
    return await services.dbx.read(lambda: User.select().count())


# 1. Deleted users stay deleted for their old tokens ---------------------------------------------


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_a_deleted_users_token_is_refused_and_a_later_one_is_a_new_user(api, services, ws_connect):
    eid = ext("pat")
    old = product_token(eid, int(time.time()) - 5)
    status, me = await api.call("GET", "/api/me", token=old)  # provisioned just in time
    assert status == 200
    first_id = me["id"]
    ws = await ws_connect("/ws/chat", old)
    await ws.request({"type": "ping"}, "pong")
    status, out = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200 and out["id"] == first_id
    assert await closed(ws) == (4001, "account_deleted")
    deleted_at = int(time.time())
    # the page reconnects with the same token: refused, and no user is created
    before = await user_count(services)
    for _ in range(2):
        status, out = await api.call("GET", "/api/me", token=old)
        assert status == 401 and out["error"]["code"] == "account_deleted", out
        status, out = await api.call("GET", "/api/chats", token=old)
        assert status == 401 and out["error"]["code"] == "account_deleted", out
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:  # the WebSocket upgrade too
        await ws_connect("/ws/chat", old)
    assert refused.value.code == 401
    assert await user_count(services) == before
    row = await services.dbx.read(User.get_by_id, first_id)
    assert row.external_id == tombstone(eid) and row.external_id.startswith("\x01")
    assert row.revoked_at is not None and row.revoked_at <= deleted_at
    # a token minted at the second of the deletion is still refused (at or before)
    status, out = await api.call("GET", "/api/me", token=product_token(eid, row.revoked_at))
    assert status == 401 and out["error"]["code"] == "account_deleted"
    # a token minted after the deletion: a new, empty user
    fresh = product_token(eid, row.revoked_at + 1)
    status, me2 = await api.call("GET", "/api/me", token=fresh)
    assert status == 200 and me2["id"] != first_id and me2["display_name"] == "Pat"
    status, view = await svc(api, "GET", f"/api/service/users/{path_of(eid)}/chats")
    assert status == 200 and view["chats"] == [] and view["unread_total"] == 0
    # the old token never reaches the new account (refused as revoked by the deletion)
    status, out = await api.call("GET", "/api/me", token=old)
    assert status == 401 and out["error"]["code"] in ("account_deleted", "token_revoked"), out


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_a_token_without_iat_of_a_deleted_user_is_refused(api, services):
    eid = ext("noiat")
    claims = {"sub": eid, "iss": PRODUCT["external_jwt_issuer"], "aud": PRODUCT["external_jwt_audience"],
              "exp": int(time.time()) + 600}
    token = jwt.encode(claims, PRODUCT["external_jwt_secret"], algorithm="HS256")
    status, _ = await api.call("GET", "/api/me", token=token)
    assert status == 200
    status, _ = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200
    status, out = await api.call("GET", "/api/me", token=token)
    assert status == 401 and out["error"]["code"] == "account_deleted"


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_put_after_delete_creates_a_new_user_and_a_second_delete_keeps_one_tombstone(api, services):
    eid = ext("ann")
    first = await put_user(api, eid, display_name="Ann")
    status, _ = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200
    status, out = await svc(api, "PUT", f"/api/service/users/{path_of(eid)}", {})
    assert status == 201 and out["user"]["id"] != first["id"] and out["user"]["external_id"] == eid
    second = out["user"]
    status, _ = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200
    rows = await services.dbx.read(lambda: {u.id: u.external_id for u in User.select().where(
        User.id.in_([first["id"], second["id"]]))})
    assert rows == {first["id"]: None, second["id"]: tombstone(eid)}
    # the old token of the re-created user (minted before its deletion) is refused too
    status, out = await api.call("GET", "/api/me", token=product_token(eid, int(time.time()) - 5))
    assert status == 401 and out["error"]["code"] == "account_deleted"


# 2. client_id in another chat ---------------------------------------------------------------------


@pytest.mark.parametrize("sender", [None, "member"])
@pytest.mark.gen_test(timeout=60)
async def test_a_client_id_used_in_another_chat_is_a_conflict(api, services, sender):
    a, b = ext("a"), ext("b")
    c1, c2 = await group(api, ext("k"), [a, b]), await group(api, ext("k"), [a, b])
    extra = {} if sender is None else {"sender": a}
    status, m1 = await svc(api, "POST", f"/api/service/chats/{c1['id']}/messages",
                           {"content": "secret A", "client_id": "welcome", **extra})
    assert status == 201
    status, again = await svc(api, "POST", f"/api/service/chats/{c1['id']}/messages",
                              {"content": "secret A", "client_id": "welcome", **extra})
    assert status == 200 and again["message"]["id"] == m1["message"]["id"]  # idempotent in its own chat
    status, out = await svc(api, "POST", f"/api/service/chats/{c2['id']}/messages",
                            {"content": "hello B", "client_id": "welcome", **extra})
    assert status == 409 and out == {"error": {"code": "client_id_conflict", "message": out["error"]["message"]}}
    assert "secret" not in out["error"]["message"]
    count = await services.dbx.read(lambda: Message.select().where(Message.chat == c2["id"]).count())
    assert count == 0


# 3. Checks before provisioning --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_create_chat_counts_repeated_members_once(api, config):
    members = [ext(f"m{i}") for i in range(config.max_group_members)]
    status, out = await svc(api, "POST", "/api/service/chats",
                            {"kind": "group", "key": ext("k"), "title": "T", "members": members + members[:5]})
    assert status == 201 and len(out["chat"]["members"]) == config.max_group_members


@pytest.mark.gen_test(timeout=60)
async def test_refused_chat_changes_create_no_users(api, services, config):
    a, b = ext("a"), ext("b")
    key = ext("k")
    await group(api, key, [a, b])
    before = await user_count(services)
    status, out = await svc(api, "POST", "/api/service/chats",
                            {"kind": "group", "key": key, "title": "T", "members": [a, ext("new")]})
    assert status == 409 and out["error"]["code"] == "chat_key_conflict"
    status, private = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [a, b]})
    assert status in (200, 201)
    assert await user_count(services) == before
    status, out = await svc(api, "POST", f"/api/service/chats/{private['chat']['id']}/members",
                            {"external_ids": [ext("new")]})
    assert status == 409 and out["error"]["code"] == "not_a_group"
    big = await group(api, ext("k"), [ext(f"m{i}") for i in range(config.max_group_members)])
    before = await user_count(services)
    status, out = await svc(api, "POST", f"/api/service/chats/{big['id']}/members",
                            {"external_ids": [ext("new"), ext("new")]})
    assert status == 400 and out["error"]["code"] == "too_many_members"
    assert await user_count(services) == before
    # a member already in counts nothing: the full group accepts them again
    status, out = await svc(api, "POST", f"/api/service/chats/{big['id']}/members",
                            {"external_ids": [big["members"][0]["external_id"]]})
    assert status == 200 and out["added"] == []


# 4. Guessing the service token --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_wrong_service_tokens_are_limited_per_address(api, config):
    limit = config.service_token_failures_per_address_per_minute
    assert limit == Config().service_token_failures_per_address_per_minute == 10  # the documented default
    for i in range(limit):
        status, out = await svc(api, "GET", f"/api/service/users/{ext('u')}/chats", token=f"guess-{i}")
        assert status == 403 and out["error"]["code"] == "invalid_service_token", (i, out)
    status, out = await svc(api, "GET", f"/api/service/users/{ext('u')}/chats", token="guess-again")
    assert status == 429 and out["error"]["code"] == "rate_limited"
    assert set(out) == {"error"} and set(out["error"]) >= {"code", "message"}
    assert 1 <= int(api.last_headers["Retry-After"]) <= 60
    # while limited, even the right token waits (a guess that hits is not told apart)
    status, out = await svc(api, "POST", "/api/notifications", {"broadcast": True, "message": "x"})
    assert status == 429


@pytest.mark.gen_test(timeout=60)
async def test_the_right_service_token_costs_nothing(api):
    for _ in range(15):
        status, _ = await svc(api, "PUT", f"/api/service/users/{ext('u')}", {}, token=SERVICE_TOKEN)
        assert status == 201


def test_a_short_service_token_is_warned_about_not_refused():
    assert "32" in service_token_warning(Config(service_token="s" * 31))
    assert service_token_warning(Config(service_token="s" * 32)) is None
    assert service_token_warning(Config(service_token="")) is None
