"""External tokens (issue 22 items 1-2; acceptance 1, 2, 3): the product's HMAC, RSA and JWKS tokens
over real sockets, on the API, both WebSockets, both SSE streams and both long-polls; a JWKS
server run by the test (rotation, outage, a flood of unknown kids); users provisioned just in
time; revocation, disabled and deleted users; the refresh frame; expiry."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from models import User
from models.user import DELETED
from tests.support.clients import SSEClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tornado_app.errors import Unauthorized

ISSUER = "https://product.example"
AUDIENCE = "squall"
SECRET = "product-hmac-secret-" + "s" * 32
STREAMS = ("/ws/chat", "/ws/notifications", "/sse/notifications", "/sse/chat", "/poll/notifications",
           "/poll/chat")


def new_rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk_of(private_key, kid: str) -> dict:
    return {**jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True),
            "kid": kid, "alg": "RS256", "use": "sig"}


RSA_KEY = new_rsa()  # the product's key in the PEM-file tests (one per module: generation is slow)


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 that the test rotates, stops, and whose fetches it counts."""

    def __init__(self):
        self.keys = {"k1": new_rsa()}
        self.requests = 0
        server = self

        class Handler(tornado.web.RequestHandler):
            def get(self):
                server.requests += 1
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps({"keys": [jwk_of(key, kid) for kid, key in server.keys.items()]}))

        self.sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = self.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self.server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/.well-known/jwks.json", Handler)]))
        self.server.add_sockets(self.sockets)

    def stop(self):
        self.server.stop()


@pytest.fixture
def ext():
    """Parametrized per test: ``source`` (hmac, pem, jwks), ``mode`` and extra Config fields."""
    return {}


@pytest.fixture
def jwks(io_loop):
    server = JWKSServer()
    yield server
    server.stop()


@pytest.fixture
def config_overrides(ext, jwks, tmp_path):
    ext = dict(ext)
    source = ext.pop("source", "hmac")
    values = dict(auth_mode=ext.pop("mode", "both"), external_jwt_issuer=ISSUER, external_jwt_audience=AUDIENCE,
                  failed_stream_auths_per_address_per_minute=100_000, poll_timeout=0.0)
    if source == "hmac":
        values["external_jwt_secret"] = SECRET
    elif source == "pem":
        path = tmp_path / "product.pem"
        path.write_bytes(pem_of(RSA_KEY))
        values["external_jwt_public_key"] = str(path)
    else:
        values["external_jwks_url"] = jwks.url
    values.update(ext)
    return values


def mint(sub="user-1", key=SECRET, alg="HS256", kid=None, ttl=300, **claims):
    """A token as the product's backend mints it."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def hs256_with(secret: bytes, body: dict) -> str:
    """An HS256 token signed with raw bytes (PyJWT refuses a PEM key as an HMAC secret; an attacker does not)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(body).encode())
    return signing + "." + b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


async def me(api, token):
    return await api.call("GET", "/api/me", token=token)


async def refused_everywhere(api, http_port, token, code):
    """``token`` gets 401 ``code`` on the API, both WebSockets, both SSE streams and both long-polls."""
    status, err = await me(api, token)
    assert (status, err["error"]["code"]) == (401, code), ("/api/me", err)
    for path in STREAMS:
        if path.startswith("/ws/"):
            request = tornado.httpclient.HTTPRequest(f"ws://127.0.0.1:{http_port}{path}",
                                                     headers={"Authorization": f"Bearer {token}"})
            with pytest.raises(tornado.httpclient.HTTPClientError) as info:
                await tornado.websocket.websocket_connect(request)
            assert info.value.code == 401, path
            assert json.loads(info.value.response.body)["error"]["code"] == code, path
        elif path.startswith("/sse/"):
            sse = await SSEClient.connect("127.0.0.1", http_port, path, headers={"Authorization": f"Bearer {token}"})
            body = await sse.body_text()
            sse.close()
            assert sse.status == 401 and json.loads(body)["error"]["code"] == code, (path, body)
        else:
            status, err = await api.call("GET", path, token=token)
            assert (status, err["error"]["code"]) == (401, code), (path, err)


