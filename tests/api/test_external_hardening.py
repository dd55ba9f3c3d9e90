"""External tokens, hardened after the security review of issue 22: the JWKS fetch has an overall
deadline and a size limit, its failures are logged with the status and host only; logout with
an external token works as the first request and lasts until the token's own exp (across a
restart); logout-all refuses the user's older external tokens; a fractional ``iat`` is compared
with a revocation by whole seconds."""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import socket
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from models import User, utcnow
from tornado_app.errors import Unauthorized
from tornado_app.services.identity.external_auth import JWKS_MAX_BYTES, ExternalAuth, ExternalSettings

ISSUER = "https://product.example"
AUDIENCE = "squall"
SECRET = "product-hmac-secret-" + "s" * 32
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(private_key, kid: str) -> dict:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def mint(sub="user-1", key=SECRET, alg="HS256", kid=None, ttl=300, **claims):
    """A token as the product's backend mints it."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


async def me(api, token):
    return await api.call("GET", "/api/me", token=token)


class RawJWKS:
    """A JWKS endpoint on a plain socket, so that the test controls every byte: ``mode`` is
    ``good``, ``trickle`` (headers, then one byte every 0.3 s), ``exact`` / ``over`` (a body of
    exactly / one byte past JWKS_MAX_BYTES, the latter without Content-Length) or ``status``."""

    def __init__(self):
        self.mode = "good"
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/keys/jwks.json?tenant=secret-path-part"
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        self.requests += 1
        try:
            conn.recv(65536)
            good = json.dumps({"keys": [jwk_of(KEY, "k1")]}).encode()
            if self.mode == "good":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(good), good))
            elif self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not self.stopped:
                    conn.sendall(b" ")
                    time.sleep(0.3)
            elif self.mode in ("exact", "over"):
                size = JWKS_MAX_BYTES + (self.mode == "over")
                body = good[:-1] + b" " * (size - len(good)) + b"}"
                assert len(body) == size
                length = b"Content-Length: %d\r\n" % size if self.mode == "exact" else b""
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + length +
                             b"Connection: close\r\n\r\n" + body)
            else:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


@pytest.fixture
def raw_jwks():
    server = RawJWKS()
    yield server
    server.stop()


def verifier(url: str, timeout: float = 0.5) -> ExternalAuth:
    settings = ExternalSettings("external", ISSUER, AUDIENCE, ("RS256",), 0.0, 8192, jwks_url=url, min_refetch=1.0,
                                timeout=timeout)
    return ExternalAuth(settings, users=None)  # these tests fetch keys and refuse tokens: no user is looked up


async def refusal(external: ExternalAuth, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        await external.verify(token)
    return info.value.code


@pytest.mark.gen_test(timeout=30)
async def test_a_trickling_jwks_server_cannot_hold_a_fetch_past_its_timeout(raw_jwks):
    external = verifier(raw_jwks.url)
    raw_jwks.mode = "trickle"
    started = time.monotonic()
    await external.start()  # start-up does not hang either
    assert time.monotonic() - started < 1.5 and external.fetches == 1 and not external._keys

    raw_jwks.mode = "good"
    await asyncio.sleep(1.05)
    assert (await external.verify(mint("u", key=KEY, alg="RS256", kid="k1")))["sub"] == "u"
    # the thread of the trickled fetch was freed: the good fetch got through the one-thread pool
    raw_jwks.mode = "trickle"
    await asyncio.sleep(1.05)
    started = time.monotonic()
    assert await refusal(external, mint("u", key=KEY, alg="RS256", kid="k9")) == "unknown_key"
    assert 0.4 < time.monotonic() - started < 1.5  # about the timeout, not forever
    assert external.fetches == 3
    # the cached key kept working through the timed-out fetch
    assert (await external.verify(mint("u", key=KEY, alg="RS256", kid="k1")))["sub"] == "u"
    # and the next fetch after the interval is not stuck behind the trickled one
    raw_jwks.mode = "good"
    await asyncio.sleep(1.05)
    started = time.monotonic()
    assert await refusal(external, mint("u", key=KEY, alg="RS256", kid="k8")) == "unknown_key"
    assert time.monotonic() - started < 0.5 and external.fetches == 4 and "k1" in external._keys
    external.close()


@pytest.mark.gen_test(timeout=30)
async def test_jwks_body_limit_at_and_past(raw_jwks, caplog):
    external = verifier(raw_jwks.url, timeout=5.0)
    raw_jwks.mode = "exact"  # exactly JWKS_MAX_BYTES: accepted
    await external.start()
    assert "k1" in external._keys
    raw_jwks.mode = "over"  # one byte more (no Content-Length: the read stops at the limit)
    await asyncio.sleep(1.05)
    with caplog.at_level(logging.WARNING, logger="squall.external_auth"):
        assert await refusal(external, mint("u", key=KEY, alg="RS256", kid="k2")) == "unknown_key"
    assert "JwksTooLarge" in caplog.text
    assert "k1" in external._keys  # the cached keys stay
    assert (await external.verify(mint("u", key=KEY, alg="RS256", kid="k1")))["sub"] == "u"
    external.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_failed_jwks_fetch_logs_the_status_and_host_only(raw_jwks, caplog):
    external = verifier(raw_jwks.url)
    raw_jwks.mode = "status"
    token = mint("u", key=KEY, alg="RS256", kid="k1")
    with caplog.at_level(logging.WARNING, logger="squall.external_auth"):
        await external.start()
        assert await refusal(external, token) == "unknown_key"
    lines = [r.getMessage() for r in caplog.records if "JWKS fetch failed" in r.getMessage()]
    assert lines and "HTTP status 503" in lines[0] and "host 127.0.0.1" in lines[0], lines
    assert "secret-path-part" not in caplog.text and "jwks.json" not in caplog.text and token not in caplog.text
    raw_jwks.mode = "trickle"
    caplog.clear()
    await asyncio.sleep(1.05)
    with caplog.at_level(logging.WARNING, logger="squall.external_auth"):
        assert await refusal(external, token) == "unknown_key"
    assert "TimeoutError (HTTP status none, host 127.0.0.1)" in caplog.text, caplog.text
    external.close()


# Logout and logout-all with the product's tokens ----------------------------------------------------

PRODUCT = dict(auth_mode="both", external_jwt_issuer=ISSUER, external_jwt_audience=AUDIENCE,
               external_jwt_secret=SECRET, token_ttl=60, poll_timeout=0.0)


def forget(services, token):
    """As a fresh process: the user and its external id are not cached here."""
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    user_id = services.external._subs.pop(sub, None)
    if user_id is not None:
        services.users.forget(user_id)


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_logout_as_the_first_request_refuses_the_token(api, services):
    token = mint("logout-first", ttl=600)
    status, out = await api.call("POST", "/api/auth/logout", {}, token=token)
    assert (status, out) == (200, {"ok": True})
    status, err = await me(api, token)
    assert (status, err["error"]["code"]) == (401, "token_revoked")
    # the same with a user known to the database but not cached in this process
    token = mint("logout-cold", ttl=600)
    assert (await me(api, token))[0] == 200
    forget(services, token)
    assert (await api.call("POST", "/api/auth/logout", {}, token=token))[0] == 200
    status, err = await me(api, token)
    assert (status, err["error"]["code"]) == (401, "token_revoked")
    assert (await me(api, mint("logout-cold", ttl=600, jti="another")))[0] == 200  # another token of the user


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_logout_lasts_until_the_tokens_own_exp_and_across_a_restart(api, services):
    token = mint("logout-long", ttl=3600)  # lives far longer than token_ttl (60 s)
    assert (await me(api, token))[0] == 200
    assert (await api.call("POST", "/api/auth/logout", {}, token=token))[0] == 200
    sessions = services.sessions
    sid = next(s for s in sessions._revoked if s.startswith("ext:"))
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert sessions._revoked[sid] == exp + services.external.leeway  # not now + token_ttl
    # a restart: the revocation list is rebuilt from the database
    sessions._revoked.clear()
    forget(services, token)
    await sessions.start()
    assert sessions._revoked.get(sid) == exp + services.external.leeway
    status, err = await me(api, token)
    assert (status, err["error"]["code"]) == (401, "token_revoked")
    # prune keeps the row while the token can live (past token_ttl + 60 s), and drops it once expired
    await sessions.prune(utcnow() + datetime.timedelta(seconds=200))
    sessions._revoked.clear()
    await sessions.start()
    assert sid in sessions._revoked
    await sessions.prune(utcnow() + datetime.timedelta(seconds=3600 + services.external.leeway + 1))
    sessions._revoked.clear()
    await sessions.start()
    assert sid not in sessions._revoked


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_logout_all_refuses_the_users_older_external_tokens(api, services):
    older = mint("logout-all", ttl=600, jti="older")
    current = mint("logout-all", ttl=600, jti="current")
    assert (await me(api, older))[0] == 200
    status, out = await api.call("POST", "/api/auth/logout-all", {}, token=current)
    assert (status, out) == (200, {"ok": True})
    for token in (older, current):
        status, err = await me(api, token)
        assert (status, err["error"]["code"]) == (401, "token_revoked")
    await asyncio.sleep(1.1)
    assert (await me(api, mint("logout-all", ttl=600, jti="newer")))[0] == 200  # issued after: accepted


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_a_fractional_iat_in_the_second_of_the_revocation_is_refused(api, services):
    status, user = await me(api, mint("frac"))
    assert status == 200
    revoked_at = int(time.time()) - 10
    # what the service API's revoke stores: whole seconds
    await services.dbx.write(lambda: User.update(revoked_at=revoked_at).where(User.id == user["id"]).execute())
    services.users.set_revoked_at(user["id"], revoked_at)

    def token(iat):
        return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "frac", "iat": iat, "exp": int(time.time()) + 300},
                          SECRET, algorithm="HS256")
    for iat in (revoked_at - 0.5, revoked_at, revoked_at + 0.2, revoked_at + 0.999):
        status, err = await me(api, token(iat))
        assert (status, err["error"]["code"]) == (401, "token_revoked"), iat
    assert (await me(api, token(revoked_at + 1)))[0] == 200
    assert (await me(api, token(revoked_at + 1.5)))[0] == 200
