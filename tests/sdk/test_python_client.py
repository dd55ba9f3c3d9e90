"""squall_client (clients/python, issue 23 acceptance 7): every call against a real ``run.py`` in
external mode, errors with the server's codes, ``mint_token`` accepted by the server,
``subscribe`` resuming across a real server restart (no gap, no duplicate) over SSE and the
WebSocket, ``verify_webhook`` on requests signed with the standardwebhooks package, and a
fresh venv that installs the package with ``pip install ./clients/python``."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

import squall_client as sc  # tests/sdk/conftest.py puts clients/python/src on the path
from squall_client.stream import full_jitter, parse_sse

from tests.support.procs import ServerProcess, free_port, start_server
from tests.support.pyclient import (AUDIENCE, EXTERNAL, ISSUER, ROOT, SECRET, SERVICE_TOKEN,
                                    WEBHOOK_SECRET, mint)


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def squall(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One external-mode server for the module (0 s leeway, so a token's expiry is exact)."""
    tmp = tmp_path_factory.mktemp("squall")
    proc = start_server(tmp, *EXTERNAL, "--external-jwt-leeway", "0", DATABASE_URL=f"sqlite:///{tmp}/squall.db")
    yield proc
    proc.kill()


@pytest.fixture
def client(squall: ServerProcess) -> Any:
    with sc.SquallClient(squall.url, SERVICE_TOKEN) as api:
        yield api


def me(squall: ServerProcess, token: str) -> httpx.Response:
    return httpx.get(squall.url + "/api/me", headers={"Authorization": f"Bearer {token}"})


# --- the service API, sync ---------------------------------------------------------------


def test_upsert_user_creates_then_updates(client: sc.SquallClient) -> None:
    dana = uid()
    first = client.upsert_user(dana, display_name="Dana", avatar_url="https://cdn.example.com/d.png")
    assert first.created is True
    assert first.user["external_id"] == dana and first.user["display_name"] == "Dana"
    assert first.user["avatar_url"] == "https://cdn.example.com/d.png" and first.user["kind"] == "external"
    again = client.upsert_user(dana, avatar_url=None)
    assert again.created is False
    assert again.user["display_name"] == "Dana" and again.user["avatar_url"] is None
    assert client.upsert_user(dana, disabled=True).user["disabled"] is True


def test_external_ids_with_slashes_and_spaces_are_encoded(client: sc.SquallClient) -> None:
    odd = "org/42 " + uuid.uuid4().hex[:6]
    assert client.upsert_user(odd, display_name="Org").user["external_id"] == odd
    assert client.revoke_user(odd)["revoked"] is True
    assert client.delete_user(odd)["deleted"] is True


def test_chats_members_and_messages(client: sc.SquallClient) -> None:
    a, b, c = uid("a"), uid("b"), uid("c")
    key = uid("order")
    made = client.create_chat("group", [a, b], title="Order 1", key=key)
    assert made.created is True
    chat = made.chat
    assert chat["key"] == key and chat["kind"] == "group" and chat["title"] == "Order 1"
    assert sorted(m["external_id"] or "" for m in chat["members"]) == sorted([a, b])
    same = client.create_chat("group", [b, a], title="Order 1", key=key)
    assert same.created is False and same.chat["id"] == chat["id"]

    added = client.add_members(chat["id"], [c, a])
    assert added["added"] == [c]
    assert client.remove_member(chat["id"], c)["removed"] is True
    assert client.remove_member(chat["id"], c)["removed"] is False

    system = client.post_message(chat["id"], "Your order has shipped", client_id=key + "-shipped")
    assert system.created is True
    assert system.message["sender_name"] == "System" and system.message["message_type"] == "system_message"
    posted = client.post_message(chat["id"], "Thanks!", sender=a, client_id=key + "-m1")
    repeat = client.post_message(chat["id"], "Thanks!", sender=a, client_id=key + "-m1")
    assert posted.created is True and repeat.created is False
    assert repeat.message["id"] == posted.message["id"] and posted.message["content"] == "Thanks!"

    page = client.user_chats(b, limit=5)
    listed = {entry["id"]: entry for entry in page["chats"]}
    assert listed[chat["id"]]["key"] == key
    assert listed[chat["id"]]["unread_count"] == 2 and page["unread_total"] == 2

    pair = client.create_chat("private", [a, b])
    assert pair.chat["kind"] == "private"


