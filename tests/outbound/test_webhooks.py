"""Signed webhooks (issue 23, acceptance 1 and 2) against a real receiver that verifies every
request with the ``standardwebhooks`` package.

1. each event type fires with its documented fields; a tampered body or a stale timestamp fails
   verification;
2. 500 three times then 200: the event arrives again with the same id; a 429 with
   ``Retry-After: 2`` is honoured; a receiver down past the retry window: the delivery is
   failed, listed by the admin API, and a retry from it delivers it.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from models import User, WebhookEvent, WebhookPresence
from tests.support.webhook_receiver import SECRET, WebhookReceiver


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def retry_window():
    return 86400.0


@pytest.fixture
def config_overrides(receiver, retry_window):
    return {"webhook_url": receiver.url, "webhook_secret": SECRET, "presence_grace": 0.5, "unseen_delay": 1.0,
            "webhook_timeout": 2.0, "mark_read_interval": 0.0, "webhook_retry_window": retry_window}


async def private_chat(api, a, b) -> int:
    status, body = await api.call("POST", "/api/chats", {"user_id": b["id"]}, token=a["token"])
    assert status == 200, body
    return body["chat"]["id"]


async def send(api, user, chat_id, content, **extra) -> dict:
    status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content, **extra},
                                  token=user["token"])
    assert status == 201, body
    return body["message"]


def messages_created(receiver) -> list:
    """The requests (every attempt) of message.created events."""
    return [r for r in list(receiver.requests) if json.loads(r.body)["type"] == "message.created"]


def person(user) -> dict:
    return {"id": user["id"], "username": user["username"], "external_id": None}


def iso_utc(text: str) -> datetime.datetime:
    assert text.endswith("Z"), text
    return datetime.datetime.fromisoformat(text[:-1])


@pytest.mark.gen_test(timeout=60)
async def test_every_event_type_is_signed_and_carries_its_fields(api, users, ws_connect, receiver, services):
    alice, bob = await users("alice", "bob")
    chat_id = await private_chat(api, alice, bob)

    stream = await ws_connect("/ws/notifications", bob["token"])
    await stream.recv_type("unread")
    await receiver.until(lambda r: r.of_type("user.online"))
    online = receiver.of_type("user.online")[0]
    assert online["data"]["user"] == person(bob)
    iso_utc(online["data"]["at"])

    first = await send(api, alice, chat_id, "hello bob", client_id="c-1")
    await receiver.until(lambda r: r.of_type("message.created"))
    created = receiver.of_type("message.created")[0]
    assert created["data"]["chat"] == {"id": chat_id, "key": None, "kind": "private"}
    assert created["data"]["message"]["id"] == first["id"]
    assert created["data"]["message"]["client_id"] == "c-1"
    assert created["data"]["message"]["content"] == "hello bob"
    assert created["data"]["message"]["created_at"] == first["created_at"]
    assert created["data"]["sender"] == person(alice)
    assert sorted(created["data"]["members"], key=lambda m: m["id"]) == sorted(
        [{"id": alice["id"], "external_id": None}, {"id": bob["id"], "external_id": None}], key=lambda m: m["id"])

    status, _ = await api.call("POST", f"/api/chats/{chat_id}/read", {"message_id": first["id"]}, token=bob["token"])
    assert status == 200
    await receiver.until(lambda r: r.of_type("chat.read"))
    read = receiver.of_type("chat.read")[0]
    assert read["data"] == {"chat": {"id": chat_id, "key": None, "kind": "private"}, "user": person(bob),
                            "last_read_message_id": first["id"]}

    stream.close()
    await receiver.until(lambda r: r.of_type("user.offline"))
    assert receiver.of_type("user.offline")[0]["data"]["user"] == person(bob)

    later = await send(api, alice, chat_id, "are you there?")
    await receiver.until(lambda r: r.of_type("notification.unseen"), timeout=30)
    unseen = receiver.of_type("notification.unseen")[0]["data"]
    assert unseen["user"] == person(bob)
    assert unseen["unread"] == {"total": 1, "chats": [{"chat_id": chat_id, "key": None, "count": 1}]}
    assert unseen["previews"] == [{"chat_id": chat_id, "message_id": later["id"], "sender": person(alice),
                                   "content": "are you there?", "created_at": later["created_at"]}]

    # Every request verified; the body's id is the webhook-id header; the envelope's fields.
    assert all(r.event is not None for r in receiver.requests), [r.error for r in receiver.requests]
    for r in receiver.requests:
        assert r.headers["content-type"] == "application/json"
        assert r.event["id"] == r.headers["webhook-id"]
        assert set(r.event) == {"id", "type", "timestamp", "data"}
        iso_utc(r.event["timestamp"])
    assert len({e["id"] for e in receiver.verified}) == len(receiver.verified)

    # A tampered body, a stale timestamp, another secret: verification fails.
    sample = receiver.requests[1]
    hook = Webhook(SECRET)
    with pytest.raises(WebhookVerificationError):
        hook.verify(sample.body.replace(b"hello bob", b"hello eve"), sample.headers)
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    stale_headers = dict(sample.headers, **{"webhook-timestamp": str(int(stale.timestamp())),
                                            "webhook-signature": hook.sign(sample.headers["webhook-id"], stale,
                                                                           sample.body)})
    with pytest.raises(WebhookVerificationError):
        hook.verify(sample.body, stale_headers)
    hook.verify(sample.body, sample.headers)  # the untouched request still verifies


@pytest.mark.gen_test(timeout=60)
async def test_500_three_times_then_200_arrives_again_with_the_same_id(api, users, receiver, services):
    alice, bob = await users("alice", "bob")
    chat_id = await private_chat(api, alice, bob)
    receiver.answers_for = "message.created"
    receiver.answers = [(500, {}), (500, {}), (500, {})]
    await send(api, alice, chat_id, "retried")
    await receiver.until(lambda r: len(messages_created(r)) >= 4, timeout=30)
    attempts = messages_created(receiver)
    ids = [r.headers["webhook-id"] for r in attempts]
    assert len(set(ids)) == 1 and len(ids) == 4
    assert all(r.event is not None for r in attempts)  # re-signed at each attempt: still fresh
    # The receiver records a request before it answers: the sender stores the 200 a moment later.
    deadline = time.monotonic() + 15
    while True:
        row = await services.dbx.read(lambda: WebhookEvent.get(WebhookEvent.event_id == ids[0]))
        if row.status != "pending" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 4, 200)
    assert services.metrics.metrics.webhooks["retried"] == 3
    assert services.metrics.metrics.webhooks["delivered"] >= 1


@pytest.mark.gen_test(timeout=60)
async def test_a_429_with_retry_after_is_honoured(api, users, receiver, services):
    alice, bob = await users("alice", "bob")
    chat_id = await private_chat(api, alice, bob)
    receiver.answers_for = "message.created"
    receiver.answers = [(429, {"Retry-After": "2"})]
    await send(api, alice, chat_id, "slow down")
    await receiver.until(lambda r: len(messages_created(r)) >= 2, timeout=30)
    first, second = messages_created(receiver)[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 1.9


@pytest.mark.parametrize("retry_window", [3.0])
@pytest.mark.gen_test(timeout=60)
async def test_a_receiver_down_past_the_window_fails_and_the_admin_retry_delivers(
        api, users, services, receiver):
    alice, bob = await users("alice", "bob")
    await services.dbx.write(lambda: User.update(is_admin=True).where(User.id == alice["id"]).execute())
    chat_id = await private_chat(api, alice, bob)
    receiver.answers_for = "message.created"
    receiver.answers = [(503, {})] * 100  # down (every attempt answered 503) for the whole window
    await send(api, alice, chat_id, "never delivered in time")

    async def failed():
        status, body = await api.call("GET", "/api/admin/webhooks?status=failed", token=alice["token"])
        assert status == 200, body
        return body["deliveries"]

    deadline = time.time() + 30
    while not await failed():
        assert time.time() < deadline, "the delivery was never marked failed"
        await asyncio.sleep(0.2)
    row = (await failed())[0]
    assert row["type"] == "message.created" and row["status"] == "failed" and row["attempts"] >= 1
    assert row["last_status"] == 503 and "retry window ended" in row["last_error"]
    assert "body" not in row and "never delivered" not in json.dumps(row)  # no message text in the console

    # Others may not see or retry it.
    status, body = await api.call("GET", "/api/admin/webhooks", token=bob["token"])
    assert status == 403 and body["error"]["code"] == "admin_only"
    status, body = await api.call("POST", f"/api/admin/webhooks/{row['id']}/retry", token=bob["token"])
    assert status == 403

    receiver.answers = []
    before = len(receiver.requests)
    status, body = await api.call("POST", f"/api/admin/webhooks/{row['id']}/retry", token=alice["token"])
    assert status == 200, body
    assert body["status"] == "pending"
    await receiver.until(lambda r: any(q.event is not None and q.event["id"] == row["event_id"]
                                       for q in r.requests[before:]), timeout=20)
    status, body = await api.call("GET", "/api/admin/webhooks?status=delivered", token=alice["token"])
    assert row["id"] in [d["id"] for d in body["deliveries"]]

    # A delivered one is not retried; an unknown id is 404.
    status, body = await api.call("POST", f"/api/admin/webhooks/{row['id']}/retry", token=alice["token"])
    assert status == 409 and body["error"]["code"] == "not_failed"
    status, body = await api.call("POST", "/api/admin/webhooks/999999/retry", token=alice["token"])
    assert status == 404 and body["error"]["code"] == "delivery_not_found"


@pytest.mark.gen_test(timeout=60)
async def test_a_failing_chat_waits_in_order_while_other_chats_proceed(api, users, receiver, services):
    alice, bob, carol = await users("alice", "bob", "carol")
    stuck, free = await private_chat(api, alice, bob), await private_chat(api, alice, carol)
    until = time.time() + 3.0
    receiver.rule = lambda event: ((503, {}) if event.get("type") == "message.created"
                                   and event["data"]["chat"]["id"] == stuck and time.time() < until else None)
    a1 = await send(api, alice, stuck, "a1")
    a2 = await send(api, alice, stuck, "a2")
    b1 = await send(api, alice, free, "b1")
    b2 = await send(api, alice, free, "b2")

    def delivered(r, chat_id, after=0.0):
        """Message ids of ``chat_id``'s requests received after ``after`` (the 503s end at ``until``)."""
        return [q.event["data"]["message"]["id"] for q in messages_created(r)
                if q.event["data"]["chat"]["id"] == chat_id and q.at >= after]

    await receiver.until(lambda r: delivered(r, free) == [b1["id"], b2["id"]])
    assert time.time() < until, "the free chat waited for the stuck one"
    assert set(delivered(receiver, stuck)) == {a1["id"]}  # a2 is not sent while a1 is not delivered
    await receiver.until(lambda r: delivered(r, stuck, until) == [a1["id"], a2["id"]], timeout=30)