async def works_everywhere(api, ws_url, http_port, token):
    """``token`` opens every stream and poll and calls the API."""
    status, user = await me(api, token)
    assert status == 200, user
    for path in STREAMS:
        if path.startswith("/ws/"):
            ws = await WSClient.connect(ws_url, path, token)
            assert (await ws.request({"type": "ping"}, "pong"))["type"] == "pong"
            ws.close()
        elif path.startswith("/sse/"):
            sse = await SSEClient.connect("127.0.0.1", http_port, path, token)
            assert sse.status == 200, path
            sse.close()
        else:
            status, out = await api.call("GET", path, token=token)
            assert status == 200, (path, out)
    return user


async def closed(ws: WSClient, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while await ws.recv(max(0.01, deadline - time.monotonic())) is not None:
        pass
    return ws.conn.close_code, ws.conn.close_reason


# Acceptance 1: keys -------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_hmac_token_works_on_every_route_and_provisions_the_user(api, ws_url, http_port, services):
    user = await works_everywhere(api, ws_url, http_port, mint("hmac-user", name="Hannah", picture="https://cdn.example/h.png"))
    assert user["display_name"] == "Hannah" and user["avatar_url"] == "https://cdn.example/h.png"
    row = User.get_by_id(user["id"])
    assert (row.kind, row.external_id, row.password_hash) == ("external", "hmac-user", "")
    # the same sub is the same user; a token of a new sub is a new user
    assert (await me(api, mint("hmac-user")))[1]["id"] == user["id"]
    assert (await me(api, mint("hmac-other")))[1]["id"] != user["id"]


@pytest.mark.parametrize("ext", [{"source": "pem"}])
@pytest.mark.gen_test(timeout=60)
async def test_rs256_public_key_token_works(api, ws_url, http_port):
    await works_everywhere(api, ws_url, http_port, mint("rsa-user", key=RSA_KEY, alg="RS256"))
    # another RSA key (same algorithm) is not the product's
    status, err = await me(api, mint("rsa-user", key=new_rsa(), alg="RS256"))
    assert (status, err["error"]["code"]) == (401, "invalid_token")


@pytest.mark.parametrize("curve", ["ES256", "EdDSA"])
def test_ec_and_ed25519_key_files(curve, tmp_path):
    """The algorithm allowlist follows the key type of the PEM file (ES256 for P-256, EdDSA for Ed25519)."""
    from tornado_app.config import Config
    from tornado_app.services.identity.external_auth import ExternalAuth
    key = ec.generate_private_key(ec.SECP256R1()) if curve == "ES256" else ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "k.pem"
    path.write_bytes(pem_of(key))
    verifier = ExternalAuth.from_config(Config(auth_mode="external", external_jwt_public_key=str(path),
                                               external_jwt_issuer=ISSUER, external_jwt_audience=AUDIENCE),
                                        users=None)  # verify_now looks no user up
    assert verifier.algorithms == [curve]
    assert verifier.verify_now(mint("k", key=key, alg=curve))["sub"] == "k"
    with pytest.raises(Unauthorized) as info:
        verifier.verify_now(mint("k", key=RSA_KEY, alg="RS256"))
    assert info.value.code == "invalid_algorithm"


@pytest.mark.parametrize("ext", [{"source": "jwks", "external_jwks_min_refetch": 1.0}])
@pytest.mark.gen_test(timeout=60)
async def test_jwks_rotation_outage_and_unknown_kids(api, ws_url, http_port, jwks, services):
    external = services.external
    assert jwks.requests == 1  # fetched once at start
    old = jwks.keys["k1"]
    await works_everywhere(api, ws_url, http_port, mint("jw", key=old, alg="RS256", kid="k1"))
    assert jwks.requests == 1  # cached: no fetch per token

    # rotation: k2 added, k1 removed; a k2 token is accepted after the refetch it causes
    await asyncio.sleep(1.05)
    jwks.keys = {"k2": new_rsa()}
    status, user = await me(api, mint("jw", key=jwks.keys["k2"], alg="RS256", kid="k2"))
    assert status == 200, user
    assert jwks.requests == 2
    # the removed kid is refused (its refetch is inside the interval: no second fetch)
    status, err = await me(api, mint("jw", key=old, alg="RS256", kid="k1"))
    assert (status, err["error"]["code"]) == (401, "unknown_key")
    assert jwks.requests == 2

    # a flood of unknown kids, after the interval: one fetch shared by all of them
    await asyncio.sleep(1.05)
    floods = [me(api, mint("jw", key=new_rsa() if i == 0 else old, alg="RS256", kid=f"x{i}")) for i in range(40)]
    answers = await asyncio.gather(*floods)
    assert all((s, e["error"]["code"]) == (401, "unknown_key") for s, e in answers), answers[:3]
    assert jwks.requests == 3
    answers = await asyncio.gather(*[me(api, mint("jw", key=old, alg="RS256", kid=f"y{i}")) for i in range(20)])
    assert all(s == 401 for s, _ in answers) and jwks.requests == 3

    # the JWKS server goes down: cached keys still work; an unknown kid is still a 401 (a failed fetch)
    jwks.stop()
    await asyncio.sleep(1.05)
    status, err = await me(api, mint("jw", key=old, alg="RS256", kid="zz"))
    assert (status, err["error"]["code"]) == (401, "unknown_key")
    assert external.fetches == 4 and jwks.requests == 3  # tried, failed
    token = mint("jw", key=jwks.keys["k2"], alg="RS256", kid="k2")
    await works_everywhere(api, ws_url, http_port, token)


# Acceptance 2: each bad token, everywhere ---------------------------------------------------------

@pytest.mark.parametrize("ext", [{"source": "pem"}])
@pytest.mark.gen_test(timeout=120)
async def test_each_bad_token_gets_its_code_on_every_route(api, http_port):
    now = int(time.time())
    good = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bad-tokens", "iat": now, "exp": now + 300}
    rs = dict(key=RSA_KEY, alg="RS256")
    cases = [
        (mint("b", iss="https://evil.example", **rs), "invalid_issuer"),
        (mint("b", aud="another-service", **rs), "invalid_audience"),
        (jwt.encode(good, None, algorithm="none"), "invalid_algorithm"),
        (hs256_with(pem_of(RSA_KEY), good), "invalid_algorithm"),  # HMAC "signed" with the public key
        (mint("b", ttl=-100, **rs), "token_expired"),  # past exp and the 30 s leeway
        (mint("b", nbf=now + 120, **rs), "token_not_yet_valid"),
        (mint(None, **rs), "invalid_subject"),
        (mint("s" * 256, **rs), "invalid_subject"),
        (mint(12345, **rs), "invalid_subject"),
        (mint("", **rs), "invalid_subject"),
        (mint("b", pad="p" * 9000, **rs), "token_too_large"),
        (mint("b", exp=None, **rs), "missing_claim"),
        ("not-a-jwt", "invalid_token"),
    ]
    for token, code in cases:
        await refused_everywhere(api, http_port, token, code)
    # the limits: a sub of 255 characters is accepted; a token of exactly the maximum size too
    assert (await me(api, mint("s" * 255, **rs)))[0] == 200
    token = mint("b", pad="", **rs)
    token = mint("b", pad="p" * (8192 - len(token)), **rs)
    while len(token) > 8192:  # base64 rounding
        token = mint("b", pad="p" * (len(json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["pad"])
                                     - 1), **rs)
    assert len(token) <= 8192 and (await me(api, token))[0] == 200


@pytest.mark.gen_test(timeout=30)
async def test_bad_optional_profile_claims_are_ignored(api):
    status, user = await me(api, mint("prof", name="Pat", picture="https://cdn.example/p.png"))
    assert status == 200
    status, same = await me(api, mint("prof", name="bad\x00name\u202e", picture="javascript:alert(1)"))
    assert status == 200 and same["display_name"] == "Pat" and same["avatar_url"] == "https://cdn.example/p.png"
    status, same = await me(api, mint("prof", name=["x"], picture=42))
    assert status == 200 and same["display_name"] == "Pat"


# Acceptance 3: provisioning, profile updates, both modes -------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_both_mode_builtin_and_external_users_chat_and_profile_updates_reach_the_partner(
        api, users, ws_url, services):
    (bob,) = await users("bob")
    ext_token = mint("ext-ana", name="Ana")
    status, ana = await me(api, ext_token)
    assert status == 200 and ana["display_name"] == "Ana"
    # the builtin user opens a private chat with the external one; they talk over WebSockets
    status, data = await api.call("POST", "/api/chats", {"user_id": ana["id"]}, token=bob["token"])
    assert status == 200, data
    chat = data["chat"]
    a = await WSClient.connect(ws_url, "/ws/chat", ext_token)
    b = await WSClient.connect(ws_url, "/ws/chat", bob["token"])
    ack = await a.request({"type": "send_message", "chat_id": chat["id"], "content": "hi bob"}, "message_ack")
    assert (await b.recv_type("message"))["message"]["id"] == ack["message"]["id"]
    ack = await b.request({"type": "send_message", "chat_id": chat["id"], "content": "hi ana"}, "message_ack")
    assert (await a.recv_type("message"))["message"]["id"] == ack["message"]["id"]

    # a later token with a new name and picture updates what the partner sees
    status, ana2 = await me(api, mint("ext-ana", name="Ana Lima", picture="https://cdn.example/ana.png"))
    assert status == 200 and ana2["id"] == ana["id"] and ana2["display_name"] == "Ana Lima"
    status, listing = await api.call("GET", "/api/chats", token=bob["token"])
    rows = listing["chats"] if isinstance(listing, dict) else listing
    row = next(c for c in rows if c["id"] == chat["id"])
    assert row["title"] == "Ana Lima"
    member = next(m for m in row["members"] if m["id"] == ana["id"])
    assert member["avatar_url"] == "https://cdn.example/ana.png"
    assert "avatar_url" not in next(m for m in row["members"] if m["id"] == bob["id"])  # builtin shape unchanged
    status, history = await api.call("GET", f"/api/chats/{chat['id']}/messages", token=bob["token"])
    msgs = history["messages"] if isinstance(history, dict) else history
    assert any(m.get("sender_name") == "Ana Lima" for m in msgs), msgs
    a.close()
    b.close()

    # the builtin login refuses the external user, whatever the password
    row = User.get_by_id(ana["id"])
    status, err = await api.call("POST", "/api/auth/login", {"username": row.username, "password": "x" * 12})
    assert (status, err["error"]["code"]) == (401, "invalid_credentials")


