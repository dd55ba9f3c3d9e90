"""examples/flask_shop in Chromium (issue 23, acceptance 8): two users of the shop (no Squall
account: the shop mints their tokens) chat through Squall embedded in the shop's pages, on the
shop's own origin while Squall is another; a message to the one who is not looking at the chat
shows a toast; then the customer closes the page, the staff member writes again, and Squall's
``notification.unseen`` webhook (``--unseen-delay`` 2 s) makes the shop email her through its
SMTP server: the email is in the mailbox file."""
from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import TIMEOUT_MS, browser  # noqa: F401
from tests.support.procs import free_port
from tests.support.shop import STAFF, WEBHOOK_SECRET, start_shop, start_squall_for_shop

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Any) -> Any:
    port = free_port()
    squall = start_squall_for_shop(tmp_path, port, "--webhook-url", f"http://127.0.0.1:{port}/squall/webhooks",
                                   "--webhook-secret", WEBHOOK_SECRET, "--unseen-delay", "2",
                                   "--presence-grace", "1")
    try:
        shop = start_shop(tmp_path, port, squall.url)
    except Exception:
        squall.kill()
        raise
    yield squall, shop
    shop.stop()
    squall.kill()


def ready(page: Page) -> None:
    """The page's Squall client has started (stream open, chats listed)."""
    expect(page.locator("body")).to_have_attribute("data-squall", "ready", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_have_text("online")


def open_order_chat(page: Page) -> None:
    page.locator(".chat-link").first.click()
    expect(page.locator("#composer")).to_be_visible()


def say(page: Page, text: str) -> None:
    page.fill("#message-input", text)
    page.click("#composer button[type=submit]")
    expect(page.locator("#messages")).to_contain_text(text)


def test_two_shop_users_chat_with_toasts_and_the_absent_one_gets_an_email(browser: Browser,  # noqa: F811
                                                                          stack: Any) -> None:
    squall, shop = stack
    alice_email = f"alice-{uuid.uuid4().hex[:6]}@shop.test"

    alice_context = browser.new_context()
    alice = alice_context.new_page()
    alice.goto(shop.url + "/")
    assert alice.url.endswith("/login")
    alice.fill("#signup-title ~ label input[name=name]", "Alice")
    alice.fill("#signup-title ~ label input[name=email]", alice_email)
    alice.fill("#signup-title ~ label input[name=password]", "alice-password")
    alice.get_by_role("button", name="Create account").click()
    alice.fill("input[name=item]", "A red teapot")
    alice.get_by_role("button", name="Place order").click()
    ready(alice)
    expect(alice.locator(".chat-link")).to_contain_text("A red teapot")
    open_order_chat(alice)
    expect(alice.locator("#messages")).to_contain_text("is placed")

    sam_context = browser.new_context()
    sam = sam_context.new_page()
    sam.goto(shop.url + "/login")
    sam.fill("#signin-title ~ label input[name=email]", STAFF[0])
    sam.fill("#signin-title ~ label input[name=password]", STAFF[2])
    sam.get_by_role("button", name="Sign in").click()
    ready(sam)
    expect(sam.locator(".chat-link")).to_contain_text("A red teapot")
    # Everything Squall-related on both pages went to Squall's origin, not the shop's.
    assert squall.url != shop.url

    say(alice, "Is the teapot really red?")
    toast = sam.locator(".toast")
    expect(toast).to_contain_text("New message from Alice: Is the teapot really red?")
    expect(sam.locator("#unread")).to_have_text("2")  # the order's system message and Alice's

    open_order_chat(sam)
    expect(sam.locator("#messages")).to_contain_text("Is the teapot really red?")
    say(sam, "Bright red, yes")
    expect(alice.locator("#messages")).to_contain_text("Bright red, yes")

    before = len(shop.messages())
    alice_context.close()  # Alice goes away: no stream of hers anywhere
    say(sam, "It ships tomorrow morning")

    deadline = time.monotonic() + 30
    while len(shop.messages()) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    mail = shop.messages()[before:]
    assert len(mail) == 1, f"{len(mail)} emails; shop log:\n{shop.log()}\nsquall log:\n{squall.log()}"
    assert mail[0]["To"] == alice_email
    assert mail[0]["Subject"] == "You have 1 unread message at the shop"
    assert f"{STAFF[1]}: It ships tomorrow morning" in mail[0].get_payload(decode=True).decode()
    time.sleep(3)  # past another --unseen-delay: sent once per user until they read or reconnect
    assert len(shop.messages()) == before + 1
    sam_context.close()
