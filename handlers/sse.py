"""Server-Sent Events: ``/sse/notifications`` and ``/sse/chat`` (chat frames + notifications).

Each event is ``id: …`` (where it has one) and one ``data:`` line of the same JSON the
WebSocket sends. Resume from the ``Last-Event-ID`` header or ``?last_event_id=``.
On ``/sse/chat`` the id is ``"M-N"``: the last message id and the last notification id
this stream has sent, so one ``Last-Event-ID`` resumes both.
"""
from __future__ import annotations

import asyncio
import logging
import random

from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from tornado_app.errors import Unavailable
from tornado_app.services.delivery.connection import EndReason
from tornado_app.services.delivery.events import CHAT, NOTIFY, Event, sse_encode
from tornado_app.tasks import spawn
from tornado_app.tornado_io import break_handler_cycles

from .base import BaseHandler, authenticated, client_error
from .fastwrite import write_direct
from .streams import Subscriber, parse_last_event_id

log = logging.getLogger("squall.sse")

PING = b": ping\n\n"
LAST_CHUNK = b"0\r\n\r\n"  # the end of a chunked body
END_LINGER = 10.0  # seconds a detached stream's last bytes may take to leave before it is closed anyway


class StreamEnd:
    """A one-shot "the stream has ended" flag to await: one Future, far lighter than asyncio.Event."""

    __slots__ = ("_future",)

    def __init__(self):
        self._future = asyncio.get_running_loop().create_future()

    def is_set(self) -> bool:
        """True once the stream has ended."""
        return self._future.done()

    def set(self) -> None:
        """End the stream (idempotent)."""
        if not self._future.done():
            self._future.set_result(None)

    def wait(self) -> "asyncio.Future":
        """An awaitable that resolves when the stream ends."""
        return self._future


def http_chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


PING_CHUNK = http_chunk(PING)  # one object shared by every chunked stream


