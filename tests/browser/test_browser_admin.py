"""The admin console in Chromium: live figures while traffic flows, the announcement form, 403 for others.

Issue 12, acceptance point 5 (screenshot ``admin`` for the README).
"""
import threading

import pytest
from playwright.sync_api import expect

from tests.support.browser import (DESKTOP, browser, http_json, open_chat, register, screenshot,  # noqa: F401
                           send, signed_in_context, wait_live)
from tests.support.commands import run_admin


@pytest.fixture
def server(server_factory, database_url):
    """A real server whose admin history is sampled every second."""
    return server_factory("--database-url", database_url, "--admin-sample-seconds", "1")


@pytest.mark.slow
def test_admin_sees_live_figures_and_announces_and_others_get_403(browser, server, database_url):
    root, other = register(server, "root"), register(server, "other")
    assert run_admin(database_url, "grant", root["username"]).returncode == 0
    chat_id = open_chat(server, root, other)
    ctx_admin = signed_in_context(browser, server, root, viewport=DESKTOP)
    ctx_other = signed_in_context(browser, server, other, viewport=DESKTOP)
    stop = threading.Event()

    def traffic():
        i = 0
        while not stop.is_set():
            send(server, root, chat_id, f"load {i}")
            http_json(server, "POST", "/api/notifications", {"user_ids": [other["id"]], "message": f"note {i}"},
                      service=True)
            i += 1
            stop.wait(0.2)

    worker = threading.Thread(target=traffic, daemon=True)
    try:
        home = ctx_other.new_page()
        home.goto(server.url + "/")
        wait_live(home, "WebSocket")
        conversation = ctx_other.new_page()  # a chat stream: send -> delivery latency is measured
        conversation.goto(f"{server.url}/chat/{chat_id}")
        expect(conversation.locator("#conversation")).to_have_attribute("data-joined", str(chat_id))

        page = ctx_admin.new_page()
        page.goto(server.url + "/admin")
        expect(page.locator("h1")).to_have_text("Admin console")
        expect(page.locator(".top-nav a[data-nav='admin']")).to_be_visible()
        worker.start()
        expect(page.locator("#admin-messages")).not_to_have_text("0", timeout=30_000)
        expect(page.locator("#admin-messages")).not_to_have_text("–")
        expect(page.locator("#admin-deliveries")).not_to_have_text("0")
        expect(page.locator("#admin-connections")).not_to_have_text("0")
        expect(page.locator("#admin-latency")).to_contain_text(" ms / ")
        expect(page.locator(".admin-procs tbody tr")).to_have_count(1)
        expect(page.locator(".admin-procs tbody tr .proc-state")).to_have_text("up")
        assert "L" in page.locator(".admin-chart svg.spark path").first.get_attribute("d")  # a drawn line
        stop.set()
        worker.join(10)
        screenshot(page, "admin")

        # The announcement form reaches the other user's open page.
        page.fill("#announce-message", "Maintenance tonight at 22:00")
        page.check("#announce-chosen")
        page.fill("#announce-usernames", other["username"])
        page.click("#announce-form button[type=submit]")
        expect(page.locator("#announce-status")).to_have_text("Published to 1 user(s).")
        expect(home.locator("#recent-notifications")).to_contain_text("Maintenance tonight at 22:00")
        # ... and toasts there like a message (issue 20, item 16), once the traffic's toasts are gone
        announced = home.locator(".toast[data-type=announcement]", has_text="Maintenance tonight at 22:00")
        expect(announced).to_have_count(1)
        expect(announced.locator(".toast-title")).to_have_text("Announcement")
        # A broadcast to everyone toasts as well; in Do Not Disturb, or with the type muted, nothing does.
        page.fill("#announce-message", "Everyone: new release")
        page.check("#announce-everyone")
        page.click("#announce-form button[type=submit]")
        expect(home.locator(".toast", has_text="Everyone: new release")).to_have_count(1)
        status, _ = http_json(server, "PATCH", "/api/me/preferences", {"muted_types": ["digest"]}, token=other["token"])
        assert status == 200
        http_json(server, "POST", "/api/notifications", {"user_ids": [other["id"]], "type": "digest",
                                                          "message": "muted digest"}, service=True)
        status, _ = http_json(server, "PATCH", "/api/me/preferences", {"dnd_until": "2999-01-01T00:00:00Z"},
                              token=other["token"])
        assert status == 200
        http_json(server, "POST", "/api/notifications", {"user_ids": [other["id"]], "message": "quiet time"},
                  service=True)
        expect(home.locator("#recent-notifications")).to_contain_text("quiet time")
        status, _ = http_json(server, "PATCH", "/api/me/preferences", {"dnd_until": None}, token=other["token"])
        http_json(server, "POST", "/api/notifications", {"user_ids": [other["id"]], "message": "after quiet time"},
                  service=True)
        expect(home.locator(".toast", has_text="after quiet time")).to_have_count(1)
        expect(home.locator(".toast", has_text="quiet time")).to_have_count(1)  # the DND one never toasted
        expect(home.locator(".toast", has_text="muted digest")).to_have_count(0)

        # Anyone else gets a 403 page, and the API refuses them.
        forbidden = ctx_other.new_page()
        response = forbidden.goto(server.url + "/admin")
        assert response.status == 403
        expect(forbidden.locator("h1")).to_have_text("403 · Admins only")
        expect(forbidden.locator(".top-nav a[data-nav='admin']")).to_have_count(0)
        status, err = http_json(server, "GET", "/api/admin/summary", token=other["token"])
        assert status == 403 and err["error"]["code"] == "admin_only"
    finally:
        stop.set()
        ctx_admin.close()
        ctx_other.close()
