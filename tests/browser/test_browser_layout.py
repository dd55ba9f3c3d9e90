"""Login and register in the browser, the phone layout (acceptance point 7) and the screenshots
in docs/screenshots/ (Home, Messages and the test page at desktop and phone widths)."""
import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.support.browser import (DESKTOP, PHONE, TIMEOUT_MS, browser, http_json, open_chat,  # noqa: F401
                           register, screenshot, send, signed_in_context, wait_live)


def test_register_login_logout(browser, server_factory, database_url):
    """A signed-out visit goes to /login and back after registering; logging out and in works."""
    server = server_factory("--database-url", database_url)
    username = "dana_" + uuid.uuid4().hex[:6]
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        page = ctx.new_page()
        page.goto(server.url + "/chat")
        expect(page).to_have_url(f"{server.url}/login?next=%2Fchat")
        page.click("#tab-register")
        page.fill("#username", username)
        page.fill("#display_name", "Dana Scully")
        page.fill("#password", "short")
        page.click("#submit")
        expect(page.locator("#form-error")).to_contain_text("at least 8")
        page.fill("#password", "password123")
        page.click("#submit")
        expect(page).to_have_url(f"{server.url}/chat")
        expect(page.locator(".user-name")).to_have_text("Dana Scully")
        wait_live(page, "WebSocket")
        page.click(".logout-btn")
        expect(page).to_have_url(re.compile(r"/login$"))
        page.goto(server.url + "/")
        expect(page).to_have_url(f"{server.url}/login?next=%2F")
        page.fill("#username", username)
        page.fill("#password", "wrong-password")
        page.click("#submit")
        expect(page.locator("#form-error")).not_to_be_empty()
        page.fill("#password", "password123")
        page.click("#submit")
        expect(page).to_have_url(f"{server.url}/")
        expect(page.locator("h1")).to_have_text("Welcome back, Dana Scully")
    finally:
        ctx.close()


def test_load_earlier_and_group_chat(browser, server_factory, database_url):
    """History pages back with "Load earlier"; a group chat is made from the username search."""
    server = server_factory("--database-url", database_url)
    alice, bob, carol = register(server, "alice"), register(server, "bob"), register(server, "carol")
    chat_id = open_chat(server, alice, bob)
    for i in range(35):
        send(server, alice, chat_id, f"message {i}")
    ctx = signed_in_context(browser, server, bob)
    try:
        page = ctx.new_page()
        page.goto(f"{server.url}/chat/{chat_id}")
        expect(page.locator("#messages .bubble")).to_have_count(30)
        expect(page.locator("#messages .bubble").first).to_have_text("message 5")
        page.click("#load-earlier")
        expect(page.locator("#messages .bubble")).to_have_count(35)
        expect(page.locator("#messages .bubble").first).to_have_text("message 0")
        expect(page.locator("#load-earlier")).to_be_hidden()

        page.click("#new-chat")
        for user in (alice, carol):
            page.fill("#user-search", user["username"])
            page.click(f".user-result[data-username='{user['username']}']")
        expect(page.locator("#selected-users .chip")).to_have_text(["Alice", "Carol"])
        expect(page.locator("#start-chat")).to_be_disabled()
        page.fill("#group-title", "Project <x>")
        page.click("#start-chat")
        expect(page.locator("#conv-title")).to_have_text("Project <x>")
        expect(page.locator("#conv-sub")).to_contain_text("3 members")
        page.fill("#composer-input", "Hello group")
        page.press("#composer-input", "Enter")
        expect(page.locator("#messages .msg.mine .bubble")).to_have_text("Hello group")
        expect(page.locator(".chat-item .chat-title").first).to_have_text("Project <x>")
        status, chats = http_json(server, "GET", "/api/chats", token=carol["token"])
        assert chats["chats"][0]["title"] == "Project <x>" and chats["chats"][0]["unread_count"] == 1
    finally:
        ctx.close()