class BaseSSEHandler(Subscriber, BaseHandler):
    """One event stream: headers, ``retry:``, resume, heartbeats, close on disconnect."""

    accepts_ticket = True  # a stream route (see ServicesMixin.accepts_ticket)
    head_like_get = False  # HEAD cannot carry a stream: 405

    def prepare(self):
        """No body checks (a GET stream); 503 while shutting down, like the WebSocket upgrade.

        Authenticates first: only a valid credential takes from the handshake budget.
        """
        if self.is_preflight():  # CORS: answered by ``options``, without a credential (handlers/base.py)
            return
        if self.services.closing:
            raise Unavailable("The server is shutting down", "shutting_down")
        self.authenticate_stream()
        self.check_fetch_dest()
        self.services.admission.check_rate()

    def resume_ids(self):
        """``(message id, notification id)`` from ``Last-Event-ID`` or ``?last_event_id=``."""
        raw = self.request.headers.get("Last-Event-ID") or self.get_query_argument("last_event_id", None)
        return parse_last_event_id(raw)

    async def open_stream(self, last_message_id, last_notification_id) -> None:
        """Send the headers and ``retry:``, then subscribe and wait until the client goes away."""
        config = self.services.config
        self.admit()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self.set_header("Connection", "keep-alive")
        self.clear_header("Content-Encoding")
        self._closed = StreamEnd()
        # Random per stream: after a restart, clients do not all come back in the same instant.
        retry_ms = random.randint(config.sse_retry_ms, max(config.sse_retry_ms, config.sse_retry_max_ms))
        self.write(f"retry: {retry_ms}\n\n")
        connection = self.request.connection
        if not isinstance(connection, HTTP1Connection):  # never: Tornado serves HTTP/1 only
            raise RuntimeError("an SSE stream needs an HTTP/1 connection")
        # The head, ``retry:`` and the first frames leave in one segment: the socket is corked
        # until the stream has started (``CountedIOStream.cork``; the kernel sends what it holds
        # after 200 ms anyway), as a WebSocket's 101 is.
        cork = getattr(connection.stream, "cork", None)
        if cork is not None:
            cork(True)
        try:
            await self.flush()
        except StreamClosedError:
            return
        # Tornado chunks a body without Content-Length for HTTP/1.1 clients; events written
        # straight to the stream are framed the same way (each event is one chunk).
        self._chunked = self.request.version == "HTTP/1.1"
        self._stream = connection.stream
        self._ping = PING_CHUNK if self._chunked else PING
        try:
            try:
                await self.start_streams(last_message_id, last_notification_id)
            finally:
                if cork is not None:
                    cork(False)
            await self.on_open()
        except Exception as raised:  # the connection ended (OPEN_FAILED) or ends here
            await self.stop_streams()
            known = client_error(raised)
            if known is None:
                raise
            # The headers are sent: end the stream; the client reconnects after ``retry:``.
            log.warning("a %s stream of user %s failed to open (%s)", self.request.path, self.user_id, known.code)
            return
        except BaseException:  # cancelled (shutdown): unregistered all the same
            await self.stop_streams()
            raise
        # Live. No coroutine waits for the end (its frames would stay alive for the life of the
        # stream: memory per idle connection); the end flag's callback unsubscribes and ends it.
        # Registered first: whatever happens from here, an ended stream is unregistered.
        self._closed.wait().add_done_callback(self._ended)
        self.shed_handshake(headers_sent=True)
        self._take_stream()

    def _take_stream(self) -> None:
        """Take the socket from Tornado's HTTP layer once the stream is live, as a WebSocket does.

        Tornado keeps a response in progress alive with everything that served its request:
        the coroutines reading it and their task, the request head as read (the token in its
        URL), the parsed headers and the delegates, about 4 KB per idle stream. Events already
        go straight to the socket; from here the heartbeats and the end of the stream do too,
        and the connection closes when the stream ends.
        """
        self.application.log_request(self)  # the access line now, as for a WebSocket's 101
        stream = self.detach()
        self.request.connection = None
        # Nothing renders a template from here: drop the handler's reference cycle through its
        # UI modules (finish() would have), so an ended stream is freed without the collector.
        break_handler_cycles(self)
        if stream.closed() or self.services.closing:
            # Gone already, or the server began to shut down after this stream passed prepare()
            # (its shutdown closed the streams registered then; a detached one it cannot see).
            self._closed.set()
        else:
            stream.set_close_callback(self.on_connection_close)

    def _ended(self, _future) -> None:
        spawn(self._end(), name="sse.end")

    async def _end(self) -> None:
        """The stream ended (client gone, or its connection ended): unsubscribe, then end the body."""
        try:
            await self.stop_streams()
        finally:
            self._end_body()

    def _end_body(self) -> None:
        """End the body (the terminating chunk of a chunked one), then close the connection once
        everything written has left (the last events, ``auth_expired``), or after ``END_LINGER``."""
        stream = self._stream
        if stream.closed():
            return
        try:
            if self._chunked:
                unsent = write_direct(stream, LAST_CHUNK)
            else:  # an HTTP/1.0 body ends with the connection: once what is queued has left
                unsent = (stream.write(b""), 0) if stream.writing() else None
        except StreamClosedError:
            return
        if unsent is None:
            stream.close()
            return
        unsent[0].add_done_callback(lambda _f: stream.close())
        asyncio.get_running_loop().call_later(END_LINGER, stream.close)

    async def on_open(self) -> None:
        """Hook after subscribing (``/sse/chat`` joins its chat here)."""

    def on_connection_close(self) -> None:
        """The client went away: end the stream."""
        if hasattr(self, "_closed"):
            self._closed.set()

    def event_bytes(self, event: Event) -> bytes:
        """The SSE encoding of ``event`` for this stream."""
        return event.sse

    def shared_encoding(self, event: Event) -> bool:
        """True when ``event`` is encoded the same for every stream of this kind (cached on it)."""
        return True

    def wire_bytes(self, event: Event) -> bytes:
        """The event as it goes on the wire: its SSE encoding, as one HTTP chunk when chunked."""
        if not self._chunked:
            return self.event_bytes(event)
        if self.shared_encoding(event):
            chunk = event.sse_chunk
            if chunk is None:
                chunk = event.sse_chunk = http_chunk(event.sse)
            return chunk
        return http_chunk(self.event_bytes(event))

    def send_event(self, event: Event) -> None:
        """Write one event straight to the connection (no per-event flush machinery)."""
        if self._closed.is_set():
            return
        chunk = self.wire_bytes(event)
        try:
            unsent = write_direct(self._stream, chunk)
        except StreamClosedError:
            self._closed.set()
            return
        if unsent is not None:
            self.track_write(*unsent)

    def heartbeat(self) -> None:
        """Write a ``: ping`` comment so proxies keep an idle stream open (not called during a replay)."""
        if not self._closed.is_set():
            try:
                unsent = write_direct(self._stream, self._ping)
            except StreamClosedError:
                self._closed.set()
                return
            if unsent is not None:
                self.track_write(*unsent)

    def close_for(self, reason: EndReason) -> None:
        """End the stream; the client reconnects and resumes with Last-Event-ID.

        A slow consumer's connection is dropped at once (what is queued for it would only lag
        further). An auth reason is said first in an ``auth_expired`` event, and the stream
        ends with no error status, so an EventSource does not loop on 401s; the client
        reconnects with new credentials. Otherwise (shutdown, broker gap, client gone) the
        body ends after what is queued.
        """
        if self._closed.is_set():
            return
        if reason is EndReason.SLOW_CONSUMER:
            self._closed.set()
            self._stream.close()
            return
        if reason.auth:
            self.send_event(Event(None, reason.auth_frame()))
        self._closed.set()

    def on_finish(self) -> None:
        # An answer without a live stream (an error, a failed open): its slots are free now.
        self.release_admission()
        self.release_address()
        if hasattr(self, "_closed"):
            self._closed.set()


