"""The HTTP server in front of the application: what a hostile network must not exhaust.

Tornado's ``HTTPServer`` waits an hour for request headers, buffers bodies up to its
``max_body_size`` and answers a larger one with an empty ``400`` and a reset, and its
accept loop spins (logging each time) once the process runs out of descriptors. This
subclass adds, per process:

- a header timeout for a new connection's first request, an idle timeout for the next
  request on a kept-alive one and a body timeout, kept by one sweep per tick instead of
  Tornado's timer per read (``Deadlines``); a streamed upload keeps Tornado's own body
  timer, which its handler sets;
- a count of open client connections (every accepted socket, WebSockets and SSE
  streams included, until its stream closes); past ``max_connections`` the connection
  that has waited longest for its request headers or body (a slow or idle one) is closed, and new
  requests get ``503 server_busy`` with ``Retry-After`` (``/healthz`` and ``/readyz`` are
  still answered);
- a count of open connections per client address (IPv6 by /64): past
  ``max_connections_per_address`` a new connection is answered ``503
  too_many_connections_per_address`` at once and closed, before its request is read. A
  trusted proxy's connections are not counted here (they carry everyone's requests); its
  streams are counted per forwarded address at request time (services/delivery/admission.py);
- ``413 payload_too_large`` in the JSON error shape for a body over ``max_body_bytes``, with
  a ``Content-Length`` or chunked, answered as soon as the limit is passed, then the
  connection closes (the rest of the body is never read); the few paths in ``large_bodies``
  (``POST /api/uploads``, streamed to disk by its handler) have their own limit and code;
- an accept loop that backs off when ``accept`` fails for lack of descriptors and logs
  that at most once per 10 s, with a count.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import random
import resource
import socket
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Set

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.iostream
from tornado.http1connection import HTTP1ConnectionParameters, HTTP1ServerConnection

from .proxies import TrustedProxies
from .services.delivery.events import dumps
from .services.operations.ratelimit import address_key
from .tornado_io import LeanIOStream

log = logging.getLogger("squall.server")

# Paths answered even past max_connections: load balancers must see the process as alive.
HEALTH_PATHS = frozenset(("/healthz", "/readyz"))
ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# Connections accepted per turn of the event loop while more wait (the socket stays readable,
# so the loop comes back at its next turn): a storm of new connections is taken in slices,
# with the established connections' events served between them (issue 26).
ACCEPT_BATCH = 16
ACCEPT_PAUSE = 0.1  # seconds without accepting after a descriptor shortage
LOG_EVERY = 10.0  # seconds between log lines about descriptor shortage
UNLIMITED_BODY = 1 << 62  # Tornado's own body limit is replaced by BodyGuard's
LINGER_SECONDS = 2.0  # after refusing a body: how long to discard what the client still sends
LINGER_BYTES = 1 << 20
# The deadline sweep runs every tenth of the shortest timeout, between these bounds (seconds):
# a connection past its deadline is closed at most one tick late (10 s header timeout: 1 s).
TICK_MIN, TICK_MAX = 0.05, 1.0


def raise_descriptor_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the (new) soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


def default_max_connections(descriptors: int) -> int:
    """Client connections a process may hold with ``descriptors``: 64 and a tenth kept for the
    database, the broker, logs and the health checks."""
    return max(16, descriptors - 64 - descriptors // 10)


def refuse_at_accept(connection: socket.socket, response: bytes) -> None:
    """Send ``response`` on a just-accepted socket and close it, without reading the request.

    What the client already sent is discarded first (closing with unread data makes the kernel
    send a reset, which can destroy the answer); a client that sends its request later may see
    the connection reset instead of the answer. Nothing waits: a refused flood costs no timer.
    """
    try:
        connection.setblocking(False)
        try:
            for _ in range(4):
                if not connection.recv(65536):
                    break
        except (BlockingIOError, InterruptedError):
            pass
        connection.send(response)
        connection.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        connection.close()


def busy_retry_after() -> int:
    """A random 1-5 s ``Retry-After``, so refused clients do not come back together."""
    return random.randint(1, 5)


def error_response(status: int, reason: str, code: str, message: str, retry_after: Optional[int] = None,
                   headers=()) -> bytes:
    """A complete ``HTTP/1.1`` answer ``{"error": {...}}`` that closes the connection; ``headers``
    are extra ``(name, value)`` pairs (the CORS headers of the request's route and origin)."""
    error: Dict[str, object] = {"code": code, "message": message}
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json; charset=utf-8",
            "Cache-Control: no-store", "Connection: close"]
    head.extend(f"{name}: {value}" for name, value in headers)
    if retry_after is not None:
        error["retry_after"] = retry_after
        head.append(f"Retry-After: {retry_after}")
    body = dumps({"error": error}).encode()
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def answer_and_close(stream: tornado.iostream.IOStream, response: bytes, linger: bool) -> None:
    """Send ``response``, then close; with ``linger``, half-close first and discard what the
    client still sends for a moment (at most ``LINGER_BYTES``, and ``LINGER_SECONDS`` in all).

    Closing a socket with unread data makes the kernel send a reset, which can destroy the
    answer before the client reads it; nginx's "lingering close" avoids that the same way.
    """
    loop = asyncio.get_running_loop()
    try:
        await stream.write(response)
        if linger:
            stream.socket.shutdown(socket.SHUT_WR)
            deadline, discarded = loop.time() + LINGER_SECONDS, 0
            while discarded < LINGER_BYTES and loop.time() < deadline:
                data = await asyncio.wait_for(stream.read_bytes(65536, partial=True), deadline - loop.time())
                discarded += len(data)
            # Past the byte budget, stop reading (the client's upload stalls) but give it the
            # rest of the time to read the answer before the reset.
            while not stream.closed() and loop.time() < deadline:
                await asyncio.sleep(0.05)
    except (tornado.iostream.StreamClosedError, asyncio.TimeoutError, OSError):
        pass
    finally:
        stream.close()