@pytest.mark.slow
def test_phone_width_badge_and_screenshots(browser, server_factory, database_url):
    """7: at 390×844 the mobile navigation shows the unread badge; screenshots at both widths."""
    server = server_factory("--database-url", database_url)
    bob = register(server, "bob", "Bob Martin")
    alice = register(server, "alice", "Alice Chen")
    carol = register(server, "carol", "Carol Diaz")
    dave = register(server, "dave", "Dave Kim")
    with_alice = open_chat(server, alice, bob)
    with_dave = open_chat(server, dave, bob)
    status, group = http_json(server, "POST", "/api/chats",
                              {"member_ids": [alice["id"], bob["id"]], "title": "Weekend trip"}, token=carol["token"])
    assert status == 201
    trip = group["chat"]["id"]
    send(server, dave, with_dave, "The deploy went fine, thanks for the review!")
    send(server, carol, trip, "Cabin is booked for Saturday!")
    send(server, alice, trip, "I'll bring the board games")
    send(server, bob, trip, "Perfect, I can drive")

    phone = signed_in_context(browser, server, bob, viewport=PHONE)
    desktop = signed_in_context(browser, server, bob, viewport=DESKTOP)
    try:
        page = phone.new_page()
        page.goto(server.url + "/")
        wait_live(page, "WebSocket")
        expect(page.locator(".top-nav")).to_be_hidden()
        # Dave's and the group's messages are unread: the badge shows on the menu button.
        expect(page.locator(".menu-btn .badge-dot")).to_be_visible()
        page.click(f"a.notif[href='/chat/{with_dave}']")
        expect(page.locator("#messages .bubble")).to_have_text(["The deploy went fine, thanks for the review!"])
        page.goto(f"{server.url}/chat/{trip}")
        expect(page.locator("#messages .bubble")).to_have_count(3)
        page.goto(server.url + "/")
        wait_live(page, "WebSocket")
        expect(page.locator(".menu-btn .badge-dot")).to_be_hidden()

        send(server, alice, with_alice, "Are we still on for lunch at noon?")
        toast = page.locator(".toast")
        expect(toast).to_contain_text("Are we still on for lunch at noon?")
        box = toast.bounding_box()
        assert box["y"] < 200 and box["width"] > 300, box  # phones: toasts at the top, full width
        expect(page.locator(".menu-btn .badge-dot")).to_be_visible()
        page.click(".menu-btn")
        drawer = page.locator("#side-nav")
        expect(drawer).to_have_class(re.compile(r"\bopen\b"))
        expect(drawer.locator("[data-nav=messages] .badge-dot")).to_be_visible()
        screenshot(page, "phone-navigation")
        page.keyboard.press("Escape")
        expect(drawer).not_to_have_class(re.compile(r"\bopen\b"))
        screenshot(page, "home-phone")

        page.goto(server.url + "/chat")
        expect(page.locator(".chat-item")).to_have_count(3)
        expect(page.locator(f".chat-item[data-chat-id='{with_alice}'] .unread-count")).to_have_text("1")
        screenshot(page, "messages-phone")
        page.click(f".chat-item[data-chat-id='{trip}']")
        expect(page.locator("#messages .bubble")).to_have_count(3)
        expect(page.locator(".chat-sidebar")).to_be_hidden()
        screenshot(page, "conversation-phone")
        page.click(".back-btn")
        expect(page.locator(".chat-sidebar")).to_be_visible()
        page.click(f".chat-item[data-chat-id='{with_alice}']")
        expect(page.locator("#messages .bubble")).to_have_text(["Are we still on for lunch at noon?"])
        page.click(".menu-btn")
        expect(drawer.locator("[data-nav=messages] .badge-dot")).to_be_hidden()
        page.keyboard.press("Escape")

        page.goto(server.url + "/test-notifications")
        expect(page.locator("#diagnosis-text")).to_have_text("WebSocket OK")
        expect(page.locator("#conn-latency")).not_to_have_text("—")
        screenshot(page, "test-phone")

        d = desktop.new_page()
        d.goto(server.url + "/test-notifications")
        wait_live(d, "WebSocket")
        expect(d.locator("#diagnosis-text")).to_have_text("WebSocket OK")
        expect(d.locator("#conn-latency")).not_to_have_text("—")
        screenshot(d, "test-desktop")
        send(server, dave, with_dave, "Can you look at the release notes today?")
        d.goto(server.url + "/")
        expect(d.locator("#recent-notifications .notif").first).to_contain_text("release notes")
        send(server, carol, trip, "Don't forget warm clothes, it gets cold at night")
        expect(d.locator(".toast")).to_contain_text("warm clothes")
        expect(d.locator(".top-nav .badge-dot")).to_be_visible()
        screenshot(d, "home-desktop")
        d.goto(f"{server.url}/chat/{trip}")
        expect(d.locator("#messages .bubble")).to_have_count(4)
        d.fill("#composer-input", "See you all Saturday!")
        expect(d.locator(".chat-item")).to_have_count(3)
        screenshot(d, "messages-desktop")
    finally:
        phone.close()
        desktop.close()


# Elements past the window's right edge, and boxes that scroll sideways without meaning to.
# An element inside a box that clips or scrolls (overflow-x not visible) is that box's business:
# the box itself is measured, and it must not scroll sideways unless it is a ``.scroll-x``
# (a wide table on a phone). Hidden and zero-size elements are skipped.
_OVERFLOW = r"""() => {
  const w = window.innerWidth;
  const bad = [];
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
    (typeof e.className === "string" && e.className ? "." + e.className.trim().split(/\s+/).join(".") : "");
  if (document.documentElement.scrollWidth > w) bad.push(`page ${document.documentElement.scrollWidth} > ${w}`);
  for (const e of document.body.querySelectorAll("*")) {
    const style = getComputedStyle(e);
    if (style.visibility === "hidden" || style.display === "none") continue;
    const r = e.getBoundingClientRect();
    if (!r.width && !r.height) continue;
    let clipped = false;
    for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== "visible") { clipped = true; break; }
    }
    if (!clipped && r.right > w + 0.5) bad.push(`${name(e)} right ${Math.round(r.right)} > ${w}`);
    if (["auto", "scroll"].includes(style.overflowX) && !e.classList.contains("scroll-x")
        && e.scrollWidth > e.clientWidth + 1) bad.push(`${name(e)} scrolls sideways ${e.scrollWidth} > ${e.clientWidth}`);
  }
  return bad;
}"""
WIDTHS = (390, 800, 1000, 1280)
LONG_PREVIEW = "Supercalifragilisticexpialidocious-" * 6 + " and then some more words to make it long"
LONG_WITH_URL = ("Read https://example.org/a/very/long/path/" + "segment/" * 12 + "?q=" + "x" * 60
                 + " and javascript:alert(1) stays text")


