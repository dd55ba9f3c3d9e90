"""Notification preferences, chat mutes and Do Not Disturb (issue 11, acceptance 1-3, server side)."""
import asyncio
import datetime

import pytest

from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN
from tests.support.streams import is_id, of_type, open_chat, send, sentinel, sse_until, ws_until

DEFAULTS = {"sound": True, "toasts": True, "push": True, "dnd_until": None, "muted_types": [],
            "share_presence": True}


def iso_in(seconds: float) -> str:
    """An ISO time ``seconds`` from now (UTC, Z)."""
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def sse_stream(http_port, path, user, **kw):
    sse = await SSEClient.connect("127.0.0.1", http_port, path, user["token"], **kw)
    assert sse.status == 200, sse.status
    await sse.next_type("unread")
    return sse


# Acceptance 1 ----------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_preferences_round_trip_and_reach_every_stream_live(api, users, ws_connect, http_port):
    (alice,) = await users("alice")
    status, prefs = await api.call("GET", "/api/me/preferences", token=alice["token"])
    assert status == 200 and prefs == DEFAULTS
    other_tab = await ws_connect("/ws/notifications", alice["token"])
    await other_tab.recv_type("unread")
    other_device = await sse_stream(http_port, "/sse/notifications", alice)
    chat_device = await sse_stream(http_port, "/sse/chat", alice)

    until = iso_in(3600)
    status, prefs = await api.call("PATCH", "/api/me/preferences",
                                   {"sound": False, "dnd_until": until, "muted_types": ["digest", "announcement"]},
                                   token=alice["token"])
    assert status == 200, prefs
    assert prefs["sound"] is False and prefs["toasts"] is True and prefs["push"] is True
    assert prefs["muted_types"] == ["announcement", "digest"]
    assert prefs["dnd_until"][:19] == until[:19] and prefs["dnd_until"].endswith("Z")
    # a merge: what is not named stays
    status, again = await api.call("PATCH", "/api/me/preferences", {"toasts": False}, token=alice["token"])
    assert status == 200 and again == {**prefs, "toasts": False}
    assert (await api.call("GET", "/api/me/preferences", token=alice["token"]))[1] == again

    for frame in (await other_tab.recv_type("preferences"), await other_tab.recv_type("preferences")):
        assert set(frame) == {"type", *DEFAULTS}
    assert (await other_device.next_type("preferences"))["sound"] is False
    assert (await other_device.next_type("preferences")) == {"type": "preferences", **again}
    assert (await chat_device.next_type("preferences"))["muted_types"] == ["announcement", "digest"]
    # DND off again; a time in the past reads as off too
    status, off = await api.call("PATCH", "/api/me/preferences", {"dnd_until": iso_in(-60)}, token=alice["token"])
    assert status == 200 and off["dnd_until"] is None
    other_device.close()
    chat_device.close()


@pytest.mark.parametrize("body, field", [
    ({"sound": "yes"}, "sound"),
    ({"toasts": 1}, "toasts"),
    ({"push": None}, "push"),
    ({"dnd_until": "tomorrow"}, "dnd_until"),
    ({"dnd_until": 12}, "dnd_until"),
    ({"muted_types": "announcement"}, "muted_types"),
    ({"muted_types": [""]}, "muted_types"),
    ({"muted_types": ["a b"]}, "muted_types"),
    ({"muted_types": ["new_message"]}, "new_message"),
    ({"muted_types": ["x" * 65]}, "muted_types"),
    ({"colour": "red"}, "colour"),
])
@pytest.mark.gen_test(timeout=30)
async def test_each_bad_preference_is_refused(api, users, body, field):
    (alice,) = await users("alice")
    status, error = await api.call("PATCH", "/api/me/preferences", body, token=alice["token"])
    assert status == 400, error
    assert field in error["error"]["message"]
    assert (await api.call("GET", "/api/me/preferences", token=alice["token"]))[1] == DEFAULTS


@pytest.fixture
def config_overrides():
    return {"max_muted_types": 3}


@pytest.mark.gen_test(timeout=30)
async def test_muted_types_limit_at_and_past(api, users):
    (alice,) = await users("alice")
    status, prefs = await api.call("PATCH", "/api/me/preferences", {"muted_types": ["a", "b", "c"]},
                                   token=alice["token"])
    assert status == 200 and prefs["muted_types"] == ["a", "b", "c"]
    status, error = await api.call("PATCH", "/api/me/preferences", {"muted_types": ["a", "b", "c", "d"]},
                                   token=alice["token"])
    assert status == 400 and "at most 3" in error["error"]["message"]
    status, _ = await api.call("PATCH", "/api/me/preferences", raw=b'{"sound": tru', token=alice["token"])
    assert status == 400


