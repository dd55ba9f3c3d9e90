"""The Tornado application: routes and settings; plus the server's start and graceful stop.

Shutdown order: stop accepting → close WebSockets (1001), end SSE streams and answer
waiting long-polls → store and acknowledge every queued message → stop the broker → close
the database.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import socket
from typing import Awaitable, List, Optional

import tornado.httpserver
import tornado.netutil
import tornado.routing
import tornado.web

from handlers import all_routes
from handlers.base import NotFoundHandler, log_request
from handlers.headers import SecurityHeaders
from handlers.paths import InvalidPathHandler, path_problem
from .cors import CorsPolicy
from .httpserver import SquallHTTPServer, default_max_connections, raise_descriptor_limit
from .proxies import TrustedProxies
from .services import Services
from .services.delivery import EndReason

log = logging.getLogger("squall.app")


def route_patterns(routes) -> dict:
    """``{handler class: route pattern}``: the bounded ``route`` label of the request metrics."""
    patterns = {}
    for rule in routes:
        pattern, cls = rule[0], rule[1]
        patterns[cls] = "page" if cls in patterns or cls.__name__ == "PageHandler" else pattern
    patterns[NotFoundHandler] = "unmatched"
    patterns[InvalidPathHandler] = "invalid_path"
    return patterns


class SquallApplication(tornado.web.Application):
    """The Application, which first sets each request's client address (``request.remote_ip``)
    and refuses paths no route can serve (see handlers/paths.py).

    Done here, before any handler, so logs, limits and handlers all see the same address:
    the socket peer, or the forwarded one when the peer is a trusted proxy.
    """

    def __init__(self, *args, trusted_proxies=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.proxies = TrustedProxies(trusted_proxies)
        self.exact_routes = exact_routes(self.wildcard_router.rules)

    def find_handler(self, request, **kwargs):
        """Resolve the client address, then route as usual."""
        if self.proxies.networks:
            request.remote_ip = self.proxies.client_address(request.remote_ip, request.headers)
        problem = path_problem(request.path)
        if problem is not None:  # NUL, a bad escape or invalid UTF-8: no route ever sees it
            return self.get_handler_delegate(request, InvalidPathHandler, {"problem": problem})
        rule = self.exact_routes.get(request.path)
        if rule is not None:  # a literal path: one dict lookup instead of a regex per route before it
            return self.get_handler_delegate(request, rule.target, rule.target_kwargs, [], {})
        return super().find_handler(request, **kwargs)


def exact_routes(rules: list) -> dict:
    """``{path: rule}`` for the routes whose pattern is one literal path, where no earlier route matches it.

    Tornado tries each route's regular expression in order: a request for the fortieth route
    runs forty matches. A literal path that no earlier route also matches gets the same rule
    from a dict; the rest are routed by Tornado as before.
    """
    out: dict = {}
    for i, rule in enumerate(rules):
        matcher = rule.matcher
        if not isinstance(matcher, tornado.routing.PathMatches) or matcher.regex.groups:
            continue
        if not (isinstance(rule.target, type) and issubclass(rule.target, tornado.web.RequestHandler)):
            continue
        path = literal(matcher.regex.pattern)
        if path is None:
            continue
        if path in out or any(earlier.matcher.match(_Probe(path)) is not None for earlier in rules[:i]):
            continue
        out[path] = rule
    return out


def literal(pattern: str) -> Optional[str]:
    """The one path a route pattern (``...$``) matches, or None when it can match more than one."""
    if not pattern.endswith("$") or pattern.endswith("\\$"):
        return None
    out, chars = [], iter(pattern[:-1])
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            if not nxt or nxt.isalnum():  # \d, \w, \1 ...: a class or a reference, not a character
                return None
            out.append(nxt)
        elif c in ".^$*+?{}[]|()":
            return None
        else:
            out.append(c)
    return "".join(out)


class _Probe:
    """Just enough of a request for a matcher: its path."""

    def __init__(self, path: str):
        self.path = path


def make_app(services: Services) -> tornado.web.Application:
    """The Application for ``services`` (stored in settings under ``services``)."""
    config = services.config
    routes = all_routes(config.web_dir)
    cors = CorsPolicy(config.allowed_origins, config.cors_max_age)
    return SquallApplication(
        routes,
        # Server, nosniff, framing, referrer on every response; CORS on /api, /sse, /poll
        transforms=[SecurityHeaders, cors.transform],
        services=services,
        cors=cors,
        route_patterns=route_patterns(routes),
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        # Pings come from one timer for every socket (Services._ping_websockets), not from a
        # task per connection as Tornado's websocket_ping_interval would run (memory per idle socket).
        websocket_ping_interval=0,
        # Tornado 6.6 caps the timeout at the interval (with a warning each time): cap it here.
        websocket_ping_timeout=min(config.ws_ping_timeout, config.ws_ping_interval),
        websocket_max_message_size=config.max_frame_bytes,
        compress_response=False,
        xsrf_cookies=False,  # API: bearer tokens; cookie use is guarded by Origin and JSON checks
        trusted_proxies=config.trusted_proxies,
    )


def make_http_server(services: Services, app: tornado.web.Application) -> SquallHTTPServer:
    """The HTTP server for ``app`` with the configured timeouts and caps (see tornado_app/httpserver.py).

    Raises the soft descriptor limit to the hard one first; ``--max-connections 0`` is
    derived from it.
    """
    config = services.config
    descriptors = raise_descriptor_limit()
    max_connections = config.max_connections or default_max_connections(descriptors)
    log.info("descriptor limit %d; at most %d client connections", descriptors, max_connections)
    server = SquallHTTPServer(app, xheaders=False,  # forwarded headers: only from --trusted-proxies
                              max_connections=max_connections,
                              max_connections_per_address=config.max_connections_per_address,
                              trusted_proxies=config.trusted_proxies, cors=app.settings.get("cors"),
                              max_body_bytes=config.max_body_bytes, header_timeout=config.header_timeout,
                              large_bodies={"/api/uploads": (config.max_upload_bytes, "upload_too_large")},
                              idle_timeout=config.idle_timeout, body_timeout=config.body_timeout)
    services.http_server = server
    return server


class SquallServer:
    """One serving process: services, HTTP server, graceful stop."""

    def __init__(self, services: Services):
        self.services = services
        self.app = make_app(services)
        self.http_server: Optional[tornado.httpserver.HTTPServer] = None
        self.metrics_server: Optional[tornado.httpserver.HTTPServer] = None
        self._stopped = asyncio.Event()

    async def start(self, sockets=None) -> None:
        """Start services and listen (on ``sockets`` if given, else host:port)."""
        await self.services.start()
        self.http_server = make_http_server(self.services, self.app)
        if sockets is not None:
            self.http_server.add_sockets(sockets)
        else:
            config = self.services.config
            self.http_server.listen(config.port, config.host, backlog=config.listen_backlog)
        tune_gc()

    def listen_metrics(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Serve ``/metrics`` alone, without a token, on ``host:port`` (a loopback or private interface)."""
        from handlers.metrics import ROUTES as METRICS_ROUTES
        app = tornado.web.Application(METRICS_ROUTES, transforms=[SecurityHeaders],
                                      services=self.services, metrics_listener=True,
                                      default_handler_class=NotFoundHandler, log_function=log_request,
                                      route_patterns=route_patterns(METRICS_ROUTES))
        self.metrics_server = tornado.httpserver.HTTPServer(app)
        self.metrics_server.add_sockets(tornado.netutil.bind_sockets(port, host, reuse_port=reuse_port))

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Graceful stop: see the module docstring. Idempotent."""
        if self.services.closing:
            await self._stopped.wait()
            return
        self.services.closing = True
        if self.http_server is not None:
            self.http_server.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        goodbyes = close_connections(self.services)
        # Let in-flight requests (a send waiting for its commit) finish.
        await self.services.chat.close()
        # Waiting polls answer in their own requests' coroutines: let them write before the
        # sockets close (a poll cut off would only be retried, a little later, elsewhere).
        await said_goodbye(goodbyes, drain_seconds)
        if self.http_server is not None:
            try:
                await asyncio.wait_for(self.http_server.close_all_connections(), drain_seconds)
            except asyncio.TimeoutError:
                log.warning("connections still open after %.0f s; closing anyway", drain_seconds)
        await self.services.stop()
        self._stopped.set()


def tune_gc() -> None:
    """Keep the garbage collector from pausing delivery for long.

    A server holds many long-lived objects (connections, cached users, modules); every full
    collection walks them all, which showed as 100-200 ms stalls in the chat benchmark's p99.
    What exists at start-up is frozen out of the collector, and collections run less often
    (the young generation is still collected; reference counting frees almost everything).
    The young generation is collected every 5,000 allocations, not 50,000: a collection's pause
    grows with what it walks, and at 50,000 a reconnect storm's teardown made 25-65 ms pauses
    (measured with gc.callbacks); at 5,000 they are a tenth of that. The middle generation
    still waits for the same 2.5 million allocations (5,000 × 500).
    """
    gc.freeze()
    gc.set_threshold(5_000, 500, 1000)


async def said_goodbye(goodbyes: List[Awaitable[None]], timeout: float) -> None:
    """Wait, at most ``timeout`` seconds, for the goodbyes ``close_connections`` returned."""
    if not goodbyes:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*goodbyes), timeout)
    except asyncio.TimeoutError:
        log.warning("streams still saying goodbye after %.0f s", timeout)


def close_connections(services: Services) -> List[Awaitable[None]]:
    """Close every WebSocket with 1001, end every SSE stream, answer every waiting poll.

    Returns what to await for every goodbye to be written (``Transport.said_goodbye``).
    """
    goodbyes: List[Awaitable[None]] = []
    for conn in list(services.registry.connections):
        wire = conn.wire  # ``end`` drops it
        try:
            conn.end(EndReason.SHUTDOWN)
            goodbyes.append(wire.said_goodbye())
        except Exception:
            log.exception("closing a connection on shutdown")
    return goodbyes


def bind_socket(host: str, port: int, reuse_port: bool = False, backlog: int = 4096) -> list:
    """Listening sockets for host:port (SO_REUSEPORT lets several processes share the port).

    The accept backlog is larger than Tornado's 128: when every client of a restarted server
    reconnects at once, a full queue makes the kernel fall back to SYN cookies and reset the
    connections whose cookie it can no longer check, instead of queueing them.
    """
    return tornado.netutil.bind_sockets(port, host, family=socket.AF_UNSPEC, reuse_port=reuse_port,
                                        backlog=backlog)