@pytest.mark.gen_test(timeout=30)
async def test_metrics_count_deliveries_by_outcome(api, users, receiver, services):
    alice, bob = await users("alice", "bob")
    chat_id = await private_chat(api, alice, bob)
    receiver.answers_for = "message.created"
    receiver.answers = [(500, {}), (400, {})]
    await send(api, alice, chat_id, "counted")
    await receiver.until(lambda r: len(messages_created(r)) >= 2, timeout=20)
    await asyncio.sleep(0.3)
    text = services.metrics.exposition().decode()
    assert 'squall_webhook_deliveries_total{outcome="retried"} 1.0' in text
    assert 'squall_webhook_deliveries_total{outcome="failed"} 1.0' in text


@pytest.mark.parametrize("config_overrides", [{}])
@pytest.mark.gen_test(timeout=30)
async def test_without_a_webhook_url_nothing_is_queued(api, users, services, ws_connect):
    alice, bob = await users("alice", "bob")
    assert not services.webhooks.enabled
    assert services.chat.writer.outbox is None and services.chat.on_read_stored is None
    # presence (issue 25) listens to the hub's on_online; a notification stream still queues nothing
    ws = await ws_connect("/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    ws.close()
    chat_id = await private_chat(api, alice, bob)
    message = await send(api, alice, chat_id, "quiet")
    status, _ = await api.call("POST", f"/api/chats/{chat_id}/read", {"message_id": message["id"]}, token=bob["token"])
    assert status == 200
    assert await services.dbx.read(lambda: WebhookEvent.select().count()) == 0
    assert await services.dbx.read(lambda: WebhookPresence.select().count()) == 0


@pytest.mark.gen_test(timeout=60)
async def test_unseen_scans_page_past_users_skipped_for_dnd(api, users, receiver, services, monkeypatch):
    from tornado_app.services.outbound import webhooks
    monkeypatch.setattr(webhooks, "UNSEEN_BATCH", 2)  # a page of 2 candidates: the two DND users fill it
    alice, first, second, third = await users("alice", "first", "second", "third")
    until = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    for user in (first, second):
        status, _ = await api.call("PATCH", "/api/me/preferences", {"dnd_until": until}, token=user["token"])
        assert status == 200
    for user in (first, second, third):
        await send(api, alice, await private_chat(api, alice, user), "ping")
    await receiver.until(lambda r: r.of_type("notification.unseen"), timeout=30)
    await asyncio.sleep(1.5)  # a few more scans
    assert [e["data"]["user"]["id"] for e in receiver.of_type("notification.unseen")] == [third["id"]]


@pytest.mark.gen_test(timeout=30)
async def test_a_graceful_stop_gives_back_the_leases_of_attempts_in_flight(api, users, receiver, services):
    alice, bob = await users("alice", "bob")
    chat_id = await private_chat(api, alice, bob)
    receiver.stall.set()
    await send(api, alice, chat_id, "in flight at the stop")
    await receiver.until(lambda r: r.arrived >= 1)

    def leased():
        return [(row.status, row.lease_until > 0, row.leased_by != "") for row in WebhookEvent.select()
                .where(WebhookEvent.type == "message.created")]
    assert await services.dbx.read(leased) == [("pending", True, True)]
    await services.webhooks.close()
    # Sent again at once by the next process (same id), not after the lease would have expired.
    assert await services.dbx.read(leased) == [("pending", False, False)]
    receiver.release()


@pytest.mark.gen_test(timeout=60)
async def test_unseen_previews_the_newest_three_and_counts_them_all(api, users, receiver, services):
    alice, bob = await users("alice", "bob")
    chat_id = await private_chat(api, alice, bob)
    sent = [await send(api, alice, chat_id, f"note {i} " + "x" * 300) for i in range(4)]
    await receiver.until(lambda r: r.of_type("notification.unseen"), timeout=30)
    data = receiver.of_type("notification.unseen")[0]["data"]
    assert data["unread"]["total"] == 4
    assert [p["message_id"] for p in data["previews"]] == [m["id"] for m in sent[:0:-1]]  # newest 3, newest first
    assert all(len(p["content"]) <= 203 and p["content"].startswith("note") for p in data["previews"])


@pytest.mark.gen_test(timeout=30)
async def test_the_admin_list_takes_1_to_200(api, users, services):
    (root,) = await users("root")
    await services.dbx.write(lambda: User.update(is_admin=True).where(User.id == root["id"]).execute())
    for limit, status in ((1, 200), (200, 200), (0, 400), (201, 400)):
        got, body = await api.call("GET", f"/api/admin/webhooks?limit={limit}", token=root["token"])
        assert got == status, (limit, body)
    got, body = await api.call("GET", "/api/admin/webhooks?status=lost", token=root["token"])
    assert got == 400 and body["error"]["code"] == "validation_error"


@pytest.mark.gen_test(timeout=60)
async def test_no_log_line_carries_the_secret_the_url_a_signature_or_message_text(api, users, receiver, services,
                                                                                  caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    alice, bob = await users("alice", "bob")
    chat_id = await private_chat(api, alice, bob)
    receiver.answers_for = "message.created"
    receiver.answers = [(500, {}), (404, {})]
    await send(api, alice, chat_id, "words that stay out of the logs")
    await receiver.until(lambda r: len(messages_created(r)) >= 2, timeout=20)
    await asyncio.sleep(0.3)
    # Squall's and Tornado's loggers; peewee's statements (with their parameters, here at DEBUG) are
    # silenced or stripped of their parameters by tornado_app/logs.py in a server.
    records = [r for r in caplog.records if r.name.startswith(("squall", "tornado"))]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in records)
    assert "webhook" in text  # the failed attempts were logged (event id, type, reason)
    signatures = [r.headers["webhook-signature"][3:] for r in receiver.requests]
    for secret in (SECRET, SECRET[6:], "/hooks/squall", "words that stay out", *signatures):
        assert secret not in text, [r.name for r in records if secret in f"{r.getMessage()} {r.args!r}"]


@pytest.mark.gen_test(timeout=60)
async def test_the_products_ids_travel_in_message_created(api, receiver, services):
    from tests.conftest import SERVICE_TOKEN
    import uuid
    ann, bob, key = (f"{n}-{uuid.uuid4().hex[:6]}" for n in ("ann", "bob", "order-7781"))
    users = {}
    for eid in (ann, bob):
        status, body = await api.call("PUT", f"/api/service/users/{eid}", {"display_name": eid}, token=SERVICE_TOKEN)
        assert status == 201, body
        users[eid] = body["user"]
    status, body = await api.call("POST", "/api/service/chats", {"kind": "group", "key": key, "members": [ann, bob],
                                                                "title": "Order 7781"}, token=SERVICE_TOKEN)
    assert status in (200, 201), body
    chat_id = body["chat"]["id"]
    status, body = await api.call("POST", f"/api/service/chats/{chat_id}/messages",
                                  {"sender": ann, "content": "your order shipped"}, token=SERVICE_TOKEN)
    assert status == 201, body
    await receiver.until(lambda r: r.of_type("message.created"))
    data = receiver.of_type("message.created")[0]["data"]
    assert data["chat"] == {"id": chat_id, "key": key, "kind": "group"}
    assert data["sender"]["external_id"] == ann and data["sender"]["id"] == users[ann]["id"]
    assert sorted(m["external_id"] for m in data["members"]) == sorted([ann, bob])
    assert data["message"]["content"] == "your order shipped"
