"""The five-minute path of docs/integration.md runs as written (issue 22, acceptance 7).

The section's four blocks, in order: the ``sh`` block starts Squall (its variables become the
child's environment; the test adds only a port and a metrics token, to see when the page's
stream is open), the first ``python`` block is the backend's
token minting, the ``html`` block is the page (served by a small app of the test on
``http://localhost:<port>``, the origin the start command allows, with the ``/squall-token``
route the text describes), the last ``python`` block publishes. The only edits to the text are
the two addresses. The page, in Chromium, must show what the backend published.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shlex
import threading
import time
import urllib.request

import tornado.httpserver
import tornado.ioloop
import tornado.web
from playwright.sync_api import expect

from tests.support.browser import browser  # noqa: F401 (fixture)
from tests.support.procs import free_port
from tests.support.markdown import ROOT, fenced_blocks

DOC = "docs/integration.md"
METRICS = "five-minutes-metrics"
OPEN_SSE = re.compile(r'^squall_connections\{[^}]*transport="sse_notifications"[^}]*\} ([0-9.]+)$', re.M)
TITLE = "## Five minutes"


def section_blocks():
    text = (ROOT / DOC).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(text, 1) if line.startswith(TITLE))
    end = next((i for i, line in enumerate(text, 1) if i > start and line.startswith("## ")), len(text) + 1)
    return [b for b in fenced_blocks(DOC) if start < b.line < end]


def start_command(block) -> dict:
    """The environment of the documented start command (``VAR=value … python run.py``)."""
    words = shlex.split(block.text.replace("\\\n", " "))
    assert words[-2:] == ["python", "run.py"], words
    return dict(word.split("=", 1) for word in words[:-2])


class PageApp:
    """The product's front end: the documented page and its ``/squall-token`` route, on its own loop."""

    def __init__(self, html: str, mint, port: int):
        self.port = port
        self.origin = f"http://localhost:{self.port}"
        page, user = html, {"id": "user-42", "name": "Ada Lovelace"}

        class Page(tornado.web.RequestHandler):
            def get(self):
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.finish(f"<!doctype html><title>Shop</title>{page}")

        class Token(tornado.web.RequestHandler):
            def get(self):
                self.set_header("Content-Type", "text/plain")
                self.finish(mint(user["id"], user["name"]))

        class NoIcon(tornado.web.RequestHandler):
            def get(self):
                self.set_status(204)

        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=([(r"/", Page), (r"/squall-token", Token), (r"/favicon.ico", NoIcon)],),
                                        daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self, routes):
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = tornado.ioloop.IOLoop.current()
        self.server = tornado.httpserver.HTTPServer(tornado.web.Application(routes))
        self.server.listen(self.port, "127.0.0.1")
        self._ready.set()
        self.loop.start()

    def stop(self):
        self.loop.add_callback(self.server.stop)
        self.loop.add_callback(self.loop.stop)
        self._thread.join(10)


def wait_for_sse_stream(server, timeout: float = 20.0) -> None:
    """Until the server counts an open SSE stream (the page's), from its /metrics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            if any(float(v) >= 1 for v in OPEN_SSE.findall(answer.read().decode())):
                return
        time.sleep(0.1)
    raise AssertionError(f"the page opened no SSE stream in {timeout}s:\n{server.log()[-3000:]}")


def test_the_five_minute_path_runs_as_written(server_factory, browser, tmp_path):  # noqa: F811
    blocks = section_blocks()
    assert [b.lang for b in blocks] == ["sh", "python", "html", "python"], [b.lang for b in blocks]
    start, mint_block, page_block, publish_block = blocks
    env = start_command(start)
    assert env.get("AUTH_MODE") == "external"
    page_port = free_port()
    documented_origin = env["ALLOWED_ORIGINS"]
    env["ALLOWED_ORIGINS"] = f"http://localhost:{page_port}"
    server = server_factory(DATABASE_URL=f"sqlite:///{tmp_path}/five.db", METRICS_TOKEN=METRICS, **env)
    squall = f"http://localhost:{server.port}"

    backend: dict = {}
    exec(compile(mint_block.text, f"{DOC}:{mint_block.line}", "exec"), backend)  # noqa: S102
    page_html = page_block.text.replace("http://localhost:8000", squall)
    assert "http://localhost:8000" not in page_html
    app = PageApp(page_html, backend["squall_token"], page_port)
    try:
        context = browser.new_context()
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.goto(app.origin + "/")
        try:
            wait_for_sse_stream(server)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\npage errors: {errors}") from None
        out: dict = {"__name__": "__doc__"}
        publish = publish_block.text.replace("http://localhost:8000", squall)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(publish, f"{DOC}:{publish_block.line}", "exec"), out)  # noqa: S102
        assert printed.getvalue().startswith("202 "), printed.getvalue()
        expect(page.locator("#inbox li")).to_have_text(["Your order has shipped"])
        assert errors == [], errors
        context.close()
    finally:
        app.stop()
    assert documented_origin.startswith("http://localhost:")

