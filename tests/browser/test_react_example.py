"""examples/react-chat (issue 24) in Chromium against a real server, served from another origin
(a static server on its own port, listed with ``--allowed-origin``), built in React's
development mode so that StrictMode runs every effect twice.

Acceptance 3: three StrictMode tabs share one notification stream; a message gives one toast
and the red dot in each; reading clears it in every tab; closing the leader tab loses no event
and shows none twice. Acceptance 4: WebSocket blocked → SSE; SSE held back by a buffering nginx
→ long-polling, the hooks unchanged. Acceptance 5: 5-second tokens minted by the page's
``getToken`` (the site's /token), a 60-second conversation that loses nothing, and a failing
``getToken`` that ends in ``unauthorized`` without a retry loop.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (TIMEOUT_MS, axe_violations, browser, http_json, open_chat,  # noqa: F401
                                   register, stats, wait_until)
from tests.support.nginx import BufferingNginx
from tests.support.react_example import ExampleSite, build_example


@pytest.fixture(scope="module")
def example_dist(tmp_path_factory) -> str:
    return build_example(str(tmp_path_factory.mktemp("react-chat-dist")))


def notification_streams(server, user) -> int:
    return stats(server)["notification_streams_by_user"].get(str(user["id"]), 0)


class Tab:
    """One page of the example, with the ids its ``onNewMessage`` callback logged (the README's
    ``console.log('New message received:', notification)``)."""

    def __init__(self, page: Page):
        self.page = page
        self.received: list = []
        page.on("console", self._console)

    def _console(self, msg) -> None:
        if msg.text.startswith("New message received:") and len(msg.args) > 1:
            self.received.append(msg.args[1].json_value()["id"])

    def wait_open(self, transport: str) -> None:
        expect(self.page.locator("#status")).to_have_attribute("data-state", "open")
        expect(self.page.locator("#status")).to_have_attribute("data-transport", transport)

    def wait_received(self, notification_id: int) -> None:
        """Until the callback logged ``notification_id`` (Playwright delivers console events while it runs)."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while notification_id not in self.received:
            assert time.monotonic() < deadline, f"no callback for {notification_id}: {self.received}"
            self.page.wait_for_timeout(50)

    def role(self) -> str:
        return self.page.locator("#status").get_attribute("data-role") or ""


def send_as(server, site: ExampleSite, name: str, chat_id: int, content: str) -> dict:
    status, data = http_json(server, "POST", f"/api/chats/{chat_id}/messages", {"content": content},
                             token=site.fresh_token(name))
    assert status == 201, (status, data)
    return data["message"]


@pytest.fixture
def site_factory(example_dist):
    sites = []

    def make(squall_url: str) -> ExampleSite:
        site = ExampleSite(example_dist, squall_url)
        sites.append(site)
        return site
    yield make
    for site in sites:
        site.close()


def new_context(browser):  # noqa: F811
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    return context


def alice_and_bob(site, server):
    """Alice and Bob on ``server``, known to the example's site, with their private chat."""
    site.squall_url = server.url
    alice, bob = register(server, "alice"), register(server, "bob")
    site.add_user("alice", alice)
    site.add_user("bob", bob)
    return alice, bob, open_chat(server, alice, bob)


