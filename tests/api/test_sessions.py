"""Sessions and tokens over real sockets: refusals on every transport, refresh rotation, logout,
expiry of live connections, stream tickets (issue 10, acceptance 1-5)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import jwt
import pytest
import tornado.httpclient
import tornado.websocket

from models import User
from tests.support.clients import SSEClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tests.support.streams import wait_until
from tests.support.checks import closed

STREAMS = ("/ws/chat", "/ws/notifications", "/sse/notifications", "/sse/chat")


def claims_of(token: str) -> dict:
    """The claims of a token (no verification)."""
    return jwt.decode(token, options={"verify_signature": False})


async def refused(api, http_port, token, code, ticket=False):
    """``token`` gets 401 ``code`` on HTTP, on both WebSockets and both SSE streams."""
    query = {"ticket": token} if ticket else {"access_token": token}
    if not ticket:
        status, err = await api.call("GET", "/api/me", token=token)
        assert (status, err["error"]["code"]) == (401, code), ("/api/me", err)
    for path in STREAMS:
        if path.startswith("/ws/"):
            url = f"ws://127.0.0.1:{http_port}{path}?{'ticket' if ticket else 'access_token'}={token}"
            with pytest.raises(tornado.httpclient.HTTPClientError) as info:
                await tornado.websocket.websocket_connect(url)
            assert info.value.code == 401, path
            assert json.loads(info.value.response.body)["error"]["code"] == code, path
        else:
            sse = await SSEClient.connect("127.0.0.1", http_port, path, **query)
            body = await sse.body_text()
            sse.close()
            assert sse.status == 401 and json.loads(body)["error"]["code"] == code, (path, body)


async def login(api, user) -> dict:
    """A second session of ``user``: the login answer."""
    status, data = await api.call("POST", "/api/auth/login", {"username": user["username"], "password": "password123"})
    assert status == 200, data
    return data


async def publish(api, user_ids, message):
    status, out = await api.call("POST", "/api/notifications", {"user_ids": list(user_ids), "message": message},
                                 token=SERVICE_TOKEN)
    assert status == 202, out
    return out["ids"]


async def ticket_of(api, token) -> str:
    status, data = await api.call("POST", "/api/stream-ticket", {}, token=token)
    assert status == 200 and data["expires_in"] == 30, data
    return data["ticket"]


# Acceptance 1 -----------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_forged_and_foreign_tokens_are_refused_everywhere(api, users, services, config, http_port):
    (alice,) = await users("alice")
    good = claims_of(alice["token"])
    now = int(time.time())

    def signed(secret=config.jwt_secret, **changes):
        return jwt.encode({**good, "jti": uuid.uuid4().hex, **changes}, secret, algorithm="HS256")

    await refused(api, http_port, jwt.encode(good, None, algorithm="none"), "invalid_token")
    await refused(api, http_port, signed(secret="another-secret-" + "y" * 32), "invalid_token")
    head, body, sig = alice["token"].split(".")
    tampered_body = jwt.utils.base64url_encode(json.dumps({**good, "sub": str(alice["id"] + 1)}).encode()).decode()
    await refused(api, http_port, f"{head}.{tampered_body}.{sig}", "invalid_token")
    await refused(api, http_port, signed(iat=now - 100, nbf=now - 100, exp=now - 5), "token_expired")
    await refused(api, http_port, signed(nbf=now + 120, exp=now + 300), "invalid_token")
    # a token of another installation (same secret, another database)
    await refused(api, http_port, signed(iss="squall:0123456789abcdef"), "invalid_token")
    # the refresh token and a ticket are not access tokens; an access token is no ticket
    await refused(api, http_port, alice["refresh"], "invalid_token")
    await refused(api, http_port, await ticket_of(api, alice["token"]), "invalid_token")
    await refused(api, http_port, alice["token"], "invalid_ticket", ticket=True)
    # the real token still works
    status, me = await api.call("GET", "/api/me", token=alice["token"])
    assert status == 200 and me["id"] == alice["id"]


@pytest.mark.gen_test(timeout=60)
async def test_token_of_a_logged_out_session_is_refused_everywhere(api, users, http_port):
    (alice,) = await users("alice")
    other = await login(api, alice)
    status, _ = await api.call("POST", "/api/auth/logout", {}, token=alice["token"])
    assert status == 200
    await refused(api, http_port, alice["token"], "token_revoked")
    status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": alice["refresh"]})
    assert status == 401 and err["error"]["code"] == "invalid_refresh_token"
    # the user's other session is untouched
    status, me = await api.call("GET", "/api/me", token=other["access_token"])
    assert status == 200 and me["id"] == alice["id"]


@pytest.mark.gen_test(timeout=60)
async def test_token_of_a_deleted_and_recreated_user_id_is_refused(api, users, services, http_port):
    (alice,) = await users("alice")
    old_id = alice["id"]
    await services.dbx.write(lambda: User.delete().where(User.id == old_id).execute())
    services.users.forget(old_id)
    hashed = await services.auth.hash_password("password123")
    await services.dbx.write(lambda: User.create(id=old_id, username="mallory_" + uuid.uuid4().hex[:6],
                                                 username_key="mallory_" + uuid.uuid4().hex[:6],
                                                 display_name="Mallory", password_hash=hashed))
    await refused(api, http_port, alice["token"], "invalid_token")


@pytest.mark.gen_test(timeout=60)
async def test_token_from_another_database_with_the_same_secret_is_refused(server_factory, tmp_path):
    from tests.support.clients import ApiClient
    first = server_factory("--database-url", f"sqlite:///{tmp_path}/one.db")
    api1 = ApiClient(first.url)
    old = await api1.register("victim_" + uuid.uuid4().hex[:6])
    first.stop()
    # The database is deleted and a new one made; the secret (JWT_SECRET) is the same.
    second = server_factory("--database-url", f"sqlite:///{tmp_path}/two.db")
    api2 = ApiClient(second.url)
    new = await api2.register("victim_" + uuid.uuid4().hex[:6])
    assert new["id"] == old["id"]  # the same id, another account
    await refused(api2, second.port, old["token"], "invalid_token")
    status, err = await api2.call("POST", "/api/auth/refresh", {"refresh_token": old["refresh"]})
    assert status == 401 and err["error"]["code"] == "invalid_refresh_token"
    status, me = await api2.call("GET", "/api/me", token=new["token"])
    assert status == 200 and me["username"] == new["username"]


# Acceptance 2 -----------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_refresh_rotates_and_reuse_revokes_the_family(api, users, http_port):
    (alice,) = await users("alice")
    status, first = await api.call("POST", "/api/auth/refresh", {"refresh_token": alice["refresh"]})
    assert status == 200, first
    assert first["refresh_token"] != alice["refresh"] and first["user"]["id"] == alice["id"]
    assert claims_of(first["access_token"])["sid"] == claims_of(alice["token"])["sid"]
    status, me = await api.call("GET", "/api/me", token=first["access_token"])
    assert status == 200
    status, second = await api.call("POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200
    ws = await WSClient.connect(f"ws://127.0.0.1:{http_port}", "/ws/notifications", second["access_token"])
    await ws.recv_type("unread")
    # the spent token again: theft is assumed, the whole family dies
    status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": alice["refresh"]})
    assert status == 401 and err["error"]["code"] == "refresh_reused"
    for token in (first["access_token"], second["access_token"]):
        status, err = await api.call("GET", "/api/me", token=token)
        assert status == 401 and err["error"]["code"] == "token_revoked"
    status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": second["refresh_token"]})
    assert status == 401 and err["error"]["code"] == "invalid_refresh_token"
    assert await closed(ws, 5) == (4001, "logged_out")
    for bad in ("", "x" * 300, 5, None):
        status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": bad})
        assert status == 401 and err["error"]["code"] == "invalid_refresh_token", bad


@pytest.mark.gen_test(timeout=60)
async def test_refresh_with_the_cookie(api, users, http_port):
    (alice,) = await users("alice")
    base = f"http://127.0.0.1:{http_port}"
    status, data = await api.call("POST", "/api/auth/refresh", {},
                                  headers={"Cookie": f"squall_refresh={alice['refresh']}", "Origin": base})
    assert status == 200 and data["user"]["id"] == alice["id"]
    cookies = api.last_headers.get_list("Set-Cookie")
    assert any(c.startswith(f"squall_refresh={data['refresh_token']}") for c in cookies)
    assert any(c.startswith(f"squall_token={data['access_token']}") for c in cookies)


# Acceptance 3 (one process; the two-process version is in test_sessions_cluster.py) ------------

@pytest.mark.gen_test(timeout=60)
async def test_logout_closes_that_sessions_streams_only(api, users, http_port):
    (alice,) = await users("alice")
    other = await login(api, alice)
    ws_url = f"ws://127.0.0.1:{http_port}"
    ws = await WSClient.connect(ws_url, "/ws/chat", alice["token"])
    ws_other = await WSClient.connect(ws_url, "/ws/notifications", other["access_token"])
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    sse_other = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", other["access_token"])
    for stream in (sse, sse_other):
        await stream.next_type("unread")
    await ws_other.recv_type("unread")
    await ws.request({"type": "ping"}, "pong")

    started = time.monotonic()
    status, _ = await api.call("POST", "/api/auth/logout", {}, token=alice["token"])
    assert status == 200
    assert await closed(ws) == (4001, "logged_out")
    assert await sse.next_type("auth_expired", timeout=1.0) == {"type": "auth_expired", "reason": "logged_out"}
    assert await sse.next_event(1.0) is None  # then the stream ends
    assert time.monotonic() - started < 2.0
    # the other session keeps working
    await ws_other.request({"type": "ping"}, "pong")
    [nid] = await publish(api, [alice["id"]], "still here")
    assert (await sse_other.next_type("announcement"))["id"] == nid

    status, _ = await api.call("POST", "/api/auth/logout-all", {}, token=other["access_token"])
    assert status == 200
    assert await closed(ws_other) == (4001, "logged_out")
    assert (await sse_other.next_type("auth_expired", timeout=1.0))["reason"] == "logged_out"
    status, err = await api.call("GET", "/api/me", token=other["access_token"])
    assert status == 401 and err["error"]["code"] == "invalid_token"
    status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": other["refresh_token"]})
    assert status == 401
    # a fresh login works again
    again = await login(api, alice)
    status, _ = await api.call("GET", "/api/me", token=again["access_token"])
    assert status == 200


@pytest.mark.gen_test(timeout=60)
async def test_revocation_survives_a_restart(server_factory, tmp_path):
    from tests.support.clients import ApiClient
    url = f"sqlite:///{tmp_path}/keep.db"
    server = server_factory("--database-url", url)
    api = ApiClient(server.url)
    alice = await api.register("alice_" + uuid.uuid4().hex[:6])
    kept = await login(api, alice)
    status, _ = await api.call("POST", "/api/auth/logout", {}, token=alice["token"])
    assert status == 200
    server.stop()
    again = server_factory("--database-url", url)
    api = ApiClient(again.url)
    status, err = await api.call("GET", "/api/me", token=alice["token"])
    assert status == 401 and err["error"]["code"] == "token_revoked"
    status, _ = await api.call("GET", "/api/me", token=kept["access_token"])
    assert status == 200


# Acceptance 4 ------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"token_ttl": 3}])
async def test_websocket_expires_without_refresh(api, users, http_port, config_overrides):
    (alice,) = await users("alice")
    ws = await WSClient.connect(f"ws://127.0.0.1:{http_port}", "/ws/chat", alice["token"])
    warning = await ws.recv_type("token_expiring", timeout=5)
    assert warning["expires_at"] == claims_of(alice["token"])["exp"]
    assert await closed(ws, 6) == (4001, "token_expired")
    assert time.time() >= warning["expires_at"]


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"token_ttl": 3}])
async def test_websocket_refresh_keeps_it_open(api, users, http_port, config_overrides):
    (alice,) = await users("alice")
    ws = await WSClient.connect(f"ws://127.0.0.1:{http_port}", "/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    refresh = alice["refresh"]
    published, received = [], []
    deadline = time.monotonic() + 10
    next_publish = time.monotonic()
    while time.monotonic() < deadline:
        if time.monotonic() >= next_publish:
            published += await publish(api, [alice["id"]], f"n{len(published)}")
            next_publish += 1.0
        try:
            frame = await ws.recv(0.2)
        except asyncio.TimeoutError:
            continue
        assert frame is not None, (ws.conn.close_code, ws.conn.close_reason)
        if frame["type"] == "token_expiring":
            status, pair = await api.call("POST", "/api/auth/refresh", {"refresh_token": refresh})
            assert status == 200
            refresh = pair["refresh_token"]
            answer = await ws.request({"type": "refresh", "access_token": pair["access_token"]}, "refreshed")
            assert answer["expires_at"] == claims_of(pair["access_token"])["exp"]
        elif frame.get("id") is not None:
            received.append(frame["id"])
    while len(received) < len(published):
        frame = await ws.recv_type("announcement", timeout=5)
        received.append(frame["id"])
    assert received == published and len(published) >= 9
    # a refresh with another user's token or garbage is an error frame; the socket stays
    (bob,) = await users("bob")
    err = await ws.request({"type": "refresh", "access_token": bob["token"]}, "error")
    assert err["code"] == "wrong_user"
    err = await ws.request({"type": "refresh", "access_token": "garbage"}, "error")
    assert err["code"] == "invalid_token"
    await ws.request({"type": "ping"}, "pong")


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"token_ttl": 3}])
async def test_sse_expires_with_auth_expired_and_resumes(api, users, http_port, config_overrides):
    (alice,) = await users("alice")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    assert sse.status == 200
    await sse.next_type("unread")
    first = await publish(api, [alice["id"]], "before")
    got = [(await sse.next_type("announcement"))["id"]]
    assert got == first
    assert await sse.next_type("auth_expired", timeout=6) == {"type": "auth_expired", "reason": "token_expired"}
    assert await sse.next_event(2) is None
    last_id = sse.last_event_id
    # published while the client was away
    missed = await publish(api, [alice["id"]], "gap-1") + await publish(api, [alice["id"]], "gap-2")
    status, pair = await api.call("POST", "/api/auth/refresh", {"refresh_token": alice["refresh"]})
    assert status == 200
    ticket = await ticket_of(api, pair["access_token"])
    again = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", headers={"Last-Event-ID": last_id},
                                    ticket=ticket)
    assert again.status == 200
    seen = []
    while len(seen) < len(missed):
        frame = await again.next_type("announcement")
        seen.append(frame["id"])
    later = await publish(api, [alice["id"]], "after")
    frame = await again.next_type("announcement")
    assert seen == missed and frame["id"] == later[0]


# Acceptance 5 ------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_tickets_open_every_stream_once_and_never_reach_a_log(api, users, http_port, caplog):
    caplog.set_level(logging.DEBUG)
    alice, bob = await users("alice", "bob")
    ws_url = f"ws://127.0.0.1:{http_port}"
    tickets = []
    for path in STREAMS:
        ticket = await ticket_of(api, alice["token"])
        tickets.append(ticket)
        if path.startswith("/ws/"):
            conn = await tornado.websocket.websocket_connect(f"{ws_url}{path}?ticket={ticket}")
            conn.write_message('{"type":"ping"}')
            while json.loads(await conn.read_message())["type"] != "pong":
                pass
            conn.close()
            with pytest.raises(tornado.httpclient.HTTPClientError) as info:
                await tornado.websocket.websocket_connect(f"{ws_url}{path}?ticket={ticket}")
            assert info.value.code == 401
        else:
            sse = await SSEClient.connect("127.0.0.1", http_port, path, ticket=ticket)
            assert sse.status == 200
            # bound to the user: alice's notification arrives, bob's does not
            await sse.next_type("unread")
            await publish(api, [bob["id"]], "for bob")
            [nid] = await publish(api, [alice["id"]], "for alice")
            assert (await sse.next_type("announcement"))["id"] == nid
            sse.close()
            again = await SSEClient.connect("127.0.0.1", http_port, path, ticket=ticket)
            assert again.status == 401 and json.loads(await again.body_text())["error"]["code"] == "invalid_ticket"
            again.close()
    await refused(api, http_port, "not-a-ticket", "invalid_ticket", ticket=True)
    # access tokens in the URL keep working (the seed's clients)
    ws = await WSClient.connect(ws_url, "/ws/notifications", alice["token"])
    await ws.request({"type": "ping"}, "pong")
    for record in caplog.records:
        text = record.getMessage()
        assert alice["token"] not in text and "ticket=" not in text, text
        assert not any(t in text for t in tickets), text


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"ticket_ttl": 1}])
async def test_tickets_expire(api, users, http_port, config_overrides):
    (alice,) = await users("alice")
    status, data = await api.call("POST", "/api/stream-ticket", {}, token=alice["token"])
    assert status == 200 and data["expires_in"] == 1
    await asyncio.sleep(2.1)
    await refused(api, http_port, data["ticket"], "invalid_ticket", ticket=True)
    # a ticket cannot buy a ticket, and needs a signed-in caller
    status, data = await api.call("POST", "/api/stream-ticket", {})
    assert status == 401


@pytest.mark.gen_test(timeout=60)
async def test_ticket_of_a_logged_out_session_is_refused(api, users, http_port):
    (alice,) = await users("alice")
    ticket = await ticket_of(api, alice["token"])
    status, _ = await api.call("POST", "/api/auth/logout", {}, token=alice["token"])
    assert status == 200
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", ticket=ticket)
    assert sse.status == 401 and json.loads(await sse.body_text())["error"]["code"] == "token_revoked"
    sse.close()


PREVIOUS = "the-previous-secret-" + "z" * 32


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"jwt_secret_previous": PREVIOUS}])
async def test_previous_jwt_secret_is_accepted_while_rotating(api, users, http_port, config_overrides):
    (alice,) = await users("alice")
    claims = claims_of(alice["token"])
    old = jwt.encode({**claims, "jti": "rotated"}, PREVIOUS, algorithm="HS256")
    status, me = await api.call("GET", "/api/me", token=old)
    assert status == 200 and me["id"] == alice["id"]
    other = jwt.encode({**claims, "jti": "other"}, "a-third-secret-" + "q" * 32, algorithm="HS256")
    status, err = await api.call("GET", "/api/me", token=other)
    assert status == 401 and err["error"]["code"] == "invalid_token"


@pytest.mark.gen_test(timeout=60)
async def test_registry_indexes_connections_by_session(api, users, services, http_port):
    (alice,) = await users("alice")
    sid = claims_of(alice["token"])["sid"]
    ws = await WSClient.connect(f"ws://127.0.0.1:{http_port}", "/ws/chat", alice["token"])
    await ws.request({"type": "ping"}, "pong")
    await wait_until(lambda: len(services.registry.session_connections(sid)) == 1, what="indexed")
    assert services.registry.scheduled() == 2  # its expiry and its warning
    ws.close()
    await wait_until(lambda: not services.registry.session_connections(sid), what="unindexed")
    assert services.registry.scheduled() == 0


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"refresh_ttl": 2}])
async def test_refresh_tokens_expire(api, users, config_overrides):
    (alice,) = await users("alice")
    status, pair = await api.call("POST", "/api/auth/refresh", {"refresh_token": alice["refresh"]})
    assert status == 200 and pair["refresh_expires_in"] == 2  # within its life
    await asyncio.sleep(2.5)
    status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert status == 401 and err["error"]["code"] == "invalid_refresh_token"  # just past it
