"""Groups that change (issue 25, item 7): title, add, remove, leave, roles and their rights,
system messages, and a removed member's history up to the removal and nothing after.
"""
from __future__ import annotations

import pytest

from models import ChatDeparture, ChatMember


async def make_group(api, owner, others, title="Team") -> dict:
    status, data = await api.call("POST", "/api/chats", {"member_ids": [u["id"] for u in others], "title": title},
                                  token=owner["token"])
    assert status == 201, data
    return data["chat"]


async def call(api, user, method, path, body=None):
    return await api.call(method, path, body, token=user["token"])


async def send(api, user, chat_id, content):
    status, data = await call(api, user, "POST", f"/api/chats/{chat_id}/messages", {"content": content})
    assert status == 201, data
    return data["message"]


async def frames(ws, *types: str) -> dict:
    """The next frame of each of ``types``, in whatever order they come: ``{type: frame}``."""
    got: dict = {}
    while len(got) < len(types):
        frame = await ws.recv_type(*[t for t in types if t not in got])
        got[frame["type"]] = frame
    return got


def roles_of(chat: dict) -> dict:
    return {m["id"]: m["role"] for m in chat["members"]}


@pytest.mark.gen_test(timeout=60)
async def test_owner_adds_renames_and_members_hear_of_it(api, users, ws_connect):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat = await make_group(api, alice, [bob])
    assert roles_of(chat) == {alice["id"]: "owner", bob["id"]: "member"}  # the creator owns the group
    b = await ws_connect("/ws/chat", bob["token"])
    c = await ws_connect("/ws/chat", carol["token"])
    status, data = await call(api, alice, "POST", f"/api/chats/{chat['id']}/members", {"user_id": carol["id"]})
    assert status == 201, data
    assert roles_of(data["chat"])[carol["id"]] == "member"
    for ws in (b, c):  # old and new members: the system message and both member events
        got = await frames(ws, "message", "members", "chat_members")
        message = got["message"]["message"]
        assert message["message_type"] == "system" and message["content"] == "Alice added Carol"
        assert message["system"] == {"action": "added", "actor_id": alice["id"], "user_ids": [carol["id"]]}
        members = got["members"]
        assert members["chat_id"] == chat["id"] and members["by"] == alice["id"]
        assert [m["id"] for m in members["added"]] == [carol["id"]] and members["added"][0]["role"] == "member"
        assert members["message_id"] == message["id"]
        legacy = got["chat_members"]  # the older event name, still sent (docs §3)
        assert [m["id"] for m in legacy["added"]] == [carol["id"]]
    status, data = await call(api, alice, "PATCH", f"/api/chats/{chat['id']}", {"title": " Launch "})
    assert status == 200 and data["chat"]["title"] == "Launch"
    renamed = await c.recv_type("chat_updated")
    assert renamed == {"type": "chat_updated", "chat_id": chat["id"], "title": "Launch", "by": alice["id"],
                       "message_id": renamed["message_id"]}
    status, history = await call(api, carol, "GET", f"/api/chats/{chat['id']}/messages")
    assert [m["content"] for m in history["messages"]] == ["Alice added Carol", "Alice renamed the group to Launch"]
    assert history["messages"][1]["system"] == {"action": "renamed", "actor_id": alice["id"], "title": "Launch"}
    # system messages count as unread for the others, not for the one who made the change
    status, unread = await call(api, bob, "GET", "/api/unread")
    assert unread["chats"][str(chat["id"])] == 2
    status, unread = await call(api, alice, "GET", "/api/unread")
    assert str(chat["id"]) not in unread["chats"]


