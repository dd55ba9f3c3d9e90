"""Presence (issue 25, item 8): online and last seen, for people who share a chat only; the
``share_presence`` preference hides it both ways; ``--presence-grace`` debounces offline.

"Never got it" is shown with a marker: an announcement published after the event in question
travels the same stream, so every frame before it is checked.
"""
from __future__ import annotations

import asyncio
import datetime
import re

import pytest

from models import User
from tests.conftest import SERVICE_TOKEN
from tests.support.clients import SSEClient

MINUTE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00\.000Z$")


async def call(api, user, method, path, body=None):
    return await api.call(method, path, body, token=user["token"])


async def group(api, owner, others) -> int:
    status, data = await call(api, owner, "POST", "/api/chats", {"member_ids": [u["id"] for u in others],
                                                                  "title": "Team"})
    assert status == 201, data
    return data["chat"]["id"]


async def marker(api, user) -> int:
    status, out = await api.call("POST", "/api/notifications", {"user_ids": [user["id"]], "message": "marker"},
                                 token=SERVICE_TOKEN)
    assert status == 202, out
    return out["ids"][0]


async def presences_until_marker(ws, marker_id: int) -> list:
    """Every ``presence`` frame before the announcement ``marker_id``."""
    seen = []
    while True:
        frame = await ws.recv_type("presence", "announcement")
        if frame["type"] == "presence":
            seen.append(frame)
        elif frame["id"] == marker_id:
            return seen


async def presences_until_marker_sse(stream, marker_id: int) -> list:
    """``presences_until_marker`` on an SSE stream."""
    seen = []
    while True:
        frame = await stream.next_type("presence", "announcement")
        if frame["type"] == "presence":
            seen.append(frame)
        elif frame["id"] == marker_id:
            return seen


async def presence_of(api, viewer, *people) -> list:
    status, data = await call(api, viewer, "GET", "/api/presence?user_ids=" + ",".join(str(p["id"]) for p in people))
    assert status == 200, data
    return data["presence"]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"presence_grace": 0.2}])