# The streams corked at this moment (``CountedIOStream.cork``): handshakes waiting for their first frames.
CORKED: Set["CountedIOStream"] = set()


class CountedIOStream(LeanIOStream):
    """An accepted client socket, counted by its server until it closes (however it closes).

    Its write queues exist only while something is queued (``LeanIOStream``): 1.5 KB less
    per idle connection.
    """

    def __init__(self, sock, server: "SquallHTTPServer", address_key=None, **kwargs):
        super().__init__(sock, **kwargs)
        self.squall_server: Optional[SquallHTTPServer] = server  # None once closed (counted once)
        self.address_key = address_key  # the per-address count this connection is in (None: not counted)
        server.open_connections += 1

    def cork(self, on: bool) -> None:
        """Hold (``on``) or release small writes as one segment (Linux TCP_CORK; the kernel sends
        what it holds after 200 ms anyway). A WebSocket handshake corks its 101, and an SSE stream
        its head and ``retry:``, until its first frames are written (handlers/websocket.py, sse.py).
        Nothing on a closed socket or without TCP_CORK.

        Which streams are corked is kept in a set (``CORKED``), not on the stream: an attribute
        set and deleted again turns the instance's shared-key dict into a full one, 1.4 KB more
        for every connection that was ever corked (measured on SSE streams in the idle bench).
        """
        if on == (self in CORKED) or not hasattr(socket, "TCP_CORK") or self.closed():
            return
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)
        except OSError:  # the peer went away: nothing is held back on a dead socket
            return
        if on:
            CORKED.add(self)
        else:
            CORKED.discard(self)

    def set_nodelay(self, value: bool) -> None:
        """Not while corked: setting TCP_NODELAY pushes out what the cork holds (Tornado's
        HTTP1Connection sets it when it finishes a response, the 101 included)."""
        if self not in CORKED:
            super().set_nodelay(value)

    def close(self, exc_info=False) -> None:
        CORKED.discard(self)
        if self.squall_server is not None:
            self.squall_server.open_connections -= 1
            if self.address_key is not None:
                self.squall_server.address_closed(self.address_key)
            self.squall_server = None
        super().close(exc_info)


