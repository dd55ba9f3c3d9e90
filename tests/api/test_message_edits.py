"""Edit and delete for everyone, and reactions (issue 25, items 1 and 2; acceptance 1 and 2).

Every route and frame with its errors; the events live and on resume on /ws/chat, /sse/chat and
/poll/chat (exactly once); the erased content read back with SQL and gone from search; the
withdrawn notification gone from the list with the unread count right; reaction counts and the
emoji rule at and past its byte limit. CI runs tests/api on SQLite and PostgreSQL.
"""
import asyncio
import json
from urllib.parse import quote

import pytest

from models import open_database
from tests.support.clients import SSEClient, WSClient
from tornado_app.services.chat.edits import MAX_REACTION_USERS
from tornado_app.services.chat.emoji import MAX_EMOJI_BYTES


async def private_chat(api, a, b) -> int:
    status, data = await api.call("POST", "/api/chats", {"user_id": b["id"]}, token=a["token"])
    assert status == 200, data
    return data["chat"]["id"]


async def send(api, user, chat_id, content) -> int:
    status, data = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content}, token=user["token"])
    assert status == 201, data
    return data["message"]["id"]


async def history(api, user, chat_id) -> dict:
    status, data = await api.call("GET", f"/api/chats/{chat_id}/messages", token=user["token"])
    assert status == 200, data
    return {m["id"]: m for m in data["messages"]}


def error_code(data) -> str:
    return data["error"]["code"]


def stored_content(database_url, message_id):
    db = open_database(database_url)
    with db.connection_context():
        row = db.execute_sql('SELECT content, deleted_at FROM "message" WHERE id = %s' % int(message_id)).fetchone()
    db.close()
    return row


@pytest.mark.gen_test(timeout=60)
async def test_edit_and_delete_over_http_with_their_errors(api, users, database_url):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat = await private_chat(api, alice, bob)
    mid = await send(api, alice, chat, "the meeting is at 10 with the secret word zebra")
    path = f"/api/chats/{chat}/messages/{mid}"

    status, data = await api.call("PATCH", path, {"content": "nope"}, token=bob["token"])
    assert (status, error_code(data)) == (403, "not_sender")
    status, data = await api.call("PATCH", path, {"content": "nope"}, token=carol["token"])
    assert (status, error_code(data)) == (403, "not_a_member")
    status, data = await api.call("PATCH", f"/api/chats/{chat}/messages/{mid + 1000}", {"content": "x"},
                                  token=alice["token"])
    assert (status, error_code(data)) == (404, "message_not_found")
    status, data = await api.call("PATCH", path, {"content": "  "}, token=alice["token"])
    assert (status, error_code(data)) == (400, "empty_content")

    status, edited = await api.call("PATCH", path, {"content": "the meeting is at 11 with zebra"}, token=alice["token"])
    assert status == 200, edited
    assert edited["type"] == "message_edited" and edited["message_id"] == mid and edited["event_id"] > mid
    shown = (await history(api, bob, chat))[mid]
    assert shown["content"] == "the meeting is at 11 with zebra" and shown["edited_at"] == edited["edited_at"]
    assert list(await history(api, bob, chat)) == [mid]  # the change row is no message

    status, data = await api.call("DELETE", path, token=bob["token"])
    assert (status, error_code(data)) == (403, "not_sender")
    status, deleted = await api.call("DELETE", path, token=alice["token"])
    assert status == 200 and deleted["type"] == "message_deleted" and deleted["event_id"] > edited["event_id"]
    status, again = await api.call("DELETE", path, token=alice["token"])
    assert status == 200 and "event_id" not in again  # idempotent: no second event
    tomb = (await history(api, bob, chat))[mid]
    assert tomb["deleted"] is True and "content" not in tomb and "edited_at" not in tomb
    content, deleted_at = stored_content(database_url, mid)
    assert content == "" and deleted_at is not None
    status, found = await api.call("GET", "/api/search?q=zebra", token=bob["token"])
    assert status == 200 and found["results"] == []
    status, data = await api.call("PATCH", path, {"content": "back"}, token=alice["token"])
    assert (status, error_code(data)) == (409, "message_deleted")


@pytest.mark.parametrize("config_overrides", [{"edit_window": 2}])
@pytest.mark.gen_test(timeout=60)
async def test_edit_within_and_past_the_window_but_delete_has_none(api, users):
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    mid = await send(api, alice, chat, "typo")
    sent = asyncio.get_running_loop().time()
    status, data = await api.call("PATCH", f"/api/chats/{chat}/messages/{mid}", {"content": "fixed"},
                                  token=alice["token"])
    assert status == 200, data  # within the 2 s window
    await asyncio.sleep(max(0.0, sent + 2.3 - asyncio.get_running_loop().time()))
    status, data = await api.call("PATCH", f"/api/chats/{chat}/messages/{mid}", {"content": "fixed again"},
                                  token=alice["token"])
    assert (status, error_code(data)) == (403, "edit_window_passed")
    status, data = await api.call("DELETE", f"/api/chats/{chat}/messages/{mid}", token=alice["token"])
    assert status == 200, data