def test_errors_carry_the_server_code_and_status(client: sc.SquallClient, squall: ServerProcess) -> None:
    with pytest.raises(sc.ValidationError) as bad_name:
        client.upsert_user(uid(), display_name="x" * 65)
    assert (bad_name.value.status, bad_name.value.code) == (400, "invalid_display_name")
    assert bad_name.value.message

    with pytest.raises(sc.NotFoundError) as missing:
        client.delete_user(uid("nobody"))
    assert (missing.value.status, missing.value.code) == (404, "user_not_found")

    a, b = uid("a"), uid("b")
    key = uid("k")
    chat = client.create_chat("group", [a, b], title="T", key=key).chat
    with pytest.raises(sc.ConflictError) as conflict:
        client.create_chat("group", [a], title="T", key=key)
    assert (conflict.value.status, conflict.value.code) == (409, "chat_key_conflict")
    pair = client.create_chat("private", [a, b]).chat
    with pytest.raises(sc.ConflictError) as not_group:
        client.add_members(pair["id"], [uid()])
    assert not_group.value.code == "not_a_group"
    with pytest.raises(sc.NotFoundError) as no_chat:
        client.post_message(chat["id"] + 10_000, "hi")
    assert no_chat.value.code == "chat_not_found"
    with pytest.raises(sc.ApiError) as stranger:
        client.post_message(chat["id"], "hi", sender=client.upsert_user(uid()).user["external_id"] or "")
    assert (stranger.value.status, stranger.value.code) == (403, "not_a_member")
    with pytest.raises(sc.NotFoundError) as unknown:
        client.publish("hello", external_ids=[uid("ghost")])
    assert unknown.value.code == "user_not_found"

    with sc.SquallClient(squall.url, "wrong-token") as intruder:
        with pytest.raises(sc.PermissionDeniedError) as refused:
            intruder.upsert_user(uid())
    assert (refused.value.status, refused.value.code) == (403, "invalid_service_token")

    with sc.SquallClient(f"http://127.0.0.1:{free_port()}", SERVICE_TOKEN, timeout=2) as nowhere:
        with pytest.raises(sc.SquallConnectionError):
            nowhere.upsert_user(uid())


def test_rate_limited_carries_retry_after(server_factory: Any) -> None:
    """Past SERVICE_TOKEN_FAILURES_PER_ADDRESS_PER_MINUTE wrong tokens, even the right one gets 429."""
    server = server_factory("--service-token-failures-per-address-per-minute", "2")
    with sc.SquallClient(server.url, "wrong-token") as intruder:
        for _ in range(2):
            with pytest.raises(sc.PermissionDeniedError):
                intruder.upsert_user(uid())
    with sc.SquallClient(server.url, SERVICE_TOKEN) as api:
        with pytest.raises(sc.RateLimitedError) as limited:
            api.upsert_user(uid())
    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    assert limited.value.retry_after is not None and limited.value.retry_after > 0


# --- mint_token ---------------------------------------------------------------------------


def test_mint_token_is_accepted_by_a_server_in_external_mode(squall: ServerProcess) -> None:
    sub = uid("shopper")
    token = mint(sub, name="Shopper Sam", picture="https://cdn.example.com/sam.png", ttl=120)
    answer = me(squall, token)
    assert answer.status_code == 200, answer.text
    user = answer.json()
    assert user["display_name"] == "Shopper Sam" and user["avatar_url"] == "https://cdn.example.com/sam.png"

    minter = sc.TokenMinter(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, ttl=60)
    assert me(squall, minter.mint(sub, name="Sam")).json()["display_name"] == "Sam"

    forged = sc.mint_token(sub, secret="another-secret-" + "z" * 32, issuer=ISSUER, audience=AUDIENCE)
    assert me(squall, forged).json()["error"]["code"] == "invalid_token"
    wrong_aud = sc.mint_token(sub, secret=SECRET, issuer=ISSUER, audience="elsewhere")
    assert me(squall, wrong_aud).json()["error"]["code"] == "invalid_audience"
    expired = mint(sub, ttl=1, now=time.time() - 60)
    assert me(squall, expired).json()["error"]["code"] == "token_expired"


