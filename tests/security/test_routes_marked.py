"""Every HTTP method of every routed handler is marked @public, @authenticated, @service_only, @admin_only or @metrics_scrape (STYLE.md §3)."""
import tornado.web
from tornado.routing import Rule, RuleRouter

from handlers.base import BaseHandler, authenticated, public, service_only
from tests.support.routes import routed_handlers

MARKS = {"public", "user", "service", "admin", "metrics"}


def unmarked_methods(app):
    """``["pattern Handler.method", ...]`` for each implemented HTTP method without ``squall_access``."""
    problems = []
    for pattern, handler in routed_handlers(app.default_router):
        for verb in handler.SUPPORTED_METHODS:
            name = verb.lower()
            method = getattr(handler, name, None)
            if method is None or method is getattr(tornado.web.RequestHandler, name, None):
                continue  # not implemented: Tornado answers 405
            if getattr(method, "squall_access", None) not in MARKS:
                problems.append(f"{pattern} {handler.__name__}.{name}")
    return problems


def test_every_routed_method_is_marked(app):
    handlers = routed_handlers(app.default_router)
    names = {h.__name__ for _, h in handlers}
    # the walk really reaches the API, the sockets, the streams and the pages
    assert {"RegisterHandler", "MessagesHandler", "ChatSocketHandler", "ChatStreamHandler",
            "HealthHandler"} <= names, names
    assert unmarked_methods(app) == []


def test_default_handler_is_marked(app):
    default = app.settings["default_handler_class"]
    assert getattr(default.prepare, "squall_access", None) in MARKS


def test_the_walk_catches_an_unmarked_method():
    class Marked(BaseHandler):
        """Every method marked."""

        @public
        def get(self):
            """Public."""

        @authenticated
        def post(self):
            """User."""

        @service_only
        def put(self):
            """Service."""

    class Unmarked(BaseHandler):
        """One method forgotten."""

        @public
        def get(self):
            """Public."""

        def delete(self):
            """Forgotten."""

    class Nested(tornado.web.RequestHandler):
        """Reached only through a nested router."""

        def get(self):
            """Forgotten, behind a nested router."""

    app = tornado.web.Application([
        (r"/marked", Marked),
        (r"/unmarked", Unmarked),
        Rule(tornado.routing.PathMatches(r"/nested.*"), RuleRouter([(r"/nested/x", Nested)])),
    ])
    assert sorted(unmarked_methods(app)) == ["/nested/x$ Nested.get", "/unmarked$ Unmarked.delete"]