@pytest.mark.gen_test(timeout=60)
async def test_ws_frames_live_and_every_transport_resumes_each_change_once(api, users, ws_url, http_port):
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    kept = await send(api, alice, chat, "first version")
    gone = await send(api, alice, chat, "sent to the wrong person")

    sender = await WSClient.connect(ws_url, "/ws/chat", alice["token"])
    live = await WSClient.connect(ws_url, "/ws/chat", bob["token"])
    error = await sender.request({"type": "edit_message", "chat_id": chat, "message_id": kept, "content": ""},
                                 "error")
    assert error["code"] == "empty_content"
    error = await live.request({"type": "delete_message", "chat_id": chat, "message_id": kept}, "error")
    assert error["code"] == "not_sender"
    error = await live.request({"type": "react", "chat_id": chat, "message_id": kept, "emoji": "ab"}, "error")
    assert error["code"] == "invalid_emoji"

    await sender.send({"type": "edit_message", "chat_id": chat, "message_id": kept, "content": "second version"})
    edited = await live.recv_type("message_edited")
    assert (edited["message_id"], edited["content"]) == (kept, "second version")
    await live.send({"type": "react", "chat_id": chat, "message_id": kept, "emoji": "👍"})
    reaction = await sender.recv_type("reaction")
    assert (reaction["user_id"], reaction["emoji"], reaction["added"], reaction["count"]) == (bob["id"], "👍", True, 1)
    await live.send({"type": "unreact", "chat_id": chat, "message_id": kept, "emoji": "👍"})
    assert (await sender.recv_type("reaction"))["added"] is False
    await sender.send({"type": "delete_message", "chat_id": chat, "message_id": gone})
    deleted = await live.recv_type("message_deleted")
    assert deleted["message_id"] == gone
    sender.close()
    live.close()
    order = ["message_edited", "reaction", "reaction", "message_deleted"]

    def check(frames):
        changes = [f for f in frames if f.get("type") in order]
        assert [f["type"] for f in changes] == order
        assert len({f["event_id"] for f in changes}) == 4  # each once
        assert changes[0]["content"] == "second version" and changes[3]["message_id"] == gone
        gone_frame = [f for f in frames if f.get("type") == "message" and f["message"]["id"] == gone]
        assert gone_frame == []  # before the cursor

    # WebSocket resume from the last message id bob had seen
    ws = await WSClient.connect(ws_url, "/ws/chat", bob["token"], last_event_id=str(gone))
    frames = [await ws.recv_type(*order) for _ in order]
    check(frames)
    ws.close()

    # SSE resume
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", bob["token"], last_event_id=f"{gone}-0")
    frames = [await sse.next_type(*order) for _ in order]
    check(frames)
    sse.writer.close()

    # long-poll resume, and the next poll from its answer gets nothing twice
    status, answer = await api.call("GET", f"/poll/chat?last_event_id={gone}-0&timeout=0", token=bob["token"])
    assert status == 200, answer
    check(answer["events"])
    status, after = await api.call("GET", f"/poll/chat?last_event_id={answer['last_event_id']}&timeout=0",
                                   token=bob["token"])
    assert status == 200 and [e for e in after["events"] if e.get("type") in order] == []

    # a replay of an edit later deleted never brings the erased text back
    status, answer = await api.call("DELETE", f"/api/chats/{chat}/messages/{kept}", token=alice["token"])
    status, answer = await api.call("GET", f"/poll/chat?last_event_id={gone}-0&timeout=0", token=bob["token"])
    replayed = [e for e in answer["events"] if e.get("type") == "message_edited"]
    assert replayed and "content" not in replayed[0] and replayed[0]["deleted"] is True
    assert "second version" not in json.dumps(answer)


