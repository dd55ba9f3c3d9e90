"""The hub: services publish events here; it routes them through the broker to the processes of their users.

Flow: service --publish--> Hub --envelope--> Broker --> Hub._receive (each process)
      --> ConnectionRegistry.deliver --> connection.deliver (write or buffer).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Set

from ...tasks import spawn
from .broker import Broker
from .connection import EndReason
from .control import ControlDispatch, ControlError, ControlMessage, decode, encode
from .events import NOTIFY, Event
from ..operations.metrics import Metrics
from .registry import ConnectionRegistry, Group, PresenceHolder

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("squall.hub")

CONTROL = "ctl"  # envelope kind of control messages (sessions), beside events.CHAT and events.NOTIFY
# Pseudo chat id of "has a notification stream open" (real chat ids start at 1): its presence
# claims cross processes like chat presence, and Web Push asks it (Hub.online_users).
ONLINE = 0


class OnlineClaim:
    """Stands in the registry's presence count for a user's notification streams of this process
    (a ``registry.PresenceHolder``)."""

    __slots__ = ("user_id", "joined_chats", "streams")

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.joined_chats: Group = ()  # what ConnectionRegistry.join/leave keep for a connection
        self.streams = 0  # this process's notification streams of the user


@dataclass(frozen=True, slots=True)
class HubListeners:
    """What the services built on the hub hear from it; given to ``Hub.start``, as they are built after it."""

    #: applies every control message (``ControlDispatch``: sessions, users, preferences, chat members)
    control: ControlDispatch
    #: ``(chat_id, user_ids) -> user_ids``: drops members removed from a chat from its events
    #: (ChatService.admitted), so that an event published on another process with an older
    #: member list never reaches them (issue 22: removal takes effect at once everywhere)
    chat_gate: Callable[[int, List[int]], List[int]]
    #: called after a broker gap, when control messages may have been lost (ChatService.forget_members)
    on_gap: Callable[[], None]
    #: ``(user_id, online)`` when this process's first notification stream (or poll) of a user
    #: opens, or its last closes: the webhooks' presence (issue 23). None: webhooks off, nobody listens
    on_online: Optional[Callable[[int, bool], None]] = None


class Hub:
    """Publishes events to users' connections in every process and tracks presence."""

    def __init__(self, registry: ConnectionRegistry, broker: Broker):
        self.registry = registry
        self.broker = broker
        self.origin = broker.origin
        self.metrics: Metrics = registry.metrics
        # Set once by start(): the services that listen are built on this hub, so after it.
        self._listeners: Optional[HubListeners] = None
        self._online: Dict[int, OnlineClaim] = {}  # while the user has a notification stream here

    async def start(self, listeners: HubListeners) -> None:
        """Start receiving envelopes from the broker; ``listeners`` get control messages, gates and gaps."""
        self._listeners = listeners
        await self.broker.start(self._receive, self.registry.local_presence, self._gap)

    async def stop(self) -> None:
        """Stop the broker."""
        await self.broker.stop()

    async def publish(self, kind: str, user_ids: Optional[Iterable[int]], data: str,
                      event_id: Optional[int] = None, exclude: Optional[str] = None,
                      since: Optional[float] = None, skip_users: Optional[Iterable[int]] = None,
                      chat_id: Optional[int] = None) -> None:
        """Send the JSON text ``data`` to the ``kind`` streams of ``user_ids`` (None: every user).

        ``exclude`` is a connection id that must not get it (the sender's own socket, which
        gets an ack instead). The text is serialised by the caller once for all recipients.
        ``since`` is when the event began (a chat send's arrival; default now): every
        receiving process measures its delivery latency from it. ``skip_users`` (with
        ``user_ids`` None) are users the event must not reach (a broadcast's muted and DND users).
        ``chat_id`` marks an event of that chat: every receiving process leaves out the users
        it knows were removed from the chat (``chat_gate``).
        """
        envelope = {"o": self.origin, "k": kind, "u": None if user_ids is None else list(user_ids),
                    "x": exclude, "i": event_id, "d": data, "t": since or time.time()}
        if skip_users:
            envelope["n"] = list(skip_users)
        if chat_id is not None:
            envelope["c"] = chat_id
        self.metrics.broker_out += 1
        await self.broker.publish(envelope)

    async def control(self, message: ControlMessage) -> None:
        """Apply a control message here at once, then send it to every process (not an event: no connection gets it).

        The broker brings it back to this process too; applying it twice is harmless (every
        handler is idempotent). Raises RuntimeError before ``start``.
        """
        if self._listeners is None:
            raise RuntimeError("Hub.control before Hub.start")
        self._listeners.control(message)
        await self.broker.publish({"o": self.origin, "k": CONTROL, "u": None, "x": None, "i": None,
                                   "d": encode(message)})

    def _receive(self, envelope: dict) -> None:
        """Deliver one envelope from the broker to this process's connections."""
        metrics = self.metrics
        metrics.broker_in += 1
        try:
            listeners = self._listeners
            if envelope["k"] == CONTROL:
                if listeners is not None:
                    listeners.control(decode(envelope["d"]))
                return
            kind: str = envelope["k"]
            event = Event(kind, envelope["d"], envelope.get("i"))
            user_ids = envelope.get("u")
            if user_ids and "c" in envelope and listeners is not None:
                user_ids = listeners.chat_gate(envelope["c"], user_ids)
            delivered = self.registry.deliver(event, user_ids, envelope.get("x"), envelope.get("n"))
            if not delivered and user_ids is not None:
                metrics.broker_discarded += 1  # read and decoded for nobody here
            if delivered and "t" in envelope:
                metrics.delivery[kind].observe(time.time() - envelope["t"])
        except ControlError as exc:  # from the broker: logged without its text
            log.warning("dropped a control message that is not one of this version: %s", exc)
        except Exception:
            log.exception("delivering an envelope failed")

    def _gap(self) -> None:
        """The broker may have dropped envelopes: end every local stream so its client resumes.

        Messages and notifications are stored before they are published, so a client that
        reconnects with its last event id gets exactly what it missed.
        """
        if self._listeners is not None:
            try:
                self._listeners.on_gap()
            except Exception:
                log.exception("forgetting cached state after a broker gap")
        conns = list(self.registry.connections)
        self.metrics.broker_reconnects += 1
        log.warning("broker reconnected; asking %d connection(s) to resume", len(conns))
        for conn in conns:
            try:
                conn.end(EndReason.BROKER_GAP)
            except Exception:
                log.exception("closing a connection after a broker gap")

    # Presence -----------------------------------------------------------------------------

    async def join(self, conn: PresenceHolder, chat_id: int) -> None:
        """``conn`` is now active in ``chat_id`` (notifications for it stop)."""
        if self.registry.join(conn, chat_id):
            if chat_id == ONLINE:
                self._online_changed(conn.user_id, True)
            await self.broker.presence_changed(conn.user_id, chat_id, True)

    async def leave(self, conn: PresenceHolder, chat_id: int) -> None:
        """``conn`` is no longer active in ``chat_id``."""
        if self.registry.leave(conn, chat_id):
            if chat_id == ONLINE:
                self._online_changed(conn.user_id, False)
            await self.broker.presence_changed(conn.user_id, chat_id, False)

    def _online_changed(self, user_id: int, online: bool) -> None:
        on_online = self._listeners.on_online if self._listeners is not None else None
        if on_online is not None:
            try:
                on_online(user_id, online)
            except Exception:
                log.exception("reporting a presence change failed")

    def add(self, conn: Connection) -> None:
        """Register a connection with the local registry (a notification stream makes its user online).

        The first connection of a user here makes the broker route the user's envelopes to this
        process (``Broker.hold``); the stream then awaits ``subscribed`` before reading what it missed.
        """
        if conn not in self.registry.connections and self.registry.user_count(conn.user_id) == 0:
            self.broker.hold(conn.user_id)
        if NOTIFY in conn.streams and conn not in self.registry.connections:
            claim = self._online.get(conn.user_id)
            if claim is None:
                claim = self._online[conn.user_id] = OnlineClaim(conn.user_id)
            claim.streams += 1
            if claim.streams == 1 and self.registry.join(claim, ONLINE):
                self._online_changed(conn.user_id, True)
                if self.broker.distributed:
                    spawn(self._claim(conn.user_id, True), name="hub.online_claim")
        self.registry.add(conn)

    async def subscribed(self, conn: Connection) -> None:
        """Return once envelopes for ``conn``'s user published from now on reach this process.

        Call after ``add`` and before reading missed events from the database: an event stored
        after that read is published after it, so it arrives live (routing by user, issue 26).
        Raises BrokerUnavailable when the broker does not confirm in time.
        """
        await self.broker.ready(conn.user_id)

    async def _claim(self, user_id: int, online: bool) -> None:
        try:
            await self.broker.presence_changed(user_id, ONLINE, online)
        except Exception:  # the claim expires by itself if the broker is down
            log.warning("could not update the online presence of user %s", user_id)

    def detach(self, conn: Connection) -> List[int]:
        """Unregister ``conn`` now; the chat ids (``ONLINE`` among them) whose presence of its user
        ended in this process, for ``announce_left`` to tell the other processes.

        The last connection of its user here: ``Broker.release`` (its shard lingers, then goes).
        """
        left: List[int] = []
        if conn in self.registry.connections and self.registry.user_count(conn.user_id) == 1:
            self.broker.release(conn.user_id)
        if NOTIFY in conn.streams and conn in self.registry.connections:
            claim = self._online.get(conn.user_id)
            if claim is not None:
                claim.streams -= 1
                if claim.streams <= 0:
                    del self._online[conn.user_id]
                    if self.registry.leave(claim, ONLINE):
                        self._online_changed(conn.user_id, False)
                        left.append(ONLINE)
        left.extend(self.registry.remove(conn))
        return left

    async def announce_left(self, user_id: int, chat_ids: Iterable[int]) -> None:
        """Tell the broker ``user_id`` is no longer active in ``chat_ids`` here (``detach``'s answer)."""
        for chat_id in chat_ids:
            if chat_id == ONLINE:
                await self._claim(user_id, False)
                continue
            try:
                await self.broker.presence_changed(user_id, chat_id, False)
            except Exception:  # the claim expires by itself if the broker is down
                log.warning("could not clear presence of user %s in chat %s", user_id, chat_id)

    async def remove(self, conn: Connection) -> None:
        """Unregister a connection and end its presence (``detach``, then ``announce_left``)."""
        await self.announce_left(conn.user_id, self.detach(conn))

    async def online_users(self, user_ids: Iterable[int]) -> Set[int]:
        """Which of ``user_ids`` have a notification stream (or a poll within its grace) on any process."""
        return await self.active_users(ONLINE, user_ids)

    def listening(self, kind: str, user_ids: Iterable[int]) -> Optional[Set[int]]:
        """Which of ``user_ids`` have a ``kind`` stream; None when other processes may hold some.

        Lets a publisher skip building per-user state (``unread``) nobody would receive.
        """
        if self.broker.distributed:
            return None
        return {uid for uid in user_ids if self.registry.has_user(kind, uid)}

    async def active_users(self, chat_id: int, user_ids: Iterable[int]) -> Set[int]:
        """Which of ``user_ids`` are active in ``chat_id`` on any process."""
        user_ids = list(user_ids)
        active = {uid for uid in user_ids if self.registry.is_active(uid, chat_id)}
        rest = [uid for uid in user_ids if uid not in active]
        if rest and self.broker.distributed:
            try:
                active |= await self.broker.active_users(chat_id, rest)
            except Exception:
                # Without the broker we cannot know; notifying is the safe side.
                log.warning("presence lookup failed; treating remote members as inactive")
        return active
