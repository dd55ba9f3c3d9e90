"""Response headers every route sends, set in one place, and HEAD answered wherever GET is.

``SecurityHeaders`` is a Tornado output transform: it sees the headers of every response
of the application (API, pages, files, errors, refused stream handshakes) just before
they are written, so no handler can forget them. The pages set their own
``Content-Security-Policy`` (handlers/pages.py); JSON answers, and any other HTML (Tornado's
own error pages), get one that allows nothing, so an API URL opened as a document cannot
run or embed anything. Scripts, styles and images get none: a policy sent with ``sw.js``
would bind the service worker.
"""
from __future__ import annotations

import tornado.web

SERVER = "Squall"  # no version: it only helps someone matching a server to its known bugs
JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
COMMON = (
    ("Server", SERVER),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
)


class SecurityHeaders(tornado.web.OutputTransform):
    """Adds ``COMMON`` to every response, and ``JSON_CSP`` to JSON and HTML ones without a policy."""

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        """The response's first chunk: its headers are still open."""
        for name, value in COMMON:
            headers[name] = value
        if ("Content-Security-Policy" not in headers
                and headers.get("Content-Type", "").startswith(("application/json", "text/html"))):
            headers["Content-Security-Policy"] = JSON_CSP
        return status_code, headers, chunk


class HeadLikeGet:
    """A mixin: a handler class that defines ``get`` answers ``HEAD`` with it.

    Tornado writes no body for HEAD and keeps the ``Content-Length`` of the GET, so the
    same method gives the same status and headers. ``head`` is the very function ``get``
    is, so it carries the same access mark (tests/security/test_routes_marked.py). Stream handlers
    (SSE, long-polls) set ``head_like_get = False``: a stream cannot be answered without
    a body, so HEAD there is 405.
    """

    head_like_get = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.head_like_get and "get" in vars(cls) and "head" not in vars(cls):
            cls.head = cls.get
