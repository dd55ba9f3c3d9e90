"""The sender's own unread count after sending; the operators' /api/stats; SSE refused during shutdown."""
import pytest

from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN


async def unread(api, user):
    status, body = await api.call("GET", "/api/unread", token=user["token"])
    assert status == 200
    return body


@pytest.mark.gen_test(timeout=60)
async def test_sending_reads_the_chat_up_to_the_own_message(api, users):
    alice, bob = await users("alice", "bob")
    _, chat = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = chat["chat"]["id"]
    for text in ("one", "two"):
        status, _ = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": text}, token=bob["token"])
        assert status == 201
    assert (await unread(api, alice))["chats"] == {str(chat_id): 2}
    await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": "reply"}, token=alice["token"])
    assert await unread(api, alice) == {"total": 0, "chats": {}}
    await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": "three"}, token=bob["token"])
    assert await unread(api, alice) == {"total": 1, "chats": {str(chat_id): 1}}
    _, listed = await api.call("GET", "/api/chats", token=alice["token"])
    assert listed["chats"][0]["unread_count"] == 1


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_sends_in_one_batch_keep_counts_exact(api, users, services):
    """Sends that share a group commit: each sender's count is the later messages of the other."""
    import asyncio
    alice, bob = await users("alice", "bob")
    _, chat = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = chat["chat"]["id"]
    sends = [api.call("POST", f"/api/chats/{chat_id}/messages", {"content": f"m{i}"},
                      token=(alice if i % 2 else bob)["token"]) for i in range(20)]
    results = await asyncio.gather(*sends)
    assert all(status == 201 for status, _ in results)
    ids = sorted((body["message"]["id"], body["message"]["sender_id"]) for _, body in results)
    for user, other in ((alice, bob), (bob, alice)):
        own = [mid for mid, sender in ids if sender == user["id"]]
        expected = sum(1 for mid, sender in ids if sender == other["id"] and mid > max(own))
        got = (await unread(api, user))["chats"].get(str(chat_id), 0)
        assert got == expected, (user["username"], ids)


@pytest.mark.gen_test(timeout=60)
async def test_stats_counts_streams_and_needs_the_service_token(api, users, ws_connect, http_port):
    alice, bob = await users("alice", "bob")
    status, body = await api.call("GET", "/api/stats", token=alice["token"])
    assert status == 403 and body["error"]["code"] == "invalid_service_token"
    ws = await ws_connect("/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    await sse.next_type("unread")
    chat = await ws_connect("/ws/chat", bob["token"])
    await chat.request({"type": "ping"}, "pong")
    status, body = await api.call("GET", "/api/stats", token=SERVICE_TOKEN)
    assert status == 200
    assert body["connections"] == {"total": 3, "chat": 1, "notifications": 2}
    assert body["notification_streams_by_user"] == {str(alice["id"]): 2}
    sse.close()


@pytest.mark.gen_test(timeout=60)
async def test_sse_refused_while_shutting_down(api, users, services, http_port):
    (alice,) = await users("alice")
    services.closing = True
    try:
        sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
        assert sse.status == 503
        assert '"shutting_down"' in await sse.body_text()
    finally:
        services.closing = False


@pytest.mark.gen_test(timeout=60)
async def test_stream_opened_during_a_commit_gets_the_committed_count(api, users, ws_connect, services):
    """A commit skips the unread frame of a user with no stream; one who subscribes meanwhile
    must still start from the committed count (its state is read after that commit)."""
    import asyncio
    import threading
    from tornado_app.services.delivery.events import NOTIFY
    alice, bob = await users("alice", "bob")
    _, chat = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = chat["chat"]["id"]
    await services.chat.members(chat_id)  # warm the caches: the send then queues at once
    await services.users.get(alice["id"])
    await services.preferences.chat_mutes(chat_id)  # mutes and DND are cached too
    await services.preferences.many([bob["id"]])
    await services.chat.quota.reserve(alice["id"])  # the day's message count is read once per user
    services.chat.quota.release(alice["id"])
    release = threading.Event()
    blocker = asyncio.ensure_future(services.dbx.write(lambda: release.wait(30)))  # the writer is busy
    await asyncio.sleep(0.05)
    send = asyncio.ensure_future(services.chat.send_message(alice["id"], {"chat_id": chat_id, "content": "hi"}))
    for _ in range(5):
        await asyncio.sleep(0)
    assert services.chat.writer.queued == 0 and not send.done()  # chosen its listeners, waiting
    ws = await ws_connect("/ws/notifications", bob["token"])
    for _ in range(500):  # the stream subscribed and asked for its unread state
        if services.registry.count(NOTIFY) == 1:
            break
        await asyncio.sleep(0.01)
    release.set()
    await blocker
    await send
    first = await ws.recv_type("unread")
    assert first["total"] == 1 and first["chats"] == {str(chat_id): 1}