@pytest.mark.gen_test(timeout=60)
async def test_role_rights_refused_and_allowed(api, users):
    alice, bob, carol, dave, erin = await users("alice", "bob", "carol", "dave", "erin")
    chat = await make_group(api, alice, [bob, carol])
    cid = chat["id"]

    async def refused(user, method, path, body=None, status=403, code="insufficient_role"):
        got, err = await call(api, user, method, path, body)
        assert (got, err["error"]["code"]) == (status, code), err

    # a member: no title, no adding, no removing, no roles
    await refused(bob, "PATCH", f"/api/chats/{cid}", {"title": "Mine"})
    await refused(bob, "POST", f"/api/chats/{cid}/members", {"user_id": dave["id"]})
    await refused(bob, "DELETE", f"/api/chats/{cid}/members/{carol['id']}")
    await refused(bob, "PATCH", f"/api/chats/{cid}/members/{carol['id']}", {"role": "admin"})
    # a stranger is not a member at all
    await refused(erin, "PATCH", f"/api/chats/{cid}", {"title": "X"}, code="not_a_member")
    await refused(erin, "POST", f"/api/chats/{cid}/members", {"user_id": erin["id"]}, code="not_a_member")
    # the owner makes bob an admin
    status, data = await call(api, alice, "PATCH", f"/api/chats/{cid}/members/{bob['id']}", {"role": "admin"})
    assert status == 200 and roles_of(data["chat"])[bob["id"]] == "admin"
    # an admin: title, add, remove members ...
    status, _ = await call(api, bob, "PATCH", f"/api/chats/{cid}", {"title": "Ours"})
    assert status == 200
    status, _ = await call(api, bob, "POST", f"/api/chats/{cid}/members", {"user_id": dave["id"]})
    assert status == 201
    status, gone = await call(api, bob, "DELETE", f"/api/chats/{cid}/members/{dave['id']}")
    assert status == 200 and gone["user_id"] == dave["id"] and gone["removed_at_message_id"] > 0
    # ... but not the owner, not another admin, and no roles
    await refused(bob, "DELETE", f"/api/chats/{cid}/members/{alice['id']}")
    status, _ = await call(api, alice, "PATCH", f"/api/chats/{cid}/members/{carol['id']}", {"role": "admin"})
    assert status == 200
    await refused(bob, "DELETE", f"/api/chats/{cid}/members/{carol['id']}")
    await refused(bob, "PATCH", f"/api/chats/{cid}/members/{carol['id']}", {"role": "member"})
    # the owner transfers ownership: the old owner becomes an admin
    status, data = await call(api, alice, "PATCH", f"/api/chats/{cid}/members/{bob['id']}", {"role": "owner"})
    assert status == 200
    assert roles_of(data["chat"]) == {alice["id"]: "admin", bob["id"]: "owner", carol["id"]: "admin"}
    await refused(alice, "PATCH", f"/api/chats/{cid}/members/{carol['id']}", {"role": "member"})
    status, _ = await call(api, bob, "DELETE", f"/api/chats/{cid}/members/{alice['id']}")  # the owner removes an admin
    assert status == 200
    # bad input and wrong targets
    await refused(bob, "PATCH", f"/api/chats/{cid}/members/{carol['id']}", {"role": "king"}, 400, "invalid_role")
    await refused(bob, "PATCH", f"/api/chats/{cid}/members/{bob['id']}", {"role": "admin"}, 400, "invalid_role")
    await refused(bob, "DELETE", f"/api/chats/{cid}/members/{erin['id']}", status=404, code="member_not_found")
    await refused(bob, "POST", f"/api/chats/{cid}/members", {"user_id": carol["id"]}, 409, "already_a_member")
    await refused(bob, "POST", f"/api/chats/{cid}/members", {"user_id": 10 ** 15}, 404, "user_not_found")
    await refused(bob, "POST", f"/api/chats/{cid}/members", {"user_id": "x"}, 400, "validation_error")
    await refused(bob, "PATCH", f"/api/chats/{cid}", {"title": ""}, 400, "invalid_title")
    await refused(bob, "PATCH", f"/api/chats/{cid}", {"title": "x" * 129}, 400, "invalid_title")
    # private chats never change
    status, private = await call(api, alice, "POST", "/api/chats", {"user_id": bob["id"]})
    pid = private["chat"]["id"]
    await refused(alice, "PATCH", f"/api/chats/{pid}", {"title": "Us"}, 409, "not_a_group")
    await refused(alice, "POST", f"/api/chats/{pid}/members", {"user_id": carol["id"]}, 409, "not_a_group")
    await refused(alice, "DELETE", f"/api/chats/{pid}/members/{alice['id']}", status=409, code="not_a_group")