# Acceptance 2 (one process; tests/cluster/test_scaleout_preferences.py: two processes) -----------------------

@pytest.mark.gen_test(timeout=60)
async def test_muted_chat_delivers_messages_but_no_notification(api, users, ws_connect, http_port):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    status, muted = await api.call("PUT", f"/api/chats/{chat_id}/mute", {"until": None}, token=bob["token"])
    assert status == 200 and muted == {"chat_id": chat_id, "muted": True, "muted_until": None}
    status, listing = await api.call("GET", "/api/chats", token=bob["token"])
    assert (listing["chats"][0]["muted"], listing["chats"][0]["muted_until"]) == (True, None)
    status, listing = await api.call("GET", "/api/chats", token=alice["token"])
    assert listing["chats"][0]["muted"] is False  # a mute is one member's

    chat_ws = await ws_connect("/ws/chat", bob["token"])  # open, but not looking at the chat
    notes_ws = await ws_connect("/ws/notifications", bob["token"])
    await notes_ws.recv_type("unread")
    chat_sse = await sse_stream(http_port, "/sse/chat", bob)
    notes_sse = await sse_stream(http_port, "/sse/notifications", bob)

    m1 = await send(api, alice, chat_id, "quiet one")
    m2 = await send(api, alice, chat_id, "quiet two")
    assert (await chat_ws.recv_type("message"))["message"]["id"] == m1["id"]
    assert (await chat_ws.recv_type("message"))["message"]["id"] == m2["id"]
    probe = await sentinel(api, bob)
    frames = await ws_until(notes_ws, is_id(probe["id"]))
    assert of_type(frames, "new_message") == [], frames
    unread = of_type(frames, "unread")[-1]
    assert unread == {"type": "unread", "total": 0, "chats": {str(chat_id): 2}, "muted": {str(chat_id): 2}}
    sse_frames = [e["data"] for e in await sse_until(notes_sse, is_id(probe["id"]))]
    assert of_type(sse_frames, "new_message") == [] and of_type(sse_frames, "unread")[-1] == unread
    chat_frames = [e["data"] for e in await sse_until(chat_sse, is_id(probe["id"]))]
    assert [f["message"]["id"] for f in of_type(chat_frames, "message")] == [m1["id"], m2["id"]]
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    assert history["notifications"] == []
    status, counts = await api.call("GET", "/api/unread", token=bob["token"])
    assert counts["total"] == 0 and counts["muted"] == {str(chat_id): 2}

    # Unmute: the count is back in the total at once, and the next message notifies.
    status, state = await api.call("DELETE", f"/api/chats/{chat_id}/mute", token=bob["token"])
    assert status == 200 and state == {"chat_id": chat_id, "muted": False, "muted_until": None}
    mute_event = await notes_ws.recv_type("mute")
    assert mute_event == {"type": "mute", "chat_id": chat_id, "muted": False, "muted_until": None}
    m3 = await send(api, alice, chat_id, "loud again")
    note = await notes_ws.recv_type("new_message")
    assert note["content_preview"] == "loud again" and "silent" not in note
    unread = await notes_ws.recv_type("unread")
    assert unread == {"type": "unread", "total": 3, "chats": {str(chat_id): 3}}
    assert (await chat_ws.recv_type("message"))["message"]["id"] == m3["id"]
    chat_sse.close()
    notes_sse.close()


@pytest.mark.gen_test(timeout=60)
async def test_mute_expires_by_itself(api, users, ws_connect):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    until = iso_in(1.5)
    status, state = await api.call("PUT", f"/api/chats/{chat_id}/mute", {"until": until}, token=bob["token"])
    assert status == 200 and state["muted"] and state["muted_until"][:19] == until[:19]
    notes = await ws_connect("/ws/notifications", bob["token"])
    await notes.recv_type("unread")
    await send(api, alice, chat_id, "while muted")
    probe = await sentinel(api, bob)
    frames = await ws_until(notes, is_id(probe["id"]))
    assert of_type(frames, "new_message") == [] and of_type(frames, "unread")[-1]["total"] == 0
    await asyncio.sleep(1.6)
    status, listing = await api.call("GET", f"/api/chats/{chat_id}", token=bob["token"])
    assert listing["chat"]["muted"] is False and listing["chat"]["muted_until"] is None
    await send(api, alice, chat_id, "after the mute")
    assert (await notes.recv_type("new_message"))["content_preview"] == "after the mute"
    assert await notes.recv_type("unread") == {"type": "unread", "total": 2, "chats": {str(chat_id): 2}}


