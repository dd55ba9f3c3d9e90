"""The real-time client under failure: server restarts, a refused token, eight tabs sharing one stream.

Acceptance points 4 (restart: reconnect, the missed message exactly once) and 6 (eight SSE tabs,
one server stream, leader handover without a missed event).
"""

import pytest
from playwright.sync_api import expect

from tests.support.browser import (BufferingProxy, browser, http_json, open_chat, register, send,  # noqa: F401 (fixtures)
                           signed_in_context, stats, wait_live, wait_until)
from tests.support.procs import free_port



def notification_streams(server, user) -> int:
    """How many notification streams ``user`` has open on ``server``, as the server counts them."""
    return stats(server)["notification_streams_by_user"].get(str(user["id"]), 0)


@pytest.mark.slow
def test_restart_reconnects_and_shows_missed_message_once(browser, server_factory, database_url):
    """4: the server stops while B is on Home; a message is stored meanwhile (by a second server on
    the same database); the server comes back on its port; B reconnects by itself and shows it once."""
    port = free_port()
    server = server_factory("--database-url", database_url, port=port)
    alice, bob = register(server, "alice"), register(server, "bob")
    chat_id = open_chat(server, alice, bob)
    send(server, alice, chat_id, "before the restart")
    ctx = signed_in_context(browser, server, bob)
    try:
        page = ctx.new_page()
        page.goto(server.url + "/")
        wait_live(page, "WebSocket")
        expect(page.locator("#recent-notifications .notif-text")).to_have_text(["before the restart"])

        server.stop()
        expect(page.locator("#conn-pill")).to_have_attribute("data-state", "reconnecting")
        other = server_factory("--database-url", database_url)
        send(other, alice, chat_id, "sent while you were away")
        other.stop()
        server_factory("--database-url", database_url, port=port)

        wait_live(page, "WebSocket")
        expect(page.locator("#recent-notifications .notif-text")).to_have_text(
            ["sent while you were away", "before the restart"])
        expect(page.locator(".toast .toast-text")).to_have_text(["sent while you were away"])
        expect(page.locator(".top-nav .badge-dot")).to_be_visible()
        # A live message after the resume is the sentinel: nothing was shown twice before it.
        send(server, alice, chat_id, "after the restart")
        expect(page.locator("#recent-notifications .notif-text")).to_have_text(
            ["after the restart", "sent while you were away", "before the restart"])
        expect(page.locator(".toast .toast-text")).to_have_text(["sent while you were away", "after the restart"])
    finally:
        ctx.close()


def test_refused_token_sends_to_login(browser, server_factory, database_url):
    """A server restarted with another JWT secret refuses the access token, but the session's
    refresh token (kept in the database) still renews it: the page stays. Once the user logs out
    everywhere (from another device), the refresh is refused: the client stops and goes to /login."""
    port = free_port()
    server = server_factory("--database-url", database_url, port=port)
    bob = register(server, "bob")
    ctx = signed_in_context(browser, server, bob)
    try:
        page = ctx.new_page()
        page.goto(server.url + "/test-notifications")
        wait_live(page, "WebSocket")
        server.stop()
        server = server_factory("--database-url", database_url, port=port, JWT_SECRET="another-secret-" + "y" * 32)
        wait_live(page, "WebSocket")
        status, login = http_json(server, "POST", "/api/auth/login", {"username": bob["username"],
                                                                      "password": "password123"})
        assert status == 200
        status, _ = http_json(server, "POST", "/api/auth/logout-all", {}, token=login["access_token"])
        assert status == 200
        expect(page).to_have_url(f"{server.url}/login?next=%2Ftest-notifications")
        expect(page.locator("#tab-login")).to_be_visible()
    finally:
        ctx.close()


