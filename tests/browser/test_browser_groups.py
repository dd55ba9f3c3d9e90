"""Groups that change and presence in the chat page (issue 25, items 7-9): the group settings
dialog by keyboard (rename, add, roles, remove, leave) with each right shown only to whom
it belongs, the other member's page following live, system messages; a removed member's
group read-only (live, and after a reload); presence dots and "last seen"; axe at desktop
and phone widths."""
import pytest
from playwright.sync_api import expect

from tests.support.browser import (DESKTOP, PHONE, axe_violations, browser, http_json, open_chat,  # noqa: F401
                                   register, send, signed_in_context, wait_live)
from tests.support.procs import start_server


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("groups")
    server = start_server(tmp, "--database-url", f"sqlite:///{tmp}/groups.db", "--presence-grace", "1")
    yield server
    server.kill()


def opened(page, site, chat_id):
    page.goto(f"{site.url}/chat/{chat_id}")
    wait_live(page, "WebSocket")
    expect(page.locator("#conversation")).to_have_attribute("data-loaded", str(chat_id))


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_group_settings_by_keyboard_with_each_right_where_it_belongs(browser, site, size):
    alice, bob, carol = register(site, "alice", "Alice Wu"), register(site, "bob", "Bob Stone"), \
        register(site, "carol", "Carol Diaz")
    status, data = http_json(site, "POST", "/api/chats", {"member_ids": [bob["id"]], "title": "Draft"},
                             token=alice["token"])
    assert status == 201, data
    group = data["chat"]["id"]
    a_ctx = signed_in_context(browser, site, alice, viewport=size)
    b_ctx = signed_in_context(browser, site, bob, viewport=size)
    try:
        a, b = a_ctx.new_page(), b_ctx.new_page()
        b.on("dialog", lambda dialog: dialog.accept())  # "Leave this group?"
        opened(a, site, group)
        opened(b, site, group)

        # Alice (owner) renames by keyboard
        a.locator("#group-settings").focus()
        a.keyboard.press("Enter")
        dialog = a.locator("#group-dialog")
        expect(dialog).to_be_visible()
        expect(a.locator("#group-title-input")).to_be_focused()
        assert axe_violations(a) == []
        a.keyboard.press("Control+a")
        a.keyboard.type("Launch")
        a.keyboard.press("Enter")
        for page in (a, b):
            expect(page.locator("#conv-title")).to_have_text("Launch")
            expect(page.locator("#messages .msg.system .system-text").last).to_contain_text("Launch")

        # adds Carol from the search, by keyboard
        a.locator("#add-member").focus()
        a.keyboard.type(carol["username"])  # unique: other runs of this module made Carols too
        option = a.locator(".add-member-option")
        expect(option).to_have_count(1)
        option.focus()
        a.keyboard.press("Enter")
        expect(a.locator("#add-member-status")).to_have_text("Carol Diaz was added.")
        members = a.locator("#group-members .group-member")
        expect(members).to_have_count(3)
        expect(b.locator("#conv-sub")).to_contain_text("3 members")

        # makes Bob an admin
        a.get_by_role("button", name="Make admin: Bob Stone").click()
        expect(a.locator("#group-members .group-member[data-user-id='%d']" % bob["id"])).to_contain_text("Admin")
        a.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(a.locator("#group-settings")).to_be_focused()

        # Bob, an admin: may remove Carol (a member), not Alice (the owner), and promotes no one
        b.locator("#group-settings").click()
        expect(b.locator("#group-dialog")).to_be_visible()
        expect(b.get_by_role("button", name="Remove Carol Diaz")).to_be_visible()
        expect(b.get_by_role("button", name="Remove Alice Wu")).to_have_count(0)
        expect(b.get_by_role("button", name="Make admin: Carol Diaz")).to_have_count(0)
        assert axe_violations(b) == []
        b.get_by_role("button", name="Remove Carol Diaz").click()
        for page in (a, b):
            expect(page.locator("#conv-sub")).to_contain_text("2 members")

        # Bob leaves: the group stays in his list, marked, read-only; Alice sees the system message
        b.locator("#leave-group").click()
        expect(b.locator(f"#chat-list a[data-chat-id='{group}']")).to_have_attribute("data-member", "false")
        expect(b.locator("#former-notice")).to_have_text("You are no longer a member of this group")
        expect(b.locator("#composer")).to_be_hidden()
        expect(b.locator("#group-dialog")).to_be_hidden()
        expect(b.locator("#messages")).to_be_focused()  # not lost to the page's start
        expect(a.locator("#messages .msg.system .system-text").last).to_contain_text("Bob Stone")
        expect(a.locator("#conv-sub")).to_contain_text("1 members")
    finally:
        a_ctx.close()
        b_ctx.close()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_presence_dot_and_last_seen_follow_the_other_member(browser, site, size):
    alice, dave = register(site, "alice", "Alice Wu"), register(site, "dave", "Dave Kim")
    chat = open_chat(site, alice, dave)
    a_ctx = signed_in_context(browser, site, alice, viewport=size)
    d_ctx = signed_in_context(browser, site, dave, viewport=size)
    try:
        a = a_ctx.new_page()
        opened(a, site, chat)
        row = a.locator(f"#chat-list a[data-chat-id='{chat}']")  # hidden behind the chat on a phone: still rendered
        expect(row.locator(".presence-dot")).to_have_count(0)
        d = d_ctx.new_page()
        opened(d, site, chat)  # Dave comes online
        expect(row.locator(".presence-dot")).to_have_count(1)
        expect(row).to_contain_text("online")
        expect(a.locator("#conv-sub")).to_contain_text("Online")
        assert axe_violations(a) == []
        d.close()  # Dave goes: offline after the grace period, with a last seen time
        expect(row.locator(".presence-dot")).to_have_count(0)
        expect(a.locator("#conv-sub")).to_contain_text("Last seen")
        # Dave hides his presence: Alice sees none of it, even when he is back
        status, _ = http_json(site, "PATCH", "/api/me/preferences", {"share_presence": False}, token=dave["token"])
        assert status == 200
        d = d_ctx.new_page()
        opened(d, site, chat)
        a.reload()
        expect(a.locator("#conversation")).to_have_attribute("data-loaded", str(chat))
        expect(a.locator("#conv-sub")).not_to_contain_text("Online")
        expect(a.locator("#conv-sub")).not_to_contain_text("Last seen")
        expect(row.locator(".presence-dot")).to_have_count(0)
    finally:
        a_ctx.close()
        d_ctx.close()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_removed_member_sees_the_group_read_only_live_and_after_a_reload(browser, site, size):
    alice, erin = register(site, "alice", "Alice Wu"), register(site, "erin", "Erin Moss")
    status, data = http_json(site, "POST", "/api/chats", {"member_ids": [erin["id"]], "title": "Ops"},
                             token=alice["token"])
    assert status == 201, data
    group = data["chat"]["id"]
    before = send(site, alice, group, "the history she keeps")
    status, _ = http_json(site, "PUT", f"/api/chats/{group}/messages/{before['id']}/reactions/%F0%9F%91%8D",
                          token=erin["token"])
    assert status == 200
    e_ctx = signed_in_context(browser, site, erin, viewport=size)
    try:
        e = e_ctx.new_page()
        e.on("filechooser", lambda chooser: None)
        opened(e, site, group)
        msg = e.locator(f"#messages .msg[data-message-id='{before['id']}']")
        expect(msg.locator(".msg-actions")).to_have_count(1)
        expect(e.locator("#former-notice")).to_have_text("")
        # Erin is in the middle of a reply when Alice removes her
        e.locator("#composer-input").focus()
        e.keyboard.type("half a sentence")
        status, gone = http_json(site, "DELETE", f"/api/chats/{group}/members/{erin['id']}", token=alice["token"])
        assert status == 200, gone
        notice = e.locator("#former-notice")
        expect(notice).to_have_text("You are no longer a member of this group")
        expect(notice).to_have_attribute("role", "status")
        expect(e.locator("#composer")).to_be_hidden()
        expect(e.locator("#messages")).to_be_focused()  # the composer had it
        expect(e.locator("#conv-sub")).to_have_text("You are no longer a member")
        expect(e.locator("#group-settings")).to_be_hidden()
        expect(e.locator("#mute-button")).to_be_hidden()
        expect(e.locator("#messages .msg-actions")).to_have_count(0)
        expect(msg.locator("button.reaction")).to_have_count(0)  # shown, no longer a button
        expect(msg.locator(".msg-reactions")).to_contain_text("👍 1")
        expect(e.locator("#messages .msg.system .system-text").last).to_have_text("Alice Wu removed Erin Moss")
        row = e.locator(f"#chat-list a[data-chat-id='{group}']")
        expect(row).to_have_attribute("data-member", "false")
        expect(row).to_contain_text("you are no longer a member")
        assert axe_violations(e) == []

        # later messages never reach her; after a reload the group opens read-only with its history
        send(site, alice, group, "said after she left")
        e.reload()
        expect(e.locator("#conversation")).to_have_attribute("data-loaded", str(group))
        expect(e.locator("#former-notice")).to_have_text("You are no longer a member of this group")
        expect(e.locator("#composer")).to_be_hidden()
        expect(e.locator("#messages")).to_contain_text("the history she keeps")
        expect(e.locator("#messages")).not_to_contain_text("said after she left")
        expect(e.locator("#messages .msg-actions")).to_have_count(0)
        expect(e.locator("#messages")).to_be_focused()
        assert axe_violations(e) == []

        # added back: a member again, live, the composer back
        status, _ = http_json(site, "POST", f"/api/chats/{group}/members", {"user_id": erin["id"]},
                              token=alice["token"])
        assert status == 201
        expect(e.locator("#composer")).to_be_visible()
        expect(e.locator("#former-notice")).to_have_text("")
        expect(e.locator(f"#chat-list a[data-chat-id='{group}']")).to_have_attribute("data-member", "true")
        expect(msg.locator(".msg-actions")).to_have_count(1)
    finally:
        e_ctx.close()