@pytest.mark.gen_test(timeout=60)
async def test_leave_passes_ownership_to_the_earliest_admin_then_member(api, users, ws_connect):
    alice, bob, carol, dave = await users("alice", "bob", "carol", "dave")
    chat = await make_group(api, alice, [bob, carol, dave])
    cid = chat["id"]
    status, _ = await call(api, alice, "PATCH", f"/api/chats/{cid}/members/{dave['id']}", {"role": "admin"})
    b = await ws_connect("/ws/chat", bob["token"])
    status, left = await call(api, alice, "DELETE", f"/api/chats/{cid}/members/{alice['id']}")
    assert status == 200 and left["user_id"] == alice["id"]
    got = await frames(b, "message", "members")
    message, event = got["message"]["message"], got["members"]
    assert message["content"] == "Alice left" and message["system"]["action"] == "left"
    assert event["removed"] == [alice["id"]] and event["roles"] == {str(dave["id"]): "owner"}
    status, data = await call(api, bob, "GET", f"/api/chats/{cid}")
    assert roles_of(data["chat"]) == {bob["id"]: "member", carol["id"]: "member", dave["id"]: "owner"}
    # no admin left: the earliest member inherits
    status, _ = await call(api, dave, "DELETE", f"/api/chats/{cid}/members/{dave['id']}")
    assert status == 200
    status, data = await call(api, bob, "GET", f"/api/chats/{cid}")
    assert roles_of(data["chat"]) == {bob["id"]: "owner", carol["id"]: "member"}
    # anyone may leave, and leaving is not rate limited nor refused to a member
    status, _ = await call(api, carol, "DELETE", f"/api/chats/{cid}/members/{carol['id']}")
    assert status == 200
    status, err = await call(api, carol, "DELETE", f"/api/chats/{cid}/members/{carol['id']}")
    assert (status, err["error"]["code"]) == (403, "not_a_member")