class Deadlines:
    """Connections waiting for request headers or a body, each closed once past its deadline.

    Tornado bounds each header and body read with a timer of its own (``gen.with_timeout``:
    a future, a timer and two callbacks per read, two reads per request). Here a connection
    enters a queue when it starts waiting and leaves it when what it waited for has come;
    one sweep a tick closes the expired ones. Each queue holds one kind of wait with one
    timeout, so it is in deadline order and a sweep reads only what has expired.

    ``waiting`` maps every waiting connection, oldest first, to its queue (``None``: a wait
    bounded elsewhere, a streamed upload's body): the server sheds the oldest at its cap.
    """

    def __init__(self, first: float, idle: float, body: float):
        self.timeouts = {"first": first, "idle": idle, "body": body}
        self.queues: Dict[str, "OrderedDict[HTTP1ServerConnection, float]"] = {k: OrderedDict() for k in self.timeouts}
        self.waiting: "OrderedDict[HTTP1ServerConnection, Optional[OrderedDict]]" = OrderedDict()
        self.tick = min(TICK_MAX, max(TICK_MIN, min(self.timeouts.values()) / 10))

    def wait(self, conn: HTTP1ServerConnection, kind: Optional[str]) -> None:
        """``conn`` starts waiting: for ``kind`` (``first`` or ``idle`` headers, ``body``), or unbounded here."""
        self.done(conn)
        queue = None
        if kind is not None:
            queue = self.queues[kind]
            queue[conn] = time.monotonic() + self.timeouts[kind]
        self.waiting[conn] = queue

    def done(self, conn: HTTP1ServerConnection) -> None:
        """What ``conn`` waited for has come (or it closed)."""
        queue = self.waiting.pop(conn, None)
        if queue is not None:
            queue.pop(conn, None)

    def oldest(self) -> HTTP1ServerConnection:
        """Remove and return the connection that has waited longest (``waiting`` must not be empty)."""
        conn, queue = self.waiting.popitem(last=False)
        if queue is not None:
            queue.pop(conn, None)
        return conn

    def expired(self, now: float) -> List[HTTP1ServerConnection]:
        """Remove and return the connections past their deadline at ``now``."""
        out = []
        for queue in self.queues.values():
            while queue:
                conn, deadline = next(iter(queue.items()))
                if deadline > now:
                    break
                queue.popitem(last=False)
                self.waiting.pop(conn, None)
                out.append(conn)
        return out


class BodyGuard(tornado.httputil.HTTPMessageDelegate):
    """Wraps the application's delegate for one request: caps, then the body limit."""

    # what a page on an allowed origin needs to read our own refusals; a class default, set on
    # the instance only when CORS is on (one attribute less on every request's guard)
    cors_headers: tuple = ()
    # the body limit of a path in ``server.large_bodies`` (set on the instance for those only)
    limit: Optional[int] = None
    code = "payload_too_large"

    def __init__(self, server: "SquallHTTPServer", server_conn, request_conn, inner):
        self.server, self.server_conn, self.request_conn, self.inner = server, server_conn, request_conn, inner
        self.refused = False
        self.received = 0

    def headers_received(self, start_line, headers):
        server = self.server
        server.deadlines.done(self.server_conn)
        path = start_line.path.split("?", 1)[0]
        if server.cors is not None and start_line.method != "OPTIONS":
            self.cors_headers = server.cors.response_headers(path, headers.get("Origin"))
        if server.open_connections > server.max_connections and path not in HEALTH_PATHS:
            has_body = headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers
            return self.refuse(503, "Service Unavailable", "server_busy",
                               "The server is at its connection limit; retry later", busy_retry_after(), has_body)
        limit = server.max_body_bytes
        large = server.large_bodies.get(path)
        if large is not None:  # a route that streams its body (uploads): its own limit and timer
            limit, self.code = large
            self.limit = limit
            self.request_conn.set_max_body_size(limit)
            self.request_conn.set_body_timeout(server.body_timeout)  # its handler may give it longer
        length = headers.get("Content-Length")
        if length is not None:
            try:
                too_big = int(length.split(",")[0].strip()) > limit
            except ValueError:
                too_big = False  # Tornado answers the malformed header itself
            if too_big:
                return self.refuse(413, "Payload Too Large", self.code,
                                   f"The request body is over {limit} bytes")
        elif "Transfer-Encoding" in headers:
            # Count the chunks here: Tornado's own check would answer an empty 400.
            self.request_conn.set_max_body_size(UNLIMITED_BODY)
        if (length is not None and length.strip() != "0") or "Transfer-Encoding" in headers:
            # Waiting for the body now: at the cap, a slow upload is shed like slow headers
            # (oldest first), before any stream or request in progress.
            server.deadlines.wait(self.server_conn, "body" if large is None else None)
        return self.inner.headers_received(start_line, headers)

    def refuse(self, status: int, reason: str, code: str, message: str, retry_after: Optional[int] = None,
               linger: bool = True):
        """Answer the error ourselves and close the connection; the rest of the body is not read.

        Returns an awaitable: Tornado waits for it before it would read (more of) the body,
        and finds the stream closed afterwards.
        """
        self.refused = True
        self.request_conn.set_max_body_size(UNLIMITED_BODY)  # no second answer from Tornado
        response = error_response(status, reason, code, message, retry_after, self.cors_headers)
        return answer_and_close(self.request_conn.stream, response, linger)

    def data_received(self, chunk):
        if self.refused:
            return None
        self.received += len(chunk)
        limit = self.server.max_body_bytes if self.limit is None else self.limit
        if self.received > limit:
            self.inner.on_connection_close()
            return self.refuse(413, "Payload Too Large", self.code, f"The request body is over {limit} bytes")
        return self.inner.data_received(chunk)

    def finish(self):
        self.server.deadlines.done(self.server_conn)  # the body is complete
        if not self.refused:
            self.inner.finish()

    def on_connection_close(self):
        self.server.deadlines.done(self.server_conn)
        if not self.refused:
            self.inner.on_connection_close()


