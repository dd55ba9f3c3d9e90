"""Groups that change and presence on two processes sharing PostgreSQL and the Redis broker
(issue 25, acceptance 5 and 6).

Each change is made on one process and seen on the other: role rights, system messages, a
removed member's streams on both processes stopping at once with the history kept up to
the removal, leaving; presence events and lookups with the ``share_presence`` switch both ways
and the grace period, whichever process holds each stream.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.support.clients import ApiClient, WSClient
from tests.support.scaleout import open_private_chat, publish_notification, register, send_http, start_cluster

GRACE = 0.5


@pytest.fixture
def cluster(shared_db, server_factory):
    """Two servers, one PostgreSQL database, the Redis broker, a short presence grace."""
    return start_cluster("redis", shared_db, server_factory, count=2, PRESENCE_GRACE=str(GRACE))


async def call(api, user, method, path, body=None):
    return await api.call(method, path, body, token=user["token"])


async def frames(ws, *types: str) -> dict:
    """The next frame of each of ``types``, in whatever order they come."""
    got: dict = {}
    while len(got) < len(types):
        frame = await ws.recv_type(*[t for t in types if t not in got])
        got[frame["type"]] = frame
    return got


async def presences_until_marker(ws, marker_id: int) -> list:
    """Every ``presence`` frame before the announcement ``marker_id``."""
    seen = []
    while True:
        frame = await ws.recv_type("presence", "announcement")
        if frame["type"] == "presence":
            seen.append(frame)
        elif frame["id"] == marker_id:
            return seen


async def presence_from(ws, user_id: int) -> dict:
    """The next ``presence`` frame about ``user_id`` (others skipped)."""
    while True:
        frame = await ws.recv_type("presence")
        if frame["user_id"] == user_id:
            return frame


@pytest.mark.gen_test(timeout=120)
async def test_group_changes_on_two_processes(cluster):
    p1, p2 = cluster
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice, bob, carol, dave = [await register(api1, n) for n in ("alice", "bob", "carol", "dave")]
    status, data = await call(api1, alice, "POST", "/api/chats", {"member_ids": [bob["id"], carol["id"]],
                                                                   "title": "Team"})
    cid = data["chat"]["id"]
    carol_ws = [await WSClient.connect(p.ws_url, "/ws/chat", carol["token"]) for p in (p1, p2)]
    alice_ws2 = await WSClient.connect(p2.ws_url, "/ws/chat", alice["token"])
    for ws in carol_ws:  # joined: both processes cache the chat's members
        await ws.request({"type": "join_chat", "chat_id": cid}, "joined")

    # rights: refused to a member on p2, allowed once the owner (on p1) makes bob an admin
    status, err = await call(api2, bob, "POST", f"/api/chats/{cid}/members", {"user_id": dave["id"]})
    assert (status, err["error"]["code"]) == (403, "insufficient_role")
    status, _ = await call(api1, alice, "PATCH", f"/api/chats/{cid}/members/{bob['id']}", {"role": "admin"})
    assert status == 200
    status, _ = await call(api2, bob, "POST", f"/api/chats/{cid}/members", {"user_id": dave["id"]})
    assert status == 201
    for ws in carol_ws:  # the system messages reach both processes
        got = await frames(ws, "message", "members")
        role = got["message"]["message"]
        assert role["content"] == "Alice made Bob an admin" and role["system"]["role"] == "admin"
        assert got["members"]["roles"] == {str(bob["id"]): "admin"} and got["members"]["added"] == []
        got = await frames(ws, "message", "members")
        assert got["message"]["message"]["content"] == "Bob added Dave"
        assert [m["id"] for m in got["members"]["added"]] == [dave["id"]]
    status, err = await call(api1, bob, "DELETE", f"/api/chats/{cid}/members/{alice['id']}")
    assert (status, err["error"]["code"]) == (403, "insufficient_role")

    before = await send_http(api2, bob, cid, "quokka before")
    for ws in carol_ws:
        assert (await ws.recv_type("message"))["message"]["id"] == before["id"]
    # removed on p2 (the owner): both of carol's streams hear it, then nothing more of the chat
    status, gone = await call(api2, alice, "DELETE", f"/api/chats/{cid}/members/{carol['id']}")
    assert status == 200
    for ws in carol_ws:
        assert (await ws.recv_type("members"))["removed"] == [carol["id"]]
    after = await send_http(api1, bob, cid, "quokka after")
    private = await open_private_chat(api1, alice, carol)
    mark = await send_http(api2, alice, private, "marker")
    for ws in carol_ws:
        while True:
            frame = await ws.recv_type("message")
            assert frame["message"]["id"] != after["id"]
            if frame["message"]["id"] == mark["id"]:
                break
    # on both processes: history up to the removal, search before it only, no sending
    for api in (api1, api2):
        status, history = await call(api, carol, "GET", f"/api/chats/{cid}/messages")
        ids = [m["id"] for m in history["messages"]]
        assert ids[-2:] == [before["id"], gone["removed_at_message_id"]] and after["id"] not in ids
        status, found = await call(api, carol, "GET", "/api/search?q=quokka")
        assert [m["id"] for m in found["results"]] == [before["id"]]
        status, err = await call(api, carol, "POST", f"/api/chats/{cid}/messages", {"content": "hi"})
        assert (status, err["error"]["code"]) == (403, "not_a_member")
        status, listed = await call(api, carol, "GET", "/api/chats")  # listed, read-only, as at the removal
        former = {c["id"]: c for c in listed["chats"]}[cid]
        assert former["member"] is False and former["last_message"]["id"] == gone["removed_at_message_id"]
    # leaving on p1, heard on p2
    status, _ = await call(api1, dave, "DELETE", f"/api/chats/{cid}/members/{dave['id']}")
    assert status == 200
    while True:
        message = (await alice_ws2.recv_type("message"))["message"]
        if message["message_type"] == "system" and message["system"]["action"] == "left":
            assert message["content"] == "Dave left"
            break
    for ws in (*carol_ws, alice_ws2):
        ws.close()


@pytest.mark.gen_test(timeout=120)
async def test_membership_checks_of_every_process_follow_a_change_at_once(cluster):
    """Issue 21, acceptance 4: with the member list cached on both processes, a member removed
    on one is refused by the other's membership check at once, and admitted again at once
    when added back there (each process drops its cached list on the ``members`` control message).
    """
    p1, p2 = cluster
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice, bob, carol = [await register(api1, n) for n in ("alice", "bob", "carol")]
    status, data = await call(api1, alice, "POST", "/api/chats", {"member_ids": [bob["id"], carol["id"]],
                                                                   "title": "Team"})
    cid = data["chat"]["id"]
    for api in (api1, api2):  # a send checks membership: both processes now cache the member list
        await send_http(api, carol, cid, "hello")

    status, _ = await call(api1, alice, "DELETE", f"/api/chats/{cid}/members/{carol['id']}")
    assert status == 200
    # right after the answer, on the other process first: every membership check refuses Carol
    for api in (api2, api1):
        status, err = await call(api, carol, "POST", f"/api/chats/{cid}/messages", {"content": "still in?"})
        assert (status, err["error"]["code"]) == (403, "not_a_member"), (api.base_url, status, err)
        status, err = await call(api, carol, "POST", f"/api/chats/{cid}/read", {"message_id": 1})
        assert status == 403 and err["error"]["code"] == "not_a_member"
    assert (await send_http(api2, bob, cid, "bob still in"))["chat_id"] == cid  # the others are unchanged

    status, _ = await call(api2, alice, "POST", f"/api/chats/{cid}/members", {"user_id": carol["id"]})
    assert status == 201
    # added back on p2: p1's check admits her at once (it had cached the list without her)
    for api in (api1, api2):
        assert (await send_http(api, carol, cid, "back"))["chat_id"] == cid


@pytest.mark.gen_test(timeout=120)
async def test_presence_across_processes_with_the_privacy_switch(cluster):
    p1, p2 = cluster
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice, bob, dave = [await register(api1, n) for n in ("alice", "bob", "dave")]
    status, _ = await call(api1, alice, "POST", "/api/chats", {"member_ids": [bob["id"], dave["id"]], "title": "T"})
    assert status == 201
    b1 = await WSClient.connect(p1.ws_url, "/ws/notifications", bob["token"])
    d2 = await WSClient.connect(p2.ws_url, "/ws/notifications", dave["token"])
    await b1.recv_type("unread")
    await d2.recv_type("unread")
    # alice online on p2: bob (p1) is told through Redis; lookups on both processes agree
    a2 = await WSClient.connect(p2.ws_url, "/ws/notifications", alice["token"])
    got = await presence_from(b1, alice["id"])
    assert got["online"] is True
    for api in (api1, api2):
        status, data = await call(api, bob, "GET", f"/api/presence?user_ids={alice['id']}")
        assert data["presence"][0]["online"] is True
    # alice also on p1; closing p2's stream is no offline (she is still online on p1), even past the grace
    a1 = await WSClient.connect(p1.ws_url, "/ws/notifications", alice["token"])
    await a1.recv_type("unread")
    a2.close()
    await asyncio.sleep(GRACE * 3)
    (mark,) = await publish_notification(api2, [bob["id"]], "marker")
    assert all(p["online"] for p in await presences_until_marker(b1, mark) if p["user_id"] == alice["id"])
    # offline once her last stream anywhere has been closed for the grace period
    a1.close()
    got = await presence_from(b1, alice["id"])
    assert got["online"] is False and got["last_seen"]
    # bob hides his presence (asked on p2; p1 hears of it): he sees no one and no one sees him
    status, _ = await call(api2, bob, "PATCH", "/api/me/preferences", {"share_presence": False})
    assert status == 200
    for api in (api1, api2):
        status, data = await call(api, bob, "GET", f"/api/presence?user_ids={alice['id']},{dave['id']}")
        assert data["presence"] == []
        status, data = await call(api, alice, "GET", f"/api/presence?user_ids={bob['id']},{dave['id']}")
        assert [p["user_id"] for p in data["presence"]] == [dave["id"]]
    (mark,) = await publish_notification(api2, [dave["id"]], "marker")
    await presences_until_marker(d2, mark)  # dave has heard everything so far
    a1 = await WSClient.connect(p1.ws_url, "/ws/notifications", alice["token"])
    got = await d2.recv_type("presence")  # dave (p2) is told of alice (p1) ...
    assert got["user_id"] == alice["id"] and got["online"] is True
    (mark,) = await publish_notification(api2, [bob["id"]], "marker")
    assert await presences_until_marker(b1, mark) == []  # ... bob, who hides his presence, is not
    # bob comes online on p2 too, then alice: dave hears of alice only
    b2 = await WSClient.connect(p2.ws_url, "/ws/notifications", bob["token"])
    await b2.recv_type("unread")
    a2 = await WSClient.connect(p2.ws_url, "/ws/notifications", alice["token"])
    await a2.recv_type("unread")
    (mark,) = await publish_notification(api1, [dave["id"]], "marker")
    assert bob["id"] not in [p["user_id"] for p in await presences_until_marker(d2, mark)]
    for ws in (a1, a2, b1, b2, d2):
        ws.close()
