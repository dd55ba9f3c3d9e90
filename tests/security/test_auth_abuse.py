"""Sign-in abuse and request forgery (issue 10, acceptance 6-10 server side): JSON-only and
same-site routes, per-(user, address) and per-address limits, the bounded hashing pool, trusted
proxies, case-insensitive usernames."""
from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from tests.support.clients import SSEClient

PASSWORD = "password123"
PROXIED = {"trusted_proxies": ("127.0.0.1/32",)}


def uname(prefix="user"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def via(address: str) -> dict:
    """Headers of a request that a trusted proxy forwarded for ``address``."""
    return {"X-Forwarded-For": address}


async def bad_login(api, username, address=None):
    headers = via(address) if address else None
    return await api.call("POST", "/api/auth/login", {"username": username, "password": "wrong-password"},
                          headers=headers)


# CSRF ---------------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login", "/api/auth/refresh",
                                  "/api/auth/logout", "/api/auth/logout-all", "/api/chats",
                                  "/api/stream-ticket"])
async def test_json_routes_need_json_and_this_site(api, users, http_port, path):
    (alice,) = await users("alice")
    body = f'{{"username":"{alice["username"]}","password":"{PASSWORD}","pad":"="}}'.encode()
    for content_type in ("text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
                         "application/jsonx", None):
        headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
        status, err = await api.call("POST", path, raw=body, headers=headers, token=alice["token"])
        assert status == 415 and err["error"]["code"] == "unsupported_media_type", (content_type, err)
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        status, err = await api.call("POST", path, raw=body, headers=headers, token=alice["token"])
        assert status == 403 and err["error"]["code"] == "csrf_rejected", (headers, err)
    # this site's own pages (and a charset parameter) pass the door
    status, _ = await api.call("POST", path, raw=body, token=alice["token"],
                               headers={"Origin": f"http://127.0.0.1:{http_port}",
                                        "Content-Type": "application/json; charset=utf-8",
                                        "Sec-Fetch-Site": "same-origin"})
    assert status not in (403, 415)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"allowed_origins": ("http://app.example",)}])
async def test_allowed_origin_may_post(api, config_overrides):
    status, data = await api.call("POST", "/api/auth/register", {"username": uname(), "password": PASSWORD},
                                  headers={"Origin": "http://app.example", "Sec-Fetch-Site": "cross-site"})
    assert status == 201, data


@pytest.mark.gen_test(timeout=60)
async def test_cookie_streams_from_another_site_are_refused(api, users, http_port):
    (alice,) = await users("alice")
    cookie = {"Cookie": f"squall_token={alice['token']}"}
    for path in ("/sse/chat", "/sse/notifications"):
        for foreign in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            sse = await SSEClient.connect("127.0.0.1", http_port, path, headers={**cookie, **foreign})
            assert sse.status == 403, (path, foreign)
            assert '"csrf_rejected"' in await sse.body_text()
            sse.close()
        # the same cookie from this site, and a header token from anywhere, are fine
        for headers in ({**cookie, "Origin": f"http://127.0.0.1:{http_port}", "Sec-Fetch-Site": "same-origin"},
                        {"Authorization": f"Bearer {alice['token']}", "Origin": "http://evil.example"}):
            sse = await SSEClient.connect("127.0.0.1", http_port, path, headers=headers)
            assert sse.status == 200, (path, headers)
            await sse.next_type("unread")
            sse.close()


# Login limits -------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [PROXIED])
async def test_bad_passwords_from_one_address_do_not_lock_the_user_out(api, users, config_overrides):
    (alice,) = await users("alice")
    codes = [(await bad_login(api, alice["username"], "203.0.113.7"))[0] for _ in range(20)]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
    status, err = await api.call("POST", "/api/auth/login", {"username": alice["username"], "password": PASSWORD},
                                 headers=via("203.0.113.7"))
    assert status == 429 and err["error"]["code"] == "rate_limited"
    assert 1 <= int(api.last_headers["Retry-After"]) <= 60 and err["error"]["retry_after"] >= 1
    # the real alice, elsewhere, signs in (in any case)
    status, data = await api.call("POST", "/api/auth/login", {"username": alice["username"].upper(),
                                                              "password": PASSWORD},
                                  headers=via("198.51.100.20"))
    assert status == 200 and data["user"]["id"] == alice["id"]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, "login_failures_per_address_per_minute": 5}])
