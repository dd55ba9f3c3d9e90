"""/ws/notifications and /sse/notifications: shape, smart notifications, resume, unread state.

Acceptance points 1, 2, 3, 4 and 10 of the notification-streams issue.
"""
import datetime
import re

import pytest

from tests.support.clients import SSEClient
from tests.support.streams import (NOTIFICATION_KEYS, is_id, of_type, open_chat, send, sentinel,
                                        sse_until, wait_until, ws_until)

LONG = ("Hey, are you available for a quick call this afternoon about the quarterly report "
        "and the migration plan that we discussed yesterday with the whole team?")


async def sse_connect(http_port, path, token, **kw):
    """An SSE stream that answered 200 (its first event is read by the caller)."""
    sse = await SSEClient.connect("127.0.0.1", http_port, path, token, **kw)
    assert sse.status == 200, sse.status
    return sse


# 1 ------------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_one_notification_with_documented_shape_on_ws_and_sse(api, ws_connect, users, http_port):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    ws = await ws_connect("/ws/notifications", bob["token"])
    await ws.recv_type("unread")
    sse = await sse_connect(http_port, "/sse/notifications", bob["token"])
    await sse.next_type("unread")

    message = await send(api, alice, chat_id, LONG)
    probe = await sentinel(api, bob)

    ws_frames = await ws_until(ws, is_id(probe["id"]))
    sse_events = await sse_until(sse, is_id(probe["id"]))
    sse.close()
    for frames in (ws_frames, [e["data"] for e in sse_events]):
        notes = of_type(frames, "new_message")
        assert len(notes) == 1, frames  # exactly one, shown by the sentinel after it
        n = notes[0]
        assert set(n) == NOTIFICATION_KEYS
        assert n["type"] == "new_message" and n["message"] == "New message from Alice"
        assert (n["chat_id"], n["sender_id"], n["sender_name"]) == (chat_id, alice["id"], "Alice")
        assert n["message_type"] == "text_message"
        assert n["timestamp"] == message["created_at"] and n["timestamp"].endswith("Z")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", n["timestamp"])
        preview = n["content_preview"]
        assert preview.endswith("...") and LONG not in preview
        body = preview[:-3]
        assert 50 <= len(body) <= 100 and LONG.startswith(body)
        assert LONG[len(body)] == " ", "cut on a word boundary"
        # nothing but unread state between the notification and the sentinel
        assert [f["type"] for f in frames[frames.index(n) + 1:-1]] == ["unread"] * (len(frames) - frames.index(n) - 2)
    ws_note = of_type(ws_frames, "new_message")[0]
    sse_note = [e for e in sse_events if e["data"].get("type") == "new_message"][0]
    assert sse_note["data"] == ws_note and sse_note["id"] == str(ws_note["id"])
    # one stored notification for the message, whatever the number of streams
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    assert [n["id"] for n in history["notifications"] if n["type"] == "new_message"] == [ws_note["id"]]


