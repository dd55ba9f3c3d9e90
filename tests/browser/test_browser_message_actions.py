"""Changing messages from the chat page (issue 25, items 1-3 and 9): the keyboard alone opens a
message's actions to edit, react, reply and delete (also with no focus() at all, from where the
page puts it); the other member sees each change live,
quotes follow, axe finds nothing on the new states, at desktop and phone widths."""
import pytest
from playwright.sync_api import expect

from tests.support.browser import (DESKTOP, PHONE, axe_violations, browser, http_json, open_chat,  # noqa: F401
                                   register, send, signed_in_context, wait_live)
from tests.support.procs import start_server


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("actions")
    server = start_server(tmp, "--database-url", f"sqlite:///{tmp}/actions.db")
    yield server
    server.kill()


def message(page, text):
    return page.locator("#messages .msg").filter(has=page.locator(".bubble", has_text=text))


def open_actions(page, msg):
    """Focus the message's actions button and open its menu with Enter; the first item has the focus."""
    msg.locator(".msg-actions").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#message-menu [role=menuitem]").first).to_be_focused()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_edit_react_reply_delete_by_keyboard_seen_live_by_the_other(browser, site, size):
    alice, bob = register(site, "alice", "Alice Wu"), register(site, "bob", "Bob Stone")
    chat = open_chat(site, alice, bob)
    a_ctx = signed_in_context(browser, site, alice, viewport=size)
    b_ctx = signed_in_context(browser, site, bob, viewport=size)
    try:
        a, b = a_ctx.new_page(), b_ctx.new_page()
        a.on("dialog", lambda dialog: dialog.accept())  # "Delete this message for everyone?"
        for page in (a, b):
            page.goto(f"{site.url}/chat/{chat}")
            wait_live(page, "WebSocket")
            expect(page.locator("#conversation")).to_have_attribute("data-loaded", str(chat))
        a.locator("#composer-input").fill("hello wrold")
        a.keyboard.press("Enter")
        expect(message(b, "hello wrold")).to_have_count(1)

        # Alice edits: the last item but one (ArrowUp wraps to Delete, then Edit)
        open_actions(a, message(a, "hello wrold"))
        assert axe_violations(a) == []
        a.keyboard.press("ArrowUp")
        a.keyboard.press("ArrowUp")
        expect(a.locator("#message-menu [role=menuitem]:focus")).to_have_text("Edit")
        a.keyboard.press("Enter")
        expect(a.locator("#composer-mode")).to_contain_text("Editing your message")
        expect(a.locator("#composer-input")).to_have_value("hello wrold")
        a.locator("#composer-input").fill("hello world")
        a.keyboard.press("Enter")
        for page in (a, b):
            expect(message(page, "hello world").locator(".msg-meta")).to_contain_text("edited")
        expect(a.locator("#composer-mode")).to_be_hidden()

        # Bob reacts with the second item (React 👍), Alice adds hers with the chip
        open_actions(b, message(b, "hello world"))
        b.keyboard.press("ArrowDown")
        expect(b.locator("#message-menu [role=menuitem]:focus")).to_have_text("React 👍")
        b.keyboard.press("Enter")
        for page in (a, b):
            expect(message(page, "hello world").locator(".reaction")).to_have_text(["👍 1"])
        chip = message(a, "hello world").locator(".reaction")
        expect(chip).to_have_attribute("aria-pressed", "false")
        chip.focus()
        a.keyboard.press("Enter")
        for page in (a, b):
            expect(message(page, "hello world").locator(".reaction")).to_have_text(["👍 2"])
        expect(message(a, "hello world").locator(".reaction")).to_have_attribute("aria-pressed", "true")

        # Bob replies: Reply is the first item
        open_actions(b, message(b, "hello world"))
        b.keyboard.press("Enter")
        expect(b.locator("#composer-mode")).to_contain_text("Replying to Alice Wu")
        expect(b.locator("#composer-input")).to_be_focused()
        b.keyboard.type("indeed")
        b.keyboard.press("Enter")
        for page in (a, b):
            expect(message(page, "indeed").locator(".msg-quote")).to_have_text("Alice Wu hello world")
        assert axe_violations(b) == []

        # Escape leaves a reply unsent
        open_actions(b, message(b, "indeed"))
        b.keyboard.press("Enter")
        expect(b.locator("#composer-mode")).to_be_visible()
        b.keyboard.press("Escape")
        expect(b.locator("#composer-mode")).to_be_hidden()

        # Alice deletes hers: the last item; the quote and the message become tombstones everywhere
        open_actions(a, message(a, "hello world"))
        a.keyboard.press("ArrowUp")
        expect(a.locator("#message-menu [role=menuitem]:focus")).to_have_text("Delete")
        a.keyboard.press("Enter")
        for page in (a, b):
            expect(page.locator("#messages .bubble.deleted")).to_have_text(["This message was deleted"])
            expect(message(page, "indeed").locator(".msg-quote")).to_have_text("Deleted message")
            expect(page.locator("#messages .reaction")).to_have_count(0)
        assert axe_violations(a) == []

        # after a reload the history shows the same
        b.reload()
        expect(b.locator("#conversation")).to_have_attribute("data-loaded", str(chat))
        expect(b.locator("#messages .bubble.deleted")).to_have_count(1)
        expect(message(b, "indeed").locator(".msg-quote")).to_have_text("Deleted message")
    finally:
        a_ctx.close()
        b_ctx.close()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_mention_completion_by_keyboard_and_the_mention_mark(browser, site, size):
    from tests.support.browser import http_json
    alice, bob, bea = register(site, "alice", "Alice Wu"), register(site, "bob", "Bob Stone"), \
        register(site, "bea", "Bea Lopez")
    status, data = http_json(site, "POST", "/api/chats", {"member_ids": [bob["id"], bea["id"]], "title": "Team"},
                             token=alice["token"])
    assert status == 201, data
    group = data["chat"]["id"]
    a_ctx = signed_in_context(browser, site, alice, viewport=size)
    b_ctx = signed_in_context(browser, site, bob, viewport=size)
    try:
        a, b = a_ctx.new_page(), b_ctx.new_page()
        a.goto(f"{site.url}/chat/{group}")
        b.goto(f"{site.url}/chat")  # Bob looks at his chat list
        for page in (a, b):
            wait_live(page, "WebSocket")
        expect(a.locator("#conversation")).to_have_attribute("data-loaded", str(group))
        box = a.locator("#composer-input")
        box.focus()
        a.keyboard.type("thanks @b")
        options = a.locator("#mention-list [role=option]")
        expect(options).to_have_count(2)  # Bea and Bob, never Alice herself
        expect(box).to_have_attribute("aria-expanded", "true")
        assert axe_violations(a) == []
        a.keyboard.type("o")
        expect(options).to_have_count(1)
        expect(options.first).to_have_attribute("aria-selected", "true")
        a.keyboard.press("Enter")  # completes, does not send
        expect(box).to_have_value(f"thanks @{bob['username']} ")
        expect(a.locator("#mention-list")).to_be_hidden()
        a.keyboard.type("for the review")
        a.keyboard.press("Escape")  # nothing to close: the text stays
        expect(box).to_have_value(f"thanks @{bob['username']} for the review")
        a.keyboard.press("Enter")  # sends
        expect(message(a, "for the review")).to_have_count(1)
        row = b.locator(f"#chat-list a[data-chat-id='{group}']")
        expect(row.locator(".mention-mark")).to_have_text("@")
        expect(row).to_contain_text("you were mentioned")
        status, unread = http_json(site, "GET", "/api/unread", token=bob["token"])
        assert unread["mentions"] == {str(group): 1}
        row.click()  # reading clears it
        expect(b.locator(f"#chat-list a[data-chat-id='{group}'] .mention-mark")).to_have_count(0)
    finally:
        a_ctx.close()
        b_ctx.close()