def test_three_strictmode_tabs_one_stream_one_toast_each_and_a_lossless_handover(
        browser, server_factory, database_url, site_factory):  # noqa: F811
    site = site_factory("")
    server = server_factory("--database-url", database_url, "--allowed-origin", site.origin)
    alice, bob, chat_id = alice_and_bob(site, server)
    context = new_context(browser)
    try:
        tabs = []
        for _ in range(3):
            tab = Tab(context.new_page())
            tab.page.goto(site.app_url(server.url, "bob"))
            tabs.append(tab)
        for tab in tabs:
            tab.wait_open("websocket")
        # StrictMode mounted every provider twice: still one stream for the three tabs.
        wait_until(lambda: notification_streams(server, bob) == 1, what="one notification stream")
        time.sleep(1)
        assert notification_streams(server, bob) == 1
        assert stats(server)["connections"]["total"] == 1
        assert sorted(t.role() for t in tabs) == ["follower", "follower", "leader"]

        first = send_as(server, site, "alice", chat_id, "hello from Alice")
        for tab in tabs:
            expect(tab.page.locator(".squall-toast")).to_have_count(1)
            expect(tab.page.locator(".squall-toast-open")).to_have_text("Alice: hello from Alice")
            expect(tab.page.locator("#tab-messages .dot")).to_be_visible()
            expect(tab.page.locator(f"li.chat[data-chat-id='{chat_id}'] .count")).to_have_text("1")

        # Bob reads the chat in the first tab: the dot goes in all three.
        tabs[0].page.click(f"li.chat[data-chat-id='{chat_id}'] button")
        expect(tabs[0].page.locator("#conversation .message")).to_have_text(["Alicehello from Alice"])
        for tab in tabs:
            expect(tab.page.locator("#tab-messages .dot")).to_have_count(0)
            expect(tab.page.locator(f"li.chat[data-chat-id='{chat_id}'] .count")).to_have_count(0)
        tabs[0].page.click("#tab-notifications")   # the conversation closes (no more auto-read)
        # Its chat socket closed on the server too: while Bob is active in the chat (a chat socket
        # joined to it), a message there is rightly not notified (docs/operations.md, "Presence").
        wait_until(lambda: stats(server)["connections"]["chat"] == 0, what="the conversation's chat socket closed")

        leader = next(t for t in tabs if t.role() == "leader")
        rest = [t for t in tabs if t is not leader]
        leader.page.close()
        during = send_as(server, site, "alice", chat_id, "during the handover")
        # The new leader resumes from the last event id the tabs share: the message sent while no
        # tab held the stream comes with its replay, so it can only show once a new leader holds
        # the stream (slow to come on a loaded machine): wait for the leader, then the message.
        wait_until(lambda: sum(t.role() == "leader" for t in rest) == 1, what="a new leader", timeout=60)
        wait_until(lambda: notification_streams(server, bob) == 1, what="one stream after the handover", timeout=60)
        for tab in rest:
            expect(tab.page.locator(".squall-toast-open")).to_contain_text(["Alice: during the handover"],
                                                                            timeout=30_000)
            expect(tab.page.locator("#tab-messages .dot")).to_be_visible()
        after = send_as(server, site, "alice", chat_id, "after the handover")
        for tab in rest:
            expect(tab.page.locator(".squall-toast-open")).to_contain_text(["Alice: after the handover"])
            # Every message reached every remaining tab exactly once.
            tab.wait_received(after["id"])
        ids = {first["id"], during["id"], after["id"]}
        for tab in rest:
            counts = Counter(n for n in tab.received)
            assert set(counts) == {n for n in counts if n in ids} and len(counts) == 3, tab.received
            assert all(c == 1 for c in counts.values()), tab.received
            expect(tab.page.locator(".squall-toast")).to_have_count(3)
    finally:
        context.close()