class NotificationStreamHandler(BaseSSEHandler):
    """``GET /sse/notifications``: the notification stream as Server-Sent Events."""

    streams = (NOTIFY,)
    transport = "sse_notifications"
    notify_baseline = False  # every event carries its own id: no cursor to seed

    @authenticated
    async def get(self):
        """401 JSON for a bad token; otherwise the stream (resumed from Last-Event-ID)."""
        _, last_n = self.resume_ids()
        await self.open_stream(None, last_n)


class ChatStreamHandler(BaseSSEHandler):
    """``GET /sse/chat``: chat frames and notifications; ``?chat_id=N`` is presence in chat N."""

    streams = (CHAT, NOTIFY)
    transport = "sse_chat"

    @authenticated
    async def get(self):
        """The combined stream; ids are ``"M-N"`` so one Last-Event-ID resumes both kinds."""
        self.active_chat = None
        raw_chat = self.get_query_argument("chat_id", None)
        if raw_chat:
            self.active_chat = self.int_argument("chat_id")
            await self.services.chat.require_member(self.user_id, self.active_chat)
        last_m, last_n = self.resume_ids()
        await self.open_stream(last_m, last_n)

    async def on_open(self) -> None:
        if self.active_chat is not None and self.connection is not None:
            await self.services.hub.join(self.connection, self.active_chat)

    def shared_encoding(self, event: Event) -> bool:
        """Events with an id carry this stream's own ``M-N`` id; the others are shared."""
        return event.id is None

    def event_bytes(self, event: Event) -> bytes:
        if event.id is None:
            return event.sse
        conn = self.connection
        cursors = "0-0" if conn is None else f"{conn.last_chat}-{conn.last_notify}"
        return sse_encode(event.data, cursors)


ROUTES = [
    (r"/sse/notifications", NotificationStreamHandler),
    (r"/sse/chat", ChatStreamHandler),
]
