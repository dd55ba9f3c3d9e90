"""Webhooks and issue 25's message changes: ``message.created`` carries ``reply_to`` on a reply
(and only then), and change rows (edits, reactions) are never counted or previewed as unread
messages in ``notification.unseen``."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.support.webhook_receiver import SECRET, WebhookReceiver


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def config_overrides(receiver):
    return {"webhook_url": receiver.url, "webhook_secret": SECRET, "presence_grace": 0.5, "unseen_delay": 1.0,
            "webhook_timeout": 2.0}


async def send(api, user, chat_id, content, **extra) -> dict:
    status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content, **extra},
                                  token=user["token"])
    assert status == 201, body
    return body["message"]


@pytest.mark.gen_test(timeout=60)
async def test_reply_to_in_message_created_and_changes_out_of_unseen(api, users, ws_connect, receiver):
    alice, bob = await users("alice", "bob")
    status, body = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = body["chat"]["id"]
    stream = await ws_connect("/ws/notifications", bob["token"])
    await stream.recv_type("unread")
    await receiver.until(lambda r: r.of_type("user.online"))

    first = await send(api, alice, chat_id, "first")
    reply = await send(api, alice, chat_id, "and a reply", reply_to=first["id"])
    await receiver.until(lambda r: len(r.of_type("message.created")) == 2)
    created = {e["data"]["message"]["id"]: e["data"]["message"] for e in receiver.of_type("message.created")}
    assert "reply_to" not in created[first["id"]] and created[reply["id"]]["reply_to"] == first["id"]

    stream.close()
    await receiver.until(lambda r: r.of_type("user.offline"))
    later = await send(api, alice, chat_id, "are you there?")
    status, _ = await api.call("PUT", f"/api/chats/{chat_id}/messages/{later['id']}/reactions/{quote('👋')}",
                               token=alice["token"])
    assert status == 200
    status, _ = await api.call("PATCH", f"/api/chats/{chat_id}/messages/{later['id']}", {"content": "still there?"},
                               token=alice["token"])
    assert status == 200
    await receiver.until(lambda r: r.of_type("notification.unseen"), timeout=30)
    unseen = receiver.of_type("notification.unseen")[0]["data"]
    assert unseen["unread"]["total"] == 3
    assert [p["message_id"] for p in unseen["previews"]] == [later["id"], reply["id"], first["id"]]
    assert unseen["previews"][0]["content"] == "still there?"