async def test_spraying_usernames_from_one_address_is_limited(api, config_overrides):
    for n in range(5):  # at the limit
        status, _ = await bad_login(api, uname(f"spray{n}"), "203.0.113.8")
        assert status == 401
    status, err = await bad_login(api, uname("spray"), "203.0.113.8")  # just past it
    assert status == 429 and int(api.last_headers["Retry-After"]) >= 1
    status, _ = await bad_login(api, uname("spray"), "203.0.113.9")  # another address
    assert status == 401


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, "registrations_per_address_per_minute": 3}])
async def test_registrations_are_limited_per_address(api, config_overrides):
    for _ in range(3):
        status, _ = await api.call("POST", "/api/auth/register", {"username": uname(), "password": PASSWORD},
                                   headers=via("203.0.113.10"))
        assert status == 201
    status, err = await api.call("POST", "/api/auth/register", {"username": uname(), "password": PASSWORD},
                                 headers=via("203.0.113.10"))
    assert status == 429 and err["error"]["code"] == "rate_limited" and "Retry-After" in api.last_headers
    status, _ = await api.call("POST", "/api/auth/register", {"username": uname(), "password": PASSWORD},
                               headers=via("203.0.113.11"))
    assert status == 201


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, "password_hash_profile": "standard",
                                               "hash_per_address": 2, "hash_queue": 16}])
async def test_a_flood_of_bad_logins_does_not_delay_a_good_one(api, users, config_overrides):
    (alice,) = await users("alice")
    flood = [asyncio.ensure_future(bad_login(api, uname("nobody"), "203.0.113.66")) for _ in range(60)]
    await asyncio.sleep(0.05)
    status, data = await api.call("POST", "/api/auth/login", {"username": alice["username"], "password": PASSWORD},
                                  headers=via("198.51.100.1"))
    assert status == 200, data
    codes = [status for status, _ in await asyncio.gather(*flood)]
    # at most two of the flood were hashed at a time; the rest were refused at once
    assert codes.count(503) >= 40 and set(codes) <= {401, 429, 503}


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, "password_hash_profile": "standard",
                                               "hash_threads": 1, "hash_queue": 1, "hash_per_address": 64}])
async def test_hashing_pool_is_bounded(api, users, config_overrides):
    (alice,) = await users("alice")
    # two hashes fit (one running, one queued); the third is refused at once with Retry-After
    answers = await asyncio.gather(*(bad_login(api, alice["username"], f"203.0.113.{n}") for n in range(3)))
    codes = sorted(status for status, _ in answers)
    assert codes == [401, 401, 503], answers
    busy = next(body for status, body in answers if status == 503)
    assert busy["error"] == {"code": "server_busy", "message": busy["error"]["message"], "retry_after": 1}


# Client addresses ---------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"login_failures_per_address_per_minute": 3}])
async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(api, caplog, config_overrides):
    caplog.set_level(logging.INFO, logger="tornado.access")
    for n in range(3):
        status, _ = await api.call("POST", "/api/auth/login", {"username": uname(), "password": "wrong-password"},
                                   headers={"X-Real-IP": f"6.6.6.{n}", "X-Forwarded-For": f"7.7.7.{n}"})
        assert status == 401
    status, _ = await api.call("POST", "/api/auth/login", {"username": uname(), "password": "wrong-password"},
                               headers={"X-Real-IP": "6.6.6.99"})
    assert status == 429  # the socket address was limited, whatever the headers said
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert lines and all("(127.0.0.1)" in line for line in lines), lines
    assert not any("6.6.6." in line or "7.7.7." in line for line in lines)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [PROXIED])