@pytest.mark.parametrize("ext", [{"mode": "external"}])
@pytest.mark.gen_test(timeout=30)
async def test_external_mode_turns_builtin_auth_off(api):
    for path, body in (("/api/auth/register", {"username": "someone", "password": "password123"}),
                       ("/api/auth/login", {"username": "someone", "password": "password123"}),
                       ("/api/auth/refresh", {"refresh_token": "whatever"})):
        status, err = await api.call("POST", path, body)
        assert (status, err["error"]["code"]) == (403, "builtin_auth_disabled"), path
    assert (await me(api, mint("only-external")))[0] == 200


# Tickets, refresh frames, expiry -----------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_ticket_and_refresh_frame_of_an_external_token(api, ws_url, http_port):
    token = mint("tick", name="Tick")
    status, data = await api.call("POST", "/api/stream-ticket", {}, token=token)
    assert status == 200, data
    ws = await WSClient.connect(ws_url, "/ws/notifications", ticket=data["ticket"])
    fresh = mint("tick", ttl=600, jti=uuid.uuid4().hex)
    got = await ws.request({"type": "refresh", "access_token": fresh}, "refreshed", "error")
    assert got["type"] == "refreshed" and got["expires_at"] == jwt.decode(fresh, options={"verify_signature": False})["exp"]
    await me(api, mint("somebody-else"))
    got = await ws.request({"type": "refresh", "access_token": mint("somebody-else")}, "refreshed", "error")
    assert (got["type"], got["code"]) == ("error", "wrong_user")
    got = await ws.request({"type": "refresh", "access_token": mint("tick", iss="https://evil.example")},
                           "refreshed", "error")
    assert (got["type"], got["code"]) == ("error", "invalid_issuer")
    # a new name in the refresh token: settled after the profile update (off the frame's path)
    renamed = mint("tick", ttl=900, name="Tick Tock")
    got = await ws.request({"type": "refresh", "access_token": renamed}, "refreshed", "error")
    assert got["type"] == "refreshed" and got["expires_at"] == jwt.decode(renamed, options={"verify_signature": False})["exp"]
    assert (await me(api, mint("tick")))[1]["display_name"] == "Tick Tock"
    # a token of a never-seen sub, settled the same way, is still another user's
    got = await ws.request({"type": "refresh", "access_token": mint("never-seen")}, "refreshed", "error")
    assert (got["type"], got["code"]) == ("error", "wrong_user")
    ws.close()