@pytest.mark.parametrize("bad", [
    {"sub": ""}, {"sub": "x" * 256}, {"sub": "a\nb"}, {"secret": "short"}, {"ttl": 0}, {"algorithm": "RS256"},
    {"issuer": ""},
])
def test_mint_token_refuses_what_squall_would_refuse(bad: dict[str, Any]) -> None:
    args: dict[str, Any] = {"sub": "u-1", "secret": SECRET, "issuer": ISSUER, "audience": AUDIENCE, **bad}
    with pytest.raises(ValueError):
        sc.mint_token(args.pop("sub"), **args)


def test_mint_token_limits_at_and_past() -> None:
    assert mint("x" * 255)
    with pytest.raises(ValueError):
        mint("x" * 256)
    assert sc.mint_token("u", secret="s" * 32, issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError):
        sc.mint_token("u", secret="s" * 31, issuer=ISSUER, audience=AUDIENCE)


def test_parse_sse_yields_complete_events_only() -> None:
    lines = ["retry: 2000", "", ": ping", "id: 7", 'data: {"id":7,', 'data:"type":"x"}', "", "event: ignored",
             'data: {"type":"unread"}', "", 'data: {"cut": "off"}']

    async def collect() -> list[str]:
        async def source() -> Any:
            for line in lines:
                yield line
        return [data async for data in parse_sse(source())]
    assert asyncio.run(collect()) == ['{"id":7,\n"type":"x"}', '{"type":"unread"}']


def test_full_jitter_stays_within_the_capped_exponential() -> None:
    for attempt in range(40):
        for _ in range(20):
            assert 0 <= full_jitter(attempt, 0.5, 30.0) <= min(30.0, 0.5 * 2 ** attempt)


# --- subscribe ----------------------------------------------------------------------------


async def _until(events: sc.Subscription, wanted: int) -> list[dict[str, Any]]:
    """The next ``wanted`` notifications (events with an id) of ``events``, within 20 s."""
    got: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in events:
            if "id" in event:
                got.append(event)
                if len(got) == wanted:
                    return
    await asyncio.wait_for(collect(), 20)
    return got


async def _first_unread(events: sc.Subscription) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in events:
            if event["type"] == "unread":
                return event
        raise AssertionError("the stream ended")
    return await asyncio.wait_for(first(), 20)


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_async_client_publishes_to_a_subscribed_user(squall: ServerProcess, transport: str) -> None:
    async def scenario() -> None:
        user = uid()
        async with sc.AsyncSquallClient(squall.url, SERVICE_TOKEN) as api:
            assert (await api.upsert_user(user, display_name="Rita")).created
            async with api.subscribe(mint(user), transport=transport) as events:
                unread = await _first_unread(events)
                assert unread["total"] == 0
                answer = await api.publish("Your invoice is ready", external_ids=[user], type="invoice_ready",
                                           data={"invoice_id": 42})
                assert len(answer["ids"]) == 1 and answer["skipped_external_ids"] == []
                [event] = await _until(events, 1)
                assert event["id"] == answer["ids"][0] and events.last_event_id == event["id"]
                assert (event["type"], event["message"], event["data"]) == ("invoice_ready",
                                                                            "Your invoice is ready",
                                                                            {"invoice_id": 42})
            # The rest of the asyncio client, once each.
            other = uid()
            chat = (await api.create_chat("group", [user, other], title="Async", key=uid("k"))).chat
            assert (await api.add_members(chat["id"], [uid()]))["added"]
            assert (await api.remove_member(chat["id"], other))["removed"] is True
            assert (await api.post_message(chat["id"], "hi", sender=user)).created
            assert (await api.user_chats(user))["chats"][0]["id"] == chat["id"]
            assert (await api.revoke_user(user))["revoked"] is True
            assert (await api.delete_user(user))["deleted"] is True
            with pytest.raises(sc.NotFoundError) as gone:
                await api.delete_user(user)
            assert gone.value.code == "user_not_found"
    asyncio.run(scenario())