@pytest.mark.slow
def test_no_page_is_wider_than_the_window(browser, server_factory, database_url):
    """Issue 20, items 14 and acceptance 5: every page at 390, 800, 1000 and 1280 px fits its window."""
    from tests.support.commands import run_admin
    server = server_factory("--database-url", database_url)
    bob = register(server, "bob", "Bartholomew Montgomery-Fitzwilliam the Third")
    alice = register(server, "alice", "Alice Chen")
    assert run_admin(database_url, "grant", bob["username"]).returncode == 0
    chat_id = open_chat(server, alice, bob)
    send(server, alice, chat_id, LONG_WITH_URL)
    other = open_chat(server, register(server, "carol", "Carol Diaz"), bob)
    send(server, bob, other, LONG_PREVIEW)
    pages = ["/", f"/chat/{chat_id}", "/chat", "/settings", "/test-notifications", "/admin"]
    failures = []
    for width in WIDTHS:
        viewport = {"width": width, "height": 844 if width < 760 else 800}
        ctx = signed_in_context(browser, server, bob, viewport=viewport)
        try:
            page = ctx.new_page()
            for path in pages:
                page.goto(server.url + path)
                wait_live(page, "WebSocket")
                if path.startswith("/chat/"):
                    expect(page.locator("#messages .bubble")).to_have_count(1)
                elif path == "/chat":
                    expect(page.locator(".chat-item")).to_have_count(2)
                elif path == "/admin":
                    expect(page.locator(".admin-procs tbody tr")).to_have_count(1)
                elif path == "/settings":
                    expect(page.locator("body")).to_have_attribute("data-ready", "true")
                failures += [f"{width} {path}: {b}" for b in page.evaluate(_OVERFLOW)]
        finally:
            ctx.close()
        anon = browser.new_context(viewport=viewport)
        try:
            page = anon.new_page()
            page.goto(server.url + "/login")
            failures += [f"{width} /login: {b}" for b in page.evaluate(_OVERFLOW)]
            page.click("#tab-register")
            failures += [f"{width} /login (register): {b}" for b in page.evaluate(_OVERFLOW)]
            tabs = page.locator(".tab")
            heights = [tabs.nth(i).bounding_box()["height"] for i in range(2)]
            if max(heights) >= 48:  # one line each: "Create account" does not wrap
                failures.append(f"{width} /login: a tab wraps ({heights})")
        finally:
            anon.close()
    assert not failures, "\n".join(failures)


def test_links_in_messages_and_focus_after_new_chat(browser, server_factory, database_url):
    """Issue 20, item 14: http(s) links are links (new tab, rel noopener noreferrer nofollow), other
    schemes and markup stay text; after "New chat" the focus is in the composer."""
    from tests.support.browser import start_chat_with
    server = server_factory("--database-url", database_url)
    bob, alice, carol = register(server, "bob"), register(server, "alice"), register(server, "carol")
    chat_id = open_chat(server, alice, bob)
    text = ("see https://example.org/docs?a=1&b=2#top, or http://example.com/x). "
            "javascript:alert(1) data:text/html,<b>x</b> <a href='javascript:alert(2)'>y</a> ftp://example.net")
    send(server, alice, chat_id, text)
    ctx = signed_in_context(browser, server, bob)
    try:
        page = ctx.new_page()
        page.goto(f"{server.url}/chat/{chat_id}")
        bubble = page.locator("#messages .bubble")
        expect(bubble).to_have_text(text)  # every character still there, as text
        links = bubble.locator("a")
        expect(links).to_have_count(2)
        assert [links.nth(i).get_attribute("href") for i in range(2)] == [
            "https://example.org/docs?a=1&b=2#top", "http://example.com/x"]
        for i in range(2):
            assert links.nth(i).get_attribute("rel") == "noopener noreferrer nofollow"
            assert links.nth(i).get_attribute("target") == "_blank"
        assert links.nth(0).inner_text() == "https://example.org/docs?a=1&b=2#top"  # the comma stays outside
        assert bubble.locator("b").count() == 0
        assert page.evaluate("() => [...document.querySelectorAll('#messages a')].every((a) => /^https?:$/.test(a.protocol))")

        page.goto(server.url + "/chat")
        start_chat_with(page, carol)
        expect(page.locator("#composer-input")).to_be_focused()
    finally:
        ctx.close()