@pytest.mark.parametrize("ext", [{"max_connections_per_user": 2}])
@pytest.mark.gen_test(timeout=30)
async def test_per_user_stream_limit_counts_external_users(api, ws_url, http_port):
    first, second = mint("limited", jti="a"), mint("limited", jti="b")  # two tokens, one user
    a = await WSClient.connect(ws_url, "/ws/notifications", first)
    b = await WSClient.connect(ws_url, "/ws/chat", second)
    await a.request({"type": "ping"}, "pong")
    await b.request({"type": "ping"}, "pong")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", first)
    body = await sse.body_text()
    sse.close()
    assert sse.status == 429 and json.loads(body)["error"]["code"] == "too_many_connections"
    # another external user is not affected
    other = await WSClient.connect(ws_url, "/ws/notifications", mint("unlimited"))
    await other.request({"type": "ping"}, "pong")
    for ws in (a, b, other):
        ws.close()


@pytest.mark.parametrize("ext", [{"external_jwt_leeway": 0.0, "token_expiring_notice": 1.0}])
@pytest.mark.gen_test(timeout=30)
async def test_expiry_closes_streams(api, ws_url, http_port):
    token = mint("short", ttl=3)
    ws = await WSClient.connect(ws_url, "/ws/chat", token)
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", token)
    assert await closed(ws, 8) == (4001, "token_expired")
    assert await sse.next_type("auth_expired", timeout=3) == {"type": "auth_expired", "reason": "token_expired"}
    sse.close()


