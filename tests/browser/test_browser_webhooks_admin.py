"""The admin console lists webhook deliveries and retries a failed one (issue 23, acceptance 2).

A real server sends to a receiver that answers 503 past the (shortened) retry window: the
delivery shows as failed with its last answer and no message text; the Retry button sends it
again, and it shows as delivered.
"""
import pytest
from playwright.sync_api import expect

from tests.support.browser import DESKTOP, browser, open_chat, register, send, signed_in_context  # noqa: F401
from tests.support.commands import run_admin
from tests.support.webhook_receiver import SECRET, WebhookReceiver


@pytest.mark.slow
def test_failed_delivery_is_listed_and_retried_from_the_console(browser, server_factory, database_url):  # noqa: F811
    with WebhookReceiver() as receiver:
        receiver.answers_for = "message.created"
        receiver.answers = [(503, {})] * 100
        server = server_factory("--database-url", database_url, "--admin-sample-seconds", "1",
                                WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET, WEBHOOK_RETRY_WINDOW=2,
                                UNSEEN_DELAY=3600)
        root, other = register(server, "root"), register(server, "other")
        assert run_admin(database_url, "grant", root["username"]).returncode == 0
        chat_id = open_chat(server, root, other)
        send(server, root, chat_id, "secret words in a message")

        page = signed_in_context(browser, server, root, viewport=DESKTOP).new_page()
        page.goto(server.url + "/admin")
        card = page.locator("#admin-webhooks")
        expect(card.locator("h2")).to_have_text("Webhook deliveries")
        failed = card.locator("tr:has(.delivery-state.failed)")
        expect(failed).to_have_count(1, timeout=30_000)
        expect(failed).to_contain_text("message.created")
        expect(failed).to_contain_text("503")
        expect(card).not_to_contain_text("secret words")  # the console never shows a body

        row_id = failed.get_attribute("data-delivery")
        receiver.answers = []
        failed.get_by_role("button", name="Retry").click()
        expect(card.locator("#webhooks-status")).to_contain_text("queued again")
        expect(card.locator(f"tr[data-delivery='{row_id}'] .delivery-state")).to_have_text("delivered", timeout=30_000)
        expect(card.locator(f"tr[data-delivery='{row_id}']")).to_contain_text("message.created")
        receiver.wait(lambda r: any(q.event and q.event["type"] == "message.created" for q in r.requests[-3:]))