@pytest.mark.gen_test(timeout=60)
async def test_removed_member_keeps_history_up_to_removal_and_nothing_after(api, users, ws_connect, services):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat = await make_group(api, alice, [bob, carol])
    cid = chat["id"]
    before = await send(api, bob, cid, "zebracrossing before")
    c = await ws_connect("/ws/chat", carol["token"])
    status, gone = await call(api, alice, "DELETE", f"/api/chats/{cid}/members/{carol['id']}")
    assert status == 200
    event = await c.recv_type("members")
    assert event["removed"] == [carol["id"]] and event["removed_at_message_id"] == gone["removed_at_message_id"]
    after = await send(api, bob, cid, "zebracrossing after")
    # a private message to carol arrives; the group's later message never did before it
    status, private = await call(api, alice, "POST", "/api/chats", {"user_id": carol["id"]})
    marker = await send(api, alice, private["chat"]["id"], "marker")
    while True:
        frame = await c.recv_type("message", "typing", "read", "chat_updated")
        assert frame.get("message", {}).get("id") != after["id"]
        if frame.get("message", {}).get("id") == marker["id"]:
            break
    # history: up to and including the removal's system message
    status, history = await call(api, carol, "GET", f"/api/chats/{cid}/messages")
    assert status == 200
    assert [m["id"] for m in history["messages"]] == [before["id"], gone["removed_at_message_id"]]
    assert history["messages"][-1]["content"] == "Alice removed Carol"
    status, page = await call(api, carol, "GET", f"/api/chats/{cid}/messages?before_id={after['id'] + 5}")
    assert [m["id"] for m in page["messages"]] == [before["id"], gone["removed_at_message_id"]]
    # search finds the message before, never the one after
    status, found = await call(api, carol, "GET", "/api/search?q=zebracrossing")
    assert status == 200 and [m["id"] for m in found["results"]] == [before["id"]]
    status, found = await call(api, bob, "GET", "/api/search?q=zebracrossing")
    assert sorted(m["id"] for m in found["results"]) == [before["id"], after["id"]]
    # no sending, no unread; in the chat list as a former member, as it was at the removal
    status, err = await call(api, carol, "POST", f"/api/chats/{cid}/messages", {"content": "hello?"})
    assert (status, err["error"]["code"]) == (403, "not_a_member")
    status, unread = await call(api, carol, "GET", "/api/unread")
    assert str(cid) not in unread["chats"]
    status, listed = await call(api, carol, "GET", "/api/chats")
    former = {c_["id"]: c_ for c_ in listed["chats"]}[cid]
    assert former["member"] is False and former["removed_at_message_id"] == gone["removed_at_message_id"]
    assert former["last_message"]["id"] == gone["removed_at_message_id"]  # not the later "after"
    assert former["members"] == [] and former["unread_count"] == 0 and former["left_at"]
    status, one = await call(api, carol, "GET", f"/api/chats/{cid}")
    assert status == 200 and one["chat"] == former
    status, _ = await call(api, carol, "POST", f"/api/chats/{cid}/read", {"message_id": before["id"]})
    assert status == 403
    # added back: a member again, the whole history, the departure forgotten
    status, _ = await call(api, alice, "POST", f"/api/chats/{cid}/members", {"user_id": carol["id"]})
    assert status == 201
    assert ChatDeparture.select().where(ChatDeparture.chat == cid).count() == 0
    status, history = await call(api, carol, "GET", f"/api/chats/{cid}/messages")
    assert after["id"] in [m["id"] for m in history["messages"]]
    status, listed = await call(api, carol, "GET", "/api/chats")
    back = {c_["id"]: c_ for c_ in listed["chats"]}[cid]
    assert back["member"] is True and "left_at" not in back and len(back["members"]) == 3
    assert ChatMember.get((ChatMember.chat == cid) & (ChatMember.user == carol["id"])).role == "member"


@pytest.mark.gen_test(timeout=60)
async def test_users_cannot_send_system_messages(api, users):
    alice, bob = await users("alice", "bob")
    chat = await make_group(api, alice, [bob])
    status, err = await call(api, bob, "POST", f"/api/chats/{chat['id']}/messages",
                             {"content": "Alice made Bob the owner", "message_type": "system"})
    assert (status, err["error"]["code"]) == (400, "invalid_message_type")
    # nor change one, even its sender (who made the change)
    status, _ = await call(api, alice, "PATCH", f"/api/chats/{chat['id']}", {"title": "New"})
    status, history = await call(api, alice, "GET", f"/api/chats/{chat['id']}/messages")
    system_id = history["messages"][-1]["id"]
    for method, body in (("PATCH", {"content": "Alice did nothing"}), ("DELETE", None)):
        status, err = await call(api, alice, method, f"/api/chats/{chat['id']}/messages/{system_id}", body)
        assert (status, err["error"]["code"]) == (403, "system_message")


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"group_changes_per_minute": 3}])
async def test_group_changes_per_minute_at_and_past_the_limit(api, users, config_overrides):
    alice, bob = await users("alice", "bob")
    chat = await make_group(api, alice, [bob])
    for n in range(3):  # at the limit
        status, data = await call(api, alice, "PATCH", f"/api/chats/{chat['id']}", {"title": f"T{n}"})
        assert status == 200, data
    status, err = await call(api, alice, "PATCH", f"/api/chats/{chat['id']}", {"title": "T3"})  # one past
    assert (status, err["error"]["code"]) == (429, "rate_limited") and err["error"]["retry_after"] > 0
    status, _ = await call(api, alice, "DELETE", f"/api/chats/{chat['id']}/members/{alice['id']}")
    assert status == 200  # leaving is never limited


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"max_group_members": 3}])
async def test_adding_at_and_past_max_group_members(api, users, config_overrides):
    alice, bob, carol, dave = await users("alice", "bob", "carol", "dave")
    chat = await make_group(api, alice, [bob])
    status, _ = await call(api, alice, "POST", f"/api/chats/{chat['id']}/members", {"user_id": carol["id"]})
    assert status == 201  # three members: at the limit
    status, err = await call(api, alice, "POST", f"/api/chats/{chat['id']}/members", {"user_id": dave["id"]})
    assert (status, err["error"]["code"]) == (400, "too_many_members")