# Revocation, disabled and deleted users ------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_revoke_tokens_closes_streams_and_refuses_older_tokens(api, ws_url, http_port, services):
    token = mint("rev")
    status, user = await me(api, token)
    ws = await WSClient.connect(ws_url, "/ws/chat", token)
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", token)
    await services.sessions.revoke_user(user["id"], reason="logged_out", revoke_tokens=True)
    assert await closed(ws) == (4001, "logged_out")
    assert (await sse.next_type("auth_expired", timeout=3))["reason"] == "logged_out"
    sse.close()
    await refused_everywhere(api, http_port, token, "token_revoked")
    await refused_everywhere(api, http_port, mint("rev", iat=None), "token_revoked")  # no iat: refused too
    revoked_at = User.get_by_id(user["id"]).revoked_at
    assert revoked_at is not None and revoked_at >= int(time.time()) - 2
    # a token issued after the revocation works (on the API and on streams)
    await works_everywhere(api, ws_url, http_port, mint("rev", iat=revoked_at + 1))
    # another user's tokens are untouched
    assert (await me(api, mint("not-revoked")))[0] == 200


@pytest.mark.gen_test(timeout=60)
async def test_disabled_and_deleted_users_are_refused(api, ws_url, http_port, services):
    token = mint("dis")
    status, user = await me(api, token)
    ws = await WSClient.connect(ws_url, "/ws/notifications", token)
    await services.users.upsert_external("dis", disabled=True)
    await services.users.announce_changed(user["id"])
    assert await closed(ws) == (4001, "account_disabled")
    await refused_everywhere(api, http_port, token, "account_disabled")
    await refused_everywhere(api, http_port, mint("dis", jti="fresh"), "account_disabled")
    await services.users.upsert_external("dis", disabled=False)
    await services.users.announce_changed(user["id"])
    assert (await me(api, token))[0] == 200

    ws = await WSClient.connect(ws_url, "/ws/chat", token)
    User.update(kind=DELETED).where(User.id == user["id"]).execute()
    await services.users.announce_changed(user["id"])
    assert await closed(ws) == (4001, "account_deleted")
    await refused_everywhere(api, http_port, token, "account_deleted")
    await refused_everywhere(api, http_port, mint("dis", name="Back again"), "account_deleted")


