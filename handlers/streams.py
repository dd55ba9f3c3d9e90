"""What every live connection shares: subscription, buffered replay, slow-consumer limit.

A connection (WebSocket or SSE) is a *subscriber*: the registry calls ``deliver(event)``.
While a resume replays stored events, live events are buffered and flushed afterwards,
skipping any id the replay sent: no gap and no duplicate.
"""
from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import time
from typing import List, Optional, Tuple

from tornado import httputil

from tornado_app.errors import Forbidden, Unauthorized, ValidationError
from tornado_app.services.storage.ids import parse_int
from tornado_app.services.delivery.events import CHAT, NOTIFY, Event
from tornado_app.services.delivery.notifications import RESYNC
from tornado_app.tornado_io import drop_response_headers

log = logging.getLogger("squall.streams")
conn_log = logging.getLogger("squall.connections")

_conn_ids = itertools.count(1)
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
_HANDSHAKE_ONLY = ("claims", "resume", "open_args", "open_kwargs", "path_args", "path_kwargs", "_user_reserved")

class Subscriber(abc.ABC):
    """Mixin for connection handlers: identity, buffering during replay, pending-bytes limit."""

    streams: tuple = ()
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

    def authenticate_stream(self) -> int:
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
        admission.check_user(self.user_id)
        self._user_reserved = True
        context = self.request.connection.context
        peer = getattr(context, "remote_ip", None)
        proxies = getattr(self.application, "proxies", None)
        if peer is not None and proxies is not None and proxies.trusts(peer):
            # The HTTP server does not count a trusted proxy's connections (they are everyone's):
            # count this stream by the address the proxy forwarded.
            self._address_slot = admission.take_address(self.request.remote_ip)

    def release_admission(self) -> None:
        """The reserved per-user slot is taken by a registered stream, or the handshake ended (idempotent)."""
        if self._user_reserved:
            self._user_reserved = False
            self.services.admission.opened(self.user_id)

    def release_address(self) -> None:
        """This stream no longer counts against its forwarded address (idempotent)."""
        if self._address_slot is not None:
            key, self._address_slot = self._address_slot, None
            self.services.admission.release_address(key)

    def init_subscriber(self, user_id: int) -> None:
        """Set up the subscriber state for ``user_id`` (call before ``hub.add``)."""
        self.user_id = user_id
        self.conn_id = f"{self.services.origin}/{next(_conn_ids)}"
        self.opened_at = time.monotonic()
        # Only chat streams join chats; the others share one empty set (memory per connection).
        self.joined_chats = ()  # chat ids; kept by ConnectionRegistry.join/leave
        self._buffer: Optional[List[Event]] = None
        self._pending = 0
        self._max_pending = self.services.config.max_pending_bytes
        self._overflowed = False
        self._last_write = None  # resolves once everything written so far has left the process
        self._buffered_bytes = 0
        self.last_ids = {CHAT: 0, NOTIFY: 0}
        # Ids sent by the replay (at most replay_limit per kind): the live copy of one of them
        # may arrive during or after the replay, and must not be sent twice. Created by the
        # first replay: most connections never replay, and idle ones should stay small.
        self._replayed = None

    def deliver(self, event: Event) -> None:
        """Called by the registry for each event of this connection's streams."""
        if self._buffer is not None:
            self._buffer.append(event)
            self._buffered_bytes += len(event.data)
            if self._buffered_bytes > self._max_pending and not self._overflowed:
                # Live events pile up while a slow client takes its replay: the same limit holds.
                self._overflow(self._buffered_bytes)
            return
        self._emit(event)

    def _emit(self, event: Event) -> None:
        if self._overflowed:
            return
        if event.id is not None:
            if self._replayed is not None and event.id in self._replayed[event.kind]:
                return  # already sent by the replay
            # The cursor only moves forward. A live event with a lower id than one already
            # sent (committed earlier, published later: another process, a slower broker)
            # is still delivered, never dropped.
            if event.id > self.last_ids[event.kind]:
                self.last_ids[event.kind] = event.id
        self.send_event(event)

    @abc.abstractmethod
    def send_event(self, event: Event) -> None:
        """Write one event in this transport's framing."""

    def track_write(self, future, size: int) -> None:
        """Count ``size`` unsent bytes until ``future`` resolves; close a consumer that lags too far.

        The count is an upper bound: a write is counted whole until the stream has sent all of
        it. A write the stream finished at once (the kernel took the rest) is not counted.
        """
        if future.done():
            future.exception()  # a closed stream is handled by on_close; mark the error as seen
            return
        self._pending += size
        if self._pending > self._max_pending:
            self._overflow(self._pending)
            return
        self._last_write = future
        future.add_done_callback(lambda f: self._written(f, size))

    def _overflow(self, unsent: int) -> None:
        self._overflowed = True
        self.services.hub.metrics.slow_consumer[self.transport] += 1
        log.warning("closing a slow consumer (user %s): %d bytes unsent", self.user_id, unsent)
        self.close_slow_consumer()

    async def _drained(self) -> None:
        """Wait until at most half the limit is unsent.

        A replay paces itself to the client this way: it may hold far more than the limit
        (a client resuming after being closed as slow), and must not trip it.
        """
        while self._pending > self._max_pending // 2 and not self._overflowed:
            try:
                await self._last_write
            except Exception:  # the stream closed: on_close / on_connection_close clean up
                return
            await asyncio.sleep(0)  # let the done callbacks update the count

    def _written(self, future, size: int) -> None:
        self._pending -= size
        future.exception()  # a closed stream is handled by on_close; mark the error as seen

    @abc.abstractmethod
    def close_slow_consumer(self) -> None:
        """Drop this connection; the client resumes with its last event id."""

    def send_state(self, data: str) -> None:
        """Send an id-less state frame (``unread``, ``resync``)."""
        self.send_event(Event(NOTIFY, data))

    async def start_streams(self, last_message_id: Optional[int], last_notification_id: Optional[int]) -> None:
        """Subscribe, send the unread state, replay what was missed, then go live.

        For each stream kind: with a last id, replay stored events after it (or send
        ``resync`` when the server no longer has them all); without one, start from now.
        """
        services = self.services
        self._buffer = []
        replays, baselines = [], {}
        services.hub.add(self)
        self.release_admission()  # the registry counts it from here
        if conn_log.isEnabledFor(logging.INFO):
            conn_log.info("connection opened (%s)", self.transport,
                          extra={"transport": self.transport, "conn_id": self.conn_id, "user_id": self.user_id})
        try:
            await services.hub.subscribed(self)  # before the catch-up reads the database (issue 26)
            await self._catch_up(last_message_id, last_notification_id, replays, baselines)
        except BaseException:
            # Registry hygiene: a stream whose open failed (a database outage, a bad id) must
            # not stay registered with no socket behind it.
            self._buffer = None
            await self.stop_streams()
            raise
        # A fresh stream starts "now": everything that arrived since subscribing is sent, and
        # the baselines seed the cursors first, so that the composite ids of /sse/chat sent
        # from here on resume from now (not from 0) on both kinds.
        buffered, self._buffer = self._buffer, None
        for kind, baseline in baselines.items():
            self.last_ids[kind] = max(self.last_ids[kind], baseline)
        for event in buffered:
            self._emit(event)

    async def _catch_up(self, last_message_id, last_notification_id, replays, baselines) -> None:
        """The unread state, the baselines of fresh streams and the replays of resumed ones."""
        services = self.services
        latest = None
        if NOTIFY in self.streams:
            latest = await self.send_initial_state(last_notification_id)
        if CHAT in self.streams:
            if last_message_id is None:
                baselines[CHAT] = await services.chat.latest_message_id()
            else:
                self.last_ids[CHAT] = last_message_id
                replays.append((CHAT, await services.chat.replay_messages(
                    self.user_id, last_message_id, services.config.replay_limit)))
        if NOTIFY in self.streams:
            if last_notification_id is None:
                if latest is not None:
                    baselines[NOTIFY] = latest
                elif self.notify_baseline:
                    baselines[NOTIFY] = await services.notifications.latest_id(self.user_id)
            else:
                self.last_ids[NOTIFY] = last_notification_id
                replays.append((NOTIFY, await services.notifications.replay(
                    self.user_id, last_notification_id)))
        metrics = services.hub.metrics
        for kind, rows in replays:
            if rows is None:
                metrics.resyncs += 1
                self.send_state(RESYNC)
                # The client reloads over HTTP; this kind of the stream runs from now on,
                # so the next resume (a long-poll's very next request) starts from here.
                baselines[kind] = await (services.chat.latest_message_id() if kind == CHAT
                                         else services.notifications.latest_id(self.user_id))
                continue
            metrics.replayed[kind] += len(rows)
            if self._replayed is None:
                self._replayed = {CHAT: set(), NOTIFY: set()}
            for event_id, data in rows:
                await self._drained()
                self._emit(Event(kind, data, event_id))
                self._replayed[kind].add(event_id)

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
        if headers_sent:
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
        state, latest = await self.services.open_state.state(self.user_id, want)
        self.send_state(state)
        return latest

    async def stop_streams(self) -> None:
        """Unsubscribe (idempotent); the first call logs the close with its duration and code."""
        if self in self.services.registry.connections and conn_log.isEnabledFor(logging.INFO):
            duration_ms = round(1000 * (time.monotonic() - self.opened_at), 1)
            code = self.closed_with()
            conn_log.info("connection closed (%s, %.0f ms, code %s)", self.transport, duration_ms, code,
                          extra={"transport": self.transport, "conn_id": self.conn_id, "user_id": self.user_id,
                                 "duration_ms": duration_ms, "close_code": code})
        self.release_address()
        await self.services.hub.remove(self)
