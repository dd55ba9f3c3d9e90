"""Broadcasts follow muted types and Do Not Disturb as targeted notifications do (issue 20, item 16).

A user who muted the broadcast's type does not get it (live, on resume, or in the list), as a
targeted notification of a muted type is skipped; a user in Do Not Disturb gets it with
``"silent": true``; everyone else gets it as it was. Both transports, WebSocket and SSE.
"""
from __future__ import annotations

import datetime

import pytest

from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN


def iso_in(seconds: float) -> str:
    """An ISO time ``seconds`` from now (UTC, Z)."""
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def publish(api, body: dict) -> dict:
    status, out = await api.call("POST", "/api/notifications", body, token=SERVICE_TOKEN)
    assert status == 202, (status, out)
    return out


async def streams(ws_connect, http_port, user, **query):
    """A WebSocket and an SSE notification stream of ``user``, past their first ``unread``."""
    ws = await ws_connect("/ws/notifications", user["token"], **query)
    await ws.recv_type("unread")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", user["token"], **query)
    assert sse.status == 200
    await sse.next_type("unread")
    return ws, sse


async def both(ws, sse, *types) -> list:
    """The next frame of ``types`` on each stream."""
    return [await ws.recv_type(*types), await sse.next_type(*types)]


@pytest.mark.gen_test(timeout=60)
async def test_a_broadcast_skips_muted_users_and_is_silent_in_dnd(api, users, ws_connect, http_port):
    muter, sleeper, other = await users("muter", "sleeper", "other")
    for user, prefs in ((muter, {"muted_types": ["announcement"]}), (sleeper, {"dnd_until": iso_in(600)}),
                        (other, {"muted_types": ["digest"]})):
        status, _ = await api.call("PATCH", "/api/me/preferences", prefs, token=user["token"])
        assert status == 200
    muter_ws, muter_sse = await streams(ws_connect, http_port, muter)
    sleeper_ws, sleeper_sse = await streams(ws_connect, http_port, sleeper)
    other_ws, other_sse = await streams(ws_connect, http_port, other)

    out = await publish(api, {"broadcast": True, "message": "maintenance at noon"})
    (nid,) = out["ids"]
    assert out["skipped"] == [muter["id"]]  # as a targeted publish reports the users who muted the type

    for frame in await both(other_ws, other_sse, "announcement"):
        assert frame["id"] == nid and frame["message"] == "maintenance at noon" and "silent" not in frame
    for frame in await both(sleeper_ws, sleeper_sse, "announcement"):
        assert frame["id"] == nid and frame["message"] == "maintenance at noon" and frame["silent"] is True

    # The muted user's next notification is a later one of another type: the broadcast never came.
    (later,) = (await publish(api, {"user_ids": [muter["id"]], "type": "news", "message": "later"}))["ids"]
    assert [f["id"] for f in await both(muter_ws, muter_sse, "announcement", "news")] == [later, later]

    # The list is as for a targeted notification of a muted type: not there.
    listed = {}
    for user in (muter, sleeper, other):
        status, history = await api.call("GET", "/api/notifications", token=user["token"])
        assert status == 200
        listed[user["id"]] = [n["id"] for n in history["notifications"]]
    assert nid not in listed[muter["id"]] and later in listed[muter["id"]]
    assert nid in listed[sleeper["id"]] and nid in listed[other["id"]]

    # A broadcast of a type nobody muted reaches the muted user; the sleeper's stays silent.
    (digest,) = (await publish(api, {"broadcast": True, "type": "digest", "message": "weekly"}))["ids"]
    assert [f["id"] for f in await both(muter_ws, muter_sse, "announcement", "digest")] == [digest, digest]
    assert all(f["silent"] is True for f in await both(sleeper_ws, sleeper_sse, "digest"))
    # ... but not the other user, who muted "digest": their next is the sentinel.
    (ping,) = (await publish(api, {"user_ids": [other["id"]], "type": "news", "message": "ping"}))["ids"]
    assert [f["id"] for f in await both(other_ws, other_sse, "digest", "news")] == [ping, ping]

    # Resuming from before the broadcast replays it the same way.
    muter_ws2, muter_sse2 = await streams(ws_connect, http_port, muter, last_event_id=str(nid - 1))
    assert [f["id"] for f in await both(muter_ws2, muter_sse2, "announcement", "news")] == [later, later]
    sleeper_ws2, sleeper_sse2 = await streams(ws_connect, http_port, sleeper, last_event_id=str(nid - 1))
    for frame in await both(sleeper_ws2, sleeper_sse2, "announcement"):
        assert frame["id"] == nid and frame["silent"] is True
    other_ws2, other_sse2 = await streams(ws_connect, http_port, other, last_event_id=str(nid - 1))
    for frame in await both(other_ws2, other_sse2, "announcement"):
        assert frame["id"] == nid and "silent" not in frame
    for client in (muter_sse, sleeper_sse, other_sse, muter_sse2, sleeper_sse2, other_sse2):
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_dnd_over_means_a_broadcast_is_loud_again(api, users, ws_connect, http_port):
    (sleeper,) = await users("sleeper")
    await api.call("PATCH", "/api/me/preferences", {"dnd_until": iso_in(600)}, token=sleeper["token"])
    ws, sse = await streams(ws_connect, http_port, sleeper)
    await publish(api, {"broadcast": True, "message": "quiet"})
    assert all(f["silent"] is True for f in await both(ws, sse, "announcement"))
    status, _ = await api.call("PATCH", "/api/me/preferences", {"dnd_until": None}, token=sleeper["token"])
    assert status == 200
    await publish(api, {"broadcast": True, "message": "loud"})
    for frame in await both(ws, sse, "announcement"):
        assert frame["message"] == "loud" and "silent" not in frame
    sse.close()
