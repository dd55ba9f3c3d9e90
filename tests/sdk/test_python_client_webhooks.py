"""squall_client.verify_webhook on a real Squall's deliveries (issue 23, acceptance 7): a receiver
run by the test verifies every request with ``verify_webhook`` and gets typed events whose data
has the documented fields; the same request with its body changed does not verify."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import squall_client as sc

from tests.support.procs import start_server
from tests.support.pyclient import EXTERNAL, SERVICE_TOKEN, WEBHOOK_SECRET, mint


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 204 to what ``verify_webhook`` accepts, else 400."""

    def __init__(self) -> None:
        self.events: list[sc.WebhookEvent] = []
        self.raw: list[tuple[dict[str, str], bytes]] = []
        self.refused: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    event = sc.verify_webhook(self.headers, body, WEBHOOK_SECRET)
                except sc.WebhookVerificationError as exc:
                    receiver.refused.append(str(exc))
                    self.send_response(400)
                else:
                    receiver.events.append(event)
                    receiver.raw.append(({k: v for k, v in self.headers.items()}, body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, kind: str, count: int = 1) -> list[sc.WebhookEvent]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.type == kind]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {kind} event; got {[e.type for e in self.events]}, refused {self.refused}")


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_verify_webhook_accepts_squalls_deliveries_and_parses_every_event(tmp_path: Path,
                                                                           receiver: Receiver) -> None:
    server = start_server(tmp_path, *EXTERNAL, "--webhook-url", receiver.url, "--webhook-secret", WEBHOOK_SECRET,
                          "--unseen-delay", "1", "--presence-grace", "0",
                          DATABASE_URL=f"sqlite:///{tmp_path}/hooks.db")
    try:
        a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
        with sc.SquallClient(server.url, SERVICE_TOKEN) as api:
            api.upsert_user(a, display_name="Ann")
            api.upsert_user(b, display_name="Ben")
            chat = api.create_chat("group", [a, b], title="Hooks", key="order-hooks").chat
            posted = api.post_message(chat["id"], "Hello Ben", sender=a, client_id="hook-1").message

            [created] = receiver.wait_for("message.created")
            assert created.id.startswith("evt_") and created.timestamp.tzinfo is not None
            assert created.data["chat"] == {"id": chat["id"], "key": "order-hooks", "kind": "group"}
            assert created.data["message"]["id"] == posted["id"]
            assert created.data["message"]["content"] == "Hello Ben"
            assert created.data["message"]["client_id"] == "hook-1"
            assert created.data["sender"]["external_id"] == a
            assert sorted(m["external_id"] for m in created.data["members"]) == sorted([a, b])

            # Ben is connected nowhere with an unread message: notification.unseen after 1 s.
            [unseen] = receiver.wait_for("notification.unseen")
            assert unseen.data["user"]["external_id"] == b
            assert unseen.data["unread"]["total"] == 1
            assert unseen.data["unread"]["chats"] == [{"chat_id": chat["id"], "key": "order-hooks", "count": 1}]
            [preview] = unseen.data["previews"]
            assert preview["message_id"] == posted["id"] and preview["content"] == "Hello Ben"

            read = httpx.post(server.url + f"/api/chats/{chat['id']}/read", json={"message_id": posted["id"]},
                              headers={"Authorization": f"Bearer {mint(b)}"})
            assert read.status_code == 200, read.text
            [moved] = receiver.wait_for("chat.read")
            assert moved.data["user"]["external_id"] == b and moved.data["last_read_message_id"] == posted["id"]

        async def online_then_offline() -> None:
            async with sc.subscribe(server.url, mint(b)) as events:
                async for event in events:
                    if event["type"] == "unread":
                        break
                [came] = await asyncio.to_thread(receiver.wait_for, "user.online")
                assert came.data["user"]["external_id"] == b and came.data["at"]
            [went] = await asyncio.to_thread(receiver.wait_for, "user.offline")
            assert went.data["user"]["external_id"] == b
        asyncio.run(online_then_offline())

        # A delivery exactly as received verifies again; with its body changed it does not.
        headers, body = receiver.raw[0]
        assert sc.verify_webhook(headers, body, WEBHOOK_SECRET).id == receiver.events[0].id
        with pytest.raises(sc.WebhookVerificationError):
            sc.verify_webhook(headers, body.replace(b"Hello", b"Hullo"), WEBHOOK_SECRET)
        assert receiver.refused == []
    finally:
        server.kill()
