"""Accounts and tokens over real HTTP: register, login, /api/me, /api/users and every auth error."""
import json
import logging
import time
import uuid

import jwt
import pytest
import tornado.httpclient
import tornado.websocket

from tests.support.clients import ApiClient


def uname(prefix="user"):
    """A unique username."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def make_token(config, **claims):
    """A JWT signed with the test server's secret, with exactly ``claims``."""
    return jwt.encode(claims, config.jwt_secret, algorithm="HS256")


def full_claims(services, user, **changes):
    """Every claim a valid access token of ``user`` has (its own session id), with ``changes``."""
    now = int(time.time())
    claims = jwt.decode(user["token"], options={"verify_signature": False})
    claims.update(iat=now, nbf=now, exp=now + 60, jti=uuid.uuid4().hex)
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.gen_test(timeout=60)
async def test_register_login_me(api):
    name = uname("alice")
    status, reg = await api.call("POST", "/api/auth/register",
                                 {"username": name, "password": "password123", "display_name": "Alice A"})
    assert status == 201, reg
    assert set(reg) == {"user", "access_token", "token_type", "expires_in", "expires_at", "refresh_token",
                        "refresh_expires_in"}
    assert reg["token_type"] == "bearer" and reg["expires_in"] == 900
    assert reg["refresh_expires_in"] == 30 * 24 * 3600 and reg["refresh_token"] != reg["access_token"]
    assert reg["user"]["username"] == name and reg["user"]["display_name"] == "Alice A"
    assert set(reg["user"]) == {"id", "username", "display_name"}

    status, login = await api.call("POST", "/api/auth/login", {"username": name, "password": "password123"})
    assert status == 200, login
    assert login["user"] == reg["user"] and login["token_type"] == "bearer"

    for token in (reg["access_token"], login["access_token"]):
        status, me = await api.call("GET", "/api/me", token=token)
        assert status == 200 and me == {**reg["user"], "is_admin": False}


@pytest.mark.gen_test(timeout=60)
async def test_display_name_defaults_to_username(api):
    name = uname("bob")
    status, reg = await api.call("POST", "/api/auth/register", {"username": name, "password": "password123"})
    assert status == 201 and reg["user"]["display_name"] == name


@pytest.mark.gen_test(timeout=60)
async def test_user_search_by_prefix(api, users):
    alice, alvin, bob = await users("alice", "alvin", "bob")
    status, found = await api.call("GET", "/api/users?q=AL", token=bob["token"])
    assert status == 200
    ids = {u["id"] for u in found["users"]}
    assert ids == {alice["id"], alvin["id"]}
    assert all(set(u) == {"id", "username", "display_name"} for u in found["users"])
    # the caller is never listed
    status, found = await api.call("GET", "/api/users?q=" + alice["username"], token=alice["token"])
    assert status == 200 and found["users"] == []
    status, found = await api.call("GET", "/api/users?q=" + alice["username"][:-2], token=bob["token"])
    assert [u["id"] for u in found["users"]] == [alice["id"]]
    status, err = await api.call("GET", "/api/users?q=a&limit=0", token=bob["token"])
    assert status == 400 and err["error"]["code"] == "validation_error"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("body, field, code", [
    ({"password": "password123"}, "username", "validation_error"),
    ({"username": "ok_name"}, "password", "validation_error"),
    ({"username": 123, "password": "password123"}, "username", "validation_error"),
    ({"username": "ok_name", "password": ["password123"]}, "password", "validation_error"),
    ({"username": "ab", "password": "password123"}, "username", "invalid_username"),
    ({"username": "x" * 33, "password": "password123"}, "username", "invalid_username"),
    ({"username": "bad name!", "password": "password123"}, "username", "invalid_username"),
    ({"username": "ok_name", "password": "short"}, "password", "validation_error"),
    ({"username": "ok_name", "password": "password123", "display_name": 5}, "display_name", "validation_error"),
    ({"username": "ok_name", "password": "password123", "display_name": "d" * 65}, "display_name",
     "invalid_display_name"),
])
async def test_register_validation(api, body, field, code):
    status, err = await api.call("POST", "/api/auth/register", body)
    assert status == 400, err
    assert err["error"]["code"] == code
    assert field in err["error"]["message"]
    assert set(err) == {"error"} and set(err["error"]) == {"code", "message"}


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"a string"'])
async def test_bad_json_bodies(api, raw):
    for path in ("/api/auth/register", "/api/auth/login"):
        status, err = await api.call("POST", path, raw=raw)
        assert status == 400 and err["error"]["code"] == "bad_json", (path, err)


