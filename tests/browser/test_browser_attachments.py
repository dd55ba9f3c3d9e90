"""Attachments in the chat page (issue 25, items 5 and 9): files by button (keyboard too), drop
and paste, upload progress, a refused file named in the composer, image thumbnails and file
links that the other member opens, live and in history."""
import io

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.support.browser import (DESKTOP, PHONE, axe_violations, browser, open_chat, register,  # noqa: F401
                                   signed_in_context, wait_live)
from tests.support.procs import start_server


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attachments")
    server = start_server(tmp, "--database-url", f"sqlite:///{tmp}/files.db", "--upload-dir", str(tmp / "uploads"))
    yield server
    server.kill()


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


DROP_OR_PASTE = """([kind, name, text]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, { type: "text/plain" }));
  if (kind === "paste") {
    const ev = new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true });
    document.querySelector("#composer-input").dispatchEvent(ev);
  } else {
    const target = document.querySelector(".conv-active");
    target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  }
}"""


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_send_files_by_keyboard_drop_and_paste_and_the_other_member_sees_them(browser, site, size):
    alice, bob = register(site, "alice", "Alice Wu"), register(site, "bob", "Bob Stone")
    chat = open_chat(site, alice, bob)
    a_ctx = signed_in_context(browser, site, alice, viewport=size)
    b_ctx = signed_in_context(browser, site, bob, viewport=size)
    try:
        a, b = a_ctx.new_page(), b_ctx.new_page()
        # Playwright turns on file chooser interception when the first listener is added, and
        # that takes a round trip: added now, it is on long before the first chooser opens.
        a.on("filechooser", lambda chooser: None)
        for page in (a, b):
            page.goto(f"{site.url}/chat/{chat}")
            wait_live(page, "WebSocket")
            # the chat has opened (its history loaded, then the focus put in the message box)
            expect(page.locator("#conversation")).to_have_attribute("data-loaded", str(chat))

        # the keyboard alone: Tab from the message box back to the attach button, Enter opens the chooser
        a.locator("#composer-input").focus()
        a.keyboard.press("Shift+Tab")
        expect(a.locator("#attach")).to_be_focused()
        with a.expect_file_chooser() as chooser:
            a.keyboard.press("Enter")
        chooser.value.set_files([{"name": "chart.png", "mimeType": "image/png", "buffer": png(600, 300)}])
        a.evaluate(DROP_OR_PASTE, ["drop", "dropped.txt", "from a drop"])
        a.evaluate(DROP_OR_PASTE, ["paste", "pasted.txt", "from a paste"])
        pending = a.locator("#pending-files .pending-file")
        expect(pending).to_have_count(3)
        expect(pending.locator(".pending-done")).to_have_count(3)  # all uploaded (sizes shown)
        expect(pending.locator(".pending-name")).to_have_text(["chart.png", "dropped.txt", "pasted.txt"])
        assert axe_violations(a) == []

        a.locator("#composer-input").fill("the figures")
        a.keyboard.press("Enter")
        expect(a.locator("#pending-files")).to_be_hidden()
        for page in (a, b):
            last = page.locator("#messages .msg").last
            expect(last.locator(".bubble")).to_have_text("the figures")
            expect(last.locator(".msg-file")).to_have_text(["dropped.txt (11 B)", "pasted.txt (12 B)"])
            image = last.locator(".msg-image img")
            expect(image).to_have_attribute("alt", "chart.png")
            expect(image).to_have_attribute("src", __import__("re").compile(r"/files/[^?]+\?.*variant=thumb"))
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            assert image.evaluate("(img) => img.naturalWidth") <= 320  # the thumbnail, not the image
        assert axe_violations(b) == []

        # Bob downloads a file (by its signed link) and opens the image in a new tab
        with b.expect_download() as download:
            b.locator("#messages .msg").last.locator(".msg-file").first.click()
        assert download.value.suggested_filename == "dropped.txt"
        assert open(download.value.path(), "rb").read() == b"from a drop"
        with b_ctx.expect_page() as opened:
            b.locator("#messages .msg").last.locator(".msg-image").click()
        tab = opened.value
        tab.wait_for_load_state()
        assert "/files/" in tab.url and "variant=thumb" not in tab.url
        assert tab.evaluate("() => document.images[0] && document.images[0].naturalWidth") == 600
        tab.close()

        # a file of no allowed type is named in the composer and blocks the send until removed
        with a.expect_file_chooser() as chooser:
            a.click("#attach")
        chooser.value.set_files([{"name": "setup.png", "mimeType": "image/png", "buffer": b"MZ\x90\x00" + b"\x00" * 60}])
        expect(a.locator("#pending-files .pending-error")).to_have_count(1)
        a.locator("#composer-input").fill("one more")
        a.keyboard.press("Enter")
        expect(a.locator("#composer-error")).to_have_text("Remove the files that could not be uploaded.")
        a.locator("#pending-files .pending-remove").click()
        expect(a.locator("#pending-files")).to_be_hidden()
        a.locator("#composer-input").press("Enter")
        expect(b.locator("#messages .msg").last.locator(".bubble")).to_have_text("one more")

        # history: after a reload the files are still there
        b.reload()
        wait_live(b, "WebSocket")
        expect(b.locator("#messages .msg-file")).to_have_count(2)
        expect(b.locator("#messages .msg-image img")).to_have_count(1)
    finally:
        a_ctx.close()
        b_ctx.close()
