"""Web Push of a deleted message's notification (issue 25, item 1): the withdrawal is pushed with
the same tag and Topic, so the push service replaces an undelivered push and the service worker
closes the shown one (the payload names the withdrawn notification's id)."""
import pytest

from tests.support.push_service import PushServer, subscribe
from tests.support.streams import open_chat, send


@pytest.fixture
def config_overrides():
    return {"push_allow_http": True, "push_threads": 1}


@pytest.fixture
def push_server(io_loop):
    server = io_loop.run_sync(PushServer.start)
    yield server
    server.stop()


@pytest.mark.gen_test(timeout=60)
async def test_deleting_a_pushed_message_pushes_its_withdrawal_under_the_same_tag(api, users, push_server):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    keys = await subscribe(api, bob, push_server.endpoint("bob1"))
    await send(api, alice, chat_id, "meant for carol")
    ((_, first_headers, first),) = await push_server.wait_for(1)
    shown = keys.decrypt(first)
    status, history = await api.call("GET", f"/api/chats/{chat_id}/messages", token=alice["token"])
    message_id = history["messages"][-1]["id"]

    status, _ = await api.call("DELETE", f"/api/chats/{chat_id}/messages/{message_id}", token=alice["token"])
    assert status == 200
    _, headers, body = (await push_server.wait_for(2))[1]
    assert keys.decrypt(body) == {"type": "notification_withdrawn", "id": shown["id"], "title": "", "body": "",
                                  "chat_id": chat_id, "url": f"/chat/{chat_id}", "tag": f"chat-{chat_id}"}
    assert headers["Topic"] == first_headers["Topic"] == f"chat-{chat_id}"