@pytest.mark.slow
def test_eight_sse_tabs_share_one_stream(browser, server_factory, database_url):
    """6: eight tabs of one user with WebSockets blocked: one SSE stream on the server, every tab shows
    every toast and badge change, and closing the leader hands over without a missed event."""
    server = server_factory("--database-url", database_url, "--block-websockets")
    alice, bob = register(server, "alice"), register(server, "bob")
    chat_id = open_chat(server, alice, bob)
    ctx = signed_in_context(browser, server, bob)
    try:
        pages = []
        for _ in range(8):
            page = ctx.new_page()
            page.goto(server.url + "/")
            pages.append(page)
        for page in pages:
            wait_live(page, "SSE")
        wait_until(lambda: notification_streams(server, bob) == 1, what="one notification stream")
        assert stats(server)["connections"]["total"] == 1

        first = send(server, alice, chat_id, "to every tab")
        for page in pages:
            expect(page.locator(".toast[data-notification-id] .toast-text")).to_have_text(["to every tab"])
            expect(page.locator(".top-nav .badge-dot")).to_be_visible()
        # Badge change: B reads the chat (in the first tab); the dot goes in every tab.
        pages[0].goto(f"{server.url}/chat/{chat_id}")
        expect(pages[0].locator("#messages .bubble")).to_have_text([first["content"]])
        for page in pages:
            expect(page.locator(".top-nav .badge-dot")).to_be_hidden()
        pages[0].goto(server.url + "/")
        wait_live(pages[0], "SSE")

        leaders = [p for p in pages if p.evaluate("document.documentElement.dataset.streamRole") == "leader"]
        assert len(leaders) == 1
        leader = leaders[0]
        rest = [p for p in pages if p is not leader]
        leader.close()
        # Sent during the handover: the new leader resumes from the last id its tab had seen.
        send(server, alice, chat_id, "during the handover")
        for page in rest:
            expect(page.locator("#recent-notifications .notif-text")).to_have_text(
                ["during the handover", "to every tab"])
            expect(page.locator(".toast .toast-text")).to_contain_text(["during the handover"])
            expect(page.locator(".top-nav .badge-dot")).to_be_visible()
        assert sum(p.evaluate("document.documentElement.dataset.streamRole") == "leader" for p in rest) == 1
        wait_until(lambda: notification_streams(server, bob) == 1 and stats(server)["connections"]["total"] == 1,
                   what="one notification stream after the handover")
        send(server, alice, chat_id, "after the handover")
        for page in rest:
            expect(page.locator("#recent-notifications .notif-text")).to_have_text(
                ["after the handover", "during the handover", "to every tab"])
    finally:
        ctx.close()


@pytest.mark.slow
def test_test_page_diagnoses_a_buffering_proxy(browser, server_factory, database_url):
    """The test page's diagnosis: SSE through a proxy that holds event-stream data back is reported
    as "SSE delayed by a buffering proxy" (WebSockets are refused, as such proxies often do)."""
    server = server_factory("--database-url", database_url, "--block-websockets")
    bob = register(server, "bob")
    proxy = BufferingProxy(server.port, delay=2.5)
    ctx = signed_in_context(browser, proxy, bob)
    try:
        page = ctx.new_page()
        page.goto(proxy.url + "/test-notifications")
        wait_live(page, "SSE")
        expect(page.locator("#diagnosis-text")).to_have_text("SSE delayed by a buffering proxy")
        assert int(page.locator("#conn-latency").inner_text().split()[0]) >= 1500
        expect(page.locator("#test-notifications .notif[data-type=test]")).to_have_count(1)
        # Straight to the server (no proxy), the same browser gets the plain SSE verdict.
        direct = signed_in_context(browser, server, bob)
        page2 = direct.new_page()
        page2.goto(server.url + "/test-notifications")
        expect(page2.locator("#conn-latency")).not_to_have_text("—")
        expect(page2.locator("#diagnosis-text")).to_have_text("WebSocket blocked, using SSE")
        direct.close()
    finally:
        ctx.close()
        proxy.close()


@pytest.mark.slow
def test_stalled_websocket_handshake_falls_back_to_sse(browser, server_factory, database_url):
    """A WebSocket upgrade that is never answered: after the open timeout the client uses SSE,
    and messages arrive over it."""
    server = server_factory("--database-url", database_url)
    alice, bob = register(server, "alice"), register(server, "bob")
    chat_id = open_chat(server, alice, bob)
    proxy = BufferingProxy(server.port, stall_websockets=True)
    ctx = signed_in_context(browser, proxy, bob)
    try:
        page = ctx.new_page()
        page.goto(proxy.url + "/test-notifications")
        wait_live(page, "SSE")
        expect(page.locator("#diagnosis-text")).to_have_text("WebSocket blocked, using SSE")
        send(server, alice, chat_id, "over the fallback")
        expect(page.locator(".toast .toast-text")).to_have_text(["over the fallback"])
    finally:
        ctx.close()
        proxy.close()