async def test_online_and_offline_reach_co_members_only(api, users, ws_connect, http_port, config_overrides):
    alice, bob, carol = await users("alice", "bob", "carol")
    cid = await group(api, alice, [bob])
    b = await ws_connect("/ws/notifications", bob["token"])
    c = await ws_connect("/ws/notifications", carol["token"])  # a stranger to alice
    await b.recv_type("unread")
    await c.recv_type("unread")
    a = await ws_connect("/ws/notifications", alice["token"])
    online = await b.recv_type("presence")
    assert online["user_id"] == alice["id"] and online["online"] is True and MINUTE.match(online["last_seen"])
    # /sse/chat carries the notification stream: it gets it too, once
    b_chat = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", bob["token"])
    await b_chat.next_type("unread")
    assert [p["user_id"] for p in await presence_of(api, bob, alice, carol)] == [alice["id"]]  # carol: no chat shared
    assert (await presence_of(api, bob, alice))[0]["online"] is True
    assert await presence_of(api, carol, alice) == []
    status, listed = await call(api, bob, "GET", "/api/chats")
    members = {m["id"]: m for m in listed["chats"][0]["members"] if listed["chats"][0]["id"] == cid}
    assert members[alice["id"]]["presence"]["online"] is True and "presence" not in members[bob["id"]]
    # offline after the grace period, last seen stored to the minute
    a.close()
    offline = await b.recv_type("presence")
    assert offline["user_id"] == alice["id"] and offline["online"] is False and MINUTE.match(offline["last_seen"])
    assert await b_chat.next_type("presence") == offline
    assert await presences_until_marker_sse(b_chat, await marker(api, bob)) == []
    b_chat.close()
    stored = User.get_by_id(alice["id"]).last_seen
    assert stored.second == 0 and stored.microsecond == 0
    assert abs(stored - datetime.datetime.utcnow()) < datetime.timedelta(minutes=2)
    assert (await presence_of(api, bob, alice)) == [{"user_id": alice["id"], "online": False,
                                                     "last_seen": offline["last_seen"]}]
    # carol never heard of alice
    assert await presences_until_marker(c, await marker(api, carol)) == []


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"presence_grace": 1.0}])
async def test_a_reconnect_within_the_grace_period_says_nothing(api, users, ws_connect, config_overrides):
    alice, bob, carol = await users("alice", "bob", "carol")
    await group(api, alice, [bob, carol])
    b = await ws_connect("/ws/notifications", bob["token"])
    await b.recv_type("unread")
    a = await ws_connect("/ws/notifications", alice["token"])
    assert (await b.recv_type("presence"))["online"] is True
    a.close()
    a2 = await ws_connect("/ws/notifications", alice["token"])
    await a2.recv_type("unread")
    await asyncio.sleep(1.5)  # past the grace period of the closed stream
    assert await presences_until_marker(b, await marker(api, bob)) == []
    assert (await presence_of(api, bob, alice))[0]["online"] is True


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"presence_grace": 0.2}])
async def test_share_presence_off_hides_it_both_ways(api, users, ws_connect, config_overrides):
    alice, bob, dave = await users("alice", "bob", "dave")
    await group(api, alice, [bob, dave])
    status, prefs = await call(api, bob, "PATCH", "/api/me/preferences", {"share_presence": False})
    assert status == 200 and prefs["share_presence"] is False
    b = await ws_connect("/ws/notifications", bob["token"])
    d = await ws_connect("/ws/notifications", dave["token"])
    await b.recv_type("unread")
    await d.recv_type("unread")
    # bob came online: dave is not told (bob hides his presence)
    a = await ws_connect("/ws/notifications", alice["token"])
    got = await d.recv_type("presence")  # dave is told of alice ...
    assert got["user_id"] == alice["id"]
    assert await presences_until_marker(b, await marker(api, bob)) == []  # ... bob, who hides his, is not
    assert [p["user_id"] for p in await presence_of(api, dave, alice, bob)] == [alice["id"]]
    assert await presence_of(api, bob, alice, dave) == []
    status, listed = await call(api, bob, "GET", "/api/chats")
    assert all("presence" not in m for c in listed["chats"] for m in c["members"])
    status, listed = await call(api, alice, "GET", "/api/chats")
    people = {m["id"]: m for c in listed["chats"] for m in c["members"]}
    assert "presence" not in people[bob["id"]] and people[dave["id"]]["presence"]["online"] is True
    a.close()
    assert (await d.recv_type("presence"))["online"] is False
    assert await presences_until_marker(b, await marker(api, bob)) == []
    # switched back on: both ways again, and co-members are told his state at once
    status, _ = await call(api, bob, "PATCH", "/api/me/preferences", {"share_presence": True})
    shown = await d.recv_type("presence")
    assert shown["user_id"] == bob["id"] and shown["online"] is True and MINUTE.match(shown["last_seen"])
    # hidden again while online: co-members are told there is nothing to show
    status, _ = await call(api, bob, "PATCH", "/api/me/preferences", {"share_presence": False})
    assert await d.recv_type("presence") == {"type": "presence", "user_id": bob["id"], "online": False,
                                             "last_seen": None}
    status, _ = await call(api, bob, "PATCH", "/api/me/preferences", {"share_presence": True})
    assert [p["user_id"] for p in await presence_of(api, bob, alice, dave)] == [alice["id"], dave["id"]]
    status, err = await call(api, bob, "PATCH", "/api/me/preferences", {"share_presence": "yes"})
    assert (status, err["error"]["code"]) == (400, "invalid_preference")


@pytest.mark.gen_test(timeout=60)
async def test_presence_lookup_input(api, users):
    (alice,) = await users("alice")
    for query, code in (("", "invalid_user_ids"), ("user_ids=", "invalid_user_ids"), ("user_ids=1,x", "invalid_user_ids"),
                        ("user_ids=0", "invalid_user_ids"), ("user_ids=" + ",".join(["1"] * 101), "too_many_user_ids")):
        status, err = await call(api, alice, "GET", "/api/presence?" + query)
        assert (status, err["error"]["code"]) == (400, code), query
    status, data = await call(api, alice, "GET", "/api/presence?user_ids=" + ",".join(str(i) for i in range(1, 101)))
    assert status == 200 and data == {"presence": []}  # at the limit; nobody shares a chat with alice
    status, _ = await api.call("GET", "/api/presence?user_ids=1")
    assert status == 401
