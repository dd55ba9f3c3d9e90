"""One live connection of one user, whatever carries it: cursors, replay, dedup, backpressure, end.

A ``Connection`` is what the registry holds and delivers to. It knows no socket: it writes
through its ``Transport`` (the WebSocket, SSE and long-poll handlers are the three adapters),
and every way a connection ends goes through one ``end(reason)``, which runs once.

Contracts:

* **Replay then live, no gap, no duplicate.** ``start`` subscribes first, then reads the state
  and replays what the client missed; live events that arrive meanwhile are buffered, and sent
  after the replay, skipping every id the replay sent. Past ``replay_limit`` missed events (the
  store answers None) the client gets ``resync`` and that stream runs from now.
* **Backpressure.** Bytes a transport could not write at once are counted (``track_write``)
  until they leave; past ``max_pending_bytes`` unsent, or buffered during a replay, the
  connection ends with ``SLOW_CONSUMER``. A replay paces itself to half the limit.
* **One end.** ``end(reason)`` runs once (a second call, or the transport reporting its close
  afterwards, does nothing): it stops delivery, asks the transport to say goodbye in its own
  framing (``EndReason`` names the close code and frame of each reason, as docs/protocol.md
  documents them), logs the close, and unregisters from the hub.

Per-connection memory matters (idle connections are most of them): slots, groups that start
as tuples, and nothing allocated per event beyond what the transport writes.
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from ...tasks import spawn
from .events import CHAT, NOTIFY, Event

if TYPE_CHECKING:
    from .hub import Hub
    from .registry import Group

log = logging.getLogger("squall.streams")
conn_log = logging.getLogger("squall.connections")

RESYNC = '{"type":"resync"}'  # the client reloads over HTTP: the server no longer has all it missed

_conn_ids = itertools.count(1)


class EndReason(enum.Enum):
    """Why a connection ends, and how each transport says so (docs/protocol.md, "Close codes").

    ``close_code``/``close_text`` are the WebSocket close frame (None: the transport is already
    closed, or the adapter answers itself); ``auth`` reasons are also an
    ``{"type":"auth_expired","reason":…}`` event on SSE and long-polls, before they end.
    """

    CLOSED = ("closed", None, "")  # the client went away, the transport closed, or a poll answered
    SHUTDOWN = ("shutdown", 1001, "server shutting down")
    BROKER_GAP = ("broker_gap", 1001, "server shutting down")  # events may be lost: the client resumes
    SLOW_CONSUMER = ("slow_consumer", 4008, "slow consumer: reconnect and resume")
    # The credentials ended: 4001 with the reason (the value a client reads), new credentials needed.
    LOGGED_OUT = ("logged_out", 4001, "logged_out")
    TOKEN_EXPIRED = ("token_expired", 4001, "token_expired")
    REFRESH_REUSED = ("refresh_reused", 4001, "refresh_reused")
    ACCOUNT_DISABLED = ("account_disabled", 4001, "account_disabled")
    ACCOUNT_DELETED = ("account_deleted", 4001, "account_deleted")
    # The stream could not start: the adapter closes it (WebSocket 1011 with the error's code),
    # as only it maps the exception to its public code.
    OPEN_FAILED = ("open_failed", None, "")

    def __init__(self, label: str, close_code: Optional[int], close_text: str) -> None:
        self.label = label
        self.close_code = close_code
        self.close_text = close_text
        self.auth = close_code == 4001

    @classmethod
    def for_auth(cls, reason: str) -> "EndReason":
        """The auth reason named ``reason`` (``logged_out``…); an unknown name is ``LOGGED_OUT``."""
        return _AUTH_REASONS.get(reason, cls.LOGGED_OUT)

    def auth_frame(self) -> str:
        """``{"type":"auth_expired","reason":…}``: what SSE and long-polls send for an auth reason."""
        return '{"type":"auth_expired","reason":"%s"}' % self.label


_AUTH_REASONS: Dict[str, EndReason] = {r.label: r for r in EndReason if r.auth}


class Transport(Protocol):
    """What a ``Connection`` needs of the thing that carries it (a WebSocket, an SSE stream, a poll).

    Every method is called on the event loop and must not raise for a closed transport.
    """

    notify_baseline: bool  # whether a fresh stream needs the newest notification id as its cursor

    def send_event(self, event: Event) -> None:
        """Write ``event`` in this transport's framing; unsent bytes go to ``Connection.track_write``."""

    async def send_initial_state(self, last_notification_id: Optional[int]) -> Optional[int]:
        """Send the state a new stream starts with (``unread``); the newest notification id when
        the stream needs it as its baseline, else None."""

    def close_for(self, reason: EndReason) -> None:
        """Say goodbye for ``reason`` in this transport's framing (close code, last frame), once."""

    async def said_goodbye(self) -> None:
        """Return once what ``close_for`` asked is written to the socket: a waiting poll's answer
        is built in its request's own coroutine, so a server that stops must wait for it before
        it closes the sockets. At once for the transports that write the goodbye in ``close_for``."""

    def closed_with(self) -> Optional[int]:
        """The WebSocket close code of a closed connection (None for event streams and polls)."""

    def heartbeat(self) -> None:
        """Keep an idle stream open through proxies (SSE's ``: ping``); nothing elsewhere."""

    def send_ping(self) -> bool:
        """Send a protocol ping; True when one was sent (WebSocket), False otherwise."""

    def check_pong(self, pinged_at: float) -> None:
        """Close the transport if no pong came since the ping sent at ``pinged_at``."""

    def token_expiring(self, expires_at: int) -> None:
        """Warn the client its token expires at ``expires_at`` (a WebSocket frame; nothing elsewhere)."""