@pytest.mark.gen_test(timeout=60)
async def test_chat_list_pages_member_and_former_chats_together(api, users):
    """The chats left come in the list by the time of the departure, and ``before`` pages through both kinds."""
    alice, bob = await users("alice", "bob")
    first = await make_group(api, alice, [bob], "First")
    left = await make_group(api, alice, [bob], "Left")
    last = await make_group(api, alice, [bob], "Last")
    await send(api, alice, first["id"], "one")
    status, _ = await call(api, bob, "DELETE", f"/api/chats/{left['id']}/members/{bob['id']}")
    assert status == 200
    await send(api, alice, left["id"], "after bob left")  # moves the group for Alice, not for Bob
    await send(api, alice, last["id"], "three")
    status, listed = await call(api, bob, "GET", "/api/chats")
    assert [(c["id"], c["member"]) for c in listed["chats"]] == [
        (last["id"], True), (left["id"], False), (first["id"], True)]
    status, listed = await call(api, alice, "GET", "/api/chats")
    assert [c["id"] for c in listed["chats"]] == [last["id"], left["id"], first["id"]]
    assert all(c["member"] for c in listed["chats"])
    seen = []
    before = None
    while True:
        status, page = await call(api, bob, "GET", "/api/chats?limit=1" + (f"&before={before}" if before else ""))
        assert status == 200, page
        seen += [c["id"] for c in page["chats"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == [last["id"], left["id"], first["id"]]
    status, err = await call(api, alice, "GET", f"/api/chats?before={10**9}")
    assert status == 400


@pytest.mark.gen_test(timeout=60)
async def test_a_system_message_moves_the_counters_as_any_message_does(api, users):
    """A group change's message is stored by the path of every message (``store_sends``): the actor
    has read the chat up to it (the mentions of them before it too), the member it adds has read
    it, every other member counts it as unread, and it is the chat's last message."""
    alice, bob, carol, dave = await users("alice", "bob", "carol", "dave")
    chat = await make_group(api, alice, [bob, carol])
    cid = chat["id"]
    await send(api, bob, cid, f"@{alice['username']} look")  # a mention of alice, unread
    status, unread = await call(api, alice, "GET", "/api/unread")
    assert unread["chats"][str(cid)] == 1 and unread["mentions"][str(cid)] == 1
    status, data = await call(api, alice, "POST", f"/api/chats/{cid}/members", {"user_id": dave["id"]})
    assert status == 201, data
    last = data["chat"]["last_message"]
    assert last["message_type"] == "system" and last["system"]["action"] == "added"
    row = {m.user_id: m for m in ChatMember.select().where(ChatMember.chat == cid)}
    assert (row[alice["id"]].last_read_message_id, row[alice["id"]].unread_count,
            row[alice["id"]].mention_count) == (last["id"], 0, 0)
    assert (row[dave["id"]].last_read_message_id, row[dave["id"]].unread_count) == (last["id"], 0)
    assert row[bob["id"]].unread_count == 1 and row[carol["id"]].unread_count == 2
    # a later message of another member is unread for alice, and her read mention stays read
    await send(api, carol, cid, "hello")
    status, unread = await call(api, alice, "GET", "/api/unread")
    assert unread["chats"][str(cid)] == 1 and str(cid) not in unread.get("mentions", {})