async def test_forwarded_address_from_a_trusted_proxy_is_logged(api, caplog, config_overrides):
    caplog.set_level(logging.INFO, logger="tornado.access")
    await api.call("GET", "/api/me", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.5, 127.0.0.1"})
    await api.call("GET", "/api/me", headers={"X-Real-IP": "192.0.2.44"})
    await api.call("GET", "/api/me", headers={"X-Forwarded-For": "not-an-address"})
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert "(203.0.113.5)" in lines[0] and "(192.0.2.44)" in lines[1] and "(127.0.0.1)" in lines[2], lines


# Usernames ----------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_usernames_are_unique_case_insensitively_after_nfkc(api):
    base = uuid.uuid4().hex[:6]
    status, first = await api.call("POST", "/api/auth/register", {"username": f"Alice{base}", "password": PASSWORD})
    assert status == 201 and first["user"]["username"] == f"Alice{base}"
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in f"ALICE{base}")
    for name in (f"alice{base}", f"ALICE{base}", fullwidth):
        status, err = await api.call("POST", "/api/auth/register", {"username": name, "password": PASSWORD})
        assert status == 409 and err["error"]["code"] == "username_taken", name
        status, data = await api.call("POST", "/api/auth/login", {"username": name, "password": PASSWORD})
        assert status == 200 and data["user"]["id"] == first["user"]["id"], name
    # a fullwidth name is stored in its NFKC form
    other = "".join(chr(ord(c) + 0xFEE0) for c in f"BOB{base}")
    status, data = await api.call("POST", "/api/auth/register", {"username": other, "password": PASSWORD})
    assert status == 201 and data["user"]["username"] == f"BOB{base}"


@pytest.mark.parametrize("peer, headers, expected", [
    ("203.0.113.1", {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.7"}, "203.0.113.1"),  # untrusted peer
    ("127.0.0.1", {}, "127.0.0.1"),
    ("127.0.0.1", {"X-Real-IP": "192.0.2.9"}, "192.0.2.9"),
    ("127.0.0.1", {"X-Forwarded-For": "192.0.2.9"}, "192.0.2.9"),
    # the client cannot push a fake hop in front: the first untrusted hop from the right wins
    ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 192.0.2.9"}, "192.0.2.9"),
    ("127.0.0.1", {"X-Forwarded-For": "192.0.2.9, 10.1.2.3"}, "192.0.2.9"),  # through two proxies
    ("127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}, "10.1.2.3"),  # only proxies: the leftmost
    ("127.0.0.1", {"X-Forwarded-For": "garbage"}, "127.0.0.1"),
    ("127.0.0.1", {"X-Real-IP": "not an address"}, "127.0.0.1"),
])
def test_client_address_table(peer, headers, expected):
    from tornado_app.proxies import TrustedProxies
    assert TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"]).client_address(peer, headers) == expected


def test_trusted_proxies_flag_parses_cidrs():
    from tornado_app.config import load_config
    _, config = load_config(["--trusted-proxies", "127.0.0.1, 10.0.0.0/8"], environ={})
    assert config.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8")
    _, config = load_config([], environ={"TRUSTED_PROXIES": "::1"})
    assert config.trusted_proxies == ("::1/128",)
    with pytest.raises(SystemExit):
        load_config(["--trusted-proxies", "not-a-network"], environ={})
    assert load_config([], environ={})[1].trusted_proxies == ()


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("config_overrides", [{**PROXIED, "password_hash_profile": "standard",
                                               "hash_threads": 4, "hash_queue": 16, "hash_per_address": 2}])
async def test_hashes_per_address_are_bounded(api, users, config_overrides):
    (alice,) = await users("alice")
    # two from one address are checked; a third from it at the same time is refused at once
    answers = await asyncio.gather(*(bad_login(api, alice["username"], "203.0.113.77") for _ in range(3)),
                                   bad_login(api, alice["username"], "203.0.113.78"))
    codes = [status for status, _ in answers]
    assert sorted(codes[:3]) == [401, 401, 503] and codes[3] == 401, answers
