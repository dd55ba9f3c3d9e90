"""The outbox survives SIGKILL (issue 23, acceptance 3): 100 undelivered events queued, the server
killed without a goodbye, restarted: every event is delivered, none lost, a repeat only with
the id it had (a request in flight at the kill is sent again)."""
from __future__ import annotations

import json
import urllib.request

import pytest

from tests.support.webhook_receiver import SECRET, WebhookReceiver

CHATS = 10
PER_CHAT = 10
TIMEOUT = 2.0  # --webhook-timeout: a claim held by the killed process expires 5 s after it


def call(server, method: str, path: str, body=None, token=None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def register(server, name: str) -> dict:
    import uuid
    body = call(server, "POST", "/api/auth/register",
                {"username": f"{name}_{uuid.uuid4().hex[:6]}", "password": "password123"})
    return {**body["user"], "token": body["access_token"]}


@pytest.mark.slow
def test_sigkill_with_100_undelivered_events_loses_none(server_factory, database_url):
    with WebhookReceiver() as receiver:
        receiver.stall.set()  # the receiver hangs: attempts are in flight, the rest wait their turn
        server = server_factory("--database-url", database_url, WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET,
                                WEBHOOK_TIMEOUT=TIMEOUT, UNSEEN_DELAY=3600,
                                RATE_LIMIT_PER_SECOND=10000, RATE_LIMIT_BURST=10000)
        alice, bob = register(server, "alice"), register(server, "bob")
        chats = [call(server, "POST", "/api/chats", {"member_ids": [bob["id"]], "title": f"room {i}"},
                      token=alice["token"])["chat"]["id"] for i in range(CHATS)]
        sent = set()
        for n in range(PER_CHAT):
            for chat_id in chats:
                message = call(server, "POST", f"/api/chats/{chat_id}/messages", {"content": f"m{n}"},
                               token=alice["token"])["message"]
                sent.add(message["id"])
        assert len(sent) == CHATS * PER_CHAT
        receiver.wait(lambda r: r.arrived >= CHATS, timeout=20)  # one attempt per chat hangs (in order per chat)
        assert not receiver.requests

        server.kill()
        receiver.release()  # the requests in flight are answered, but nobody records it

        server.start()
        receiver.wait(lambda r: {e["data"]["message"]["id"] for e in r.of_type("message.created")} >= sent,
                      timeout=90)
        events = receiver.of_type("message.created")
        assert all(r.event is not None for r in receiver.requests), [r.error for r in receiver.requests]
        by_id = {}
        for event in events:
            # the same event id always carries the same message: a repeat is a duplicate, never a new event
            assert by_id.setdefault(event["id"], event["data"]["message"]["id"]) == event["data"]["message"]["id"]
        assert set(by_id.values()) == sent
        assert len(by_id) == len(sent)  # one event id per message
        # The attempts in flight at the kill reached the receiver but were never recorded: sent again.
        assert len(events) >= len(sent) + CHATS

        # In order per chat: each chat's first deliveries arrive in message order.
        firsts = {}
        for event in events:
            firsts.setdefault(event["id"], event)
        for chat_id in chats:
            ids = [e["data"]["message"]["id"] for e in firsts.values() if e["data"]["chat"]["id"] == chat_id]
            assert ids == sorted(ids)
