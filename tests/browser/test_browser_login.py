"""The login page and the first visit in Chromium (issue 20: items 2, 16 and 17).

After signing in, ``next`` is followed only when it stays on the server's origin (``/\\x``,
``/<tab>/x``, ``/<newline>/x``, ``//x`` and absolute URLs elsewhere go to ``/``); a new account is
greeted with "Welcome", a returning one with "Welcome back"; a signed-out page goes to /login
without asking /api/me; times (Do Not Disturb) are in the user's languages, not the browser's.
"""
import re
import urllib.parse
import uuid

import pytest
from playwright.sync_api import expect

from tests.support.browser import (CHROMIUM, CHROMIUM_ARGS, DESKTOP, TIMEOUT_MS, browser, http_json, register,  # noqa: F401
                           signed_in_context)

# Values of ``next`` (before URL-encoding) that leave the origin once a browser parses them.
FOREIGN = ["/\\example.org", "/\t/example.org", "/\n/example.org", "//example.org", "https://example.org",
           "http://example.org/chat", "/\\/example.org/", "javascript:alert(1)", " //example.org"]


@pytest.fixture
def server(server_factory, database_url):
    return server_factory("--database-url", database_url)


def sign_in(browser, server, user, next_value):
    """A fresh context signs in at ``/login?next=<next_value>``; the page once it has left /login."""
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(TIMEOUT_MS)
    page = ctx.new_page()
    page.goto(f"{server.url}/login?next={urllib.parse.quote(next_value, safe='')}")
    page.fill("#username", user["username"])
    page.fill("#password", "password123")
    page.click("#submit")
    page.wait_for_url(lambda url: not url.startswith(f"{server.url}/login"))
    return ctx, page


@pytest.mark.slow
def test_next_is_followed_only_on_this_origin(browser, server):
    """2: the raw ``%5C``, ``%09`` and ``%0a`` forms of the issue, then every FOREIGN value, end on ``/``."""
    user = register(server, "nina")
    raw = [f"{server.url}/login?next=/%5Cexample.org", f"{server.url}/login?next=/%09/example.org",
           f"{server.url}/login?next=/%0a/example.org"]
    for url in raw:
        ctx = browser.new_context(viewport=DESKTOP)
        ctx.set_default_timeout(TIMEOUT_MS)
        try:
            page = ctx.new_page()
            page.goto(url)
            page.fill("#username", user["username"])
            page.fill("#password", "password123")
            page.click("#submit")
            expect(page).to_have_url(f"{server.url}/")
        finally:
            ctx.close()
    for value in FOREIGN:
        ctx, page = sign_in(browser, server, user, value)
        try:
            expect(page).to_have_url(f"{server.url}/")
            assert page.url == f"{server.url}/", (value, page.url)
        finally:
            ctx.close()
    for value, lands in (("/chat", "/chat"), ("/settings?tab=1#dnd", "/settings?tab=1#dnd"),
                         ("/test-notifications", "/test-notifications")):
        ctx, page = sign_in(browser, server, user, value)
        try:
            expect(page).to_have_url(server.url + lands)
        finally:
            ctx.close()


def test_new_account_is_welcomed_and_a_returning_one_welcomed_back(browser, server):
    """16: "Welcome" on the first Home after registering, "Welcome back" afterwards and after signing in."""
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(TIMEOUT_MS)
    username = "wes_" + uuid.uuid4().hex[:6]
    try:
        page = ctx.new_page()
        page.goto(server.url + "/")
        expect(page).to_have_url(f"{server.url}/login?next=%2F")
        page.click("#tab-register")
        page.fill("#username", username)
        page.fill("#display_name", "Wes Anderson")
        page.fill("#password", "password123")
        page.click("#submit")
        expect(page).to_have_url(f"{server.url}/")
        expect(page.locator("h1")).to_have_text("Welcome, Wes Anderson")
        page.reload()
        expect(page.locator("h1")).to_have_text("Welcome back, Wes Anderson")
        page.click(".logout-btn")
        expect(page).to_have_url(re.compile(r"/login$"))
        page.fill("#username", username)
        page.fill("#password", "password123")
        page.click("#submit")
        expect(page.locator("h1")).to_have_text("Welcome back, Wes Anderson")
    finally:
        ctx.close()


def test_signed_out_pages_do_not_probe_the_api(browser, server):
    """17: without a session (never signed in, or logged out) a page goes to /login with no /api/* request."""
    user = register(server, "otto")
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(TIMEOUT_MS)
    api_calls = []
    ctx.on("request", lambda r: api_calls.append(r.url) if "/api/" in r.url else None)
    try:
        page = ctx.new_page()
        for path in ("/", "/chat", "/settings", "/test-notifications", "/admin"):
            page.goto(server.url + path)
            expect(page).to_have_url(f"{server.url}/login?next={urllib.parse.quote(path, safe='')}")
            expect(page.locator("#username")).to_be_focused()
        assert api_calls == [], api_calls
        # signed in, the marker is there and the page asks /api/me; logged out, it is gone again
        page.fill("#username", user["username"])
        page.fill("#password", "password123")
        page.click("#submit")
        expect(page).to_have_url(f"{server.url}/admin")
        marker = [c for c in ctx.cookies() if c["name"] == "squall_session"]
        assert marker and marker[0]["value"] == "1" and not marker[0]["httpOnly"]
        assert any(u.endswith("/api/me") for u in api_calls)
        page.goto(server.url + "/")
        page.click(".logout-btn")
        expect(page).to_have_url(re.compile(r"/login$"))
        assert not [c for c in ctx.cookies() if c["name"] == "squall_session"]
        api_calls.clear()
        page.goto(server.url + "/chat")
        expect(page).to_have_url(f"{server.url}/login?next=%2Fchat")
        expect(page.locator("#username")).to_be_focused()
        assert api_calls == [], api_calls
    finally:
        ctx.close()


def test_dnd_time_is_in_the_users_languages(browser, server):
    """16: a browser in English (its UI locale) whose user reads German shows "Mo., 14:05", not "Mon 02:05 PM"."""
    user = register(server, "dora")
    # --accept-lang: the user's languages (navigator.languages); the UI locale stays English
    reader = browser.browser_type.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS + ["--accept-lang=de-DE"])
    try:
        for b, pattern in ((reader, r"^On until (Mo|Di|Mi|Do|Fr|Sa|So)\., \d{1,2}:\d{2}$"),
                           (browser, r"^On until (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2}:\d{2} (AM|PM)$")):
            ctx = signed_in_context(b, server, user)
            try:
                page = ctx.new_page()
                page.goto(server.url + "/settings")
                expect(page.locator("body")).to_have_attribute("data-ready", "true")
                page.click("#dnd-1h")
                expect(page.locator("#dnd-state")).to_have_text(re.compile(pattern))
                page.click("#dnd-off")
                expect(page.locator("#dnd-state")).to_have_text("Off")
            finally:
                ctx.close()
    finally:
        reader.close()