def test_subscribe_gets_a_fresh_token_from_the_provider_when_one_expires(squall: ServerProcess,
                                                                         client: sc.SquallClient) -> None:
    """Each token lives 2 s: the stream ends with auth_expired, the provider is asked again, nothing is lost."""
    user = uid()
    client.upsert_user(user, display_name="Tess")
    minted: list[str] = []

    def provider() -> str:
        minted.append(mint(user, ttl=2))
        return minted[-1]

    async def scenario() -> None:
        async with sc.subscribe(squall.url, provider, backoff_base=0.1) as events:
            await _first_unread(events)
            sent = [client.publish(f"n{i}", external_ids=[user])["ids"][0] for i in range(2)]
            await asyncio.sleep(3)  # the first token expires: the server ends the stream
            sent += [client.publish(f"n{i}", external_ids=[user])["ids"][0] for i in range(2, 4)]
            got = await _until(events, 4)
            assert [e["id"] for e in got] == sent
            assert events.connections >= 2 and len(minted) >= 2
    asyncio.run(scenario())


def test_subscribe_with_a_revoked_static_token_raises_the_code(squall: ServerProcess,
                                                               client: sc.SquallClient) -> None:
    user = uid()
    client.upsert_user(user, display_name="Rex")
    token = mint(user)

    async def scenario() -> None:
        async with sc.subscribe(squall.url, token, backoff_base=0.1) as events:
            await _first_unread(events)
            client.revoke_user(user)
            with pytest.raises(sc.AuthenticationError) as refused:
                await asyncio.wait_for(_until(events, 1), 20)
            assert (refused.value.status, refused.value.code) == (401, "token_revoked")
    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_subscribe_gives_up_after_max_attempts_in_a_row(transport: str) -> None:
    async def scenario() -> None:
        events = sc.subscribe(f"http://127.0.0.1:{free_port()}", "any-token", transport=transport,
                              max_attempts=3, backoff_base=0.01)
        with pytest.raises(sc.SquallConnectionError, match="3 attempts"):
            await asyncio.wait_for(events.__anext__(), 20)
    asyncio.run(scenario())


def test_subscribe_refuses_a_bad_token_at_once(squall: ServerProcess) -> None:
    async def scenario() -> None:
        with pytest.raises(sc.AuthenticationError) as refused:
            await asyncio.wait_for(sc.subscribe(squall.url, "not-a-token").__anext__(), 20)
        assert refused.value.code == "invalid_token"
    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("transport, stop_signal", [("sse", signal.SIGKILL), ("websocket", signal.SIGTERM)])
def test_subscribe_resumes_across_a_server_restart(tmp_path: Path, transport: str, stop_signal: int) -> None:
    """Notifications published while the stream is down (the server restarted on its port and file
    database) arrive after the reconnect: every one, in order, once."""
    port = free_port()
    database = f"sqlite:///{tmp_path}/restart.db"

    async def scenario() -> None:
        server = await asyncio.to_thread(lambda: start_server(tmp_path, *EXTERNAL, port=port, DATABASE_URL=database))
        user = uid()
        gate = asyncio.Event()
        gate.set()

        async def provider() -> str:
            await gate.wait()  # closed while the test publishes into the restarted server
            return mint(user)
        try:
            async with sc.AsyncSquallClient(server.url, SERVICE_TOKEN) as api:
                await api.upsert_user(user, display_name="Ria")
                events = api.subscribe(provider, transport=transport, backoff_base=0.2, backoff_cap=0.5)
                received: list[dict[str, Any]] = []
                unread = await _first_unread(events)
                assert unread["type"] == "unread"
                sent = [(await api.publish(f"before {i}", external_ids=[user]))["ids"][0] for i in range(3)]
                received += await _until(events, 3)
                reading = asyncio.ensure_future(_until(events, 4))

                await asyncio.to_thread(server.stop, stop_signal)
                await asyncio.sleep(1.5)  # the stream retries against the closed port (with backoff)
                gate.clear()
                await asyncio.sleep(1.0)  # any attempt under way ends; the next waits for a token
                await asyncio.to_thread(server.start)
                sent += [(await api.publish(f"while away {i}", external_ids=[user]))["ids"][0] for i in range(3)]
                gate.set()
                await asyncio.sleep(1.0)
                sent.append((await api.publish("live again", external_ids=[user]))["ids"][0])
                received += await reading
                await events.aclose()
        finally:
            await asyncio.to_thread(server.kill)
        assert [e["id"] for e in received] == sent  # no gap, no duplicate, in order
        assert [e["message"] for e in received] == [*(f"before {i}" for i in range(3)),
                                                    *(f"while away {i}" for i in range(3)), "live again"]
        assert events.connections == 2
    asyncio.run(scenario())


