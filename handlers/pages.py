"""The browser front end: pages and static files from ``web/`` (no build step)."""
import os

import tornado.web

from tornado_app.services.events import dumps

from .base import log_handler_exception, public

PAGES = {
    "/": "index.html",
    "/login": "login.html",
    "/chat": "chat.html",
    "/test-notifications": "test-notifications.html",
}


class PageHandler(tornado.web.RequestHandler):
    """Serves one HTML page of ``web/``; the page's script handles login redirects."""

    def log_exception(self, typ, value, tb) -> None:
        """No request dump in the log (the URL may carry a token)."""
        log_handler_exception(self, typ, value, tb)

    def initialize(self, page: str):
        self.page = page

    @public
    def get(self, *args):
        """The page's HTML, never cached (the modules it loads are)."""
        path = os.path.join(self.settings["services"].config.web_dir, self.page)
        if not os.path.exists(path):
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                        "connect-src 'self' ws: wss:; frame-ancestors 'none'")
        with open(path, "rb") as f:
            self.finish(f.read())


class StaticHandler(tornado.web.StaticFileHandler):
    """``/static/…``: the front end's modules, styles and images (``web/static/``)."""

    def log_exception(self, typ, value, tb) -> None:
        """No request dump in the log (the URL may carry a token)."""
        log_handler_exception(self, typ, value, tb)

    @public
    def get(self, path, include_body=True):
        """A file of ``web/``."""
        return super().get(path, include_body)

    @public
    def head(self, path):
        """The headers of a file of ``web/`` (Tornado's HEAD calls ``get`` without the body)."""
        return super().head(path)

    def write_error(self, status_code: int, **kwargs) -> None:
        """A missing file gets the same JSON error shape as every other route."""
        code = {404: "not_found", 403: "forbidden", 405: "method_not_allowed"}.get(status_code, "http_error")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps({"error": {"code": code, "message": f"No file at {self.request.path}"
                                     if status_code == 404 else self._reason}}))


def routes(web_dir: str):
    """Page routes plus the static files of ``web_dir/static``."""
    out = [(r"/static/(.*)", StaticHandler, {"path": os.path.join(web_dir, "static")})]
    out += [(r"/chat/[0-9]{1,18}", PageHandler, {"page": "chat.html"})]
    out += [(path, PageHandler, {"page": page}) for path, page in PAGES.items()]
    return out
