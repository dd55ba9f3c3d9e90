"""Logins and refreshes (issue 20, item 8): every login and refresh is limited per client
address, refreshes also per session, IPv6 clients count by /64 in every per-address limit, and
spent or expired refresh rows are pruned.

The conftest raises these limits for the other tests; here they are set back to their defaults
(or small) per test. Bursts are sent at once so that the buckets' refill (one token a second at
the defaults) cannot blur "at the limit" and "one past it".
"""
from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
import uuid

import pytest
import tornado.httpclient

from models import RefreshToken, utcnow
from tornado_app.config import Config
from tornado_app.errors import ServerBusy
from tornado_app.services import build_services
from tornado_app.services.identity import sessions as sessions_module
from tornado_app.services.operations.ratelimit import address_key

PASSWORD = "password123"
PROXIED = {"trusted_proxies": ("127.0.0.1/32",)}
DEFAULTS = Config()
# the per-(username, address) failure buckets must not be what answers 429 here
NO_FAILURE_LIMITS = {"login_failures_per_minute": 100_000, "login_failures_per_address_per_minute": 100_000}


def via(address: str) -> dict:
    return {"X-Forwarded-For": address}


async def burst(http_port: int, count: int, path: str, body: dict, headers: dict = None):
    """``count`` POSTs sent together (each on its own connection); ``[(status, json, headers)]``."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=count)
    try:
        responses = await asyncio.gather(*[
            client.fetch(f"http://127.0.0.1:{http_port}{path}", method="POST", body=json.dumps(body),
                         headers={"Content-Type": "application/json", **(headers or {})}, raise_error=False,
                         request_timeout=30)
            for _ in range(count)])
    finally:
        client.close()
    return [(r.code, json.loads(r.body), r.headers) for r in responses]


def assert_rate_limited(status, err, headers) -> None:
    """A 429 in the one error shape, with Retry-After."""
    assert status == 429, (status, err)
    assert set(err) == {"error"} and err["error"]["code"] == "rate_limited"
    assert set(err["error"]) == {"code", "message", "retry_after"}
    assert int(headers["Retry-After"]) >= 1 and err["error"]["retry_after"] >= 1


async def login(api, username, password=PASSWORD, address=None):
    return await api.call("POST", "/api/auth/login", {"username": username, "password": password},
                          headers=via(address) if address else None)


# Logins ---------------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{
    "logins_per_address_per_minute": DEFAULTS.logins_per_address_per_minute, **NO_FAILURE_LIMITS}])
async def test_logins_past_the_default_per_address_are_429(api, users, http_port, config_overrides):
    assert DEFAULTS.logins_per_address_per_minute == 60
    (alice,) = await users("alice")
    body = {"username": alice["username"], "password": PASSWORD}
    answers = await burst(http_port, 61, "/api/auth/login", body)
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 60 + [429], statuses  # successes count: each one costs a hash too
    assert_rate_limited(*next(a for a in answers if a[0] == 429))


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, **NO_FAILURE_LIMITS, "logins_per_address_per_minute": 4}])
async def test_logins_count_whatever_their_outcome(api, users, config_overrides):
    (alice,) = await users("alice")
    outcomes = [(await login(api, alice["username"], address="203.0.113.20"))[0],
                (await login(api, alice["username"], "wrong-password", "203.0.113.20"))[0],
                (await login(api, "nobody_" + uuid.uuid4().hex[:6], address="203.0.113.20"))[0],
                (await login(api, alice["username"], address="203.0.113.20"))[0]]
    assert outcomes == [200, 401, 401, 200]  # at the limit
    assert_rate_limited(*await login(api, alice["username"], address="203.0.113.20"), api.last_headers)
    status, _ = await login(api, alice["username"], address="203.0.113.21")  # another address
    assert status == 200


# Refreshes ------------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{
    "refreshes_per_address_per_minute": DEFAULTS.refreshes_per_address_per_minute}])
async def test_refreshes_past_the_default_per_address_are_429(api, http_port, config_overrides):
    assert DEFAULTS.refreshes_per_address_per_minute == 120
    # whatever the token: an unknown one costs a lookup as well
    answers = await burst(http_port, 121, "/api/auth/refresh", {"refresh_token": "not-a-token"})
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [401] * 120 + [429], statuses
    assert_rate_limited(*next(a for a in answers if a[0] == 429))


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, "refreshes_per_session_per_minute": 3}])
async def test_refreshes_are_limited_per_session(api, users, services, config_overrides):
    (alice,) = await users("alice")
    refresh = alice["refresh"]
    for n in range(3):  # at the limit, each from another address
        status, pair = await api.call("POST", "/api/auth/refresh", {"refresh_token": refresh},
                                      headers=via(f"203.0.113.{30 + n}"))
        assert status == 200, pair
        refresh = pair["refresh_token"]
    status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": refresh},
                                 headers=via("203.0.113.40"))
    assert_rate_limited(status, err, api.last_headers)
    # the limited token was not spent (no reuse alarm later), and the session was not revoked
    row = await services.dbx.read(lambda: RefreshToken.get(
        RefreshToken.token_hash == services.sessions._hash(refresh)))
    assert row.replaced_by is None and row.revoked_at is None
    status, _ = await api.call("GET", "/api/me", token=pair["access_token"])
    assert status == 200
    # another session of the same user has its own budget
    status, other = await login(api, alice["username"], address="203.0.113.41")
    assert status == 200
    status, _ = await api.call("POST", "/api/auth/refresh", {"refresh_token": other["refresh_token"]},
                               headers=via("203.0.113.41"))
    assert status == 200


# IPv6 by /64 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("address, key", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2:0:0:0:9", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::1", "::/64"),
    ("not-an-address", "not-an-address"),
    (None, None),
])
def test_address_key(address, key):
    assert address_key(address) == key
    assert address_key(key) == key  # keying a key changes nothing


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, **NO_FAILURE_LIMITS, "logins_per_address_per_minute": 3}])
async def test_ipv6_addresses_of_one_64_share_the_login_limit(api, users, config_overrides):
    (alice,) = await users("alice")
    for address in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:abcd:ef01:2345:6789"):
        status, _ = await login(api, alice["username"], address=address)
        assert status == 200, address
    assert_rate_limited(*await login(api, alice["username"], address="2001:db8:1:2:ffff::9"), api.last_headers)
    status, _ = await login(api, alice["username"], address="2001:db8:1:3::1")  # the next /64
    assert status == 200
    # an IPv4-mapped IPv6 address is its IPv4 address
    for address in ("198.51.100.5", "198.51.100.5", "::ffff:198.51.100.5"):
        status, _ = await login(api, alice["username"], address=address)
        assert status == 200, address
    assert_rate_limited(*await login(api, alice["username"], address="198.51.100.5"), api.last_headers)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, "registrations_per_address_per_minute": 2,
                                               "login_failures_per_address_per_minute": 2,
                                               "refreshes_per_address_per_minute": 2}])
async def test_ipv6_addresses_of_one_64_share_every_address_limit(api, config_overrides):
    def name():
        return "u_" + uuid.uuid4().hex[:10]
    # registrations
    for address in ("2001:db8:9::1", "2001:db8:9::2"):
        status, _ = await api.call("POST", "/api/auth/register", {"username": name(), "password": PASSWORD},
                                   headers=via(address))
        assert status == 201
    status, err = await api.call("POST", "/api/auth/register", {"username": name(), "password": PASSWORD},
                                 headers=via("2001:db8:9::3"))
    assert_rate_limited(status, err, api.last_headers)
    # failed logins
    for address in ("2001:db8:9::4", "2001:db8:9::5"):
        status, _ = await login(api, name(), "wrong-password", address)
        assert status == 401
    status, err = await login(api, name(), "wrong-password", "2001:db8:9::6")
    assert_rate_limited(status, err, api.last_headers)
    # refreshes
    for address in ("2001:db8:9::7", "2001:db8:9::8"):
        status, _ = await api.call("POST", "/api/auth/refresh", {"refresh_token": "x"}, headers=via(address))
        assert status == 401
    status, err = await api.call("POST", "/api/auth/refresh", {"refresh_token": "x"}, headers=via("2001:db8:9::9"))
    assert_rate_limited(status, err, api.last_headers)
    # another /64 is another client
    status, _ = await api.call("POST", "/api/auth/register", {"username": name(), "password": PASSWORD},
                               headers=via("2001:db8:a::1"))
    assert status == 201


@pytest.mark.gen_test(timeout=60)
async def test_hashes_in_flight_are_counted_per_64(services):
    auth = services.auth
    auth._hash_per_address = 1
    gate = threading.Event()
    first = asyncio.ensure_future(auth._in_pool("2001:db8:5::1", gate.wait, 10))
    await asyncio.sleep(0)  # the first "hash" holds its thread
    try:
        assert auth._hashing_by_address == {"2001:db8:5::/64": 1}
        with pytest.raises(ServerBusy):
            await auth.hash_password(PASSWORD, "2001:db8:5::2")
        assert await auth.hash_password(PASSWORD, "2001:db8:6::1")  # another /64
    finally:
        gate.set()
    await first
    assert auth._hashing_by_address == {}


# Pruning --------------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_prune_deletes_expired_spent_and_long_revoked_rows_and_keeps_live_ones(api, users, services,
                                                                                      monkeypatch):
    (alice,) = await users("alice")
    sessions = services.sessions
    now = utcnow()
    hour, day = datetime.timedelta(hours=1), datetime.timedelta(days=1)
    window = datetime.timedelta(seconds=sessions.limits.reuse_window)
    token_life = datetime.timedelta(seconds=services.config.token_ttl)
    rows = {  # name -> (fields, kept?)
        "live": (dict(expires_at=now + day), True),
        "expired": (dict(expires_at=now - hour), False),
        "expired_spent": (dict(expires_at=now - hour, replaced_by="h" * 64, last_used_at=now - 2 * hour), False),
        "spent_recently": (dict(expires_at=now + day, replaced_by="h" * 64, last_used_at=now - hour), True),
        "spent_long_ago": (dict(expires_at=now + 30 * day, replaced_by="h" * 64,
                                last_used_at=now - window - hour), False),
        "revoked_recently": (dict(expires_at=now + day, revoked_at=now - token_life / 2), True),
        "revoked_long_ago": (dict(expires_at=now + day, revoked_at=now - token_life - hour), False),
    }

    def insert():
        for name, (fields, _) in rows.items():
            RefreshToken.create(token_hash=name.ljust(64, "0"), user=alice["id"], family=name[:32],
                                created_at=now - 2 * day, **{"last_used_at": now - 2 * day, **fields})
    await services.dbx.write(insert)
    monkeypatch.setattr(sessions_module, "_PRUNE_BATCH", 2)  # several batches, each its own transaction
    assert await sessions.prune() == sum(1 for _, kept in rows.values() if not kept)
    left = set(await services.dbx.read(lambda: [r.token_hash for r in RefreshToken.select()]))
    assert left == {name.ljust(64, "0") for name, (_, kept) in rows.items() if kept} | {
        sessions._hash(alice["refresh"])}
    assert await sessions.prune() == 0
    # the registration's own session still refreshes
    status, pair = await api.call("POST", "/api/auth/refresh", {"refresh_token": alice["refresh"]})
    assert status == 200, pair


@pytest.mark.gen_test(timeout=60)
async def test_prune_runs_when_the_services_start(users, services, config):
    (alice,) = await users("alice")
    now = utcnow()
    await services.dbx.write(lambda: RefreshToken.create(
        token_hash="e" * 64, user=alice["id"], family="expired", created_at=now - datetime.timedelta(days=2),
        last_used_at=now - datetime.timedelta(days=2), expires_at=now - datetime.timedelta(hours=1)))
    # another process on this database: its hourly prune task runs once at start
    other = build_services(config)
    await other.start()
    try:
        deadline = time.monotonic() + 10
        while await services.dbx.read(lambda: RefreshToken.select().where(
                RefreshToken.token_hash == "e" * 64).exists()):
            assert time.monotonic() < deadline, "the expired row was not pruned"
            await asyncio.sleep(0.05)
        assert await services.dbx.read(lambda: RefreshToken.select().where(
            RefreshToken.token_hash == services.sessions._hash(alice["refresh"])).exists())
    finally:
        await other.stop()