@pytest.mark.gen_test(timeout=30)
async def test_publish_reaches_an_external_user(api, ws_url):
    token = mint("pub")
    status, user = await me(api, token)
    ws = await WSClient.connect(ws_url, "/ws/notifications", token)
    await ws.recv_type("unread")  # subscribed
    status, out = await api.call("POST", "/api/notifications", {"user_ids": [user["id"]], "message": "hello ext"},
                                 token=SERVICE_TOKEN)
    assert status == 202, out
    while True:
        frame = await ws.recv(5)
        if "hello ext" in json.dumps(frame):
            break
    assert frame["id"] == out["ids"][0], frame
    ws.close()


# Two processes: a profile change reaches the other process's cache ------------------------------

@pytest.mark.gen_test(timeout=120)
async def test_profile_update_on_one_process_is_seen_through_another(shared_db, server_factory):
    from tests.support.clients import ApiClient
    from tests.support.scaleout import open_private_chat, register, start_cluster
    env = dict(AUTH_MODE="both", EXTERNAL_JWT_SECRET=SECRET, EXTERNAL_JWT_ISSUER=ISSUER,
               EXTERNAL_JWT_AUDIENCE=AUDIENCE)
    p1, p2 = start_cluster("redis", shared_db, server_factory, count=2, **env)
    api1, api2 = ApiClient(p1.url), ApiClient(p2.url)
    status, xavier = await me(api1, mint("x-cluster", name="Xavier"))
    assert status == 200
    bob = await register(api2, "bob")
    chat_id = await open_private_chat(api2, bob, {**xavier, "token": None})

    async def title_on_p2():
        status, listing = await api2.call("GET", "/api/chats", token=bob["token"])
        return next(c for c in listing["chats"] if c["id"] == chat_id)["title"]
    assert await title_on_p2() == "Xavier"  # now cached on p2
    status, renamed = await me(api1, mint("x-cluster", name="Xavier Two"))
    assert status == 200 and renamed["display_name"] == "Xavier Two"
    deadline = time.monotonic() + 2
    while await title_on_p2() != "Xavier Two":
        assert time.monotonic() < deadline, "p2 still shows the old name"
        await asyncio.sleep(0.05)
    # the same sub on the other process is the same user
    assert (await me(api2, mint("x-cluster")))[1]["id"] == xavier["id"]