class _Ended:
    """The transport of an ended connection: every call is a no-op (and no cycle keeps the adapter)."""

    notify_baseline = False

    def send_event(self, event: Event) -> None:
        return None

    async def send_initial_state(self, last_notification_id: Optional[int]) -> Optional[int]:
        return None

    def close_for(self, reason: EndReason) -> None:
        return None

    async def said_goodbye(self) -> None:
        return None

    def closed_with(self) -> Optional[int]:
        return None

    def heartbeat(self) -> None:
        return None

    def send_ping(self) -> bool:
        return False

    def check_pong(self, pinged_at: float) -> None:
        return None

    def token_expiring(self, expires_at: int) -> None:
        return None


ENDED: Transport = _Ended()

Rows = Optional[Sequence[Tuple[int, str]]]  # (id, JSON text) in id order; None: more than the limit


class MessageHistory(Protocol):
    """Stored messages, as a chat stream replays them (``ChatService``)."""

    async def latest_message_id(self) -> int: ...

    async def replay_messages(self, user_id: int, after_id: int, limit: int) -> Rows: ...


class NotificationHistory(Protocol):
    """Stored notifications, as a notification stream replays them (``NotificationService``)."""

    async def latest_id(self, user_id: int) -> int: ...

    async def replay(self, user_id: int, after_id: int) -> Rows: ...


class StreamLimits(Protocol):
    """The settings a connection reads (``Config``)."""

    @property
    def max_pending_bytes(self) -> int: ...

    @property
    def replay_limit(self) -> int: ...


class ConnectionServices(Protocol):
    """What a connection uses of the services (``Services`` fits; a test passes its own)."""

    @property
    def hub(self) -> "Hub": ...

    @property
    def chat(self) -> MessageHistory: ...

    @property
    def notifications(self) -> NotificationHistory: ...

    @property
    def config(self) -> StreamLimits: ...

    @property
    def admission(self) -> OpeningSlots: ...

    @property
    def ids_in_commit_order(self) -> bool: ...


class OpeningSlots(Protocol):
    """Where opening streams wait their turn (``StreamAdmission``: ``opening_slots``)."""

    @property
    def opening_slots(self) -> asyncio.Semaphore: ...