@pytest.mark.gen_test(timeout=60)
async def test_short_message_preview_is_whole(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    ws = await ws_connect("/ws/notifications", bob["token"])
    await ws.recv_type("unread")
    await send(api, alice, chat_id, "Hey,   are you\nthere?")
    note = await ws.recv_type("new_message")
    assert note["content_preview"] == "Hey, are you there?"


# 2 ------------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=90)
async def test_active_in_chat_gets_message_not_notification(api, ws_connect, users, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    chat_tab = await ws_connect("/ws/chat", bob["token"])
    assert (await chat_tab.request({"type": "join_chat", "chat_id": chat_id}, "joined"))["chat_id"] == chat_id
    notes = await ws_connect("/ws/notifications", bob["token"])
    await notes.recv_type("unread")

    m1 = await send(api, alice, chat_id, "while you are looking")
    assert (await chat_tab.recv_type("message"))["message"]["id"] == m1["id"]
    probe = await sentinel(api, bob)
    frames = await ws_until(notes, is_id(probe["id"]))
    assert of_type(frames, "new_message") == [], frames
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    assert history["notifications"] == []  # nothing stored either (test probes are never listed)

    # leave_chat: the next message notifies again
    await chat_tab.request({"type": "leave_chat", "chat_id": chat_id}, "left")
    m2 = await send(api, alice, chat_id, "after leaving")
    note = await notes.recv_type("new_message")
    assert note["content_preview"] == "after leaving"
    assert (await chat_tab.recv_type("message"))["message"]["id"] == m2["id"]

    # join again, then close the tab: presence ends with the connection
    await chat_tab.request({"type": "join_chat", "chat_id": chat_id}, "joined")
    assert services.registry.is_active(bob["id"], chat_id)
    chat_tab.close()
    await wait_until(lambda: not services.registry.is_active(bob["id"], chat_id), what="presence to end")
    await send(api, alice, chat_id, "after closing")
    note = await notes.recv_type("new_message")
    assert note["content_preview"] == "after closing"


@pytest.mark.gen_test(timeout=90)
async def test_presence_on_one_of_two_tabs_is_enough(api, ws_connect, users, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    tab1 = await ws_connect("/ws/chat", bob["token"])
    tab2 = await ws_connect("/ws/chat", bob["token"])
    await tab1.request({"type": "join_chat", "chat_id": chat_id}, "joined")
    await tab2.request({"type": "join_chat", "chat_id": chat_id}, "joined")
    notes = await ws_connect("/ws/notifications", bob["token"])
    await notes.recv_type("unread")
    await tab1.request({"type": "leave_chat", "chat_id": chat_id}, "left")
    await send(api, alice, chat_id, "tab2 still looks")
    probe = await sentinel(api, bob)
    assert of_type(await ws_until(notes, is_id(probe["id"])), "new_message") == []
    tab2.close()
    await wait_until(lambda: not services.registry.is_active(bob["id"], chat_id), what="presence to end")
    await send(api, alice, chat_id, "nobody looks")
    assert (await notes.recv_type("new_message"))["content_preview"] == "nobody looks"


# 3 ------------------------------------------------------------------------------------------

async def missed_while_offline(api, ws_connect, alice, bob, chat_id, count=3):
    """Bob sees one notification, goes offline, misses ``count``; returns (last seen id, missed ids)."""
    ws = await ws_connect("/ws/notifications", bob["token"])
    await ws.recv_type("unread")
    await send(api, alice, chat_id, "seen")
    seen = await ws.recv_type("new_message")
    ws.close()
    for i in range(count):
        await send(api, alice, chat_id, f"missed {i}")
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    missed = [n["id"] for n in history["notifications"] if n["id"] > seen["id"]][::-1]
    assert len(missed) == count  # stored while offline
    return seen["id"], missed


@pytest.mark.gen_test(timeout=90)
async def test_ws_resume_replays_exactly_the_missed_then_live(api, ws_connect, users):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    last, missed = await missed_while_offline(api, ws_connect, alice, bob, chat_id)
    ws = await ws_connect("/ws/notifications", bob["token"], last_event_id=str(last))
    first = await ws.recv()
    assert first["type"] == "unread" and first["total"] == 4
    replayed = [await ws.recv() for _ in missed]
    assert [n["id"] for n in replayed] == missed
    assert [n["content_preview"] for n in replayed] == ["missed 0", "missed 1", "missed 2"]
    await send(api, alice, chat_id, "live")
    frames = await ws_until(ws, lambda f: f.get("type") == "new_message")
    assert frames[-1]["content_preview"] == "live" and frames[-1]["id"] > missed[-1]
    probe = await sentinel(api, bob)
    assert of_type(await ws_until(ws, is_id(probe["id"])), "new_message") == []


@pytest.mark.gen_test(timeout=90)
async def test_sse_resume_from_last_event_id_header(api, ws_connect, users, http_port):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    last, missed = await missed_while_offline(api, ws_connect, alice, bob, chat_id)
    sse = await sse_connect(http_port, "/sse/notifications", bob["token"],
                            headers={"Last-Event-ID": str(last)})
    assert (await sse.next_json())["type"] == "unread"
    replayed = [await sse.next_event() for _ in missed]
    assert [int(e["id"]) for e in replayed] == missed
    await send(api, alice, chat_id, "live")
    events = await sse_until(sse, lambda d: d.get("type") == "new_message")
    assert events[-1]["data"]["content_preview"] == "live"
    probe = await sentinel(api, bob)
    assert of_type([e["data"] for e in await sse_until(sse, is_id(probe["id"]))], "new_message") == []
    sse.close()
    # the query form resumes the same way (EventSource cannot set headers on a first connect)
    sse = await sse_connect(http_port, "/sse/notifications", bob["token"], last_event_id=str(missed[0]))
    await sse.next_type("unread")
    assert [int((await sse.next_event())["id"]) for _ in missed[1:]] == missed[1:]
    sse.close()


@pytest.mark.gen_test(timeout=60)
async def test_bad_last_event_id_is_400(api, users, http_port):
    (bob,) = await users("bob")
    status, body = await api.call("GET", "/ws/notifications?last_event_id=abc", token=bob["token"],
                                  headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                           "Sec-WebSocket-Version": "13",
                                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert status == 400 and body["error"]["code"] == "invalid_last_event_id"
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", bob["token"],
                                  headers={"Last-Event-ID": "x-y"})
    assert sse.status == 400
    import json
    assert json.loads(await sse.body_text())["error"]["code"] == "invalid_last_event_id"
    sse.close()


# 4 ------------------------------------------------------------------------------------------

def hook_replay(services, before=None, after=None):
    """Wrap the real replay so a notification is raised while it runs (real server, real DB)."""
    original = services.notifications.replay

    async def replay(user_id, after_id):
        if before is not None:
            await before()
        rows = await original(user_id, after_id)
        if after is not None:
            await after()
        return rows
    services.notifications.replay = replay


@pytest.mark.gen_test(timeout=90)
@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_notification_raised_during_replay_comes_once_after(api, ws_connect, users, services,
                                                                   http_port, transport):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    last, missed = await missed_while_offline(api, ws_connect, alice, bob, chat_id)
    raised = []

    async def during():  # committed and published after the replay has read its rows
        raised.append(await services.notifications.notify_user(bob["id"], "test", "during replay"))

    async def before():  # committed before the replay reads, published while it runs: in both
        raised.append(await services.notifications.notify_user(bob["id"], "test", "before read"))

    hook_replay(services, before=before, after=during)
    if transport == "ws":
        ws = await ws_connect("/ws/notifications", bob["token"], last_event_id=str(last))
        await ws.recv_type("unread")
        await wait_until(lambda: len(raised) == 2, what="the hooked replay")
        await restore_replay(services)
        probe = await sentinel(api, bob)
        frames = await ws_until(ws, is_id(probe["id"]))
    else:
        sse = await sse_connect(http_port, "/sse/notifications", bob["token"],
                                headers={"Last-Event-ID": str(last)})
        await sse.next_type("unread")
        await wait_until(lambda: len(raised) == 2, what="the hooked replay")
        await restore_replay(services)
        probe = await sentinel(api, bob)
        frames = [e["data"] for e in await sse_until(sse, is_id(probe["id"]))]
        sse.close()
    ids = [f["id"] for f in frames if "id" in f]
    before_id, during_id = raised[0]["id"], raised[1]["id"]
    assert ids == missed + [before_id, during_id, probe["id"]], frames


async def restore_replay(services):
    """Restore the real replay so later connections are not hooked."""
    services.notifications.__dict__.pop("replay", None)


# 10 -----------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=90)
async def test_unread_first_and_synced_across_devices(api, ws_connect, users, http_port):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    await send(api, alice, chat_id, "one")
    last = await send(api, alice, chat_id, "two")
    ws = await ws_connect("/ws/notifications", bob["token"])
    first = await ws.recv()
    assert first == {"type": "unread", "total": 2, "chats": {str(chat_id): 2}}
    sse = await sse_connect(http_port, "/sse/notifications", bob["token"])
    event = await sse.next_event()
    assert event["id"] is None and event["data"] == '{"type":"unread","total":2,"chats":{"%d":2}}' % chat_id

    # a new message raises the count on every stream
    await send(api, alice, chat_id, "three")
    assert (await ws.recv_type("unread"))["total"] == 3
    assert (await sse.next_type("unread"))["total"] == 3
    # another device (plain HTTP) marks read: every stream gets the new state
    status, _ = await api.call("POST", f"/api/chats/{chat_id}/read", {"message_id": last["id"]},
                               token=bob["token"])
    assert status == 200
    assert await ws.recv_type("unread") == {"type": "unread", "total": 1, "chats": {str(chat_id): 1}}
    assert await sse.next_type("unread") == {"type": "unread", "total": 1, "chats": {str(chat_id): 1}}
    # and a /ws/chat mark_read on a third device
    chat_tab = await ws_connect("/ws/chat", bob["token"])
    status, page = await api.call("GET", f"/api/chats/{chat_id}/messages", token=bob["token"])
    await chat_tab.send({"type": "mark_read", "chat_id": chat_id, "message_id": page["messages"][-1]["id"]})
    assert await ws.recv_type("unread") == {"type": "unread", "total": 0, "chats": {}}
    assert await sse.next_type("unread") == {"type": "unread", "total": 0, "chats": {}}
    sse.close()


@pytest.mark.gen_test(timeout=90)
@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_resync_when_last_id_is_beyond_retention(api, ws_connect, users, services, http_port, transport):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    last, missed = await missed_while_offline(api, ws_connect, alice, bob, chat_id)
    pruned = await services.notifications.prune(
        older_than=datetime.datetime.utcnow() + datetime.timedelta(seconds=1))
    assert pruned >= 4
    if transport == "ws":
        ws = await ws_connect("/ws/notifications", bob["token"], last_event_id=str(last))
        assert (await ws.recv())["type"] == "unread"
        assert await ws.recv() == {"type": "resync"}
        await send(api, alice, chat_id, "after resync")
        assert (await ws.recv_type("new_message"))["content_preview"] == "after resync"
    else:
        sse = await sse_connect(http_port, "/sse/notifications", bob["token"], last_event_id=str(last))
        assert (await sse.next_json())["type"] == "unread"
        event = await sse.next_event()
        assert event["data"] == '{"type":"resync"}' and event["id"] is None
        await send(api, alice, chat_id, "after resync")
        assert (await sse.next_type("new_message"))["content_preview"] == "after resync"
        sse.close()
    # a last id at or after the retention watermark still resumes normally
    ws2 = await ws_connect("/ws/notifications", bob["token"], last_event_id=str(missed[-1]))
    await ws2.recv_type("unread")
    assert (await ws2.recv_type("new_message", "resync"))["type"] == "new_message"


@pytest.mark.gen_test(timeout=60)
async def test_live_event_published_out_of_id_order_is_not_dropped(api, ws_connect, users, services):
    """Committed first, published second (another process, a slower broker): still delivered."""
    from tornado_app.services.delivery.events import dumps
    from tornado_app.services.delivery.notifications import insert_notifications
    (bob,) = await users("bob")
    ws = await ws_connect("/ws/notifications", bob["token"])
    await ws.recv_type("unread")
    payload = dumps({"type": "test", "message": "committed first"})
    (low,) = await services.dbx.write(insert_notifications,
                                      [{"recipient": bob["id"], "type": "test", "payload": payload}])
    high = await sentinel(api, bob)
    assert high["id"] > low
    assert (await ws.recv())["id"] == high["id"]
    await services.notifications.deliver_stored([(low, bob["id"], payload)])
    probe = await sentinel(api, bob)
    assert [f["id"] for f in await ws_until(ws, is_id(probe["id"]))] == [low, probe["id"]]


@pytest.mark.gen_test(timeout=60)
async def test_ws_notifications_client_frames(users, ws_connect):
    (bob,) = await users("bob")
    ws = await ws_connect("/ws/notifications", bob["token"])
    await ws.recv_type("unread")
    assert await ws.request({"type": "ping"}, "pong") == {"type": "pong"}
    error = await ws.request({"type": "send_message", "chat_id": 1, "content": "x"}, "error")
    assert error["code"] == "unknown_type"
    error = await ws.request("not json", "error")
    assert error["code"] == "bad_json"
    assert await ws.request({"type": "ping"}, "pong") == {"type": "pong"}  # still open


@pytest.mark.gen_test(timeout=60)
async def test_group_chat_notifies_only_inactive_members_once_per_tab(api, ws_connect, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    status, body = await api.call("POST", "/api/chats", {"member_ids": [bob["id"], carol["id"]], "title": "Team"},
                                  token=alice["token"])
    assert status == 201
    chat_id = body["chat"]["id"]
    bob_chat = await ws_connect("/ws/chat", bob["token"])
    await bob_chat.request({"type": "join_chat", "chat_id": chat_id}, "joined")
    bob_notes = await ws_connect("/ws/notifications", bob["token"])
    await bob_notes.recv_type("unread")
    carol_tabs = [await ws_connect("/ws/notifications", carol["token"]) for _ in range(2)]
    for tab in carol_tabs:
        await tab.recv_type("unread")
    await send(api, alice, chat_id, "team update")
    for tab in carol_tabs:
        probe_frames = await ws_until(tab, lambda f: f.get("type") == "new_message")
        assert probe_frames[-1]["chat_id"] == chat_id and probe_frames[-1]["sender_name"] == "Alice"
    probe = await sentinel(api, bob)
    assert of_type(await ws_until(bob_notes, is_id(probe["id"])), "new_message") == []
    probe = await sentinel(api, carol)
    for tab in carol_tabs:  # no second copy before Carol's sentinel
        assert of_type(await ws_until(tab, is_id(probe["id"])), "new_message") == []
    status, history = await api.call("GET", "/api/notifications", token=carol["token"])
    assert [n["type"] for n in history["notifications"]] == ["new_message"]  # test probes are never listed
