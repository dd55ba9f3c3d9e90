"""Replies and mentions (issue 25, items 3 and 4; acceptance 2): ``reply_to`` checked in the same
chat, the quoted preview (or ``deleted``) in history, events and chat lists; ``@username``
resolved among the members; a mention or a reply calls its member through a mute (type
``mention``), silently in Do Not Disturb, counted in ``unread.mentions`` until read.
CI runs tests/api on SQLite and PostgreSQL."""
import pytest

from tests.support.clients import WSClient
from tornado_app.services.chat.replies import MAX_MENTIONS


async def group(api, owner, *others) -> int:
    status, data = await api.call("POST", "/api/chats", {"member_ids": [u["id"] for u in others], "title": "Team"},
                                  token=owner["token"])
    assert status == 201, data
    return data["chat"]["id"]


async def send(api, user, chat_id, content, expect=201, **extra):
    status, data = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content, **extra},
                                  token=user["token"])
    assert status == expect, data
    return data["message"] if expect == 201 else data["error"]["code"]


async def notifications(api, user) -> list:
    status, data = await api.call("GET", "/api/notifications", token=user["token"])
    assert status == 200, data
    return data["notifications"]


async def unread(api, user) -> dict:
    status, data = await api.call("GET", "/api/unread", token=user["token"])
    assert status == 200, data
    return data


@pytest.mark.gen_test(timeout=60)
async def test_reply_preview_in_ack_history_list_and_after_delete(api, users, ws_url):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat = await group(api, alice, bob)
    other = await group(api, carol, bob)
    question = await send(api, alice, chat, "who takes the release on friday?")
    elsewhere = await send(api, carol, other, "unrelated")

    for bad in (elsewhere["id"], question["id"] + 10_000, "7", 0, -1, True):
        assert await send(api, bob, chat, "me", expect=400, reply_to=bad) == "invalid_reply_to", bad

    ws = await WSClient.connect(ws_url, "/ws/chat", bob["token"])
    ack = await ws.request({"type": "send_message", "chat_id": chat, "content": "me!", "client_id": "r1",
                            "reply_to": question["id"]}, "message_ack")
    quoted = {"id": question["id"], "sender_id": alice["id"], "sender_name": "Alice",
              "content_preview": "who takes the release on friday?"}
    assert ack["message"]["reply_to"] == quoted
    ws.close()
    status, data = await api.call("GET", f"/api/chats/{chat}/messages", token=alice["token"])
    assert [m.get("reply_to") for m in data["messages"]] == [None, quoted]
    status, data = await api.call("GET", f"/api/chats/{chat}", token=alice["token"])
    assert data["chat"]["last_message"]["reply_to"] == quoted

    status, _ = await api.call("DELETE", f"/api/chats/{chat}/messages/{question['id']}", token=alice["token"])
    assert status == 200
    status, data = await api.call("GET", f"/api/chats/{chat}/messages", token=bob["token"])
    assert data["messages"][1]["reply_to"] == {"id": question["id"], "deleted": True}
    status, data = await api.call("GET", f"/poll/chat?last_event_id={question['id']}-0&timeout=0",
                                  token=bob["token"])
    replayed = [e["message"] for e in data["events"] if e.get("type") == "message" and e["message"]["chat_id"] == chat]
    assert replayed[0]["reply_to"] == {"id": question["id"], "deleted": True}


@pytest.mark.gen_test(timeout=60)
async def test_mentions_and_replies_call_through_a_mute_and_count_until_read(api, users):
    alice, bob, carol, dave = await users("alice", "bob", "carol", "dave")
    chat = await group(api, alice, bob, carol)
    status, _ = await api.call("PUT", f"/api/chats/{chat}/mute", {"until": None}, token=bob["token"])
    assert status == 200

    plain = await send(api, alice, chat, "lunch at noon")
    assert "mentions" not in plain
    assert await notifications(api, bob) == []  # muted: a plain message calls nobody

    # @username, whatever its case, among the members only (dave is not one; an e-mail is no mention)
    named = await send(api, alice, chat, f"@{bob['username'].upper()} can you check? cc @{dave['username']} "
                                         f"mail x@{carol['username']}")
    assert named["mentions"] == [bob["id"]]
    [note] = await notifications(api, bob)
    assert note["type"] == "mention" and note["chat_id"] == chat and "silent" not in note
    assert [n["type"] for n in await notifications(api, carol)] == ["new_message", "new_message"]
    state = await unread(api, bob)
    assert state["mentions"] == {str(chat): 1} and state["muted"] == {str(chat): 2} and state["total"] == 0

    # a reply to bob's message calls bob too
    mine = await send(api, bob, chat, "done")
    reply = await send(api, carol, chat, "thanks", reply_to=mine["id"])
    assert reply["reply_to"]["id"] == mine["id"]
    assert [n["type"] for n in await notifications(api, bob)] == ["mention", "mention"]
    assert (await unread(api, bob))["mentions"] == {str(chat): 1}  # his own message read the first one

    # reading up to the reply clears the count; deleting a mention withdraws it and its count
    status, _ = await api.call("POST", f"/api/chats/{chat}/read", {"message_id": reply["id"]}, token=bob["token"])
    assert status == 200
    assert "mentions" not in await unread(api, bob)
    again = await send(api, alice, chat, f"@{bob['username']} one more")
    assert (await unread(api, bob))["mentions"] == {str(chat): 1}
    status, _ = await api.call("DELETE", f"/api/chats/{chat}/messages/{again['id']}", token=alice["token"])
    assert status == 200
    state = await unread(api, bob)
    assert "mentions" not in state and state["chats"] == {}
    assert again["id"] not in [n.get("message_id") for n in await notifications(api, bob)]


@pytest.mark.gen_test(timeout=60)
async def test_a_mention_in_do_not_disturb_is_stored_silently(api, users):
    alice, bob = await users("alice", "bob")
    chat = await group(api, alice, bob)
    status, _ = await api.call("PUT", f"/api/chats/{chat}/mute", {"until": None}, token=bob["token"])
    status, prefs = await api.call("PATCH", "/api/me/preferences", {"dnd_until": "2099-01-01T00:00:00Z"},
                                   token=bob["token"])
    assert status == 200, prefs
    await send(api, alice, chat, f"@{bob['username']} urgent")
    [note] = await notifications(api, bob)
    assert note["type"] == "mention" and note["silent"] is True


@pytest.mark.gen_test(timeout=60)
async def test_at_most_max_mentions_names_are_looked_up(api, users):
    alice, bob = await users("alice", "bob")
    chat = await group(api, alice, bob)
    # names sort before bob's ("aaa…" < "bob_…"): past the limit, bob's is the one left as text
    others = [f"@aaa{i:03d}" for i in range(MAX_MENTIONS - 1)]
    at_limit = await send(api, alice, chat, " ".join(others + [f"@{bob['username']}"]))
    assert at_limit["mentions"] == [bob["id"]]
    past = await send(api, alice, chat, " ".join(others + ["@aaa999", f"@{bob['username']}"]))
    assert "mentions" not in past