class Connection:
    """One live connection of ``user_id`` carrying ``streams`` (``events.CHAT`` / ``events.NOTIFY``)."""

    __slots__ = ("services", "wire", "user_id", "conn_id", "transport", "streams", "opened_at",
                 "joined_chats", "sid", "token_exp", "token_warn_at", "token_version", "last_chat",
                 "last_notify",
                 "ended", "_buffer", "_buffered_bytes", "_pending", "_last_write", "_replayed", "_left",
                 "_removal", "_floor")  # each slot is 8 bytes on every idle connection: no more than needed

    def __init__(self, services: ConnectionServices, wire: Transport, user_id: int, streams: Tuple[str, ...],
                 transport: str, sid: Optional[str] = None, token_exp: Optional[int] = None,
                 token_warn_at: Optional[int] = None, token_version: Optional[int] = None,
                 origin: str = "") -> None:
        self.services = services
        self.wire = wire  # ENDED once the connection has ended
        self.user_id = user_id
        self.conn_id = f"{origin}/{next(_conn_ids)}"
        self.transport = transport  # metrics label: ws_chat, ws_notifications, sse_chat, poll_chat…
        self.streams = streams
        self.opened_at = time.monotonic()
        # Only chat streams join chats; the others keep the shared empty tuple (memory per connection).
        self.joined_chats: Group = ()  # chat ids; kept by ConnectionRegistry.join/leave
        self.sid = sid  # the session of the token the connection was opened (or refreshed) with
        self.token_exp = token_exp
        self.token_warn_at = token_warn_at
        self.token_version = token_version
        # The cursors: the last message id and the last notification id sent (two ints, not a dict
        # per connection: 200 bytes less on every idle one).
        self.last_chat = 0
        self.last_notify = 0
        self.ended: Optional[EndReason] = None  # once set, nothing more is emitted
        self._buffer: Optional[List[Event]] = None  # live events held while the replay runs
        self._buffered_bytes = 0
        self._pending = 0  # bytes written but not yet sent (an upper bound)
        self._last_write: Optional[asyncio.Future] = None  # resolves once everything written so far left
        # Ids sent by the replay (at most replay_limit per kind): the live copy of one of them may
        # arrive during or after the replay, and must not be sent twice. Created by the first
        # replay: most connections never replay, and idle ones should stay small.
        self._replayed: Optional[Dict[Optional[str], Set[int]]] = None
        # (chat, notification) ids the client had when it resumed, when ids are committed in
        # id order: a live copy of one of them arriving late is not sent again (see _emit)
        self._floor: Optional[Tuple[int, int]] = None
        self._left: Optional[List[int]] = None  # chat ids whose presence ended with it, not yet announced
        self._removal: Optional[asyncio.Task] = None  # announces them unless ``finished`` does first

    # Delivery (the hot path) ----------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Called by the registry for each event of this connection's streams."""
        if self._buffer is not None:
            self._buffer.append(event)
            self._buffered_bytes += len(event.data)
            if self._buffered_bytes > self.services.config.max_pending_bytes and self.ended is None:
                # Live events pile up while a slow client takes its replay: the same limit holds.
                self._overflow(self._buffered_bytes)
            return
        self._emit(event)

    def _emit(self, event: Event) -> None:
        if self.ended is not None:
            return
        if event.id is not None:
            if self._replayed is not None and event.id in self._replayed[event.kind]:
                return  # already sent by the replay
            floor = self._floor
            if floor is not None and event.id <= (floor[0] if event.kind == CHAT else floor[1]):
                # The client resumed after this id: with ids committed in id order, its previous
                # connection's replay or live stream had it (the publish that delivers it live
                # came after that replay read the commit: a long-poll's next request meets it).
                return
            # The cursor only moves forward. A live event with a lower id than one already
            # sent (committed earlier, published later: another process, a slower broker)
            # is still delivered, never dropped.
            if event.kind == CHAT:
                if event.id > self.last_chat:
                    self.last_chat = event.id
            elif event.id > self.last_notify:
                self.last_notify = event.id
        self.wire.send_event(event)

    def cursor(self, kind: str) -> int:
        """The last id of ``kind`` (``events.CHAT`` / ``events.NOTIFY``) sent to this connection."""
        return self.last_chat if kind == CHAT else self.last_notify

    def _move_cursor(self, kind: str, event_id: int) -> None:
        """Set the cursor of ``kind`` to ``event_id`` (where a resume starts, or a baseline)."""
        if kind == CHAT:
            self.last_chat = event_id
        else:
            self.last_notify = event_id

    def send_state(self, data: str) -> None:
        """Send an id-less state frame (``unread``, ``resync``)."""
        self.wire.send_event(Event(NOTIFY, data))

    def track_write(self, future: "asyncio.Future", size: int) -> None:
        """Count ``size`` unsent bytes until ``future`` resolves; end a consumer that lags too far.

        The count is an upper bound: a write is counted whole until the stream has sent all of
        it. A write the stream finished at once (the kernel took the rest) is not counted.
        """
        if future.done():
            future.exception()  # a closed stream is handled by its close; mark the error as seen
            return
        self._pending += size
        if self._pending > self.services.config.max_pending_bytes:
            self._overflow(self._pending)
            return
        self._last_write = future
        future.add_done_callback(lambda f: self._written(f, size))

    def _written(self, future: "asyncio.Future", size: int) -> None:
        self._pending -= size
        future.exception()  # a closed stream is handled by its close; mark the error as seen

    def _overflow(self, unsent: int) -> None:
        if self.ended is not None:  # an ended connection's last bytes (a goodbye frame) lag: no matter
            return
        self.services.hub.metrics.slow_consumer[self.transport] += 1
        log.warning("closing a slow consumer (user %s): %d bytes unsent", self.user_id, unsent)
        self.end(EndReason.SLOW_CONSUMER)

    @property
    def overflowed(self) -> bool:
        """True once the connection was found too slow (it ended, and gets nothing more)."""
        return self.ended is EndReason.SLOW_CONSUMER

    @property
    def pending(self) -> int:
        """Bytes written to the transport and not yet sent (an upper bound)."""
        return self._pending

    # Timers (one for every connection, in the services) -------------------------------------

    def heartbeat(self) -> None:
        """The heartbeat timer: keep an idle stream open (not during a replay: it is busy)."""
        if self._buffer is None:
            self.wire.heartbeat()

    def ping(self) -> bool:
        """The ping timer: a protocol ping where the transport has one; True when sent."""
        return self.wire.send_ping()

    def check_pong(self, pinged_at: float) -> None:
        """Close the transport if no pong answered the ping sent at ``pinged_at``."""
        self.wire.check_pong(pinged_at)

    def token_expiring(self) -> None:
        """The expiry wheel's warning: the token expires soon (a WebSocket may refresh it)."""
        if self.token_exp is not None:
            self.wire.token_expiring(self.token_exp)

    # Start: subscribe, state, replay, live ----------------------------------------------------

    async def start(self, last_message_id: Optional[int], last_notification_id: Optional[int],
                    registered: Optional[Callable[[], None]] = None) -> None:
        """Subscribe, send the unread state, replay what was missed, then go live.

        ``registered`` is called once the registry counts the connection (the adapter frees the
        slot its handshake reserved).

        For each stream kind: with a last id, replay stored events after it (or send
        ``resync`` when the server no longer has them all); without one, start from now.
        If anything fails (the database goes away), the connection ends with ``OPEN_FAILED``
        (unregistered: no stream stays registered with nothing behind it) and the error is raised
        for the adapter to answer.
        """
        self._buffer = []
        if self.services.ids_in_commit_order and (last_message_id is not None or last_notification_id is not None):
            self._floor = (last_message_id or 0, last_notification_id or 0)
        replays: List[Tuple[str, Rows]] = []
        baselines: Dict[str, int] = {}
        self.services.hub.add(self)
        if registered is not None:
            registered()
        if conn_log.isEnabledFor(logging.INFO):
            conn_log.info("connection opened (%s)", self.transport,
                          extra={"transport": self.transport, "conn_id": self.conn_id, "user_id": self.user_id})
        # A few streams open at a time (StreamAdmission.opening_slots); live events that arrive
        # meanwhile wait in the buffer like those that arrive during the catch-up.
        async with self.services.admission.opening_slots:
            if self.ended is not None:  # the client left while waiting its turn
                return
            try:
                # The broker routes this user's envelopes here before the catch-up reads the database:
                # nothing stored after that read can miss this connection (routing by user, issue 26).
                await self.services.hub.subscribed(self)
                await self._catch_up(last_message_id, last_notification_id, replays, baselines)
            except BaseException:
                self.end(EndReason.OPEN_FAILED)
                await self.finished()
                raise
            if self.ended is not None:
                return
            # A fresh stream starts "now": everything that arrived since subscribing is sent, and
            # the baselines seed the cursors first, so that the composite ids of /sse/chat sent
            # from here on resume from now (not from 0) on both kinds.
            buffered, self._buffer = self._buffer, None
            for kind, baseline in baselines.items():
                self._move_cursor(kind, max(self.cursor(kind), baseline))
            for event in buffered or ():
                self._emit(event)

    async def _catch_up(self, last_message_id: Optional[int], last_notification_id: Optional[int],
                        replays: List[Tuple[str, Rows]], baselines: Dict[str, int]) -> None:
        """The unread state, the baselines of fresh streams and the replays of resumed ones."""
        services = self.services
        chat, notifications = services.chat, services.notifications
        latest = None
        if NOTIFY in self.streams:
            latest = await self.wire.send_initial_state(last_notification_id)
        if CHAT in self.streams:
            if last_message_id is None:
                baselines[CHAT] = await chat.latest_message_id()
            else:
                self.last_chat = last_message_id
                replays.append((CHAT, await chat.replay_messages(self.user_id, last_message_id,
                                                                 services.config.replay_limit)))
        if NOTIFY in self.streams:
            if last_notification_id is None:
                if latest is not None:
                    baselines[NOTIFY] = latest
                elif self.wire.notify_baseline:
                    baselines[NOTIFY] = await notifications.latest_id(self.user_id)
            else:
                self.last_notify = last_notification_id
                replays.append((NOTIFY, await notifications.replay(self.user_id, last_notification_id)))
        metrics = services.hub.metrics
        for kind, rows in replays:
            if rows is None:
                metrics.resyncs += 1
                self.send_state(RESYNC)
                # The client reloads over HTTP; this kind of the stream runs from now on,
                # so the next resume (a long-poll's very next request) starts from here.
                baselines[kind] = await (chat.latest_message_id() if kind == CHAT
                                         else notifications.latest_id(self.user_id))
                continue
            metrics.replayed[kind] += len(rows)
            if self._replayed is None:
                self._replayed = {CHAT: set(), NOTIFY: set()}
            replayed = self._replayed[kind]
            for event_id, data in rows:
                await self._drained()
                if self.ended is not None:
                    return
                self._emit(Event(kind, data, event_id))
                replayed.add(event_id)

    async def _drained(self) -> None:
        """Wait until at most half the limit is unsent.

        A replay paces itself to the client this way: it may hold far more than the limit
        (a client resuming after being closed as slow), and must not trip it.
        """
        half = self.services.config.max_pending_bytes // 2
        while self._pending > half and self.ended is None:
            last = self._last_write
            if last is None:
                return
            try:
                await last
            except Exception:  # the stream closed: its close ends the connection
                return
            await asyncio.sleep(0)  # let the done callbacks update the count

    # The one end --------------------------------------------------------------------------------

    def end(self, reason: EndReason) -> None:
        """End this connection for ``reason``; only the first call does anything.

        Delivery stops at once; the transport says goodbye in its framing; the close is logged
        (when the connection was registered) and the hub unregisters it at once; the presence it
        ended is announced to the broker in a task (``finished`` awaits it). The transport is
        dropped: no reference cycle outlives the end.
        """
        if self.ended is not None:
            return
        self.ended = reason  # nothing more is emitted (and a replay stops pacing)
        self._buffer = None
        wire, self.wire = self.wire, ENDED
        try:
            wire.close_for(reason)
        except Exception:
            log.exception("closing a %s transport (%s)", self.transport, reason.label)
        hub = self.services.hub
        if self not in hub.registry.connections:
            return
        if conn_log.isEnabledFor(logging.INFO):
            duration_ms = round(1000 * (time.monotonic() - self.opened_at), 1)
            code = wire.closed_with()
            conn_log.info("connection closed (%s, %.0f ms, code %s)", self.transport, duration_ms, code,
                          extra={"transport": self.transport, "conn_id": self.conn_id, "user_id": self.user_id,
                                 "duration_ms": duration_ms, "close_code": code})
        left = hub.detach(self)  # unregistered now: nothing reaches it from here
        if left:  # presence that ended here: the other processes learn it in a task (or in finished())
            self._left = left
            self._removal = spawn(self._announce(), name="connection.left")

    async def _announce(self) -> None:
        left, self._left = self._left, None
        if left:
            await self.services.hub.announce_left(self.user_id, left)

    async def finished(self) -> None:
        """Wait until the presence an ended connection held is announced (at once when it held none).

        Announces it here when the task has not begun yet: an adapter that waits for it (an SSE
        stream before ending its body, a poll before answering) loses no turn of the loop.
        """
        if self._left is not None:
            await self._announce()
            return
        removal = self._removal
        if removal is not None and not removal.done():
            await asyncio.shield(removal)

