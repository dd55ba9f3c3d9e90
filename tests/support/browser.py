"""Browser test helpers: one headless Debian Chromium per module, driven by Playwright (sync API).

Test modules import the fixtures they use (``from tests.support.browser import browser, app_server``).
Chromium is the system one (``/usr/bin/chromium``, installed by ``.ci/run`` with apt); the
flags keep it off the network it cannot reach. Users are created over HTTP and a browser
context is signed in by setting the same cookies the login page gets (``squall_token``, the access
token, ``squall_refresh`` on Path=/api/auth, which the page uses to refresh it, and the
``squall_session`` marker that tells the pages a session exists).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Optional

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = os.environ.get("SQUALL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]
# Generous: two cores shared by everything, so a page may take seconds to react.
TIMEOUT_MS = 20_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "screenshots")

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the whole module."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def http_json(server, method: str, path: str, body=None, token: Optional[str] = None,
              service: bool = False):
    """``(status, JSON)`` of one call to ``server`` (a tests.support.procs.ServerProcess)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if service:
        headers["Authorization"] = "Bearer test-service-token"
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def register(server, name: str, display_name: Optional[str] = None) -> dict:
    """A new user ``<name>_<random>``: ``{id, username, display_name, token}``."""
    username = f"{name}_{uuid.uuid4().hex[:6]}"
    status, data = http_json(server, "POST", "/api/auth/register",
                             {"username": username, "password": "password123",
                              "display_name": display_name or name.title()})
    assert status == 201, (status, data)
    return {**data["user"], "token": data["access_token"], "refresh": data["refresh_token"]}


def open_chat(server, user: dict, other: dict) -> int:
    """The private chat of two users (created on first use); its id."""
    status, data = http_json(server, "POST", "/api/chats", {"user_id": other["id"]}, token=user["token"])
    assert status == 200, (status, data)
    return data["chat"]["id"]


def send(server, user: dict, chat_id: int, content: str) -> dict:
    """Send a message over HTTP as ``user``; the stored message."""
    status, data = http_json(server, "POST", f"/api/chats/{chat_id}/messages", {"content": content},
                             token=user["token"])
    assert status == 201, (status, data)
    return data["message"]


def signed_in_context(browser: Browser, server, user: dict, viewport=None,
                      toast_ms: int = 60_000) -> BrowserContext:
    """A fresh browser context (its own cookies, storage, tabs) signed in as ``user``.

    Toasts stay ``toast_ms`` (the app's own setting) so a loaded machine can look at them all.
    """
    context = browser.new_context(viewport=viewport or DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies([{"name": "squall_token", "value": user["token"], "url": server.url},
                         {"name": "squall_refresh", "value": user["refresh"], "domain": "127.0.0.1",
                          "path": "/api/auth", "httpOnly": True, "sameSite": "Strict"},
                         {"name": "squall_session", "value": "1", "url": server.url, "sameSite": "Strict"}])
    context.add_init_script(f"localStorage.setItem('squall.toastMs', '{int(toast_ms)}')")
    return context


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    """Call ``predicate`` until it returns a true value (server state seen from outside); that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def start_chat_with(page: Page, other: dict) -> int:
    """From the Messages page: New chat, find ``other``, start the private chat; its id once joined."""
    page.click("#new-chat")
    page.fill("#user-search", other["username"][:8])
    page.click(f".user-result[data-username='{other['username']}']")
    page.click("#start-chat")
    expect(page).to_have_url(re.compile(r"/chat/\d+$"))
    chat_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#conversation")).to_have_attribute("data-joined", str(chat_id))
    return chat_id


def wait_live(page: Page, transport: str) -> None:
    """Wait until the page's notification stream is open over ``transport`` ("WebSocket"/"SSE")."""
    expect(page.locator("#conn-pill")).to_have_attribute("data-state", "open")
    expect(page.locator("#conn-pill .conn-text")).to_contain_text(transport)


def stats(server) -> dict:
    """The server's live connection counts (GET /api/stats with the service token)."""
    status, data = http_json(server, "GET", "/api/stats", service=True)
    assert status == 200, (status, data)
    return data


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_AXE_RUN = r"""async (tags) => {
  const result = await axe.run(document, { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] });
  return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n` +
    v.nodes.map((n) => `    ${n.target.join(" ")}: ${n.failureSummary.replace(/\s+/g, " ")}`).join("\n"));
}"""


def axe_source() -> str:
    """axe.min.js of the pinned ``axe-playwright-python`` package (requirements-dev.txt).

    ``SQUALL_AXE_JS=/path/to/axe.min.js`` checks with another axe-core build instead.
    """
    if os.environ.get("SQUALL_AXE_JS"):
        with open(os.environ["SQUALL_AXE_JS"], encoding="utf-8") as f:
            return f.read()
    from importlib.resources import files
    return files("axe_playwright_python").joinpath("axe.min.js").read_text(encoding="utf-8")


def axe_violations(page: Page, tags=AXE_TAGS) -> list:
    """axe-core's violations of ``tags`` on the page as it is now, one readable string each.

    The script goes in through the DevTools protocol, so the page's CSP does not block it.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    return page.evaluate(_AXE_RUN, list(tags))


def screenshot(page: Page, name: str) -> str:
    """Save a PNG of ``page`` as ``name``.png; returns its path.

    With SQUALL_SCREENSHOTS=1 they go to docs/screenshots/ (the committed ones are made so);
    otherwise to a temporary folder, so a test run leaves the working tree alone.
    """
    folder = SCREENSHOTS if os.environ.get("SQUALL_SCREENSHOTS") else os.path.join(
        tempfile.gettempdir(), "squall-screenshots")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    page.screenshot(path=path, full_page=False, animations="disabled")
    return path


class BufferingProxy:
    """A TCP proxy on 127.0.0.1 to ``target_port`` that holds back event-stream data by ``delay`` s.

    It stands in for a reverse proxy that buffers ``text/event-stream`` answers: the response
    headers pass at once (the EventSource opens), every later chunk of that connection
    arrives ``delay`` seconds late. With ``stall_websockets`` a WebSocket upgrade request is
    swallowed and never answered (a proxy that hangs upgrades). Everything else passes
    untouched. ``url``; ``close()``.
    """

    def __init__(self, target_port: int, delay: float = 0.0, stall_websockets: bool = False):
        self.target_port, self.delay, self.stall_websockets = target_port, delay, stall_websockets
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the buffering proxy did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def upstream():
            try:
                while data := await reader.read(65536):
                    if self.stall_websockets and b"upgrade: websocket" in data.lower():
                        await asyncio.Event().wait()  # never answered, until the proxy closes
                    up_writer.write(data)
                    await up_writer.drain()
            except OSError:
                pass
            finally:
                up_writer.close()

        async def downstream():
            streaming = False
            try:
                while data := await up_reader.read(65536):
                    if streaming:
                        # A constant delay keeps the order of the chunks.
                        self.loop.call_later(self.delay, self._write, writer, data)
                    else:
                        streaming = b"text/event-stream" in data
                        writer.write(data)
            except OSError:
                pass
            finally:
                self.loop.call_later(self.delay if streaming else 0, writer.close)

        try:
            await asyncio.gather(upstream(), downstream())
        finally:
            writer.close()
            up_writer.close()

    @staticmethod
    def _write(writer, data: bytes) -> None:
        if not writer.is_closing():
            writer.write(data)

    def close(self) -> None:
        """Stop listening, drop every proxied connection and end the proxy's thread."""
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self.thread.join(10)
        self.loop.close()
