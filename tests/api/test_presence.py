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


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("extra, flushes", [(0, 1), (1, 2)])
async def test_users_coming_online_together_are_told_in_batches_of_max_batch(api, users, ws_connect, services,
                                                                                extra, flushes):
    """The presence of a busy moment is told in batches of ``MAX_BATCH`` users (one UPDATE, one read
    each): exactly ``MAX_BATCH`` users take one flush, one more a second; every one is told and stored."""
    from models import ChatMember
    from tornado_app.services.chat.presence import MAX_BATCH
    alice, bob = await users("alice", "bob")
    cid = await group(api, alice, [bob])
    n = MAX_BATCH + extra
    User.insert_many([{"username": f"p{i}_{cid}", "username_key": f"p{i}_{cid}", "display_name": "P",
                       "password_hash": "x"} for i in range(n)]).execute()
    ids = [u.id for u in User.select(User.id).where(User.username.startswith("p")).where(
        User.username.endswith(f"_{cid}"))]
    assert len(ids) == n
    ChatMember.insert_many([{"chat": cid, "user": uid} for uid in ids]).execute()
    b = await ws_connect("/ws/notifications", bob["token"])
    await b.recv_type("unread")
    presence = services.presence
    await presence.drain()  # bob's own coming online is told
    before = presence.flushes
    for uid in ids:  # what the hub says when their first streams open in one loop turn
        presence.changed(uid, True)
    told = set()
    while len(told) < n:
        frame = await b.recv_type("presence")
        assert frame["online"] is True and MINUTE.match(frame["last_seen"])
        told.add(frame["user_id"])
    assert told == set(ids)
    await presence.drain()
    assert presence.flushes - before == flushes
    assert User.select().where(User.id.in_(ids) & User.last_seen.is_null(False)).count() == n


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"presence_grace": 0.0}])
async def test_back_before_the_offline_check_is_told_says_nothing(api, users, ws_connect, services, config_overrides):
    """An offline check already queued (grace over) is dropped, not followed by "online", when the
    user comes back before the batch is told: nobody was told offline."""
    alice, bob = await users("alice", "bob")
    await group(api, alice, [bob])
    b = await ws_connect("/ws/notifications", bob["token"])
    await b.recv_type("unread")
    presence = services.presence
    await presence.drain()
    presence.linger = 1.0  # the queued check waits long enough for the test to act
    presence.changed(alice["id"], False)  # her last stream closed (she has none: offline if told)
    await asyncio.sleep(0.05)  # the grace period (0) is over: the check is queued
    presence.changed(alice["id"], True)  # back before it was told
    await presence.drain()
    assert await presences_until_marker(b, await marker(api, bob)) == []


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"presence_grace": 0.6}])
async def test_grace_periods_end_each_at_its_own_time(api, users, ws_connect, config_overrides):
    """Offline checks share one timer: the second user's comes after the first's, each a grace period
    after their own last stream closed."""
    alice, bob, carol = await users("alice", "bob", "carol")
    await group(api, alice, [bob, carol])
    b = await ws_connect("/ws/notifications", bob["token"])
    await b.recv_type("unread")
    a = await ws_connect("/ws/notifications", alice["token"])
    c = await ws_connect("/ws/notifications", carol["token"])
    online = {(await b.recv_type("presence"))["user_id"] for _ in range(2)}
    assert online == {alice["id"], carol["id"]}
    loop = asyncio.get_running_loop()
    a.close()
    t_a = loop.time()
    await asyncio.sleep(0.3)
    c.close()
    t_c = loop.time()
    first = await b.recv_type("presence")
    t1 = loop.time()
    assert (first["user_id"], first["online"]) == (alice["id"], False)
    assert t1 - t_a >= 0.6 and t1 - t_c < 0.6  # alice's grace is over, carol's is not
    second = await b.recv_type("presence")
    assert (second["user_id"], second["online"]) == (carol["id"], False)
    assert loop.time() - t_c >= 0.6
