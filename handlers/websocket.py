"""WebSocket transport: authentication before the upgrade, frames built once per event."""
from __future__ import annotations

import json
import logging
import struct
import time
from typing import Optional
from urllib.parse import urlparse

import tornado.ioloop
import tornado.websocket
from tornado.iostream import StreamClosedError

from tornado_app.errors import BadJSON, Forbidden, SquallError, Unauthorized, Unavailable, ValidationError
from tornado_app.services.delivery.connection import EndReason
from tornado_app.services.delivery.events import Event, dumps
from tornado_app.tasks import spawn
from tornado_app.tornado_io import detached_protocol

from .base import (BaseHandler, ServicesMixin, check_text, client_error, count_error, mark_access,
                   set_retry_after)
from .fastwrite import write_direct
from .streams import Subscriber

log = logging.getLogger("squall.ws")

# The other close codes (1001 shutdown, 4008 slow consumer, 4001 auth ended) are EndReason's.
OPEN_FAILED_CODE = 1011  # the server could not start the stream (e.g. database unavailable); reason = code


def ws_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame: what a server sends, identical for every client."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class BaseSocketHandler(ServicesMixin, Subscriber, tornado.websocket.WebSocketHandler):
    """A WebSocket of one user: authenticated at the handshake, subscribed to its streams."""

    accepts_ticket = True  # a stream route (see ServicesMixin.accepts_ticket)
    fetch_dests = frozenset(("empty", "websocket"))
    _closed_early = False  # the client went away before open(): nothing may register
    sent_close_code: Optional[int] = None  # the close code this side sent (for the connection log)

    async def prepare(self):
        """Refuse before the upgrade: 401 JSON for a missing/bad/expired token."""
        try:
            if self.services.config.block_websockets:
                raise Unavailable("WebSockets are disabled on this server; use /sse/*", "websocket_blocked")
            if self.services.closing:
                raise Unavailable("The server is shutting down", "shutting_down")
            # Tornado would refuse a foreign Origin itself, but with a plain-text body.
            origin = self.request.headers.get("Origin") or self.request.headers.get("Sec-Websocket-Origin")
            if (origin is not None and urlparse(origin).netloc.lower() != self.request.host.lower()
                    and not self.check_origin(origin)):
                raise Forbidden("WebSockets from this origin are not allowed", "origin_rejected")
            # Authenticated before the handshake budget is charged: only valid credentials take from it.
            self.authenticate_stream()
            self.check_fetch_dest()
            self.services.admission.check_rate()
            self.resume = self.resume_position()
            await self.require_known_user()
            self.token_warn_at = self.services.sessions.warn_at(time.time(), self.token_exp)
            self.admit()
        except Exception as raised:
            exc = client_error(raised)
            if exc is None:
                raise
            self.set_status(exc.status)
            count_error(self, exc.code)
            set_retry_after(self, exc)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            if exc.status == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="squall"')
            self.finish(dumps({"error": exc.to_dict()}))

    def get(self, *args, **kwargs):
        """The WebSocket upgrade; ``prepare`` has already authenticated (401 before any upgrade).

        Returns Tornado's coroutine instead of awaiting it, so no frame of ours stays
        alive for the life of the connection (memory per idle connection).

        The socket is corked (Linux TCP_CORK) until ``open`` has written the stream's first
        frames: the 101 and the ``unread`` state leave in one segment, one trip through the
        kernel's TCP stack for the pair (the kernel sends corked bytes after 200 ms anyway).
        """
        self._cork(True)
        return super().get(*args, **kwargs)

    mark_access(get, "user")  # checked in prepare, not by the @authenticated wrapper

    # Errors before an upgrade (405 for HEAD or POST …) in the one JSON shape, not Tornado's HTML page.
    write_error = BaseHandler.write_error

    def check_origin(self, origin: str) -> bool:
        """Same-origin browsers, configured extra origins, and non-browser clients (no Origin)."""
        if self.cors.allowed(origin):  # the --allowed-origin list, as CORS matches it
            return True
        return super().check_origin(origin)

    def get_websocket_protocol(self):
        """Tornado's protocol for this version, reading frames in a task of its own."""
        return detached_protocol(super().get_websocket_protocol())

    def get_compression_options(self):
        """No per-message compression: frames stay identical, so they are built once."""
        return None

    async def open(self):
        """Subscribe and start the streams (replaying from ``last_event_id`` where given).

        If the open fails (the database goes away during the replay), the stream is already
        unregistered (``start_streams``) and the socket closes with 1011 and a reason.
        """
        if self._closed_early:
            # The socket closed during the handshake (Tornado still calls open): registering now
            # would hold one of the user's stream slots with no socket behind it, for good.
            return
        try:
            resume, self.resume = self.resume, None
            try:
                await self.start_streams(*resume)
            finally:
                # The 101 and the first frames go out together. TCP_NODELAY after, not before:
                # setting it pushes out what the cork holds.
                self._cork(False)
                self.set_nodelay(True)
            self.shed_handshake(headers_sent=True)
            self.request.connection = None  # Tornado's HTTP layer let go of the socket at the upgrade
            if self.services.closing:
                # The server began to shut down while this socket opened: its shutdown closed the
                # streams registered then, and Tornado's own drain does not see upgraded sockets.
                self.end_connection(EndReason.SHUTDOWN)
        except Exception as raised:
            exc = client_error(raised)
            if exc is None:
                self.log_exception(type(raised), raised, raised.__traceback__)
                exc = SquallError("Something went wrong on the server", "internal_error", 500)
            else:
                log.warning("a %s stream of user %s failed to open (%s)", self.request.path, self.user_id, exc.code)
            self.close(OPEN_FAILED_CODE, exc.code)

    def resume_position(self):
        """``(last message id, last notification id)`` to resume from; None means from now."""
        return None, None

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Close the connection, remembering the code we sent (for the connection log)."""
        self.sent_close_code = code
        super().close(code, reason)

    def closed_with(self) -> Optional[int]:
        """The code the client sent back, else the one we sent; 1006 for a connection that just dropped."""
        return self.close_code or self.sent_close_code or 1006

    def on_close(self) -> None:
        """The connection ends (unregistered; its presence ends). Before open(): free its slots now."""
        if self.connection is not None:
            self.release_address()
            self.connection.end(EndReason.CLOSED)
            return
        # A handshake aborted before its stream opened: Tornado calls on_close once, here, and
        # still calls open() afterwards; without this the user's slot stayed reserved (10 s) or,
        # once open() had registered the dead stream, taken for good.
        self._closed_early = True
        self.release_admission()
        self.release_address()

    def on_finish(self):
        """The handshake's answer is written: a 101 registers its stream next (synchronously, in
        open()); any other answer (Tornado's 400/403/426 after prepare) frees the slots now."""
        self.release_admission()
        if self.get_status() != 101:
            self._cork(False)  # a refusal leaves at once (the connection may be kept alive)
            self.release_address()

    def _cork(self, on: bool) -> None:
        """Cork (``on``) or uncork the handshake's socket (``CountedIOStream.cork``; others: nothing)."""
        conn = self.ws_connection if self.ws_connection is not None and self.ws_connection.stream is not None \
            else self.request.connection
        cork = getattr(getattr(conn, "stream", None), "cork", None)
        if cork is not None:
            cork(on)

    def send_event(self, event: Event) -> None:
        """Write the event's frame, built once and shared by every connection."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return
        frame = event.ws_frame if event.ws_frame is not None else event.set_ws_frame(ws_frame(event.data_bytes))
        try:
            stream = conn.stream
            if stream is None:  # no socket yet (never once the connection is registered)
                return
            unsent = write_direct(stream, frame)
        except StreamClosedError:
            return
        if unsent is not None:
            self.track_write(*unsent)

    def send_json(self, obj) -> None:
        """Send one JSON frame to this connection only."""
        self.send_event(Event(None, dumps(obj)))

    def send_error_frame(self, exc: SquallError, client_id=None) -> None:
        """``{"type":"error","code","message","client_id"}``; the connection stays open."""
        self.services.hub.metrics.error(exc.code)
        self.send_json({"type": "error", **exc.to_dict(), "client_id": client_id})

    def close_for(self, reason: EndReason) -> None:
        """Close with the reason's code (1001 shutdown, 4008 slow consumer, 4001 and the auth reason);
        nothing for a socket closed already, or a failed open (``open`` closes it with 1011)."""
        if reason.close_code is not None:
            self.close(reason.close_code, reason.close_text)

    def token_expiring(self, expires_at: int) -> None:
        """Warn the client, which answers with a ``refresh`` frame carrying a new token."""
        self.send_json({"type": "token_expiring", "expires_at": expires_at})

    def apply_refresh(self, frame: dict) -> None:
        """``{"type":"refresh","access_token":…}``: a new access token of the same user extends
        this connection; answered ``refreshed``. Raises SquallError (the connection stays open
        until the old token expires)."""
        token = frame.get("access_token")
        if not isinstance(token, str) or not token:
            raise ValidationError("'access_token' is required", "validation_error")
        services = self.services
        external = services.external
        if external is not None and external.owns(token):
            # The product's token: same ``sub`` (= same user) required. Settled in memory when
            # possible, else after a JWKS fetch or a profile update.
            claims = external.claims_now(token)
            if claims is None:
                spawn(self._refresh_external(token, frame), name="ws.refresh_external")
                return
            claims = services.sessions.check(claims)
        else:
            claims = services.sessions.check(services.auth.verify_access(token))
        self._extend(claims)

    async def _refresh_external(self, token: str, frame: dict) -> None:
        try:
            external = self.services.external
            if external is None:  # never: only ExternalAuth.owns() sends a token here
                raise Unauthorized("The access token is invalid", "invalid_token")
            self._extend(self.services.sessions.check(await external.claims(token)))
        except SquallError as exc:
            self.send_error_frame(exc, self.frame_client_id(frame))

    def _extend(self, claims) -> None:
        """Extend this connection with a verified token's ``claims`` (of this user). Raises SquallError."""
        services = self.services
        connection = self.connection
        if self.ws_connection is None or connection is None:
            return
        if claims.user_id != self.user_id:
            raise Forbidden("The token belongs to another user", "wrong_user")
        if services.users.token_version(claims.user_id) != claims.version:
            raise Unauthorized("The access token is invalid", "invalid_token")
        services.registry.reauthenticate(connection, claims.sid, claims.exp,
                                         services.sessions.warn_at(time.time(), claims.exp), claims.version)
        self.send_json({"type": "refreshed", "expires_at": claims.exp})

    pong_at = 0.0  # monotonic time of the last pong (set on the instance by the first one)

    def send_ping(self) -> bool:
        """Send a ping (the services' ping timer, one for every socket); False when the socket is closing."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return False
        try:
            conn.write_ping(b"")
        except (StreamClosedError, tornado.websocket.WebSocketClosedError):
            return False
        return True

    def check_pong(self, pinged_at: float) -> None:
        """Close the socket if no pong came since the ping sent at ``pinged_at`` (as Tornado's own pinging would)."""
        conn = self.ws_connection
        if conn is not None and not conn.is_closing() and self.pong_at < pinged_at:
            conn.close(reason="ping timed out")

    def on_pong(self, data: bytes) -> None:
        """A pong: the peer is alive."""
        self.pong_at = time.monotonic()

    def on_ping(self, data: bytes) -> None:
        """Protocol-level ping from the client (Tornado answers the pong itself)."""

    def parse_frame(self, raw):
        """The frame as a dict with a string ``type``. Raises SquallError (bad_json, unknown type)."""
        if isinstance(raw, bytes):
            raise BadJSON("Binary frames are not supported; send JSON text")
        try:
            frame = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadJSON("The frame is not valid JSON") from None
        if not isinstance(frame, dict):
            raise BadJSON("The frame must be a JSON object")
        try:
            check_text(frame)
            if not isinstance(frame.get("type"), str):
                raise ValidationError("The frame needs a string 'type'", "missing_type")
        except SquallError as exc:
            exc.client_id = self.frame_client_id(frame)  # echoed, whatever else is wrong with the frame
            raise
        return frame

    @staticmethod
    def frame_client_id(frame: dict):
        """The frame's ``client_id`` when it is a string that can be echoed back (else None)."""
        client_id = frame.get("client_id")
        if not isinstance(client_id, str):
            return None
        try:
            check_text(client_id)
        except SquallError:
            return None
        return client_id

