"""What every stream handler shares: the handshake's checks, and the ``Connection`` it carries.

A stream handler (WebSocket, SSE, long-poll) is a thin adapter: it authenticates and admits
the client, then owns a ``Connection`` (tornado_app/services/delivery/connection.py) that
holds the user, the cursors, the replay, dedup and backpressure, and is what the registry
delivers to. The handler is that connection's ``Transport``: it writes frames in its framing
and says goodbye for each ``EndReason`` (``close_for``).
"""
from __future__ import annotations

import abc
import asyncio
from typing import TYPE_CHECKING, Optional, Tuple

from tornado import httputil
from tornado.web import RequestHandler

from tornado_app.errors import Forbidden, Unauthorized, ValidationError
from tornado_app.services.storage.ids import parse_int
from tornado_app.services.delivery.connection import Connection, EndReason
from tornado_app.services.delivery.events import NOTIFY, Event
from tornado_app.tornado_io import drop_response_headers

if TYPE_CHECKING:
    import tornado.web

    from tornado_app.services import Services

_NO_HEADERS = httputil.HTTPHeaders()  # what a live stream's request holds instead of its headers (never written)


def parse_last_event_id(raw: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """``(message_id, notification_id)`` from a last event id: ``"N"`` or ``"M-N"`` (chat stream).

    A plain number is a notification id. Raises ValidationError for anything else.
    """
    if raw is None or raw.strip() == "":
        return None, None
    raw = raw.strip()
    code = "invalid_last_event_id"
    message = "'last_event_id' must be a notification id (or 'M-N' on /sse/chat), each 0 to 2**63-1"
    try:
        if "-" in raw:
            m, n = raw.split("-", 1)
            return (parse_int(m, "last_event_id", 0, code=code), parse_int(n, "last_event_id", 0, code=code))
        return None, parse_int(raw, "last_event_id", 0, code=code)
    except ValidationError:
        raise ValidationError(message, code) from None


# Handler attributes only the handshake reads (ours and Tornado's): dropped once a stream is open.
_HANDSHAKE_ONLY = ("claims", "resume", "open_args", "open_kwargs", "path_args", "path_kwargs", "_user_reserved",
                   "sid", "token_exp", "token_warn_at", "token_version")  # the Connection holds these now

class Subscriber(abc.ABC):
    """Mixin for stream handlers: the handshake's checks and admission, and the ``Connection`` they carry."""

    if TYPE_CHECKING:  # what the handler classes it is mixed into (ServicesMixin, RequestHandler) give it
        @property
        def services(self) -> Services: ...

        request: httputil.HTTPServerRequest
        application: tornado.web.Application
        user_id: Optional[int]
        auth_source: Optional[str]
        sid: Optional[str]
        token_exp: Optional[int]
        token_warn_at: Optional[int]
        token_version: Optional[int]

        def authenticate(self) -> Optional[int]: ...

        @property
        def authenticated_user_id(self) -> int: ...

    connection: Optional[Connection] = None  # once the stream opens
    streams: Tuple[str, ...] = ()
    # Sec-Fetch-Dest values a cookie-authenticated request may carry: what fetch(), XHR and
    # EventSource send ("empty"); WebSockets add "websocket". An <img>, <script>, <iframe> or
    # a navigation must not open a stream or a poll with the victim's cookie (issue 20, item 10).
    fetch_dests: frozenset = frozenset(("empty",))
    _user_reserved = False  # check_user reserved a slot not yet taken by a registered stream
    _address_slot = None  # the forwarded address key this stream counts against (trusted proxies)
    transport: str = ""  # metrics label: ws_chat, ws_notifications, sse_notifications, sse_chat
    # Whether a fresh stream needs the newest notification id as its cursor: only where the
    # cursor reaches the client (``/sse/chat``'s "M-N" ids, long-poll answers). Streams whose
    # events carry their own ids skip that read.
    notify_baseline: bool = True

    def authenticate_stream(self) -> Optional[int]:
        """``authenticate()``, counting a failure against the client address. Raises Unauthorized
        (401), or RateLimited (429 ``too_many_failed_auths``) past the address's limit."""
        try:
            return self.authenticate()
        except Unauthorized:
            self.services.admission.failed_auth(self.request.remote_ip)
            raise

    def check_fetch_dest(self) -> None:
        """Refuse a cookie-authenticated request a page did not make with fetch/XHR/EventSource/WebSocket.

        A same-site ``<img src="/poll/chat?chat_id=…">`` carries the cookie and would mark the
        victim as reading that chat (silencing their notifications). Browsers say what the
        request is for in ``Sec-Fetch-Dest``; a request without it (an old browser, curl) passes.
        Raises Forbidden (403 ``fetch_dest_rejected``).
        """
        if self.auth_source != "cookie":
            return
        dest = self.request.headers.get("Sec-Fetch-Dest")
        if dest is not None and dest.strip().lower() not in self.fetch_dests:
            raise Forbidden("Streams and polls with the login cookie must come from fetch, EventSource or "
                            "WebSocket, not from a page element", "fetch_dest_rejected")

    def admit(self) -> None:
        """Hold a slot of the per-user cap until the stream registers, and one of its forwarded
        address (behind a trusted proxy) until it ends. Raises RateLimited, ServerBusy."""
        admission = self.services.admission
        admission.check_user(self.authenticated_user_id)
        self._user_reserved = True
        context = getattr(self.request.connection, "context", None)  # Tornado's opaque per-connection object
        peer = getattr(context, "remote_ip", None)
        proxies = getattr(self.application, "proxies", None)
        remote = self.request.remote_ip  # the forwarded client address (set for every HTTP/1 request)
        if peer is not None and remote is not None and proxies is not None and proxies.trusts(peer):
            # The HTTP server does not count a trusted proxy's connections (they are everyone's):
            # count this stream by the address the proxy forwarded.
            self._address_slot = admission.take_address(remote)

    def release_admission(self) -> None:
        """The reserved per-user slot is taken by a registered stream, or the handshake ended (idempotent)."""
        if self._user_reserved:
            self._user_reserved = False
            self.services.admission.opened(self.authenticated_user_id)

    def release_address(self) -> None:
        """This stream no longer counts against its forwarded address (idempotent)."""
        if self._address_slot is not None:
            key, self._address_slot = self._address_slot, None
            self.services.admission.release_address(key)

    def open_connection(self) -> Connection:
        """The ``Connection`` this handler carries (call once the user is authenticated, before ``start_streams``)."""
        services = self.services
        if self.user_id is None:  # prepare() authenticated every stream route
            raise RuntimeError("a stream opens for an authenticated user only")
        self.connection = Connection(services, self, self.user_id, self.streams, self.transport,
                                     self.sid, self.token_exp, self.token_warn_at, self.token_version,
                                     services.origin)
        return self.connection

    def live_connection(self) -> Connection:
        """This handler's connection; frames only arrive once it is open (a RuntimeError otherwise)."""
        if self.connection is None:
            raise RuntimeError("the stream is not open")
        return self.connection

    @property
    def conn_id(self) -> str:
        """The id of this handler's connection (a send's ``exclude``: not echoed to its own socket)."""
        return self.connection.conn_id if self.connection is not None else ""

    def track_write(self, future: "asyncio.Future", size: int) -> None:
        """Count a write the stream could not finish at once against the connection's limit."""
        connection = self.connection
        if connection is not None:
            connection.track_write(future, size)
        elif not future.done():
            future.add_done_callback(lambda f: f.exception())
        else:
            future.exception()

    async def start_streams(self, last_message_id: Optional[int], last_notification_id: Optional[int]) -> None:
        """Start the connection: subscribe, state, replay, live (``Connection.start``)."""
        await self.open_connection().start(last_message_id, last_notification_id, self.release_admission)

    async def stop_streams(self) -> None:
        """End the connection (idempotent) and wait until it is unregistered; the address slot is free."""
        self.release_address()
        connection = self.connection
        if connection is not None:
            connection.end(EndReason.CLOSED)
            await connection.finished()

    def end_connection(self, reason: EndReason) -> None:
        """End this handler's connection for ``reason`` (nothing before it opened)."""
        if self.connection is not None:
            self.connection.end(reason)

    # Transport (what the Connection calls; each adapter overrides what its transport has) -----

    @abc.abstractmethod
    def send_event(self, event: Event) -> None:
        """Write one event in this transport's framing."""

    @abc.abstractmethod
    def close_for(self, reason: EndReason) -> None:
        """Say goodbye for ``reason`` in this transport's framing."""

    async def said_goodbye(self) -> None:
        """At once: WebSocket and SSE write their goodbye in ``close_for`` (a poll waits for its answer)."""
        return None

    def heartbeat(self) -> None:
        """No heartbeat but on SSE."""

    def send_ping(self) -> bool:
        """No protocol ping but on a WebSocket."""
        return False

    def check_pong(self, pinged_at: float) -> None:
        """No protocol ping but on a WebSocket."""

    def token_expiring(self, expires_at: int) -> None:
        """Only a WebSocket can be refreshed in place: elsewhere the stream ends at expiry."""

    def shed_handshake(self, headers_sent: bool) -> None:
        """Drop what only the handshake needed, so an idle connection keeps less (issue 13).

        The request headers, the query string (with an ``access_token``, it is held four
        times: ``uri``, ``query`` and two parsed copies), the verified claims, the arguments of
        the handshake and, once written, the response headers. Call after the stream is open; nothing reads
        them afterwards.
        """
        request = self.request
        request.headers = _NO_HEADERS
        if request.query:
            request.uri, request.query = request.path, ""
            request.query_arguments, request.arguments = {}, {}
        if headers_sent and isinstance(self, RequestHandler):  # what every stream handler is
            drop_response_headers(self)
        # The handler's attributes outnumber what a CPython instance dict holds with shared
        # keys (30): its dict doubled to 1.6 KB. Without what only the handshake read, it is
        # rebuilt at its size: 0.8 KB.
        attrs = self.__dict__
        for name in _HANDSHAKE_ONLY:
            attrs.pop(name, None)
        self.__dict__ = dict(attrs)

    def closed_with(self) -> Optional[int]:
        """The WebSocket close code of a closed connection (None for event streams)."""
        return None

    async def send_initial_state(self, last_notification_id: Optional[int]) -> Optional[int]:
        """Send the state a new stream starts with: the ``unread`` frame (a long-poll sends it only when needed).

        Read with the other opens of the moment in one statement (``OpenStateBatcher``);
        returns the newest notification id the user can see when a fresh stream needs it as
        its baseline (else None).
        """
        want = last_notification_id is None and self.notify_baseline
        state, latest = await self.services.open_state.state(self.authenticated_user_id, want)
        self.send_event(Event(NOTIFY, state))
        return latest