@pytest.mark.gen_test(timeout=30)
async def test_mute_requests_are_validated(api, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat_id = await open_chat(api, alice, bob)
    for body in ({}, {"until": "soon"}, {"until": 5}, {"until": "9999-12-31T00:00:00Z"}):
        status, error = await api.call("PUT", f"/api/chats/{chat_id}/mute", body, token=bob["token"])
        assert status == 400, (body, error)
    status, _ = await api.call("PUT", f"/api/chats/{chat_id}/mute", {"until": None}, token=carol["token"])
    assert status == 403
    status, _ = await api.call("DELETE", "/api/chats/999999/mute", token=carol["token"])
    assert status == 404
    status, _ = await api.call("PUT", f"/api/chats/{chat_id}/mute", {"until": None})
    assert status == 401


# Acceptance 3 (server side; the browser side is in tests/browser/test_browser_notify.py) ---------------

@pytest.mark.gen_test(timeout=60)
async def test_dnd_notifications_are_silent_and_muted_types_skipped(api, users, ws_connect):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    status, _ = await api.call("PATCH", "/api/me/preferences",
                               {"dnd_until": iso_in(600), "muted_types": ["digest"]}, token=bob["token"])
    assert status == 200
    notes = await ws_connect("/ws/notifications", bob["token"])
    await notes.recv_type("unread")
    await send(api, alice, chat_id, "during the meeting")
    note = await notes.recv_type("new_message")
    assert note["silent"] is True and note["content_preview"] == "during the meeting"
    assert (await notes.recv_type("unread"))["total"] == 1  # badges stay true

    status, out = await api.call("POST", "/api/notifications",
                                 {"user_ids": [alice["id"], bob["id"]], "type": "digest", "message": "weekly"},
                                 token=SERVICE_TOKEN)
    assert status == 202 and out["skipped"] == [bob["id"]] and len(out["ids"]) == 1
    status, out = await api.call("POST", "/api/notifications",
                                 {"user_ids": [bob["id"]], "type": "announcement", "message": "hello",
                                  "push": True}, token=SERVICE_TOKEN)
    assert status == 202 and out["skipped"] == []
    frame = await notes.recv_type("announcement", "digest")
    assert frame["type"] == "announcement" and frame["silent"] is True
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    assert [n["type"] for n in history["notifications"]] == ["announcement", "new_message"]
    status, history = await api.call("GET", "/api/notifications", token=alice["token"])
    assert [n["type"] for n in history["notifications"]] == ["digest"]
    status, error = await api.call("POST", "/api/notifications",
                                   {"user_ids": [bob["id"]], "message": "x", "push": "yes"}, token=SERVICE_TOKEN)
    assert status == 400 and "push" in error["error"]["message"]

    # DND over: no longer silent
    await api.call("PATCH", "/api/me/preferences", {"dnd_until": None}, token=bob["token"])
    await send(api, alice, chat_id, "after the meeting")
    note = await notes.recv_type("new_message")
    assert "silent" not in note and note["content_preview"] == "after the meeting"


# Item 12: test events are delivered but never listed -------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_test_events_are_delivered_but_not_listed(api, users, ws_connect):
    (alice,) = await users("alice")
    notes = await ws_connect("/ws/notifications", alice["token"])
    await notes.recv_type("unread")
    probe = await sentinel(api, alice)
    assert (await notes.recv_type("test"))["id"] == probe["id"]
    status, history = await api.call("GET", "/api/notifications", token=alice["token"])
    assert status == 200 and history["notifications"] == []


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_lookups_of_uncached_preferences_share_one_read(api, users, services):
    """Publishes to users whose preferences are not cached yet read them together, once, and a
    muted type set before is still honoured (the shared read carries each user's own)."""
    people = await users(*[f"q{i}" for i in range(12)])
    status, _ = await api.call("PATCH", "/api/me/preferences", {"muted_types": ["quiet_type"]},
                               token=people[0]["token"])
    assert status == 200
    prefs = services.preferences
    for p in people:
        prefs.forget(p["id"])
    before = prefs.loads
    answers = await asyncio.gather(*(api.call("POST", "/api/notifications",
                                              {"user_ids": [p["id"]], "type": "quiet_type", "message": "m"},
                                              token=SERVICE_TOKEN) for p in people))
    assert all(status == 202 for status, _ in answers), answers
    assert prefs.loads - before < len(people)  # not one read per lookup
    assert answers[0][1]["skipped"] == [people[0]["id"]] and answers[0][1]["ids"] == []
    assert all(body["skipped"] == [] and len(body["ids"]) == 1 for _, body in answers[1:])
    again = prefs.loads
    await prefs.many([p["id"] for p in people])
    assert prefs.loads == again  # all cached now