def focused_is(page, locator):
    """The focused element is ``locator``'s element (a check, not a ``focus()``)."""
    expect(locator).to_be_focused()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_keyboard_only_from_the_composer_edit_react_reply_delete(browser, site, size):
    """Nothing but keys from where the page puts the focus: Shift+Tab from the composer reaches
    the last message's actions; after a reaction or a delete the focus stays on that message
    (or the log), never lost to the page's start."""
    alice, bob = register(site, "alice", "Alice Wu"), register(site, "bob", "Bob Stone")
    chat = open_chat(site, alice, bob)
    a_ctx = signed_in_context(browser, site, alice, viewport=size)
    b_ctx = signed_in_context(browser, site, bob, viewport=size)
    try:
        a, b = a_ctx.new_page(), b_ctx.new_page()
        a.on("dialog", lambda dialog: dialog.accept())  # "Delete this message for everyone?"
        a.on("filechooser", lambda chooser: None)
        b.on("filechooser", lambda chooser: None)
        for page in (a, b):
            page.goto(f"{site.url}/chat/{chat}")
            wait_live(page, "WebSocket")
            expect(page.locator("#conversation")).to_have_attribute("data-loaded", str(chat))
            expect(page.locator("#composer-input")).to_be_focused()

        def to_last_actions(page, msg):
            """From the composer: Shift+Tab over the attach button to the last message's actions."""
            # The sender's own message is shown once its ack is back, which may come after the
            # other member already has it: keys pressed before would walk the older messages.
            expect(msg.locator(".msg-actions")).to_have_count(1)
            page.keyboard.press("Shift+Tab")
            focused_is(page, page.locator("#attach"))
            page.keyboard.press("Shift+Tab")
            focused_is(page, msg.locator(".msg-actions"))

        a.keyboard.type("hello wrold")
        a.keyboard.press("Enter")
        expect(message(b, "hello wrold")).to_have_count(1)

        # edit: Actions, ArrowUp twice (Delete, Edit), Enter; the composer holds the text
        to_last_actions(a, message(a, "hello wrold"))
        a.keyboard.press("Enter")
        a.keyboard.press("ArrowUp")
        a.keyboard.press("ArrowUp")
        a.keyboard.press("Enter")
        focused_is(a, a.locator("#composer-input"))
        expect(a.locator("#composer-input")).to_have_value("hello wrold")
        a.keyboard.press("Control+a")
        a.keyboard.type("hello world")
        a.keyboard.press("Enter")
        for page in (a, b):
            expect(message(page, "hello world").locator(".msg-meta")).to_contain_text("edited")
        # "edited" can show from the live event before the page's own PATCH is answered; until then
        # the editing bar's Cancel button sits between the attach button and the messages (CI, stop 34)
        expect(a.locator("#composer-mode")).to_be_hidden()

        # react from the menu: the focus comes back to the message's actions
        to_last_actions(a, message(a, "hello world"))
        a.keyboard.press("Enter")
        a.keyboard.press("ArrowDown")
        a.keyboard.press("Enter")
        for page in (a, b):
            expect(message(page, "hello world").locator(".reaction")).to_have_text(["👍 1"])
        focused_is(a, message(a, "hello world").locator(".msg-actions"))
        # Tab to the reaction, Space takes it back; the focus stays on the message
        a.keyboard.press("Tab")
        focused_is(a, message(a, "hello world").locator(".reaction"))
        expect(message(a, "hello world").locator(".reaction")).to_have_attribute("aria-pressed", "true")
        a.keyboard.press("Space")
        for page in (a, b):
            expect(message(page, "hello world").locator(".reaction")).to_have_count(0)
        focused_is(a, message(a, "hello world").locator(".msg-actions"))
        assert axe_violations(a) == []

        # Bob replies: from his composer to Alice's message, Reply is the first item
        to_last_actions(b, message(b, "hello world"))
        b.keyboard.press("Enter")
        b.keyboard.press("Enter")
        focused_is(b, b.locator("#composer-input"))
        expect(b.locator("#composer-mode")).to_contain_text("Replying to Alice Wu")
        b.keyboard.type("indeed")
        b.keyboard.press("Enter")
        for page in (a, b):
            expect(message(page, "indeed").locator(".msg-quote")).to_have_text("Alice Wu hello world")
        assert axe_violations(b) == []

        # Alice deletes a message she sends now: Actions, ArrowUp (Delete), Enter
        # from hello world's actions, Tab over Bob's reply and the attach button back to the composer
        focused_is(a, message(a, "hello world").locator(".msg-actions"))
        a.keyboard.press("Tab")
        focused_is(a, message(a, "indeed").locator(".msg-actions"))
        a.keyboard.press("Tab")
        a.keyboard.press("Tab")
        focused_is(a, a.locator("#composer-input"))
        a.keyboard.type("wrong chat")
        a.keyboard.press("Enter")
        expect(message(b, "wrong chat")).to_have_count(1)
        to_last_actions(a, message(a, "wrong chat"))
        a.keyboard.press("Enter")
        a.keyboard.press("ArrowUp")
        expect(a.locator("#message-menu [role=menuitem]:focus")).to_have_text("Delete")
        a.keyboard.press("Enter")
        for page in (a, b):
            expect(page.locator("#messages .bubble.deleted")).to_have_text(["This message was deleted"])
        focused_is(a, a.locator("#messages"))  # its actions are gone: the log keeps the focus
        assert axe_violations(a) == []
    finally:
        a_ctx.close()
        b_ctx.close()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_an_edit_updates_and_a_delete_withdraws_the_toast_and_the_listed_notification(browser, site, size):
    """Bob is on Home (a toast, the list, the unread count) with a second tab on the test page (a
    follower of the first tab's stream): Alice's edit changes the preview in both, her delete
    takes the toast and the listed notification away and the count down."""
    alice, bob = register(site, "alice", "Alice Wu"), register(site, "bob", "Bob Stone")
    chat = open_chat(site, alice, bob)
    b_ctx = signed_in_context(browser, site, bob, viewport=size)
    try:
        home = b_ctx.new_page()
        home.goto(site.url + "/")
        wait_live(home, "WebSocket")
        other_tab = b_ctx.new_page()
        other_tab.goto(site.url + "/test-notifications")
        expect(other_tab.locator("#conn-pill")).to_have_attribute("data-state", "open")
        kept = send(site, alice, chat, "see you at 10")
        gone = send(site, alice, chat, "meant for someone else")
        toasts = home.locator(".toast:not(.leaving) .toast-text")
        expect(toasts).to_have_text(["see you at 10", "meant for someone else"])
        listed = home.locator("#recent-notifications .notif")
        expect(listed).to_have_count(2)
        expect(home.locator("#unread-total")).to_have_text("2")

        status, _ = http_json(site, "PATCH", f"/api/chats/{chat}/messages/{kept['id']}", {"content": "see you at 11"},
                              token=alice["token"])
        assert status == 200
        expect(toasts).to_have_text(["see you at 11", "meant for someone else"])
        expect(home.locator("#recent-notifications")).to_contain_text("see you at 11")
        expect(home.locator("#recent-notifications")).not_to_contain_text("see you at 10")
        expect(other_tab.locator("#test-notifications")).to_contain_text("see you at 11")

        status, _ = http_json(site, "DELETE", f"/api/chats/{chat}/messages/{gone['id']}", token=alice["token"])
        assert status == 200
        expect(toasts).to_have_text(["see you at 11"])
        expect(listed).to_have_count(1)
        expect(home.locator("#recent-notifications")).not_to_contain_text("meant for someone else")
        expect(home.locator("#unread-total")).to_have_text("1")
        expect(other_tab.locator("#test-notifications .notif[data-type=new_message]")).to_have_count(1)
        expect(other_tab.locator("#test-notifications")).not_to_contain_text("meant for someone else")
        assert axe_violations(home) == []
        # after a reload the server's list agrees
        home.reload()
        wait_live(home, "WebSocket")
        expect(home.locator("#recent-notifications .notif")).to_have_count(1)
        expect(home.locator("#recent-notifications")).to_contain_text("see you at 11")
    finally:
        b_ctx.close()
