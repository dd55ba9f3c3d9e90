"""The response headers of every page and API route, one by one; HEAD like GET; the CSP in Chromium.

Issue 20, item 13 and acceptance point 4. The routes come from the application's own route
list (as tests/security/test_routes_marked.py walks it), so a route added later is checked too.
"""
import re

import pytest
import tornado.httpclient
import tornado.websocket

from handlers.headers import JSON_CSP
from handlers.sse import BaseSSEHandler
from tests.support.browser import browser, register, signed_in_context, wait_live  # noqa: F401 (fixture)
from tests.conftest import SERVICE_TOKEN
from tests.support.routes import routed_handlers
from tornado_app.services.identity.users import set_admin

METRICS_TOKEN = "test-metrics-token"
PAGE_CSP = ["default-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
            "form-action 'self'", "frame-ancestors 'none'"]
QUERIES = {"/api/users": "?q=al", "/poll/notifications": "?timeout=0", "/poll/chat": "?timeout=0"}
# Answers that change from one request to the next (counters, clocks): compared without their length.
LIVE = {"/metrics", "/api/stats", "/api/admin/summary", "/readyz"}


@pytest.fixture
def config_overrides():
    return {"metrics_token": METRICS_TOKEN}


def concrete(pattern: str, chat_id: int) -> str:
    """A path the route template matches: chat ids filled in, a real static file."""
    path = pattern.rstrip("$").replace("([0-9]{1,18})", str(chat_id)).replace("[0-9]{1,18}", str(chat_id))
    path = path.replace("(.*)", "js/api.js").replace("([^/]+)", "ext-1")  # an external id
    path = path.replace("([^/]{1,200})", "x")  # a reaction's emoji (refused: not one; still headers)
    assert re.fullmatch(r"[/a-z0-9._-]+", path), pattern  # every template was filled in
    return path + QUERIES.get(path, "")


def implemented(handler) -> list:
    """The HTTP methods ``handler`` implements itself (others are Tornado's 405)."""
    return [verb for verb in handler.SUPPORTED_METHODS
            if getattr(handler, verb.lower(), None) is not getattr(tornado.web.RequestHandler, verb.lower())]


def is_stream(handler) -> bool:
    """WebSocket and SSE routes: their GET opens a stream, so it is asked without a credential (401)."""
    return issubclass(handler, (tornado.websocket.WebSocketHandler, BaseSSEHandler))


def credentials(handler, verb: str, token: str) -> dict:
    """The Authorization header the method's access mark calls for (none for streams and writes)."""
    if verb != "GET" or is_stream(handler):
        return {}
    mark = getattr(handler.get, "squall_access", None)
    secret = {"metrics": METRICS_TOKEN, "service": SERVICE_TOKEN}.get(mark, token)
    return {"Authorization": f"Bearer {secret}"}


def check_headers(resp, what: str) -> None:
    """The headers every response carries, and the policy for its kind of body."""
    h = resp.headers
    assert h.get("Server") == "Squall", (what, h.get("Server"))
    assert h.get("X-Content-Type-Options") == "nosniff", what
    assert h.get("X-Frame-Options") == "DENY", what
    assert h.get("Referrer-Policy") == "same-origin", what
    ctype = h.get("Content-Type", "")
    if ctype.startswith("text/html") and h.get("Content-Security-Policy") != JSON_CSP:
        csp = h.get("Content-Security-Policy", "")
        for part in PAGE_CSP:
            assert part in csp, (what, part, csp)
        assert "ws:" not in csp and "wss:" not in csp and "*" not in csp, (what, csp)
    elif ctype.startswith("application/json"):
        assert h.get("Content-Security-Policy") == JSON_CSP, (what, h.get("Content-Security-Policy"))
        assert resp.code == 204 or not resp.body or resp.body.startswith(b"{"), what