def test_a_former_group_open_over_sse_keeps_the_chat_stream(browser, server_factory, database_url):
    """With WebSockets blocked the chat connection is /sse/chat, whose ``chat_id`` a former member
    may not give: the page opens the group read-only without it, and live messages of the
    user's other chats keep coming, before and after a removal seen live."""
    server = server_factory("--database-url", database_url, "--block-websockets")
    alice, erin = register(server, "alice", "Alice Wu"), register(server, "erin", "Erin Moss")
    status, data = http_json(server, "POST", "/api/chats", {"member_ids": [erin["id"]], "title": "Ops"},
                             token=alice["token"])
    assert status == 201, data
    group = data["chat"]["id"]
    private = open_chat(server, alice, erin)
    send(server, alice, private, "hello")
    ctx = signed_in_context(browser, server, erin)
    try:
        e = ctx.new_page()
        e.goto(f"{server.url}/chat/{group}")
        wait_live(e, "SSE")
        expect(e.locator("#conversation")).to_have_attribute("data-loaded", str(group))
        expect(e.locator("#conversation")).to_have_attribute("data-transport", "sse")
        status, _ = http_json(server, "DELETE", f"/api/chats/{group}/members/{erin['id']}", token=alice["token"])
        assert status == 200
        expect(e.locator("#former-notice")).to_have_text("You are no longer a member of this group")
        row = e.locator(f"#chat-list a[data-chat-id='{private}']")
        send(server, alice, private, "still live after the removal")
        expect(row).to_contain_text("still live after the removal")
        e.reload()  # opened read-only from the start
        expect(e.locator("#conversation")).to_have_attribute("data-loaded", str(group))
        expect(e.locator("#former-notice")).to_have_text("You are no longer a member of this group")
        expect(e.locator("#conversation")).to_have_attribute("data-transport", "sse")
        send(server, alice, private, "and after a reload")
        expect(row).to_contain_text("and after a reload")
        e.locator(f"#chat-list a[data-chat-id='{private}']").click()
        expect(e.locator("#conversation")).to_have_attribute("data-loaded", str(private))
        expect(e.locator("#composer")).to_be_visible()
        expect(e.locator("#former-notice")).to_have_text("")
        expect(e.locator("#conversation")).to_have_attribute("data-joined", str(private))
    finally:
        ctx.close()