class SquallHTTPServer(tornado.httpserver.HTTPServer):
    """HTTPServer with timeouts, a connection cap, a body limit and a patient accept loop."""

    # Tornado's Configurable hands the constructor's keywords to initialize(); ours takes the
    # server's own options beside HTTPServer's, which its typed signature cannot say.
    def initialize(self, request_callback, *, max_connections: int, max_body_bytes: int,  # type: ignore[override]
                   header_timeout: float, idle_timeout: float, body_timeout: float,
                   max_connections_per_address: int = 0, trusted_proxies=(), cors=None,
                   large_bodies: Optional[dict] = None, **kwargs):
        # Tornado's own timers off: Deadlines keeps the header, idle and body timeouts
        super().initialize(request_callback, idle_connection_timeout=None, body_timeout=None,
                           max_body_size=max_body_bytes, **kwargs)
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.cors = cors  # tornado_app/cors.py CorsPolicy, or None
        self.proxies = TrustedProxies(trusted_proxies)
        self.per_address: "dict[str, int]" = {}  # address key -> open connections (trusted proxies not counted)
        self.max_body_bytes = max_body_bytes
        # path -> (body limit, error code) for routes that stream large bodies to disk
        self.large_bodies: "dict[str, tuple[int, str]]" = dict(large_bodies or {})
        self.open_connections = 0
        # Connections waiting for request headers or a body, oldest first (the ones to shed at
        # the cap), each closed past its deadline by the sweep.
        self.deadlines = Deadlines(header_timeout, idle_timeout, body_timeout)
        self.waiting = self.deadlines.waiting
        self.body_timeout = body_timeout
        self._sweep: Optional[tornado.ioloop.PeriodicCallback] = None
        self._served: Set[HTTP1ServerConnection] = set()  # server connections that have started a request before
        self._trusted_downstream = frozenset(self.trusted_downstream or ())
        self._params = self._request_params(max_body_bytes)
        self._listeners: List[socket.socket] = []
        self._paused = False
        self._accept_failures = 0
        self._last_failure_log = 0.0

    # Accepting ----------------------------------------------------------------------------

    def add_sockets(self, sockets) -> None:
        """Accept on ``sockets`` with this server's loop (not Tornado's ``add_accept_handler``)."""
        io_loop = tornado.ioloop.IOLoop.current()
        for sock in sockets:
            sock.setblocking(False)
            self._listeners.append(sock)
            io_loop.add_handler(sock.fileno(), self._accept_ready(sock), tornado.ioloop.IOLoop.READ)
        if self._sweep is None:
            self._sweep = tornado.ioloop.PeriodicCallback(self.close_expired, self.deadlines.tick * 1000)
            self._sweep.start()

    def close_expired(self) -> None:
        """Close every connection past its header, idle or body deadline."""
        for conn in self.deadlines.expired(time.monotonic()):
            conn.stream.close()

    def stop(self) -> None:
        """Stop accepting and close the listening sockets."""
        if self._sweep is not None:
            self._sweep.stop()
            self._sweep = None
        io_loop = tornado.ioloop.IOLoop.current()
        for sock in self._listeners:
            if not self._paused:
                io_loop.remove_handler(sock.fileno())
            sock.close()
        self._listeners = []
        super().stop()

    def _accept_ready(self, sock):
        def on_readable(fd, events):
            for _ in range(ACCEPT_BATCH):
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno in ACCEPT_ERRORS:
                        self._descriptor_shortage(exc)
                        return
                    raise
                self._accepted(connection, address)
        return on_readable

    def _request_params(self, max_body_bytes: int) -> HTTP1ConnectionParameters:
        """The HTTP/1 parameters of every request: no timer of Tornado's (``Deadlines`` keeps them)."""
        own = self.conn_params
        return HTTP1ConnectionParameters(decompress=own.decompress, chunk_size=own.chunk_size,
                                         max_header_size=own.max_header_size, max_body_size=max_body_bytes,
                                         body_timeout=None, no_keep_alive=own.no_keep_alive,
                                         header_timeout=None)

    def _descriptor_shortage(self, exc: OSError) -> None:
        """Pause accepting briefly (the socket stays readable: retrying now would spin)."""
        self._accept_failures += 1
        now = time.monotonic()
        if now - self._last_failure_log >= LOG_EVERY:
            log.error("accept failed %d time(s) in the last %.0f s (%s): out of descriptors; "
                      "pausing new connections", self._accept_failures, LOG_EVERY,
                      errno.errorcode.get(exc.errno) if exc.errno is not None else None)
            self._accept_failures = 0
            self._last_failure_log = now
        if self._paused:
            return
        self._paused = True
        io_loop = tornado.ioloop.IOLoop.current()
        for sock in self._listeners:
            io_loop.remove_handler(sock.fileno())
        io_loop.call_later(ACCEPT_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if not self._paused or not self._listeners:
            return
        self._paused = False
        io_loop = tornado.ioloop.IOLoop.current()
        for sock in self._listeners:
            io_loop.add_handler(sock.fileno(), self._accept_ready(sock), tornado.ioloop.IOLoop.READ)

    def _accepted(self, connection: socket.socket, address) -> None:
        key = None
        if self.max_connections_per_address > 0 and isinstance(address, tuple) \
                and not self.proxies.trusts(address[0]):
            key = address_key(address[0])
            count = self.per_address.get(key, 0)
            if count >= self.max_connections_per_address:
                refuse_at_accept(connection, error_response(
                    503, "Service Unavailable", "too_many_connections_per_address",
                    f"At most {self.max_connections_per_address} connections per client address",
                    busy_retry_after()))
                return
            self.per_address[key] = count + 1
        if self.open_connections >= self.max_connections and self.waiting:
            # Shed the connection that has waited longest for its request headers or body (a
            # slow or idle one): established streams and requests in progress are never shed.
            self.deadlines.oldest().stream.close()
        try:
            stream = CountedIOStream(connection, self, address_key=key, max_buffer_size=self.max_buffer_size,
                                     read_chunk_size=self.read_chunk_size)
        except Exception:
            if key is not None:
                self.address_closed(key)
            connection.close()
            raise
        self.handle_stream(stream, address)

    def address_closed(self, key: str) -> None:
        """A connection counted for address ``key`` has closed."""
        count = self.per_address.get(key, 0) - 1
        if count > 0:
            self.per_address[key] = count
        else:
            self.per_address.pop(key, None)

    # Requests -----------------------------------------------------------------------------

    def start_request(self, server_conn, request_conn):
        """Wrap the application's delegate; the first request gets the header timeout, the next the idle one."""
        if server_conn in self._served:
            self.deadlines.wait(server_conn, "idle")
        else:
            self._served.add(server_conn)
            self.deadlines.wait(server_conn, "first")
        request_conn.params = self._params
        # Tornado gives each connection's context a set of its own (216 bytes, held for the
        # life of a stream); one frozen copy serves them all.
        request_conn.context.trusted_downstream = self._trusted_downstream
        return BodyGuard(self, server_conn, request_conn, super().start_request(server_conn, request_conn))

    def on_close(self, server_conn) -> None:
        self.deadlines.done(server_conn)
        self._served.discard(server_conn)
        super().on_close(server_conn)
