"""Message search in the chat page (issue 25, items 6 and 9): results as you type with the
words found marked, the keyboard alone from the search field to the message in its chat,
Escape back to the chat list, more results, at desktop and phone widths."""
import pytest
from playwright.sync_api import expect

from tests.support.browser import (DESKTOP, PHONE, TIMEOUT_MS, browser, open_chat, register, send,  # noqa: F401
                                   signed_in_context, wait_live)
from tests.support.procs import start_server


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    server = start_server(tmp, "--database-url", f"sqlite:///{tmp}/search.db")
    yield server
    server.kill()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_search_as_you_type_and_open_the_message_by_keyboard(browser, site, size):
    bob, alice, carol = register(site, "bob", "Bob Stone"), register(site, "alice", "Alice Wu"), \
        register(site, "carol", "Carol Diaz")
    with_alice = open_chat(site, alice, bob)
    found = send(site, alice, with_alice, "the quarterly budget is <b>due</b> friday")
    for i in range(10):
        send(site, alice, with_alice, f"filler {i}")
    with_carol = open_chat(site, carol, alice)
    send(site, carol, with_carol, "budget of carol and alice only")  # never shown to Bob

    ctx = signed_in_context(browser, site, bob, viewport=size)
    try:
        page = ctx.new_page()
        page.goto(site.url + "/chat")
        wait_live(page, "WebSocket")
        page.locator("#message-search").focus()
        page.keyboard.type("budg")  # the last word is a prefix
        results = page.locator("#message-search-results .search-result")
        expect(results).to_have_count(1)
        expect(page.locator("#message-search-status")).to_have_text("1 message found")
        expect(results.first.locator("mark")).to_have_text(["budget"])
        # stored markup is text, never HTML
        expect(results.first.locator(".search-snippet")).to_have_text("the quarterly budget is <b>due</b> friday")
        expect(results.first.locator("b")).to_have_count(0)
        expect(page.locator("#chat-list")).to_be_hidden()

        page.keyboard.press("Tab")
        expect(results.first).to_be_focused()
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{site.url}/chat/{with_alice}")
        expect(page.locator("#messages .bubble").last).to_have_text("filler 9")
        # the message found is marked in its chat
        expect(page.locator(f'#messages .msg.found[data-message-id="{found["id"]}"]')).to_have_count(1)

        page.locator("#message-search").focus() if size is DESKTOP else page.goto(site.url + "/chat")
        if size is PHONE:
            page.locator("#message-search").focus()
        page.keyboard.press("Control+a")
        page.keyboard.type("filler 2")  # a one-character last word is a whole word, not a prefix
        expect(results).to_have_count(1)
        page.keyboard.press("Escape")
        expect(page.locator("#message-search")).to_have_value("")
        expect(page.locator("#chat-list")).to_be_visible()
        expect(page.locator("#message-search-results")).to_be_hidden()

        page.keyboard.type("fill")
        expect(results).to_have_count(10)
        results.first.click()  # the newest among equals first
        expect(page).to_have_url(f"{site.url}/chat/{with_alice}")
        expect(page.locator("#messages .msg.found .bubble")).to_have_text("filler 9")
    finally:
        ctx.close()


def test_more_results_and_the_bad_query_message(browser, site):
    dan, erin = register(site, "dan", "Dan Ray"), register(site, "erin", "Erin Lee")
    chat = open_chat(site, erin, dan)
    for i in range(25):
        send(site, erin, chat, f"invoice {i}")
    ctx = signed_in_context(browser, site, dan, viewport=DESKTOP)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        page = ctx.new_page()
        page.goto(site.url + "/chat")
        wait_live(page, "WebSocket")
        page.fill("#message-search", "invoice")
        results = page.locator("#message-search-results .search-result")
        expect(results).to_have_count(20)
        expect(page.locator("#message-search-status")).to_have_text("20+ messages found")
        page.click("#message-search-more")
        expect(results).to_have_count(25)
        expect(page.locator("#message-search-status")).to_have_text("25 messages found")
        expect(page.locator("#message-search-more")).to_be_hidden()
        page.fill("#message-search", "!!!")
        expect(page.locator("#message-search-status")).to_have_text("Type letters or digits to search for.")
        expect(results).to_have_count(0)
    finally:
        ctx.close()
