"""The group-commit writer: a send that cannot be stored fails alone, not with its whole batch."""
import asyncio
import json

import pytest

from tornado_app.errors import Unavailable
from tornado_app.services.chat.service import SendRequest


def request(chat_id, sender, content, client_id=None):
    """A SendRequest from ``sender`` (a user dict) with no notifications."""
    return SendRequest(chat_id=chat_id, sender_id=sender["id"], sender_name=sender["display_name"],
                       content=content, message_type="text_message", client_id=client_id,
                       notify_ids=[], others=[])


@pytest.mark.gen_test(timeout=60)
async def test_a_failing_send_does_not_sink_its_batch(services):
    alice = await services.users.register({"username": "alice", "password": "password123"})
    bob = await services.users.register({"username": "bob", "password": "password123"})
    chat = await services.chat.open_private_chat(alice["id"], bob["id"])
    writer = services.chat.writer
    # The handlers refuse such text at the door; the writer must still isolate a send that
    # the database refuses (a lone surrogate cannot be encoded for any database).
    results = await asyncio.gather(
        writer.submit(request(chat["id"], alice, "before", "w-1")),
        writer.submit(request(chat["id"], bob, "bad \ud800 text", "w-2")),
        writer.submit(request(chat["id"], bob, "after", "w-3")),
        writer.submit(request(chat["id"], alice, "before", "w-1")),
        return_exceptions=True)
    assert isinstance(results[1], Unavailable) and results[1].code == "store_failed"
    assert results[0].created and results[2].created
    assert results[3].message == results[0].message and not results[3].created
    history = await services.chat.history(alice["id"], chat["id"])
    assert [(m["content"], m["client_id"]) for m in history] == [("before", "w-1"), ("after", "w-3")]
    assert (await services.chat.unread(bob["id"]))["total"] == 0  # bob's send read the chat
    unread = await services.chat.unread(alice["id"])
    assert unread["total"] == 1  # bob's stored send counts; the failed one left no counter behind


@pytest.mark.gen_test(timeout=60)
async def test_one_storage_path_counts_alike_whole_or_send_by_send(services):
    """A batch stored whole and the same sends stored one by one (a refused send in the batch)
    leave the same counters: each member of the chat but the sender gets every new message as
    unread, counted from the database's members, even ones the send was not checked against.
    """
    alice = await services.users.register({"username": "alice", "password": "password123"})
    bob = await services.users.register({"username": "bob", "password": "password123"})
    carol = await services.users.register({"username": "carol", "password": "password123"})
    writer = services.chat.writer
    for refused in (False, True):
        group = await services.chat.create_group(alice["id"], [bob["id"], carol["id"]], "Team")
        cid = group["id"]
        sends = [request(cid, bob, "one"), request(cid, bob, "two"), request(cid, carol, "three")]
        if refused:  # the database refuses this one: the batch is stored again send by send
            sends.insert(1, request(cid, carol, "bad \ud800 text"))
        # ``others`` is left empty (as if the list had been read before anyone joined)
        results = await asyncio.gather(*(writer.submit(s) for s in sends), return_exceptions=True)
        assert sum(1 for r in results if isinstance(r, Unavailable)) == (1 if refused else 0)
        assert [r.message["content"] for r in results if not isinstance(r, Exception)] == ["one", "two", "three"]
        unread = {u["id"]: (await services.chat.unread(u["id"]))["chats"].get(str(cid), 0)
                  for u in (alice, bob, carol)}
        # alice: all three; bob: carol's later one; carol: none (her send read the chat)
        assert unread == {alice["id"]: 3, bob["id"]: 1, carol["id"]: 0}, (refused, unread)
        history = await services.chat.history(alice["id"], cid)
        assert [m["content"] for m in history] == ["one", "two", "three"]
        summary = (await services.chat.chat_summary(alice["id"], cid))
        assert summary["last_message"]["content"] == "three" and summary["unread_count"] == 3


@pytest.mark.gen_test(timeout=60)
async def test_a_message_has_one_shape_whichever_path_returns_it(services):
    """The answer to a send, its resend (same client_id), history, replay and search give the
    same message: the quoted preview, mentions, reactions in the shape of history (docs/protocol.md).
    """
    alice = await services.users.register({"username": "alice", "password": "password123"})
    bob = await services.users.register({"username": "bob", "password": "password123", "display_name": "Bob B"})
    chat = await services.chat.open_private_chat(alice["id"], bob["id"])
    cid = chat["id"]
    first = await services.chat.send_message(bob["id"], {"chat_id": cid, "content": "where is the wombat"})
    body = {"chat_id": cid, "content": "@bob the wombat is here", "client_id": "r-1", "reply_to": first["id"]}
    sent = await services.chat.send_message(alice["id"], body)
    assert sent["reply_to"] == {"id": first["id"], "sender_id": bob["id"], "sender_name": "Bob B",
                                "content_preview": "where is the wombat"}
    assert sent["mentions"] == [bob["id"]]
    assert await services.chat.send_message(alice["id"], body) == sent  # a resend: the stored message
    (history,) = [m for m in await services.chat.history(bob["id"], cid) if m["id"] == sent["id"]]
    assert history == sent
    replayed = dict(await services.chat.replay_messages(bob["id"], first["id"], 10))
    assert json.loads(replayed[sent["id"]]) == {"type": "message", "message": sent}
    found = await services.search.search(bob["id"], "wombat here")
    assert [r["id"] for r in found["results"]] == [sent["id"]]
    result = found["results"][0]
    assert result.pop("highlight") and result == sent
    await services.chat.changes.react(bob["id"], cid, sent["id"], "👍", True)
    (history,) = [m for m in await services.chat.history(bob["id"], cid) if m["id"] == sent["id"]]
    result = (await services.search.search(bob["id"], "wombat here"))["results"][0]
    result.pop("highlight")
    assert history["reactions"] == [{"emoji": "👍", "count": 1, "user_ids": [bob["id"]]}] and result == history
