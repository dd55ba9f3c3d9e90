"""Cross-origin access (CORS) for the pages of the origins in ``--allowed-origin``.

One policy, used in four places: the preflight answer (``CorsPreflight`` in
handlers/base.py), the headers of every other answer on the CORS routes (``CorsHeaders``,
an output transform, so errors and refused stream handshakes carry them too), the answers
the HTTP server gives before the application sees a request (413 and 503 in
tornado_app/httpserver.py), and the WebSocket and CSRF origin checks.

The rules:

- Origins are matched exactly, after both sides are normalised (``parse_origin``): a listed
  origin gets ``Access-Control-Allow-Origin: <that origin>``; any other gets no CORS header
  at all, and never ``*``.
- Only ``/api/*``, ``/sse/*`` and ``/poll/*`` take part; pages, files, health and metrics do not.
- No ``Access-Control-Allow-Credentials``: the login cookies stay same-site. A page on another
  origin authenticates with ``Authorization: Bearer`` (fetch) and a stream ticket in the URL
  (EventSource, WebSocket, long-poll), so a browser never sends Squall's cookies along with a
  cross-origin read, and a response it could read never depends on the victim's cookie.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

import tornado.web

CORS_PREFIXES = ("/api/", "/sse/", "/poll/")
DEFAULT_PORTS = {"http": 80, "https": 443}
# What a cross-origin page may send: its token, a JSON body, and the resume position.
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
# What a cross-origin page may read besides the safelisted headers: when to retry (429, 503)
# and why a credential was refused (401).
EXPOSE_HEADERS = "Retry-After, WWW-Authenticate"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_AGE_LIMIT = 86400  # seconds; browsers cap it lower (Chromium: 7200)

Headers = List[Tuple[str, str]]


def parse_origin(value: str) -> str:
    """``value`` as a browser sends it in ``Origin``: ``scheme://host[:port]``, lowercase, no default port.

    Accepts ``http`` and ``https`` origins, a trailing ``/`` at most. Raises ValueError (with a
    message for the operator) for a path, query, fragment, user name, wildcard, ``null`` or a
    bad port.
    """
    text = value.strip()
    if not text or text.lower() == "null":
        raise ValueError(f"{value!r} is not an origin: give scheme://host[:port]")
    if "*" in text:
        raise ValueError(f"{value!r}: wildcards are not allowed; list each origin exactly")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{value!r}: the origin must start with http:// or https://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError(f"{value!r}: an origin has no user name or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"{value!r}: an origin has no path, query or fragment (scheme://host[:port])")
    host = parts.hostname
    if not host:
        raise ValueError(f"{value!r}: the origin has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    try:
        host = host.encode("idna").decode("ascii").lower()  # browsers send the punycode form
    except UnicodeError:
        raise ValueError(f"{value!r}: the host is not a valid name") from None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    if port is not None and port != DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def parse_origins(values: Iterable[str]) -> tuple:
    """Each of ``values`` normalised (``parse_origin``), duplicates dropped, order kept. Raises ValueError."""
    found = []
    for value in values:
        origin = parse_origin(value)
        if origin not in found:
            found.append(origin)
    return tuple(found)


def handler_methods(handler_class) -> Tuple[str, ...]:
    """The HTTP methods ``handler_class`` implements (those Tornado would not answer 405)."""
    return tuple(m for m in HTTP_METHODS
                 if getattr(handler_class, m.lower(), None) is not getattr(tornado.web.RequestHandler, m.lower()))


class CorsPolicy:
    """The allowed origins and preflight lifetime of one process; pure (no I/O), shared by every request."""

    def __init__(self, origins: Iterable[str] = (), max_age: int = 600):
        self.origins = frozenset(parse_origins(origins))
        self.max_age = int(max_age)

    @staticmethod
    def applies(path: str) -> bool:
        """True for the routes that answer cross-origin pages (``/api/*``, ``/sse/*``, ``/poll/*``)."""
        return path.startswith(CORS_PREFIXES)

    def allowed(self, origin: Optional[str]) -> Optional[str]:
        """The listed origin ``origin`` (an ``Origin`` header) normalises to, or None."""
        if not origin or not self.origins:
            return None
        try:
            normal = parse_origin(origin)
        except ValueError:
            return None
        return normal if normal in self.origins else None

    def response_headers(self, path: str, origin: Optional[str]) -> Headers:
        """The CORS headers of an answer (not a preflight) to ``path`` for a request from ``origin``.

        ``Vary: Origin`` on every answer of a CORS route (a cache must not hand one origin's
        answer to another); the origin and the exposed headers only for a listed origin.
        """
        if not self.applies(path):
            return []
        headers = [("Vary", "Origin")]
        listed = self.allowed(origin)
        if listed:
            headers += [("Access-Control-Allow-Origin", listed), ("Access-Control-Expose-Headers", EXPOSE_HEADERS)]
        return headers

    def preflight_headers(self, path: str, origin: Optional[str], request_method: Optional[str],
                          methods: Iterable[str]) -> Headers:
        """The CORS headers of the answer to a preflight (``OPTIONS`` with
        ``Access-Control-Request-Method``) for a route implementing ``methods``.

        Empty (only ``Vary``) unless the route is a CORS route, the origin is listed and the
        requested method is one the route implements: the browser then refuses the request.
        """
        if not self.applies(path):
            return []
        headers = [("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        listed = self.allowed(origin)
        methods = tuple(methods)
        if not listed or not request_method or request_method.strip().upper() not in methods:
            return headers
        return headers + [("Access-Control-Allow-Origin", listed),
                          ("Access-Control-Allow-Methods", ", ".join(methods)),
                          ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                          ("Access-Control-Max-Age", str(self.max_age))]

    def transform(self, request) -> "CorsHeaders":
        """The output transform for one request (``Application(transforms=[policy.transform])``)."""
        return CorsHeaders(self, request)


def add_vary(headers, value: str) -> None:
    """Add ``value`` to the ``Vary`` header of ``headers`` (a Tornado HTTPHeaders) without repeating it."""
    current = [v.strip() for v in headers.get("Vary", "").split(",") if v.strip()]
    for item in value.split(","):
        if item.strip().lower() not in (v.lower() for v in current):
            current.append(item.strip())
    headers["Vary"] = ", ".join(current)


class CorsHeaders(tornado.web.OutputTransform):
    """Adds the policy's ``response_headers`` to every answer of the application but preflights.

    A transform sees every response just before its headers go out (JSON, errors, refused
    stream handshakes, the first bytes of an event stream), so no handler can forget them.
    ``OPTIONS`` answers are the preflight handler's own (handlers/base.py ``CorsPreflight``):
    an unknown route's preflight gets its 404 with no CORS header.
    """

    def __init__(self, policy: CorsPolicy, request):
        super().__init__(request)
        self.policy, self.request = policy, request

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        """The response's first chunk: its headers are still open."""
        request = self.request
        if request.method != "OPTIONS":
            for name, value in self.policy.response_headers(request.path, request.headers.get("Origin")):
                if name == "Vary":
                    add_vary(headers, value)
                else:
                    headers[name] = value
        return status_code, headers, chunk

