"""Web Push of mentions and replies (issue 25, items 3-4; acceptance 2): in a muted group a
mention or a reply to the user is pushed (it calls through the mute) while a plain message is
not; in Do Not Disturb both are stored silently and never pushed, and once Do Not Disturb ends
they are pushed again."""
import pytest

from tests.support.push_service import PushServer, subscribe
from tests.support.streams import send


@pytest.fixture
def config_overrides():
    # one push thread: pushes leave in the order they were queued
    return {"push_allow_http": True, "push_threads": 1}


@pytest.fixture
def push_server(io_loop):
    server = io_loop.run_sync(PushServer.start)
    yield server
    server.stop()


async def reply(api, user, chat_id, content, to) -> dict:
    status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content, "reply_to": to},
                                  token=user["token"])
    assert status == 201, body
    return body["message"]


async def notifications(api, user) -> dict:
    status, data = await api.call("GET", "/api/notifications", token=user["token"])
    assert status == 200, data
    return {n["content_preview"]: n for n in data["notifications"] if n.get("chat_id")}


@pytest.mark.gen_test(timeout=60)
async def test_mentions_and_replies_push_through_a_mute_but_not_in_do_not_disturb(api, users, push_server):
    alice, bob, carol = await users("alice", "bob", "carol")
    status, data = await api.call("POST", "/api/chats", {"member_ids": [bob["id"], carol["id"]], "title": "Team"},
                                  token=alice["token"])
    assert status == 201, data
    chat = data["chat"]["id"]
    status, _ = await api.call("PUT", f"/api/chats/{chat}/mute", {"until": None}, token=bob["token"])
    assert status == 200
    keys = await subscribe(api, bob, push_server.endpoint("bob"))

    plain = await send(api, alice, chat, "lunch at noon")  # muted: not pushed
    mention = await send(api, alice, chat, f"@{bob['username']} can you check?")
    mine = await send(api, bob, chat, "checked")
    answer = await reply(api, carol, chat, "thanks!", mine["id"])
    pushes = await push_server.wait_for(2)
    assert [keys.decrypt(body)["body"] for _, _, body in pushes] == [mention["content"], "thanks!"]

    status, prefs = await api.call("PATCH", "/api/me/preferences", {"dnd_until": "2999-01-01T00:00:00Z"},
                                   token=bob["token"])
    assert status == 200, prefs
    quiet_mention = await send(api, alice, chat, f"@{bob['username']} at night")
    quiet_reply = await reply(api, carol, chat, "also at night", mine["id"])
    status, _ = await api.call("PATCH", "/api/me/preferences", {"dnd_until": None}, token=bob["token"])
    assert status == 200
    marker = await send(api, alice, chat, f"@{bob['username']} good morning")
    pushes = await push_server.wait_for(3)
    # the two sent in Do Not Disturb were never pushed: the third push is the one after it
    assert keys.decrypt(pushes[2][2])["body"] == marker["content"]
    assert len(push_server.received) == 3

    stored = await notifications(api, bob)  # by content: every one here is different
    assert plain["content"] not in stored
    for m in (mention, answer, quiet_mention, quiet_reply, marker):
        assert stored[m["content"]]["type"] == "mention", m
    assert stored[quiet_mention["content"]]["silent"] is True and stored[quiet_reply["content"]]["silent"] is True
    assert "silent" not in stored[mention["content"]] and "silent" not in stored[marker["content"]]
