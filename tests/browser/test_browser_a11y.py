"""Accessibility in Chromium (issue 14): axe-core on every page and state at both widths
(acceptance 1), the keyboard alone (2), live-region announcements (3), pausing toasts.

To check a new page or dialog with axe, add one line to ``STATES``.
"""
import re

import pytest
from playwright.sync_api import expect

from tests.support.browser import (DESKTOP, PHONE, TIMEOUT_MS, axe_violations, browser, http_json,  # noqa: F401
                           open_chat, register, send, signed_in_context, wait_live)
from tests.support.procs import start_server


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One server for the module (the front end does not depend on the database kind)."""
    tmp = tmp_path_factory.mktemp("a11y")
    # Typing frames every time (states of both widths type within the default 2 s interval).
    server = start_server(tmp, "--database-url", f"sqlite:///{tmp}/a11y.db", "--typing-interval", "0")
    yield server
    server.kill()


@pytest.fixture(scope="module")
def people(site):
    """Bob (who looks), Alice (a private chat with history) and Carol (who sends the toasts)."""
    bob, alice, carol = register(site, "bob", "Bob Martin"), register(site, "alice", "Alice Chen"), \
        register(site, "carol", "Carol Diaz")
    with_alice = open_chat(site, alice, bob)
    send(site, alice, with_alice, "Lunch at noon?")
    send(site, bob, with_alice, "Sounds good")
    return {"bob": bob, "alice": alice, "carol": carol, "with_alice": with_alice,
            "with_carol": open_chat(site, carol, bob)}


# States: after the page is open (and, signed in, a toast shows and the unread dot is lit).

def failed_login(page, site, people):
    page.fill("#username", people["bob"]["username"])
    page.fill("#password", "not-the-password")
    page.click("#submit")
    expect(page.locator("#form-error")).to_have_text("Wrong username or password")
    expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")


def register_tab(page, site, people):
    page.click("#tab-register")
    expect(page.locator("#display_name")).to_be_visible()


def someone_typing(page, site, people):
    expect(page.locator("#messages .bubble")).to_have_count(2)
    http_json(site, "POST", f"/api/chats/{people['with_alice']}/typing", {}, token=people["alice"]["token"])
    expect(page.locator("#typing")).to_have_text("Alice Chen is typing…")


def new_chat_dialog(page, site, people):
    page.locator("#new-chat").press("Enter")  # on phones the toast covers the button
    page.fill("#user-search", "al")  # a prefix of 2 characters at least (--user-search prefix)
    expect(page.locator(".user-result").first).to_be_visible()
    page.click(f".user-result[data-username='{people['alice']['username']}']")
    expect(page.locator("#selected-users .chip")).to_have_text(["Alice Chen"])


def message_search(page, site, people):
    page.fill("#message-search", "lunch")
    expect(page.locator("#message-search-results .search-result mark")).to_have_text(["Lunch"])
    expect(page.locator("#message-search-status")).to_have_text("1 message found")


def open_drawer(page, site, people):
    page.click(".menu-btn")
    expect(page.locator("#side-nav")).to_have_class(re.compile(r"\bopen\b"))
    expect(page.locator("#side-nav [data-nav=messages] .badge-dot")).to_be_visible()


def settings_ready(page, site, people):
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.fill("#muted-type-input", "digest")
    page.press("#muted-type-input", "Enter")
    expect(page.locator("#muted-types .chip")).to_have_text(["digest"])


def mute_menu(page, site, people):
    expect(page.locator("#messages .bubble")).to_have_count(2)
    page.locator("#mute-button").press("Enter")  # a toast may cover the button
    expect(page.locator("#mute-menu [role=menuitem]").first).to_be_focused()


def probe_done(page, site, people):
    expect(page.locator("#conn-latency")).not_to_have_text("—")


def admin_forbidden(page, site, people):
    expect(page.locator("h1")).to_have_text("403 · Admins only")


def admin_console(page, site, people):
    """Bob is made an admin (the last states of the table), then the console shows live figures."""
    from tests.support.commands import run_admin
    database_url = site.args[site.args.index("--database-url") + 1]
    assert run_admin(database_url, "grant", people["bob"]["username"]).returncode == 0
    page.reload()
    expect(page.locator("h1")).to_have_text("Admin console")
    expect(page.locator(".admin-procs tbody tr")).to_have_count(1)
    wait_live(page, "WebSocket")
    toast_and_badge(page, site, people, DESKTOP if page.viewport_size == DESKTOP else PHONE)


BOTH = (DESKTOP, PHONE)
STATES = [
    # (name, signed in, path, then, widths)
    ("login", False, "/login", None, BOTH),
    ("login-error", False, "/login", failed_login, BOTH),
    ("create-account", False, "/login", register_tab, BOTH),
    ("home", True, "/", None, BOTH),
    ("phone-drawer", True, "/", open_drawer, (PHONE,)),  # the menu button exists at phone width only
    ("chat-list", True, "/chat", None, BOTH),
    ("conversation", True, "/chat/{with_alice}", someone_typing, BOTH),
    ("new-chat", True, "/chat", new_chat_dialog, BOTH),
    ("message-search", True, "/chat", message_search, BOTH),
    ("test-page", True, "/test-notifications", probe_done, BOTH),
    ("settings", True, "/settings", settings_ready, BOTH),
    ("mute-menu", True, "/chat/{with_alice}", mute_menu, BOTH),
    ("admin-forbidden", True, "/admin", admin_forbidden, BOTH),
    ("admin", True, "/admin", admin_console, BOTH),  # makes Bob an admin: keep it last
]
CASES = [pytest.param(name, signed_in, path, then, size, id=f"{name}-{size['width']}")
         for name, signed_in, path, then, widths in STATES for size in widths]


def toast_and_badge(page, site, people, size):
    """Carol writes: a toast shows and the unread dot is lit (Bob never reads her chat)."""
    send(site, people["carol"], people["with_carol"], "Are the slides ready?")
    expect(page.locator(".toast").last).to_contain_text("Are the slides ready?")
    expect(page.locator(".top-nav .badge-dot" if size is DESKTOP else ".menu-btn .badge-dot")).to_be_visible()


@pytest.mark.parametrize("name,signed_in,path,then,size", CASES)
def test_axe_finds_no_wcag_violations(browser, site, people, name, signed_in, path, then, size):
    """1: zero axe-core violations of WCAG 2.0/2.1 A and AA in each page and state, at both widths."""
    if signed_in:
        ctx = signed_in_context(browser, site, people["bob"], viewport=size)
    else:
        ctx = browser.new_context(viewport=size)
        ctx.set_default_timeout(TIMEOUT_MS)
    try:
        page = ctx.new_page()
        page.emulate_media(reduced_motion="reduce")  # no half-faded toasts while axe measures
        page.goto(site.url + path.format(**people))
        if signed_in:
            wait_live(page, "WebSocket")
            toast_and_badge(page, site, people, size)
        else:
            expect(page.locator("#username")).to_be_focused()
        if then:
            then(page, site, people)
        violations = axe_violations(page)
        assert violations == [], "\n".join(violations)
    finally:
        ctx.close()


# Keyboard ---------------------------------------------------------------------------------

FOCUS_SHOWN = """() => {
  const n = document.activeElement, s = getComputedStyle(n);
  return n !== document.body && (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0 || s.boxShadow !== "none");
}"""


def focused(page, selector: str) -> None:
    """Focus is on ``selector`` and visibly so (an outline or a focus ring)."""
    expect(page.locator(selector)).to_be_focused()
    assert page.evaluate(FOCUS_SHOWN), f"no visible focus on {selector}"


def press_until(page, key: str, selector: str, limit: int = 30) -> int:
    """Press ``key`` until ``selector`` has the focus (each stop shows its focus); the presses."""
    target = page.locator(selector)
    for presses in range(1, limit + 1):
        page.keyboard.press(key)
        if page.evaluate("() => document.activeElement !== document.body"):
            assert page.evaluate(FOCUS_SHOWN), "a focus stop without a visible focus"
        if target.evaluate("(n) => n === document.activeElement || n.contains(document.activeElement)"):
            return presses
    raise AssertionError(f"{key} never reached {selector}")


def test_keyboard_only(browser, site, people):
    """2: log in, New chat, find and select Alice, start the chat, send, dismiss toasts, the phone
    drawer: the keyboard alone (no mouse call), focus asserted at every step."""
    dana = register(site, "dana", "Dana Scully")
    alice = people["alice"]
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.add_init_script("localStorage.setItem('squall.toastMs', '60000')")
    try:
        page = ctx.new_page()
        page.emulate_media(reduced_motion="reduce")
        page.goto(site.url + "/chat")
        expect(page).to_have_url(f"{site.url}/login?next=%2Fchat")
        focused(page, "#username")
        page.keyboard.press("Shift+Tab")  # the Sign in / Create account tabs: arrows switch
        focused(page, "#tab-login")
        page.keyboard.press("ArrowRight")
        focused(page, "#tab-register")
        expect(page.locator("#tab-register")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#display_name")).to_be_visible()
        page.keyboard.press("ArrowLeft")
        focused(page, "#tab-login")
        expect(page.locator("#tab-login")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#display_name")).to_be_hidden()
        page.keyboard.press("Tab")
        focused(page, "#username")
        page.keyboard.type(dana["username"])
        page.keyboard.press("Tab")
        focused(page, "#password")
        page.keyboard.type("password123")
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{site.url}/chat")
        wait_live(page, "WebSocket")

        press_until(page, "Tab", "#new-chat")
        focused(page, "#new-chat")
        page.keyboard.press("Enter")
        expect(page.locator("#new-chat-dialog")).to_be_visible()
        focused(page, "#user-search")
        page.keyboard.press("Escape")  # closed: the focus goes back to the button
        expect(page.locator("#new-chat-dialog")).to_be_hidden()
        focused(page, "#new-chat")
        page.keyboard.press("Enter")
        focused(page, "#user-search")
        page.keyboard.type(alice["username"])
        option = page.locator(f".user-result[data-username='{alice['username']}']")
        expect(option).to_be_visible()
        expect(page.locator("#user-results")).to_have_attribute("role", "listbox")
        page.keyboard.press("ArrowDown")
        focused(page, f".user-result[data-username='{alice['username']}']")
        expect(option).to_have_attribute("aria-selected", "false")
        page.keyboard.press("Enter")
        expect(option).to_have_attribute("aria-selected", "true")
        page.keyboard.press("Enter")
        expect(option).to_have_attribute("aria-selected", "false")
        page.keyboard.press("Space")
        expect(option).to_have_attribute("aria-selected", "true")
        expect(page.locator("#selected-users .chip")).to_have_text(["Alice Chen"])
        focused(page, f".user-result[data-username='{alice['username']}']")
        page.keyboard.press("Tab")
        focused(page, "#new-chat-dialog .btn-ghost")  # Cancel
        page.keyboard.press("Tab")
        focused(page, "#start-chat")
        page.keyboard.press("Tab")  # the dialog keeps Tab inside: back to the search box
        focused(page, "#user-search")
        page.keyboard.press("Shift+Tab")
        focused(page, "#start-chat")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/chat/\d+$"))
        expect(page.locator("#new-chat-dialog")).to_be_hidden()
        expect(page.locator("#conv-title")).to_have_text("Alice Chen")
        focused(page, "#composer-input")
        page.keyboard.type("Typed without a mouse")
        page.keyboard.press("Enter")
        expect(page.locator("#messages .msg.mine .bubble")).to_have_text(["Typed without a mouse"])
        focused(page, "#composer-input")

        # A toast does not take the focus; Escape dismisses the newest.
        with_carol = open_chat(site, people["carol"], dana)
        send(site, people["carol"], with_carol, "First toast")
        send(site, people["carol"], with_carol, "Second toast")
        expect(page.locator(".toast .toast-text")).to_have_text(["First toast", "Second toast"])
        focused(page, "#composer-input")
        page.keyboard.press("Escape")
        expect(page.locator(".toast .toast-text")).to_have_text(["First toast"])
        focused(page, "#composer-input")
        # Its close button is reached with Tab; while it has the focus the toast waits.
        press_until(page, "Tab", ".toast .toast-close")
        focused(page, ".toast .toast-close")
        expect(page.locator(".toast")).to_have_attribute("data-paused", "true")
        page.keyboard.press("Enter")
        expect(page.locator(".toast")).to_have_count(0)
        focused(page, "#main")

        # The phone drawer: aria-expanded, focus in, Tab kept inside, Escape gives it back.
        page.set_viewport_size(PHONE)
        press_until(page, "Shift+Tab", ".menu-btn")
        menu = page.locator(".menu-btn")
        focused(page, ".menu-btn")
        expect(menu).to_have_attribute("aria-expanded", "false")
        page.keyboard.press("Enter")
        expect(menu).to_have_attribute("aria-expanded", "true")
        focused(page, "#side-nav .icon-btn")  # Close menu
        stops = page.locator("#side-nav a, #side-nav button").count()
        for _ in range(stops):
            page.keyboard.press("Tab")
            assert page.evaluate("() => document.getElementById('side-nav').contains(document.activeElement)")
            assert page.evaluate(FOCUS_SHOWN)
        focused(page, "#side-nav .icon-btn")  # wrapped around
        page.keyboard.press("Shift+Tab")
        focused(page, "#side-nav .logout")
        page.keyboard.press("Escape")
        expect(page.locator("#side-nav")).not_to_have_class(re.compile(r"\bopen\b"))
        expect(menu).to_have_attribute("aria-expanded", "false")
        focused(page, ".menu-btn")
    finally:
        ctx.close()


# Live regions ------------------------------------------------------------------------------

OBSERVE = """() => {
  const live = [...document.querySelectorAll("[aria-live], [role=log], [role=status], [role=alert]")];
  const roots = live.filter((n) => !live.some((o) => o !== n && o.contains(n)));
  window.__announced = [];
  window.__removedMessages = 0;
  const observer = new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "characterData" && r.target.data.trim()) window.__announced.push(r.target.data.trim());
      for (const n of r.addedNodes) if (n.textContent.trim()) window.__announced.push(n.textContent.trim());
      if (r.target.id === "messages") window.__removedMessages += r.removedNodes.length;
    }
  });
  for (const n of roots) observer.observe(n, { childList: true, subtree: true, characterData: true });
  return roots.map((n) => n.id || n.className);
}"""


def test_three_messages_three_announcements(browser, site, people):
    """3: three incoming messages make three additions to the live regions, the history stays put;
    typing, connection state and errors are live regions of the right kind."""
    bob, alice = people["bob"], people["alice"]
    ctx = signed_in_context(browser, site, bob)
    try:
        page = ctx.new_page()
        page.goto(f"{site.url}/chat/{people['with_alice']}")
        wait_live(page, "WebSocket")
        expect(page.locator("#conversation")).to_have_attribute("data-joined", str(people["with_alice"]))
        before = page.locator("#messages .bubble").count()
        assert before >= 2
        expect(page.locator("#messages")).to_have_attribute("role", "log")
        expect(page.locator("#typing")).to_have_attribute("role", "status")
        expect(page.locator("#conn-pill")).to_have_attribute("role", "status")
        expect(page.locator("#composer-error")).to_have_attribute("role", "alert")
        roots = page.evaluate(OBSERVE)
        assert "messages" in roots and "typing" in roots and "conn-pill" in roots, roots
        texts = ["one is here", "two is here", "three is here"]
        for text in texts:
            send(site, alice, people["with_alice"], text)
        expect(page.locator("#messages .bubble")).to_have_count(before + 3)
        announced = page.evaluate("() => window.__announced")
        assert len(announced) == 3, announced
        assert all(text in said for text, said in zip(texts, announced)), announced
        assert page.evaluate("() => window.__removedMessages") == 0
    finally:
        ctx.close()


@pytest.mark.slow
def test_toast_pauses_while_hovered(browser, site, people):
    """2: a toast hovered past its time stays; it goes once the pointer leaves."""
    bob = people["bob"]
    ctx = signed_in_context(browser, site, bob, toast_ms=3000)
    try:
        page = ctx.new_page()
        page.goto(site.url + "/")
        wait_live(page, "WebSocket")
        send(site, people["carol"], people["with_carol"], "Hover me")
        toast = page.locator(".toast", has_text="Hover me")
        toast.hover()
        expect(toast).to_have_attribute("data-paused", "true")
        page.wait_for_timeout(3500)  # past its 3 s: it must still be there
        expect(toast).to_be_visible()
        page.mouse.move(5, 400)
        expect(toast).to_have_count(0)
    finally:
        ctx.close()


CONTRAST = """() => {
  const lum = (rgb) => {
    const [r, g, b] = rgb.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const out = {};
  for (let hue = 0; hue < 8; hue++) {
    const a = document.createElement("span");
    a.className = "avatar";
    a.dataset.hue = String(hue);
    a.textContent = "MW";
    document.body.append(a);
    const s = getComputedStyle(a);
    const [hi, lo] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
    out[hue] = Math.round((hi + 0.05) / (lo + 0.05) * 100) / 100;
    a.remove();
  }
  return out;
}"""


def test_avatar_initials_contrast(browser, site):
    """4: white initials on each of the eight avatar colours reach 4.5:1 (axe skips one-letter
    initials as too short to judge, so all eight are measured here from the stylesheet)."""
    ctx = browser.new_context(viewport=DESKTOP)
    try:
        page = ctx.new_page()
        page.goto(site.url + "/login")
        ratios = page.evaluate(CONTRAST)
        assert len(ratios) == 8 and min(ratios.values()) >= 4.5, ratios
    finally:
        ctx.close()
