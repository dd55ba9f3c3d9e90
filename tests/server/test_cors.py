"""CORS for the pages of --allowed-origin (issue 22 item 4, acceptance 6 "preflight answers checked
header by header"): preflights on /api, /sse and /poll, the headers of every answer there (errors
included, the HTTP server's own 413 too), exact origin matching after normalisation, the CSRF and
WebSocket checks on the same list, and the start-up errors of --allowed-origin and --cors-max-age."""
import asyncio
import json

import pytest
import tornado.httpclient
import tornado.websocket

from tests.support.clients import SSEClient
from tornado_app.config import load_config
from tornado_app.cors import CorsPolicy, parse_origin

APP = "http://app.example:8080"
LISTED = {"allowed_origins": ("HTTP://App.Example:8080/", "https://shop.example:443")}
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
EXPOSE = "Retry-After, WWW-Authenticate"
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
CORS_NAMES = ("access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers",
              "access-control-max-age", "access-control-expose-headers", "access-control-allow-credentials")


async def raw_request(port, method, path, headers=(), body=b""):
    """``(status, {lowercase header: value}, body bytes)`` of one request on a fresh socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        assert name.lower() not in found, f"{name} sent twice"
        found[name.strip().lower()] = value.strip()
    length = int(found.get("content-length", "0"))
    data = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    writer.close()
    return int(status_line.split()[1]), found, data


def preflight(port, path, origin=APP, method="POST", request_headers="authorization, content-type"):
    headers = [f"Origin: {origin}", f"Access-Control-Request-Method: {method}"]
    if request_headers:
        headers.append(f"Access-Control-Request-Headers: {request_headers}")
    return raw_request(port, "OPTIONS", path, headers)


def no_cors(headers) -> bool:
    return not any(name in headers for name in CORS_NAMES)


ROUTES = [  # path, the method a page asks for, the route's methods
    ("/api/chats", "POST", "GET, HEAD, POST"),
    ("/api/chats/1/messages", "POST", "GET, HEAD, POST"),
    ("/api/me/preferences", "PATCH", "GET, HEAD, PATCH"),
    ("/api/chats/1/mute", "DELETE", "PUT, DELETE"),
    ("/api/stream-ticket", "POST", "POST"),
    ("/sse/chat", "GET", "GET"),
    ("/sse/notifications", "GET", "GET"),
    ("/poll/chat", "GET", "GET"),
    ("/poll/notifications", "GET", "GET"),
]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [LISTED])
@pytest.mark.parametrize("path,method,methods", ROUTES)
async def test_preflight_answers_header_by_header(http_server, http_port, path, method, methods):
    status, headers, body = await preflight(http_port, path, method=method,
                                            request_headers="authorization, content-type, last-event-id")
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-methods"] == methods
    assert headers["access-control-allow-headers"] == ALLOW_HEADERS
    assert headers["access-control-max-age"] == "600"
    assert headers["vary"] == PREFLIGHT_VARY
    assert headers["allow"] == methods + ", OPTIONS"
    # cookies stay same-site: never credentials, never a wildcard
    assert "access-control-allow-credentials" not in headers
    assert "access-control-expose-headers" not in headers  # a preflight's answer is never read
    assert "content-type" not in headers


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [LISTED])
async def test_preflights_that_get_no_cors_headers(http_server, http_port):
    for origin in ("http://evil.example", "http://app.example", "https://app.example:8080",
                   "http://app.example:8081", "http://app.example:8080.evil.example", "null",
                   f"http://127.0.0.1:{http_port}"):
        status, headers, _ = await preflight(http_port, "/api/chats", origin=origin)
        assert status == 204 and no_cors(headers), origin
        assert headers["vary"] == PREFLIGHT_VARY
    # a method the route does not implement
    status, headers, _ = await preflight(http_port, "/sse/chat", method="DELETE")
    assert status == 204 and no_cors(headers)
    # no Access-Control-Request-Method: not a preflight
    status, headers, _ = await raw_request(http_port, "OPTIONS", "/api/chats", [f"Origin: {APP}"])
    assert status == 204 and no_cors(headers) and headers["allow"] == "GET, HEAD, POST, OPTIONS"
    # unknown routes under the CORS prefixes, and routes outside them
    status, headers, body = await preflight(http_port, "/api/nope")
    assert status == 404 and no_cors(headers) and json.loads(body)["error"]["code"] == "not_found"
    for path in ("/healthz", "/login"):
        status, headers, _ = await preflight(http_port, path, method="GET")
        assert status in (404, 405) and no_cors(headers), path


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [{**LISTED, "cors_max_age": 86400}])
async def test_max_age_is_the_configured_one(http_server, http_port):
    _, headers, _ = await preflight(http_port, "/sse/notifications", method="GET")
    assert headers["access-control-max-age"] == "86400"


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [{**LISTED, "failed_stream_auths_per_address_per_minute": 1}])
async def test_preflights_need_no_credential_and_spend_no_budget(http_server, http_port, users):
    (alice,) = await users("alice")
    for _ in range(5):  # more than the failed-authentication budget of the address
        for path in ("/sse/chat", "/poll/notifications", "/api/me"):
            status, headers, _ = await preflight(http_port, path, method="GET")
            assert status == 204 and headers["access-control-allow-origin"] == APP, path
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", token=alice["token"],
                                  headers={"Origin": APP})
    assert sse.status == 200
    assert sse.headers["access-control-allow-origin"] == APP and sse.headers["vary"] == "Origin"
    sse.close()
    # a long-poll's answer too (with a ticket, as a page sends it)
    ticket = await raw_request(http_port, "POST", "/api/stream-ticket",
                               [f"Authorization: Bearer {alice['token']}", "Content-Type: application/json",
                                f"Origin: {APP}"])
    assert ticket[0] == 200 and ticket[1]["access-control-allow-origin"] == APP
    status, headers, body = await raw_request(
        http_port, "GET", f"/poll/notifications?timeout=0&ticket={json.loads(ticket[2])['ticket']}", [f"Origin: {APP}"])
    assert status == 200 and headers["access-control-allow-origin"] == APP
    assert headers["access-control-expose-headers"] == EXPOSE and headers["vary"] == "Origin"


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [LISTED])
async def test_answers_carry_cors_only_for_a_listed_origin(http_server, http_port, api, users):
    alice, bob = await users("alice", "bob")
    status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"],
                                  headers={"Origin": APP})
    assert status == 200
    assert api.last_headers["Access-Control-Allow-Origin"] == APP
    assert api.last_headers["Access-Control-Expose-Headers"] == EXPOSE
    assert api.last_headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in api.last_headers
    path = f"/api/chats/{data['chat']['id']}/messages"
    # a listed origin's page writes with its bearer token; a normalised spelling matches too
    for origin in (APP, "https://shop.example", "HTTPS://SHOP.EXAMPLE:443"):
        status, _ = await api.call("POST", path, {"content": "hi"}, token=alice["token"], headers={"Origin": origin})
        assert status == 201
        assert api.last_headers["Access-Control-Allow-Origin"] == parse_origin(origin)
    # any other origin: refused as cross-site, and the refusal is unreadable (no CORS header)
    for origin in ("http://evil.example", "http://app.example", "null"):
        status, err = await api.call("POST", path, {"content": "hi"}, token=alice["token"], headers={"Origin": origin})
        assert status == 403 and err["error"]["code"] == "csrf_rejected", origin
        assert "Access-Control-Allow-Origin" not in api.last_headers
        assert api.last_headers["Vary"] == "Origin"
        status, _ = await api.call("GET", path, token=alice["token"], headers={"Origin": origin})
        assert status == 200 and "Access-Control-Allow-Origin" not in api.last_headers
    # no Origin (curl, a backend): no CORS header, the answer still varies by Origin
    status, _ = await api.call("GET", path, token=alice["token"])
    assert status == 200 and "Access-Control-Allow-Origin" not in api.last_headers
    assert api.last_headers["Vary"] == "Origin"
    # pages, files and health checks are not CORS routes
    status, _ = await api.call("GET", "/healthz", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in api.last_headers and "Origin" not in api.last_headers.get("Vary", "")


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [{**LISTED, "failed_stream_auths_per_address_per_minute": 2,
                                               "max_body_bytes": 1024}])
async def test_errors_carry_cors_for_a_listed_origin(http_server, http_port, users):
    (alice,) = await users("alice")
    origin = [f"Origin: {APP}"]
    checks = [
        (401, "unauthorized", "GET", "/api/chats", [], b""),
        (404, "not_found", "GET", "/api/nope", [], b""),
        (400, "bad_json", "POST", "/api/chats", [f"Authorization: Bearer {alice['token']}",
                                                 "Content-Type: application/json", "Content-Length: 1"], b"{"),
        # the HTTP server's own refusal, before the application sees the request
        (413, "payload_too_large", "POST", "/api/chats", [f"Authorization: Bearer {alice['token']}",
                                                          "Content-Type: application/json",
                                                          "Content-Length: 5000"], b""),
        (401, "invalid_token", "GET", "/sse/chat?access_token=bad", [], b""),
        (429, "too_many_failed_auths", "GET", "/poll/notifications?access_token=bad", [], b""),
    ]
    for status, code, method, path, headers, body in checks:
        for extra, listed in ((origin, True), (["Origin: http://evil.example"], False)):
            got, found, data = await raw_request(http_port, method, path, extra + headers, body)
            # (an unlisted origin's write stops at the CSRF check: 403 csrf_rejected)
            assert got == status or (not listed and got == 403 and method == "POST"), (path, got, data)
            if listed:
                assert json.loads(data)["error"]["code"] == code, (path, data)
                assert found["access-control-allow-origin"] == APP, path
                assert found["access-control-expose-headers"] == EXPOSE, path
            else:
                assert no_cors(found), path
            assert "Origin" in found["vary"], path
            assert "access-control-allow-credentials" not in found
            if status == 429:
                assert found["retry-after"].isdigit()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [LISTED])
async def test_websocket_origin_check_uses_the_same_list(users, ws_url):
    (alice,) = await users("alice")
    url = f"{ws_url}/ws/notifications?access_token={alice['token']}"
    for origin in (APP, "http://APP.example:8080", "https://shop.example"):
        conn = await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(url, headers={"Origin": origin}))
        conn.close()
    for origin in ("http://app.example", "http://app.example:8081", "https://shop.example:8443", "null"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(url, headers={"Origin": origin}))
        assert info.value.code == 403, origin


@pytest.mark.parametrize("value,normal", [
    ("http://app.example", "http://app.example"),
    ("HTTP://App.Example", "http://app.example"),
    ("http://app.example:80", "http://app.example"),
    ("https://app.example:443/", "https://app.example"),
    ("https://app.example:8443", "https://app.example:8443"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("http://[::1]:80", "http://[::1]"),
    ("  https://bücher.example ", "https://xn--bcher-kva.example"),
])
def test_origins_are_normalised(value, normal):
    assert parse_origin(value) == normal


@pytest.mark.parametrize("value,says", [
    ("*", "wildcards"), ("https://*.example.com", "wildcards"), ("null", "not an origin"), ("", "not an origin"),
    ("app.example", "http:// or https://"), ("ftp://app.example", "http:// or https://"),
    ("http://app.example/path", "no path"), ("http://app.example/?x=1", "no path"),
    ("http://app.example#top", "no path"), ("http://user:pw@app.example", "no user name"),
    ("http://app.example:0", "port"), ("http://app.example:65536", "port"), ("http://app.example:x", "port"),
    ("http://", "no host"),
])
def test_bad_origins_stop_the_start(value, says):
    with pytest.raises(SystemExit) as info:
        load_config(["--allowed-origin", "https://good.example", "--allowed-origin", value])
    assert str(info.value).startswith("--allowed-origin ") and says in str(info.value), str(info.value)


def test_origins_from_flags_and_environment():
    _, config = load_config([], {"ALLOWED_ORIGINS": "https://a.example, HTTPS://A.example:443,http://b.example:81"})
    assert config.allowed_origins == ("https://a.example", "http://b.example:81")
    _, config = load_config(["--allowed-origin", "http://c.example:80"], {"ALLOWED_ORIGINS": "https://a.example"})
    assert config.allowed_origins == ("http://c.example",)
    with pytest.raises(SystemExit):
        load_config([], {"ALLOWED_ORIGINS": "https://a.example/app"})
    assert load_config([])[1].allowed_origins == ()


@pytest.mark.parametrize("value,ok", [("0", True), ("600", True), ("86400", True), ("-1", False), ("86401", False)])
def test_cors_max_age_bounds(value, ok):
    if ok:
        assert load_config(["--cors-max-age", value])[1].cors_max_age == int(value)
        assert load_config([], {"CORS_MAX_AGE": value})[1].cors_max_age == int(value)
    else:
        with pytest.raises(SystemExit) as info:
            load_config(["--cors-max-age", value])
        assert "--cors-max-age must be from 0 to 86400" in str(info.value)


def test_cors_max_age_default():
    assert load_config([])[1].cors_max_age == 600
    assert CorsPolicy().max_age == 600