@pytest.mark.gen_test(timeout=60)
async def test_username_taken(api):
    name = uname("carol")
    await api.register(name)
    status, err = await api.call("POST", "/api/auth/register", {"username": name, "password": "password456"})
    assert status == 409 and err["error"]["code"] == "username_taken"


@pytest.mark.gen_test(timeout=60)
async def test_wrong_password_and_unknown_user_look_the_same(api):
    name = uname("dave")
    await api.register(name)
    status1, err1 = await api.call("POST", "/api/auth/login", {"username": name, "password": "wrong-password"})
    status2, err2 = await api.call("POST", "/api/auth/login", {"username": uname("nobody"), "password": "password123"})
    assert status1 == status2 == 401
    assert err1 == err2
    assert err1["error"]["code"] == "invalid_credentials"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"login_failures_per_minute": 2}])
async def test_failed_logins_are_rate_limited(api, config_overrides):
    name = uname("erin")
    await api.register(name)
    for _ in range(2):
        status, err = await api.call("POST", "/api/auth/login", {"username": name, "password": "wrong-password"})
        assert status == 401 and err["error"]["code"] == "invalid_credentials"
    status, err = await api.call("POST", "/api/auth/login", {"username": name, "password": "password123"})
    assert status == 429 and err["error"]["code"] == "rate_limited"
    assert 1 <= int(api.last_headers["Retry-After"]) <= 60
    # other users are not affected
    other = uname("frank")
    await api.register(other)
    status, _ = await api.call("POST", "/api/auth/login", {"username": other, "password": "password123"})
    assert status == 200


@pytest.mark.gen_test(timeout=60)
async def test_payload_too_large(api, config):
    body = {"username": uname(), "password": "p" * (config.max_body_bytes + 10)}
    status, err = await api.call("POST", "/api/auth/register", body)
    assert status == 413 and err["error"]["code"] == "payload_too_large"
    status, _ = await api.call("POST", "/api/auth/register", {"username": uname(), "password": "password123"})
    assert status == 201


@pytest.mark.gen_test(timeout=60)
async def test_token_errors_on_http(api, users, config, services):
    (alice,) = await users("alice")
    now = int(time.time())
    cases = [
        (None, "unauthorized"),
        ("not-a-jwt", "invalid_token"),
        (alice["token"][:-3] + ("AAA" if not alice["token"].endswith("AAA") else "BBB"), "invalid_token"),
        (make_token(config, **full_claims(services, alice, iat=now - 100, nbf=now - 100, exp=now - 10)),
         "token_expired"),
        # pyjwt would accept a token without exp unless told to require it
        (make_token(config, **full_claims(services, alice, exp=None)), "invalid_token"),
        (jwt.encode(full_claims(services, alice), "another-secret-" + "y" * 32, algorithm="HS256"), "invalid_token"),
        (make_token(config, **full_claims(services, alice, sub="not-a-number")), "invalid_token"),
        # a seed-era token (no session, kind, installation or version) is refused
        (make_token(config, sub=str(alice["id"]), iat=now, exp=now + 60), "invalid_token"),
    ]
    for token, code in cases:
        for method, path in (("GET", "/api/me"), ("GET", "/api/chats"), ("GET", "/api/unread")):
            status, err = await api.call(method, path, token=token)
            assert status == 401, (token, path, err)
            assert err["error"]["code"] == code, (token, path, err)
    # an HS256 token with every claim is accepted
    status, me = await api.call("GET", "/api/me", token=make_token(config, **full_claims(services, alice)))
    assert status == 200 and me["id"] == alice["id"]


