"""Static files (issue 14, acceptance 4): gzip when asked (never for event streams), a year's
immutable cache on content-hashed URLs, pages never cached, and a changed file picked up at
once with a new hash (in Chromium)."""
import gzip
import hashlib
import http.client
import json
import re
import shutil
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from playwright.sync_api import expect

from handlers.assets import IMMUTABLE, accepts_gzip
from tests.support.browser import browser, register, signed_in_context, wait_live  # noqa: F401 (fixture)

WEB = Path(__file__).resolve().parents[2] / "web"
CLIENT_SRC = Path(__file__).resolve().parents[2] / "clients" / "js" / "src"
IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>')


def fetch(url: str, method: str = "GET", **headers):
    """``(status, headers, raw body)``: nothing decompressed."""
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@pytest.fixture
def site(server_factory, database_url, tmp_path):
    """A server on a copy of web/ (so a test may change its files)."""
    web = tmp_path / "web"
    shutil.copytree(WEB, web)
    server = server_factory("--database-url", database_url, "--web-dir", str(web))
    server.web = web
    return server


@pytest.mark.parametrize("header,expected", [
    ("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8", True), ("*", True),
    ("", False), ("identity", False), ("deflate, br", False), ("gzip;q=0", False), ("gzip;q=0.0", False),
])
def test_accepts_gzip(header, expected):
    assert accepts_gzip(header) is expected


def test_pages_name_files_by_hash_and_files_are_cached_and_gzipped(site):
    """Every file a page names, and every module of its import map, has its content hash in the
    URL, is cached for a year, gzipped when asked; the page itself is never cached."""
    status, headers, raw = fetch(site.url + "/", **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Cache-Control"] == "no-cache" and headers["Vary"] == "Accept-Encoding"
    html = gzip.decompress(raw).decode()
    status, headers_plain, raw_plain = fetch(site.url + "/")
    assert "Content-Encoding" not in headers_plain and raw_plain.decode() == html
    script = IMPORT_MAP.search(html).group(1)
    digest = b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in headers["Content-Security-Policy"]  # the one inline script allowed
    imports = json.loads(script)["imports"]
    modules = sorted(p.name for p in (site.web / "static" / "js").glob("*.js"))
    assert sorted(k.rsplit("/", 1)[1] for k in imports if k.startswith("/static/js/")) == modules
    # @squall/client's own files (issue 24), served as modules under /static/squall-client/
    client = sorted(p.name for p in CLIENT_SRC.glob("*.js"))
    assert "index.js" in client
    assert sorted(k.removeprefix("/static/squall-client/") for k in imports if k.startswith("/static/squall-client/")) == client
    assert all(k.startswith(("/static/js/", "/static/squall-client/")) for k in imports)
    referenced = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
    assert {u.split("?")[0] for u in referenced} == {"/static/css/app.css", "/static/img/icon.svg",
                                                    "/static/js/home.js",
                                                    "/static/img/icon-192.png"}  # apple-touch-icon
    for url in sorted(set(referenced) | set(imports.values())):
        path, v = url.split("?v=")
        file = (CLIENT_SRC / path.removeprefix("/static/squall-client/") if path.startswith("/static/squall-client/")
                else site.web / path.removeprefix("/"))
        assert v == version(file), url
        status, headers, raw = fetch(site.url + url, **{"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Cache-Control"] == IMMUTABLE, (url, dict(headers))
        if file.stat().st_size >= 1024:
            assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding", url
            assert gzip.decompress(raw) == file.read_bytes() and len(raw) < file.stat().st_size
        else:
            assert raw in (file.read_bytes(), gzip.compress(file.read_bytes(), 9, mtime=0))

    js = "/static/js/chat.js"
    body = (site.web / "static/js/chat.js").read_bytes()
    good = f"{js}?v={version(site.web / 'static/js/chat.js')}"
    status, headers, raw = fetch(site.url + good)  # not asked: not compressed
    assert status == 200 and "Content-Encoding" not in headers and raw == body
    assert headers["Content-Type"] == "application/javascript; charset=utf-8"
    status, headers, raw = fetch(site.url + good, **{"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in headers and raw == body
    for stale in (js, f"{js}?v=0123456789abcdef", f"{js}?v="):  # no hash, or not this content's
        status, headers, _ = fetch(site.url + stale, **{"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Cache-Control"] == "no-cache", stale
    status, headers, raw = fetch(site.url + good, **{"Accept-Encoding": "gzip"})
    status, again, raw = fetch(site.url + good, **{"Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]})
    assert status == 304 and raw == b""
    status, head, raw = fetch(site.url + good, method="HEAD", **{"Accept-Encoding": "gzip"})
    assert status == 200 and raw == b"" and head["Content-Length"] == headers["Content-Length"]
    status, headers, raw = fetch(site.url + "/static/js/nope.js?v=1", **{"Accept-Encoding": "gzip"})
    assert status == 404 and "Content-Encoding" not in headers and json.loads(raw)["error"]["code"] == "not_found"
    status, _, _ = fetch(site.url + "/static/../run.py")
    assert status in (403, 404)


def test_event_streams_are_never_compressed(site):
    """/sse/* answers a gzip-accepting client uncompressed (each event must flush as it is)."""
    user = register(site, "erin")
    for path in ("/sse/notifications", "/sse/chat"):
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20)
        try:
            conn.request("GET", path, headers={"Accept-Encoding": "gzip", "Accept": "text/event-stream",
                                               "Authorization": f"Bearer {user['token']}"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream"), path
            assert resp.getheader("Content-Encoding") is None, path
            assert resp.read(1) in (b":", b"r", b"e", b"i", b"d")  # the stream's first bytes are plain text
        finally:
            conn.close()


def test_a_changed_file_is_picked_up_at_once(browser, site):
    """A deploy changes a page's module and a module it imports: the page gets new hashes on
    the next load (no restart, no stale immutable copy) and works."""
    bob = register(site, "bob", "Bob Martin")
    ctx = signed_in_context(browser, site, bob)
    try:
        page = ctx.new_page()
        fetched = []
        page.on("request", lambda r: fetched.append(r.url.removeprefix(site.url)))
        page.goto(site.url + "/")
        wait_live(page, "WebSocket")
        expect(page.locator("h1")).to_have_text("Welcome back, Bob Martin")
        old_home = f"/static/js/home.js?v={version(site.web / 'static/js/home.js')}"
        old_dom = f"/static/js/dom.js?v={version(site.web / 'static/js/dom.js')}"
        assert old_home in fetched and old_dom in fetched

        home, dom = site.web / "static/js/home.js", site.web / "static/js/dom.js"
        home.write_text(home.read_text().replace('"Welcome back"', '"Hello again"'))
        dom.write_text(dom.read_text() + '\ndocument.documentElement.dataset.build = "2";\n')
        fetched.clear()
        page.reload()
        expect(page.locator("h1")).to_have_text("Hello again, Bob Martin")
        expect(page.locator("html")).to_have_attribute("data-build", "2")
        wait_live(page, "WebSocket")
        assert f"/static/js/home.js?v={version(home)}" in fetched
        assert f"/static/js/dom.js?v={version(dom)}" in fetched
        assert old_home not in fetched and old_dom not in fetched
        status, headers, _ = fetch(site.url + old_dom)  # the old hash no longer earns a long cache
        assert headers["Cache-Control"] == "no-cache"
    finally:
        ctx.close()
