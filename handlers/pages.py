"""The browser front end: pages and static files from ``web/`` (no build step).

Pages are never cached and name their files by content hash; the files are cached for a
year and gzipped when the client accepts it (see ``handlers/assets.py``).
"""
import gzip
import os
from typing import Dict, List, Tuple, Type

import tornado.web

from tornado_app.errors import SquallError
from tornado_app.services.delivery.events import dumps
from tornado_app.tornado_io import status_reason

from .assets import IMMUTABLE, AssetCatalog, accepts_gzip
from .base import ServicesMixin, log_handler_exception, public
from .headers import HeadLikeGet

PAGES = {
    "/": "index.html",
    "/login": "login.html",
    "/chat": "chat.html",
    "/test-notifications": "test-notifications.html",
    "/settings": "settings.html",
}
# Files that must be served at the site's root: the service worker (its scope is the
# folder it is served from) and the web app manifest. Never cached: a new worker must be
# found at once.
ROOT_FILES = {
    "/sw.js": ("sw.js", "application/javascript; charset=utf-8"),
    "/manifest.webmanifest": ("manifest.webmanifest", "application/manifest+json"),
}
# connect-src 'self' covers ws:// and wss:// of the page's own host and port (CSP Level 3,
# checked in Chromium by tests/server/test_http_headers.py); "ws: wss:" allowed any host.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self' 'sha256-{importmap}'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class PageHandler(HeadLikeGet, tornado.web.RequestHandler):
    """Serves one HTML page of ``web/`` (HEAD: its headers); the page's script handles login redirects."""

    def log_exception(self, typ, value, tb) -> None:
        """No request dump in the log (the URL may carry a token)."""
        log_handler_exception(self, typ, value, tb)

    def initialize(self, page: str, assets: AssetCatalog):
        self.page = page
        self.assets = assets

    @public
    def get(self, *args):
        """The page's HTML with hashed file URLs, never cached (the files it loads are)."""
        if not os.path.exists(os.path.join(self.assets.web_dir, self.page)):
            raise tornado.web.HTTPError(404)
        page = self.assets.page(self.page)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Vary", "Accept-Encoding")
        self.set_header("X-Content-Type-Options", "nosniff")
        # The import map is the page's one inline script: allowed by its hash, nothing else.
        self.set_header("Content-Security-Policy", CSP.format(importmap=page.import_map_sha256))
        body = page.body
        if accepts_gzip(self.request.headers.get("Accept-Encoding", "")):
            self.set_header("Content-Encoding", "gzip")
            body = gzip.compress(body, mtime=0)
        self.finish(body)


class AdminPageHandler(ServicesMixin, PageHandler):
    """``/admin``: the console page; a signed-in non-admin gets it as a 403 (the script shows why)."""

    @public
    async def get(self, *args):
        """The page; 403 status for a valid login cookie of a non-admin (the API refuses them too)."""
        try:
            self.authenticate()
            admin = await self.services.users.is_admin(self.user_id)
        except SquallError:
            admin = True  # not signed in (or expired): the page's script refreshes or goes to /login
        if not admin:
            self.set_status(403)
        super().get(*args)


class RootFileHandler(HeadLikeGet, tornado.web.RequestHandler):
    """``/sw.js`` and ``/manifest.webmanifest`` from ``web/``: root scope, ``no-cache``, their own type."""

    def initialize(self, name: str, content_type: str, assets: AssetCatalog):
        self.name = name
        self.content_type = content_type
        self.assets = assets

    def log_exception(self, typ, value, tb) -> None:
        """No request dump in the log."""
        log_handler_exception(self, typ, value, tb)

    @public
    def get(self):
        """The file, revalidated on every use (ETag)."""
        asset = self.assets.load(os.path.join(self.assets.web_dir, self.name))
        self.set_header("Content-Type", self.content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        if self.name == "sw.js":
            self.set_header("Service-Worker-Allowed", "/")
        self.set_header("ETag", f'"{asset.version}"')
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(asset.body)


class StaticHandler(tornado.web.StaticFileHandler):
    """``/static/…``: the front end's modules, styles and images (``web/static/``).

    With ``?v=<current hash>`` a file is cached for a year; without it (or with a stale
    hash) it is revalidated each time. Compressed when the client accepts gzip.
    """

    # Tornado hands a route's keywords to initialize(); this route's are the directory and the
    # catalog, not StaticFileHandler's own options (which its typed signature names).
    def initialize(self, path: str, assets: AssetCatalog) -> None:  # type: ignore[override]
        super().initialize(path)
        self.assets = assets

    def log_exception(self, typ, value, tb) -> None:
        """No request dump in the log (the URL may carry a token)."""
        log_handler_exception(self, typ, value, tb)

    @public
    def get(self, path, include_body=True):
        """A file of ``web/static``."""
        self.path = self.parse_url_path(path)
        absolute = self.validate_absolute_path(self.root, self.get_absolute_path(self.root, self.path))
        if absolute is None:
            return
        asset = self.assets.load(absolute)
        current = self.get_query_argument("v", None) == asset.version
        self.set_header("Cache-Control", IMMUTABLE if current else "no-cache")
        self.set_header("Content-Type", asset.content_type)
        self.set_header("X-Content-Type-Options", "nosniff")
        body, etag = asset.body, asset.version
        if asset.gzipped is not None:
            self.set_header("Vary", "Accept-Encoding")
            if accepts_gzip(self.request.headers.get("Accept-Encoding", "")):
                body, etag = asset.gzipped, etag + "-gzip"
                self.set_header("Content-Encoding", "gzip")
        self.set_header("ETag", f'"{etag}"')
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(body)  # Tornado sends no body for HEAD, with the same Content-Length

    @public
    def head(self, path):
        """The headers of a file of ``web/static``."""
        return self.get(path, include_body=False)

    def write_error(self, status_code: int, **kwargs) -> None:
        """A missing file gets the same JSON error shape as every other route."""
        code = {404: "not_found", 403: "forbidden", 405: "method_not_allowed"}.get(status_code, "http_error")
        self.clear_header("Content-Encoding")
        self.clear_header("ETag")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps({"error": {"code": code, "message": f"No file at {self.request.path}"
                                     if status_code == 404 else status_reason(self)}}))


Route = Tuple[str, Type[tornado.web.RequestHandler], Dict[str, object]]


def routes(web_dir: str) -> List[Route]:
    """Page routes plus the static files of ``web_dir/static``, sharing one asset catalog."""
    assets = AssetCatalog(web_dir)
    out: List[Route] = [(r"/static/squall-client/(.*)", StaticHandler, {"path": assets.client_dir, "assets": assets}),
           (r"/static/(.*)", StaticHandler, {"path": assets.static_dir, "assets": assets})]
    out += [(r"/chat/[0-9]{1,18}", PageHandler, {"page": "chat.html", "assets": assets})]
    out += [(path, PageHandler, {"page": page, "assets": assets}) for path, page in PAGES.items()]
    out += [(r"/admin", AdminPageHandler, {"page": "admin.html", "assets": assets})]
    out += [(path, RootFileHandler, {"name": name, "content_type": ctype, "assets": assets})
            for path, (name, ctype) in ROOT_FILES.items()]
    return out