@pytest.mark.gen_test(timeout=120)
async def test_every_route_sends_the_headers_and_head_answers_like_get(api, app, users, services):
    alice, bob = await users("alice", "bob")
    await services.dbx.write(set_admin, alice["username"], True)
    status, chat = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = chat["chat"]["id"]
    client = tornado.httpclient.AsyncHTTPClient()

    async def fetch(verb, path, headers):
        body = b"{}" if verb in ("POST", "PUT", "PATCH") else None
        return await client.fetch(api.base_url + path, method=verb, body=body, raise_error=False,
                                  headers={"Content-Type": "application/json", **headers},
                                  allow_nonstandard_methods=True, decompress_response=False)

    routes = routed_handlers(app.default_router)
    assert len(routes) >= 40, len(routes)
    checked = []
    for pattern, handler in routes:
        path = concrete(pattern, chat_id)
        for verb in implemented(handler):
            if verb == "HEAD":
                continue  # asked below, beside its GET
            headers = credentials(handler, verb, alice["token"])
            resp = await fetch(verb, path, headers)
            what = f"{verb} {path} ({handler.__name__}) -> {resp.code}"
            assert resp.code < 500, what
            check_headers(resp, what)
            checked.append(what)
            if verb != "GET":
                continue
            # A stream's HEAD is asked with the user's token: nothing opens, it is refused (405).
            head = await fetch("HEAD", path, {"Authorization": f"Bearer {alice['token']}"} if is_stream(handler)
                               else headers)
            check_headers(head, "HEAD " + what)
            assert head.body == b"", what
            if is_stream(handler) or not getattr(handler, "head_like_get", True):
                assert head.code == 405, what  # a stream cannot be answered without a body
                continue
            assert head.code == resp.code, (what, head.code)
            skip = {"Date"} | ({"Content-Length", "Etag"} if path.split("?")[0] in LIVE else set())
            got = {k: v for k, v in head.headers.get_all() if k not in skip}
            want = {k: v for k, v in resp.headers.get_all() if k not in skip}
            assert got == want, (what, got, want)
            if resp.body and "Content-Length" not in skip:
                assert int(head.headers["Content-Length"]) == len(resp.body), what
    # The walk reached pages, files, the API, streams and the scrape, with real answers.
    assert any(w.startswith("GET / (PageHandler) -> 200") for w in checked), checked
    assert any(w.startswith("GET /admin (AdminPageHandler) -> 200") for w in checked), checked
    assert any(w.startswith("GET /static/js/api.js (StaticHandler) -> 200") for w in checked), checked
    assert any(w.startswith("GET /api/me (MeHandler) -> 200") for w in checked), checked
    assert any(w.startswith(f"GET /api/chats/{chat_id}/messages (MessagesHandler) -> 200") for w in checked)
    assert any(w.startswith("GET /metrics (MetricsHandler) -> 200") for w in checked), checked
    assert any(w.startswith("GET /healthz (HealthHandler) -> 200") for w in checked), checked
    assert any(w.startswith("GET /ws/chat (ChatSocketHandler) -> 401") for w in checked), checked

    # Answers from outside the route list: an unknown route, a refused path, a WebSocket upgrade.
    for verb, path in (("GET", "/no/such/route"), ("HEAD", "/no/such/route"), ("GET", "/static/%00")):
        resp = await fetch(verb, path, {})
        assert resp.code in (400, 404)
        check_headers(resp, f"{verb} {path}")
    ws = await tornado.websocket.websocket_connect(
        tornado.httpclient.HTTPRequest(api.base_url.replace("http", "ws") + "/ws/notifications",
                                       headers={"Authorization": f"Bearer {bob['token']}"}))
    assert ws.headers.get("Server") == "Squall" and ws.headers.get("X-Frame-Options") == "DENY"
    ws.close()


def test_the_pages_websocket_connects_under_the_csp_and_other_hosts_are_refused(browser, server_factory,
                                                                                   database_url):
    """Debian's Chromium: connect-src 'self' covers ws:// of the page's own host and port; another
    origin (the same server named ``localhost``) is refused by the policy."""
    server = server_factory("--database-url", database_url)
    user = register(server, "carol")
    ctx = signed_in_context(browser, server, user)
    try:
        page = ctx.new_page()
        violations = []
        page.on("console", lambda msg: violations.append(msg.text)
                if "Content Security Policy" in msg.text else None)
        page.goto(server.url + "/chat")
        wait_live(page, "WebSocket")
        assert violations == [], violations
        blocked = page.evaluate("""(url) => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation",
                (e) => resolve({directive: e.effectiveDirective, uri: e.blockedURI}), {once: true});
            try { new WebSocket(url); } catch (err) { resolve({thrown: String(err)}); }
            setTimeout(() => resolve(null), 5000);
        })""", f"ws://localhost:{server.port}/ws/notifications")
        assert blocked is not None and (blocked.get("directive") == "connect-src" or "thrown" in blocked), blocked
    finally:
        ctx.close()