# --- verify_webhook -----------------------------------------------------------------------


def signed(body: bytes, *, secret: str = WEBHOOK_SECRET, when: datetime | None = None,
           msg_id: str = "msg_1") -> dict[str, str]:
    """Standard Webhooks headers for ``body``, signed with the standardwebhooks package."""
    when = when or datetime.now(timezone.utc)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, when, body)
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(int(when.timestamp())), "Webhook-Signature": signature}


EVENT = {"id": "msg_1", "type": "message.created", "timestamp": "2026-12-04T15:00:00.123Z",
         "data": {"chat": {"id": 3, "key": "order-7", "kind": "group"},
                  "message": {"id": 9, "client_id": None, "content": "hi", "created_at": "2026-12-04T15:00:00.120Z"},
                  "sender": {"id": 4, "username": "~ab", "external_id": "u-1"},
                  "members": [{"id": 4, "external_id": "u-1"}, {"id": 5, "external_id": "u-2"}]}}


def test_verify_webhook_returns_the_parsed_event() -> None:
    body = json.dumps(EVENT).encode()
    event = sc.verify_webhook(signed(body), body, WEBHOOK_SECRET)
    assert (event.id, event.type, event.data) == ("msg_1", "message.created", EVENT["data"])
    assert event.timestamp == datetime(2026, 12, 4, 15, 0, 0, 123000, tzinfo=timezone.utc)
    lower = {name.lower(): value for name, value in signed(body).items()}
    assert sc.verify_webhook(lower, body.decode(), WEBHOOK_SECRET).id == "msg_1"


def test_verify_webhook_refuses_a_tampered_body_a_stale_timestamp_and_missing_headers() -> None:
    body = json.dumps(EVENT).encode()
    headers = signed(body)
    with pytest.raises(sc.WebhookVerificationError):
        sc.verify_webhook(headers, body.replace(b'"hi"', b'"ho"'), WEBHOOK_SECRET)
    stale = signed(body, when=datetime.now(timezone.utc) - timedelta(minutes=6))
    with pytest.raises(sc.WebhookVerificationError, match="too old"):
        sc.verify_webhook(stale, body, WEBHOOK_SECRET)
    # Just inside the 5-minute tolerance still verifies.
    assert sc.verify_webhook(signed(body, when=datetime.now(timezone.utc) - timedelta(minutes=4, seconds=50)),
                             body, WEBHOOK_SECRET).id == "msg_1"
    with pytest.raises(sc.WebhookVerificationError):
        sc.verify_webhook({k: v for k, v in headers.items() if k != "Webhook-Signature"}, body, WEBHOOK_SECRET)
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    with pytest.raises(sc.WebhookVerificationError):
        sc.verify_webhook(headers, body, other)
    with pytest.raises(ValueError):
        sc.verify_webhook(headers, body, "")


@pytest.mark.parametrize("body", [b"[1]", b'{"id": "msg_1", "type": "x", "timestamp": "yesterday", "data": {}}',
                                  b'{"id": "msg_1", "type": "x", "timestamp": "2026-12-04T15:00:00Z"}',
                                  b'{"type": "x", "timestamp": "2026-12-04T15:00:00Z", "data": {}}'])
def test_verify_webhook_refuses_a_signed_body_that_is_not_an_event(body: bytes) -> None:
    with pytest.raises(sc.WebhookVerificationError):
        sc.verify_webhook(signed(body), body, WEBHOOK_SECRET)


# --- installation -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fresh_venv_installs_the_package(tmp_path: Path) -> None:
    """``pip install ./clients/python`` into a clean venv (no system site packages), then use it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "./clients/python"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    probe = (
        "import importlib.resources, squall_client as sc\n"
        "assert importlib.resources.files('squall_client').joinpath('py.typed').is_file()\n"
        f"t = sc.mint_token('u-1', secret={SECRET!r}, issuer='i', audience='a', name='N')\n"
        "import jwt; print(jwt.decode(t, options={'verify_signature': False})['name'], sc.__version__)\n"
    )
    run = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["N", "0.1.0"]
    where = subprocess.run([str(python), "-c", "import squall_client; print(squall_client.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not the repository's