@pytest.mark.gen_test(timeout=60)
async def test_delete_withdraws_the_notification_and_edit_updates_its_preview(api, users):
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    first = await send(api, alice, chat, "hello bob")
    second = await send(api, alice, chat, "wrong chat, sorry")

    async def notes():
        status, data = await api.call("GET", "/api/notifications", token=bob["token"])
        assert status == 200, data
        return {n["chat_id"] and n.get("content_preview"): n for n in data["notifications"]}

    assert set(await notes()) == {"hello bob", "wrong chat, sorry"}
    status, unread = await api.call("GET", "/api/unread", token=bob["token"])
    assert unread["total"] == 2 and unread["chats"] == {str(chat): 2}

    status, _ = await api.call("PATCH", f"/api/chats/{chat}/messages/{first}", {"content": "hello Bob!"},
                               token=alice["token"])
    assert status == 200
    status, _ = await api.call("DELETE", f"/api/chats/{chat}/messages/{second}", token=alice["token"])
    assert status == 200
    assert set(await notes()) == {"hello Bob!"}
    status, unread = await api.call("GET", "/api/unread", token=bob["token"])
    assert unread["total"] == 1 and unread["chats"] == {str(chat): 1}
    status, chats = await api.call("GET", "/api/chats", token=bob["token"])
    assert chats["chats"][0]["unread_count"] == 1


