"""Webhooks from two processes on one PostgreSQL database and one Redis (issue 23, acceptance 4 and 5).

4. ``notification.unseen`` fires once for a user offline with unread messages after the
   delay, never for one who read in time, stayed connected, muted the chat or is in Do Not
   Disturb; both processes scan, one sends.
5. ``user.online``/``user.offline``: one of each per real transition across the two
   processes, none for a reconnect (even to the other process) within the grace period.
"""
from __future__ import annotations

import asyncio
import datetime

import pytest

from tests.support.clients import ApiClient, WSClient
from tests.support.scaleout import open_private_chat, register, send_http, start_cluster
from tests.support.webhook_receiver import SECRET, WebhookReceiver

GRACE = 1.0
UNSEEN_DELAY = 3.0


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def cluster(shared_db, server_factory, receiver):
    """Two servers sharing the database and a Redis broker, both sending webhooks."""
    return start_cluster("redis", shared_db, server_factory, count=2, WEBHOOK_URL=receiver.url,
                         WEBHOOK_SECRET=SECRET, PRESENCE_GRACE=GRACE, UNSEEN_DELAY=UNSEEN_DELAY)


def of_user(receiver, kind: str, user: dict) -> list:
    return [e for e in receiver.of_type(kind) if e["data"]["user"]["id"] == user["id"]]


async def notifications(server, user) -> WSClient:
    ws = await WSClient.connect(server.ws_url, "/ws/notifications", user["token"])
    await ws.recv_type("unread")
    return ws


@pytest.mark.slow
@pytest.mark.gen_test(timeout=120)
async def test_online_and_offline_once_per_real_transition_across_two_processes(cluster, receiver):
    p1, p2 = cluster
    bob = await register(ApiClient(p1.url), "bob")

    first = await notifications(p1, bob)
    await receiver.until(lambda r: of_user(r, "user.online", bob))

    # A second stream on the other process, then the first closes: still online somewhere.
    second = await notifications(p2, bob)
    first.close()
    await asyncio.sleep(GRACE * 3)
    assert of_user(receiver, "user.offline", bob) == []

    # Closed on p2 and reopened on p1 within the grace period: nothing at all.
    second.close()
    await asyncio.sleep(GRACE / 4)
    third = await notifications(p1, bob)
    await asyncio.sleep(GRACE * 3)
    assert len(of_user(receiver, "user.online", bob)) == 1
    assert of_user(receiver, "user.offline", bob) == []

    # Gone everywhere: one user.offline; back again: one more user.online.
    third.close()
    await receiver.until(lambda r: of_user(r, "user.offline", bob))
    await asyncio.sleep(GRACE * 2)
    back = await notifications(p2, bob)
    await receiver.until(lambda r: len(of_user(r, "user.online", bob)) == 2)
    back.close()
    await receiver.until(lambda r: len(of_user(r, "user.offline", bob)) == 2)
    await asyncio.sleep(GRACE * 2)
    kinds = [e["type"] for e in receiver.verified if e["type"].startswith("user.") and e["data"]["user"]["id"] == bob["id"]]
    assert kinds == ["user.online", "user.offline", "user.online", "user.offline"]
    ids = [e["id"] for e in receiver.verified]
    assert len(ids) == len(set(ids))


@pytest.mark.slow
@pytest.mark.gen_test(timeout=120)
async def test_unseen_fires_once_and_never_for_readers_the_connected_the_muted_or_dnd(cluster, receiver):
    p1, p2 = cluster
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    alice = await register(api1, "alice")
    bob, carol, dave, erin, frank = [await register(api1, n) for n in ("bob", "carol", "dave", "erin", "frank")]
    chats = {u["id"]: await open_private_chat(api1, alice, u) for u in (bob, carol, dave, erin, frank)}

    status, _ = await api2.call("PUT", f"/api/chats/{chats[erin['id']]}/mute", {"until": None}, token=erin["token"])
    assert status == 200
    until = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    status, _ = await api2.call("PATCH", "/api/me/preferences", {"dnd_until": until}, token=frank["token"])
    assert status == 200
    dave_stream = await notifications(p2, dave)

    sent = {}
    for user in (bob, carol, dave, erin, frank):
        sent[user["id"]] = await send_http(api1, alice, chats[user["id"]], f"hi {user['username']}")
    status, _ = await api2.call("POST", f"/api/chats/{chats[carol['id']]}/read",
                                {"message_id": sent[carol["id"]]["id"]}, token=carol["token"])
    assert status == 200

    await receiver.until(lambda r: of_user(r, "notification.unseen", bob), timeout=30)
    await asyncio.sleep(UNSEEN_DELAY * 2)  # both processes scan several times meanwhile
    unseen = receiver.of_type("notification.unseen")
    assert [e["data"]["user"]["id"] for e in unseen] == [bob["id"]]
    data = unseen[0]["data"]
    assert data["unread"]["total"] == 1
    assert data["previews"][0]["message_id"] == sent[bob["id"]]["id"]

    # Once until they read: another message sends nothing more; after reading, a new absence does.
    more = await send_http(api2, alice, chats[bob["id"]], "still there?")
    await asyncio.sleep(UNSEEN_DELAY * 2)
    assert len(of_user(receiver, "notification.unseen", bob)) == 1
    status, _ = await api1.call("POST", f"/api/chats/{chats[bob['id']]}/read", {"message_id": more["id"]},
                                token=bob["token"])
    assert status == 200
    await send_http(api2, alice, chats[bob["id"]], "one more")
    await receiver.until(lambda r: len(of_user(r, "notification.unseen", bob)) == 2, timeout=30)
    assert [e["data"]["user"]["id"] for e in receiver.of_type("notification.unseen")] == [bob["id"], bob["id"]]
    dave_stream.close()
