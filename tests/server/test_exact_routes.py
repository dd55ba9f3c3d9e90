"""Literal paths are routed by one dict lookup (tornado_app/application.py ``exact_routes``),
to exactly the handler Tornado's own ordered regex routing picks."""
import tornado.httputil
import tornado.web

from tornado_app.application import exact_routes, literal


def request(path: str) -> tornado.httputil.HTTPServerRequest:
    return tornado.httputil.HTTPServerRequest(start_line=tornado.httputil.RequestStartLine("GET", path, "HTTP/1.1"),
                                              headers=tornado.httputil.HTTPHeaders({"Host": "x"}))


def test_literal_reads_one_path_or_none():
    assert literal("/api/notifications$") == "/api/notifications"
    assert literal(r"/a\.b$") == "/a.b"
    assert literal(r"/api/chats/(\d+)$") is None
    assert literal("/a.b$") is None  # "." matches any character: more than one path
    assert literal(r"/a\d$") is None
    assert literal("/x\\$") is None  # an escaped "$": no anchor at the end
    assert literal("/x") is None
    assert literal("/a|/b$") is None and literal("/a*$") is None


def test_every_literal_route_goes_where_tornado_would_send_it(app):
    table = app.exact_routes
    assert "/api/notifications" in table and "/healthz" in table and len(table) > 20
    for path, rule in table.items():
        ours = app.find_handler(request(path))
        theirs = tornado.web.Application.find_handler(app, request(path))  # Tornado's regex walk
        assert ours.handler_class is theirs.handler_class is rule.target, path
        assert (ours.path_args, ours.path_kwargs) == (theirs.path_args, theirs.path_kwargs) == ([], {}), path


def test_an_earlier_pattern_that_matches_keeps_its_place():
    class First(tornado.web.RequestHandler):
        pass

    class Second(tornado.web.RequestHandler):
        pass

    app = tornado.web.Application([(r"/items/(.*)", First), (r"/items/new", Second), (r"/other", Second)])
    table = exact_routes(app.wildcard_router.rules)
    assert "/items/new" not in table  # Tornado sends it to First: so must we
    assert table["/other"].target is Second