@pytest.mark.gen_test(timeout=60)
async def test_alg_none_token_refused(api, users):
    (alice,) = await users("alice")
    now = int(time.time())
    token = jwt.encode({"sub": str(alice["id"]), "iat": now, "exp": now + 60}, None, algorithm="none")
    status, err = await api.call("GET", "/api/me", token=token)
    assert status == 401 and err["error"]["code"] == "invalid_token"


@pytest.mark.gen_test(timeout=60)
async def test_token_errors_on_ws_handshake(users, ws_url, config, http_port, services):
    (alice,) = await users("alice")
    now = int(time.time())
    expired = make_token(config, **full_claims(services, alice, iat=now - 100, nbf=now - 100, exp=now - 10))
    no_exp = make_token(config, **full_claims(services, alice, exp=None))
    for query in ("", "?access_token=garbage", f"?access_token={expired}", f"?access_token={no_exp}"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await tornado.websocket.websocket_connect(f"{ws_url}/ws/chat{query}")
        assert info.value.code == 401, query
    # the refusal is the JSON error, sent before any upgrade
    client = ApiClient(f"http://127.0.0.1:{http_port}")
    status, err = await client.call("GET", f"/ws/chat?access_token={expired}")
    assert status == 401 and err["error"]["code"] == "token_expired"
    # a good token in the query string is accepted
    conn = await tornado.websocket.websocket_connect(f"{ws_url}/ws/chat?access_token={alice['token']}")
    conn.write_message('{"type":"ping"}')
    assert '"pong"' in await conn.read_message()
    conn.close()


@pytest.mark.gen_test(timeout=60)
async def test_query_token_never_in_access_log(api, users, ws_connect, caplog):
    (alice,) = await users("alice")
    token = alice["token"]
    caplog.set_level(logging.DEBUG)
    status, me = await api.call("GET", f"/api/me?access_token={token}")
    assert status == 200 and me["id"] == alice["id"]
    status, _ = await api.call("GET", f"/api/me?access_token={token}x")
    assert status == 401
    ws = await ws_connect("/ws/chat", token)
    await ws.request({"type": "ping"}, "pong")
    access = [r for r in caplog.records if r.name == "tornado.access"]
    assert any("/api/me" in r.getMessage() and r.getMessage().startswith("200") for r in access)
    assert any("/api/me" in r.getMessage() and r.getMessage().startswith("401") for r in access)
    assert any("/ws/chat" in r.getMessage() for r in access)
    for record in caplog.records:
        assert token not in record.getMessage(), record.getMessage()
        assert "access_token" not in record.getMessage(), record.getMessage()


@pytest.mark.gen_test(timeout=60)
async def test_login_cookie_works_for_get_and_is_refused_cross_origin(api, http_port):
    name = uname("gina")
    http = tornado.httpclient.AsyncHTTPClient()
    base = f"http://127.0.0.1:{http_port}"
    resp = await http.fetch(base + "/api/auth/register", method="POST", headers={"Content-Type": "application/json"},
                            body=f'{{"username":"{name}","password":"password123"}}', raise_error=False)
    assert resp.code == 201
    cookies = resp.headers.get_list("Set-Cookie")
    access = next(c for c in cookies if c.startswith("squall_token="))
    refresh = next(c for c in cookies if c.startswith("squall_refresh="))
    assert "HttpOnly" in access and "SameSite=Strict" in access and "Path=/;" in access + ";"
    assert "HttpOnly" in refresh and "SameSite=Strict" in refresh and "Path=/api/auth" in refresh
    assert "Secure" not in access  # only with --cookie-secure
    # the pages' "a session exists" marker: no secret, readable by scripts, as long-lived as the refresh
    marker = next(c for c in cookies if c.startswith("squall_session="))
    assert marker.split(";", 1)[0] == "squall_session=1" and "HttpOnly" not in marker
    assert "SameSite=Strict" in marker and "Path=/;" in marker + ";"
    jar = access.split(";", 1)[0]

    status, me = await api.call("GET", "/api/me", headers={"Cookie": jar})
    assert status == 200 and me["username"] == name

    status, other = await api.call("POST", "/api/auth/register", {"username": uname("hank"),
                                                                  "password": "password123"})
    body = {"user_id": other["user"]["id"]}
    status, err = await api.call("POST", "/api/chats", body, headers={"Cookie": jar, "Origin": "http://evil.example"})
    assert status == 403 and err["error"]["code"] == "csrf_rejected"
    status, err = await api.call("POST", "/api/chats", body, headers={"Cookie": jar})
    assert status == 403 and err["error"]["code"] == "csrf_rejected"
    # same-origin browser requests carry an Origin that matches the Host
    status, chat = await api.call("POST", "/api/chats", body,
                                  headers={"Cookie": jar, "Origin": f"http://127.0.0.1:{http_port}"})
    assert status == 200 and chat["chat"]["kind"] == "private"

    # logout clears both cookies
    resp = await http.fetch(base + "/api/auth/logout", method="POST", body=b"{}",
                            headers={"Cookie": jar, "Origin": base, "Content-Type": "application/json"},
                            raise_error=False)
    assert resp.code == 200
    cleared = resp.headers.get_list("Set-Cookie")
    assert any(c.startswith('squall_token=""') for c in cleared)
    assert any(c.startswith('squall_refresh=""') and "Path=/api/auth" in c for c in cleared)
    assert any(c.startswith('squall_session=""') for c in cleared)
    status, _ = await api.call("GET", "/api/me", headers={"Cookie": jar})
    assert status == 401


@pytest.mark.gen_test(timeout=60)
async def test_unknown_route_and_method(api, users):
    (alice,) = await users("alice")
    status, err = await api.call("GET", "/api/nothing-here", token=alice["token"])
    assert status == 404 and err["error"]["code"] == "not_found"
    status, err = await api.call("DELETE", "/api/me", token=alice["token"])
    assert status == 405 and err["error"]["code"] == "method_not_allowed"


@pytest.mark.gen_test(timeout=60)
async def test_ws_from_a_foreign_origin_is_refused_with_json(users, ws_url, http_port):
    (alice,) = await users("alice")
    url = f"{ws_url}/ws/chat?access_token={alice['token']}"
    req = tornado.httpclient.HTTPRequest(url, headers={"Origin": "http://evil.example"})
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await tornado.websocket.websocket_connect(req)
    assert info.value.code == 403
    assert json.loads(info.value.response.body) == {
        "error": {"code": "origin_rejected", "message": "WebSockets from this origin are not allowed"}}
    # the page's own origin, and clients that send none, are accepted
    for headers in ({"Origin": f"http://127.0.0.1:{http_port}"}, {}):
        conn = await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(url, headers=headers))
        conn.write_message('{"type":"ping"}')
        assert json.loads(await conn.read_message()) == {"type": "pong"}
        conn.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"allowed_origins": ("http://app.example",)}])
async def test_ws_from_an_allowed_origin(users, ws_url, config_overrides):
    (alice,) = await users("alice")
    url = f"{ws_url}/ws/chat?access_token={alice['token']}"
    conn = await tornado.websocket.websocket_connect(
        tornado.httpclient.HTTPRequest(url, headers={"Origin": "http://app.example"}))
    conn.write_message('{"type":"ping"}')
    assert json.loads(await conn.read_message()) == {"type": "pong"}
    conn.close()
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await tornado.websocket.websocket_connect(
            tornado.httpclient.HTTPRequest(url, headers={"Origin": "http://other.example"}))
    assert info.value.code == 403