def test_websocket_blocked_uses_sse_and_a_buffering_nginx_long_polling(
        browser, server_factory, database_url, site_factory, tmp_path):  # noqa: F811
    site = site_factory("")
    # The WebSocket rung refused by the server: SSE, same hooks.
    blocked = server_factory("--database-url", database_url, "--allowed-origin", site.origin, "--block-websockets")
    alice, bob, chat_id = alice_and_bob(site, blocked)
    context = new_context(browser)
    try:
        tab = Tab(context.new_page())
        tab.page.goto(site.app_url(blocked.url, "bob"))
        tab.wait_open("sse")
        message = send_as(blocked, site, "alice", chat_id, "over SSE")
        expect(tab.page.locator(".squall-toast-open")).to_have_text("Alice: over SSE")
        expect(tab.page.locator("#tab-messages .dot")).to_be_visible()
        tab.wait_received(message["id"])
        assert tab.received == [message["id"]]
        assert axe_violations(tab.page) == []

        # The toast: Escape dismisses the focused one; hovering holds it; a click opens its chat.
        tab.page.focus(".squall-toast-open")
        tab.page.keyboard.press("Escape")
        expect(tab.page.locator(".squall-toast")).to_have_count(0)
        short = Tab(context.new_page())
        short.page.goto(site.app_url(blocked.url, "bob", toast_ms=1500))
        short.wait_open("sse")
        send_as(blocked, site, "alice", chat_id, "hover me")
        toast = short.page.locator(".squall-toast-open", has_text="hover me")
        expect(toast).to_be_visible()
        toast.hover()
        short.page.wait_for_timeout(3000)
        expect(toast).to_be_visible()
        short.page.mouse.move(0, 0)
        expect(toast).to_have_count(0)
        send_as(blocked, site, "alice", chat_id, "click me")
        short.page.click(".squall-toast-open:has-text('click me')")
        expect(short.page.locator("#conversation")).to_have_attribute("data-chat-id", str(chat_id))
        expect(short.page.locator("#conversation .message").last).to_have_text("Aliceclick me")

        # Signing in with a token typed in (no token endpoint): the same app, live.
        typed = Tab(context.new_page())
        typed.page.goto(f"{site.origin}/?server={blocked.url}")
        typed.page.fill("#token", site.fresh_token("bob"))
        typed.page.click("button[type=submit]")
        typed.wait_open("sse")
        expect(typed.page.locator(f"li.chat[data-chat-id='{chat_id}']")).to_be_visible()
    finally:
        context.close()
    blocked.stop()

    # Behind nginx that buffers every answer and forwards no upgrade: long-polling.
    server = server_factory("--database-url", database_url, "--allowed-origin", site.origin)
    site.squall_url = server.url   # same database: the refresh tokens stay valid
    proxy = BufferingNginx(server.port, str(tmp_path / "nginx"))
    context = new_context(browser)
    try:
        tab = Tab(context.new_page())
        tab.page.goto(site.app_url(proxy.url, "bob"))
        tab.wait_open("poll")
        polled = send_as(server, site, "alice", chat_id, "over long-polling")
        expect(tab.page.locator(".squall-toast-open")).to_have_text("Alice: over long-polling")
        expect(tab.page.locator("#tab-messages .dot")).to_be_visible()
        tab.page.click(f"li.chat[data-chat-id='{chat_id}'] button")
        expect(tab.page.locator("#conversation .message")).to_have_text(
            ["Aliceover SSE", "Alicehover me", "Aliceclick me", "Aliceover long-polling"])
        expect(tab.page.locator("#tab-messages .dot")).to_have_count(0)
        tab.wait_received(polled["id"])
        assert tab.received == [polled["id"]]
    finally:
        context.close()
        proxy.close()


@pytest.mark.slow
def test_five_second_tokens_a_minute_of_conversation_and_a_failing_get_token(
        browser, server_factory, database_url, site_factory):  # noqa: F811
    site = site_factory("")
    server = server_factory("--database-url", database_url, "--allowed-origin", site.origin, "--token-ttl", "5",
                            "--refreshes-per-session-per-minute", "1000", "--refreshes-per-address-per-minute", "1000")
    alice, bob, chat_id = alice_and_bob(site, server)
    context = new_context(browser)
    try:
        tab = Tab(context.new_page())
        tab.page.goto(site.app_url(server.url, "bob"))
        tab.wait_open("websocket")
        tab.page.click(f"li.chat[data-chat-id='{chat_id}'] button")
        expect(tab.page.locator("#conversation")).to_have_attribute("data-state", "open")
        expected = []
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 60:
            n += 1
            if n % 2:
                expected.append(f"Alice{send_as(server, site, 'alice', chat_id, f'a{n}')['content']}")
            else:
                tab.page.fill("#compose", f"b{n}")
                tab.page.press("#compose", "Enter")
                expected.append(f"Bobb{n}")
                expect(tab.page.locator("#conversation .message").last).to_have_text(f"Bobb{n}")
            time.sleep(2)
        # Everything, once, in order (the conversation never reloaded: it is the live state).
        expect(tab.page.locator("#conversation .message")).to_have_text(expected, timeout=30_000)
        expect(tab.page.locator("#conversation .pending")).to_have_count(0)
        expect(tab.page.locator("#status")).to_have_attribute("data-state", "open")
        assert site.token_calls["bob"] >= 10, site.token_calls   # tokens were renewed all along

        # The product's token service fails: unauthorized, and no retry loop.
        site.failing.add("bob")
        expect(tab.page.locator("#status")).to_have_attribute("data-state", "unauthorized", timeout=30_000)
        time.sleep(3)  # a renewal already on its way when the state changed may still land (a busy machine)
        calls = site.token_calls["bob"]
        time.sleep(10)
        assert site.token_calls["bob"] == calls
        expect(tab.page.locator("#status")).to_have_attribute("data-state", "unauthorized")
    finally:
        context.close()
