"""Presence by image tag (issue 20 item 10) in Chromium: a same-site ``<img src="/poll/chat?chat_id=…">``
in the victim's signed-in page carries the login cookie with ``Sec-Fetch-Dest: image``; it is
refused (403), so it does not mark the victim as reading the chat, and a new message there
still gives the victim its ``new_message`` notification."""
from playwright.sync_api import expect

from tests.support.browser import browser, http_json, open_chat, register, send, signed_in_context, wait_live  # noqa: F401

INJECT_IMG = """id => {
    const img = document.createElement('img');
    img.src = '/poll/chat?chat_id=' + id + '&timeout=30';
    document.body.appendChild(img);
}"""


def test_an_img_of_poll_chat_does_not_stop_a_notification(browser, server_factory, database_url):
    server = server_factory("--database-url", database_url)
    alice, bob = register(server, "alice"), register(server, "bob")
    chat_id = open_chat(server, bob, alice)
    ctx = signed_in_context(browser, server, alice)
    try:
        page = ctx.new_page()
        page.goto(server.url + "/")
        wait_live(page, "WebSocket")
        with page.expect_response(lambda r: "/poll/chat" in r.url, timeout=10_000) as answer:
            page.evaluate(INJECT_IMG, chat_id)
        response = answer.value
        assert response.request.all_headers().get("sec-fetch-dest") == "image"
        assert response.status == 403
        assert response.json()["error"]["code"] == "fetch_dest_rejected"
        message = send(server, bob, chat_id, "are you there?")
        status, notes = http_json(server, "GET", "/api/notifications", token=alice["token"])
        assert status == 200
        first = notes["notifications"][0]
        assert (first["type"], first["chat_id"], first["content_preview"]) == ("new_message", chat_id,
                                                                                 message["content"]), first
        # and the signed-in page shows it
        expect(page.locator("#recent-notifications .notif").first).to_contain_text("are you there?")
    finally:
        ctx.close()