@pytest.mark.gen_test(timeout=60)
async def test_reactions_counts_idempotence_and_the_emoji_rule(api, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat = await private_chat(api, alice, bob)
    mid = await send(api, alice, chat, "lunch?")

    def path(emoji):
        return f"/api/chats/{chat}/messages/{mid}/reactions/{quote(emoji)}"

    status, first = await api.call("PUT", path("👍"), token=bob["token"])
    assert status == 200 and first["changed"] is True and first["count"] == 1
    status, repeat = await api.call("PUT", path("👍"), token=bob["token"])
    assert status == 200 and repeat["changed"] is False
    for user, emoji in ((alice, "👍"), (alice, "🇫🇷"), (bob, "👩🏻‍❤️‍💋‍👨🏼")):
        status, data = await api.call("PUT", path(emoji), token=user["token"])
        assert status == 200, data
    shown = (await history(api, alice, chat))[mid]["reactions"]
    assert shown == [{"emoji": "👍", "count": 2, "user_ids": [bob["id"], alice["id"]]},
                     {"emoji": "🇫🇷", "count": 1, "user_ids": [alice["id"]]},
                     {"emoji": "👩🏻‍❤️‍💋‍👨🏼", "count": 1, "user_ids": [bob["id"]]}]
    status, data = await api.call("DELETE", path("👍"), token=bob["token"])
    assert status == 200 and data["changed"] is True and data["count"] == 1
    status, data = await api.call("DELETE", path("👍"), token=bob["token"])
    assert status == 200 and data["changed"] is False

    at_limit = "👨‍👩‍👧‍👦" + "\u200d👍" * 3  # 25 + 3 * 7 = 46 bytes: one ZWJ sequence
    past = at_limit + "\u200d👍"
    assert len(at_limit.encode()) <= MAX_EMOJI_BYTES < len(past.encode())
    status, data = await api.call("PUT", path(at_limit), token=bob["token"])
    assert status == 200, data
    for bad in (past, "a", "👍👍", "👍 "):
        status, data = await api.call("PUT", path(bad), token=bob["token"])
        assert (status, error_code(data)) == (400, "invalid_emoji"), bad
    status, data = await api.call("PUT", path("👍"), token=carol["token"])
    assert (status, error_code(data)) == (403, "not_a_member")
    status, data = await api.call("PUT", f"/api/chats/{chat}/messages/{mid + 999}/reactions/{quote('👍')}",
                                  token=bob["token"])
    assert (status, error_code(data)) == (404, "message_not_found")
    await api.call("DELETE", f"/api/chats/{chat}/messages/{mid}", token=alice["token"])
    status, data = await api.call("PUT", path("👍"), token=bob["token"])
    assert (status, error_code(data)) == (409, "message_deleted")
    assert "reactions" not in (await history(api, alice, chat))[mid]


@pytest.mark.gen_test(timeout=60)
async def test_notification_streams_hear_of_the_update_and_the_withdrawal(api, users, ws_url, http_port):
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    notes = await WSClient.connect(ws_url, "/ws/notifications", bob["token"])
    await notes.recv_type("unread")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", bob["token"])
    await sse.next_type("unread")
    mid = await send(api, alice, chat, "draft")
    note = await notes.recv_type("new_message")
    await sse.next_type("message")

    status, _ = await api.call("PATCH", f"/api/chats/{chat}/messages/{mid}", {"content": "final"}, token=alice["token"])
    updated = await notes.recv_type("notification_updated")
    assert (updated["notification_id"], updated["content_preview"]) == (note["id"], "final")
    assert (await sse.next_type("message_edited"))["content"] == "final"
    status, _ = await api.call("DELETE", f"/api/chats/{chat}/messages/{mid}", token=alice["token"])
    withdrawn = await notes.recv_type("notification_withdrawn")
    assert (withdrawn["notification_id"], withdrawn["message_id"]) == (note["id"], mid)
    assert (await notes.recv_type("unread"))["total"] == 0
    assert (await sse.next_type("message_deleted"))["message_id"] == mid
    notes.close()
    sse.writer.close()


@pytest.mark.gen_test(timeout=120)
async def test_who_reacted_is_capped_and_the_count_is_not(api, users):
    people = await users(*[f"u{i}" for i in range(MAX_REACTION_USERS + 1)])
    owner = people[0]
    status, data = await api.call("POST", "/api/chats", {"member_ids": [u["id"] for u in people[1:]], "title": "All"},
                                  token=owner["token"])
    chat = data["chat"]["id"]
    mid = await send(api, owner, chat, "vote")
    for user in people[:MAX_REACTION_USERS]:
        status, _ = await api.call("PUT", f"/api/chats/{chat}/messages/{mid}/reactions/{quote('👍')}", token=user["token"])
        assert status == 200
    [at] = (await history(api, owner, chat))[mid]["reactions"]
    assert at["count"] == MAX_REACTION_USERS and at["user_ids"] == [u["id"] for u in people[:MAX_REACTION_USERS]]
    status, _ = await api.call("PUT", f"/api/chats/{chat}/messages/{mid}/reactions/{quote('👍')}",
                               token=people[-1]["token"])
    [past] = (await history(api, owner, chat))[mid]["reactions"]
    assert past["count"] == MAX_REACTION_USERS + 1 and past["user_ids"] == at["user_ids"]


@pytest.mark.gen_test(timeout=60)
async def test_a_deleted_messages_attachments_are_detached_and_no_longer_linked(api, users, database_url):
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    status, up = await api.call("POST", "/api/uploads?filename=notes.txt", raw=b"private notes\n",
                                token=alice["token"], headers={"Content-Type": "application/octet-stream"})
    assert status == 201, up
    status, data = await api.call("POST", f"/api/chats/{chat}/messages", {"content": "", "attachments": [up["id"]]},
                                  token=alice["token"])
    assert status == 201 and data["message"]["attachments"][0]["id"] == up["id"]
    mid = data["message"]["id"]
    status, _ = await api.call("GET", f"/api/uploads/{up['id']}/link", token=bob["token"])
    assert status == 200

    status, _ = await api.call("DELETE", f"/api/chats/{chat}/messages/{mid}", token=alice["token"])
    assert status == 200
    assert "attachments" not in (await history(api, bob, chat))[mid]
    status, data = await api.call("GET", f"/api/uploads/{up['id']}/link", token=bob["token"])
    assert status in (403, 404), data
    db = open_database(database_url)
    with db.connection_context():
        row = db.execute_sql('SELECT message_id, chat_id FROM "upload" WHERE id = %s' % db.param, (up["id"],)).fetchone()
    db.close()
    assert row == (None, None)  # an orphan now: the sweep frees the file


@pytest.mark.gen_test(timeout=60)
async def test_deletes_at_once_make_one_event_and_one_correction(api, users):
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    keep = await send(api, alice, chat, "stays")
    mid = await send(api, alice, chat, "goes")
    answers = await asyncio.gather(*[api.call("DELETE", f"/api/chats/{chat}/messages/{mid}", token=alice["token"])
                                     for _ in range(4)])
    assert [status for status, _ in answers] == [200] * 4
    assert sum("event_id" in data for _, data in answers) == 1
    status, unread = await api.call("GET", "/api/unread", token=bob["token"])
    assert unread["chats"] == {str(chat): 1}
    status, data = await api.call("GET", f"/poll/chat?last_event_id={keep}-0&timeout=0", token=bob["token"])
    assert [e["type"] for e in data["events"] if e.get("type", "").startswith("message")] == ["message", "message_deleted"]


@pytest.mark.gen_test(timeout=60)
async def test_clients_offline_during_the_changes_get_them_on_resume_on_each_transport(api, users, ws_url,
                                                                                        http_port):
    """Bob reads on WebSocket, SSE and long-polling, goes offline on all three; Alice edits,
    reacts and deletes meanwhile; each transport, resumed from the cursor it had itself, brings
    each change once, in order, and none of the messages it had already."""
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    kept = await send(api, alice, chat, "see you at 10")
    gone = await send(api, alice, chat, "my password is hunter2")

    # each transport reads up to ``gone`` live and keeps its own cursor
    ws = await WSClient.connect(ws_url, "/ws/chat", bob["token"], last_event_id=str(kept - 1))
    while (await ws.recv_type("message"))["message"]["id"] != gone:
        pass
    ws.close()
    ws_cursor = str(gone)  # a /ws/chat client resumes from the last message id it saw
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", bob["token"], last_event_id=f"{kept - 1}-0")
    while (await sse.next_type("message"))["message"]["id"] != gone:
        pass
    sse_cursor = sse.last_event_id
    sse.writer.close()
    status, answer = await api.call("GET", f"/poll/chat?last_event_id={kept - 1}-0&timeout=0", token=bob["token"])
    assert status == 200 and gone in [e["message"]["id"] for e in answer["events"] if e.get("type") == "message"]
    poll_cursor = answer["last_event_id"]

    # offline everywhere: the changes happen
    await asyncio.sleep(0.2)
    status, edited = await api.call("PATCH", f"/api/chats/{chat}/messages/{kept}", {"content": "see you at 11"},
                                    token=alice["token"])
    assert status == 200, edited
    status, reacted = await api.call("PUT", f"/api/chats/{chat}/messages/{kept}/reactions/{quote('👍')}",
                                     token=alice["token"])
    assert status == 200, reacted
    status, deleted = await api.call("DELETE", f"/api/chats/{chat}/messages/{gone}", token=alice["token"])
    assert status == 200, deleted
    order = ["message_edited", "reaction", "message_deleted"]
    ids = [edited["event_id"], reacted["event_id"], deleted["event_id"]]

    def check(events):
        assert [e.get("type") for e in events if e.get("type") in order] == order
        changes = [e for e in events if e.get("type") in order]
        assert [e["event_id"] for e in changes] == ids
        assert changes[0]["content"] == "see you at 11" and changes[2]["message_id"] == gone
        assert not [e for e in events if e.get("type") == "message"]  # nothing it had is sent again
        assert "hunter2" not in json.dumps(events)

    ws = await WSClient.connect(ws_url, "/ws/chat", bob["token"], last_event_id=ws_cursor)
    got = [await ws.recv_type(*order, "message") for _ in order]
    check(got)
    ws.close()
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", bob["token"], last_event_id=sse_cursor)
    got = [await sse.next_type(*order, "message") for _ in order]
    check(got)
    assert sse.last_event_id.split("-")[0] == str(deleted["event_id"])  # its cursor moved past the changes
    sse.writer.close()
    status, answer = await api.call("GET", f"/poll/chat?last_event_id={poll_cursor}&timeout=0", token=bob["token"])
    assert status == 200, answer
    check(answer["events"])
    status, again = await api.call("GET", f"/poll/chat?last_event_id={answer['last_event_id']}&timeout=0",
                                   token=bob["token"])
    assert [e for e in again["events"] if e.get("type") in order] == []


@pytest.mark.gen_test(timeout=60)
async def test_a_reaction_is_an_event_never_a_notification(api, users, ws_url):
    """Alice's message gets Bob's reaction: her chat stream has the ``reaction`` event, her
    notification stream nothing, her notifications and unread counts stay as they were."""
    alice, bob = await users("alice", "bob")
    chat = await private_chat(api, alice, bob)
    mid = await send(api, alice, chat, "shipped!")
    notes = await WSClient.connect(ws_url, "/ws/notifications", alice["token"])
    before = await notes.recv_type("unread")
    chat_ws = await WSClient.connect(ws_url, "/ws/chat", alice["token"])
    status, before_list = await api.call("GET", "/api/notifications", token=alice["token"])
    assert status == 200

    status, data = await api.call("PUT", f"/api/chats/{chat}/messages/{mid}/reactions/{quote('🎉')}",
                                  token=bob["token"])
    assert status == 200, data
    event = await chat_ws.recv_type("reaction")
    assert (event["message_id"], event["user_id"], event["emoji"]) == (mid, bob["id"], "🎉")
    # then a message from Bob: the first frame on her notification stream is its notification
    await send(api, bob, chat, "marker")
    seen = []
    while not seen or seen[-1].get("content_preview") != "marker":
        seen.append(await notes.recv_type("new_message", "mention", "notification_updated", "unread"))
    assert [f["type"] for f in seen] == ["new_message"], seen  # nothing (not even an unread) for the reaction
    assert before["total"] == 0
    status, after_list = await api.call("GET", "/api/notifications", token=alice["token"])
    assert [n["content_preview"] for n in after_list["notifications"]] == \
        ["marker"] + [n["content_preview"] for n in before_list["notifications"]]
    status, unread = await api.call("GET", "/api/unread", token=alice["token"])
    assert unread["total"] == 1 and unread["chats"] == {str(chat): 1}
    notes.close()
    chat_ws.close()
