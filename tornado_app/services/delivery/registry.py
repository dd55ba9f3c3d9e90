"""The local registry of live connections: by user and stream, plus local presence.

It knows no broker and does no I/O of its own: ``deliver`` hands an event to each
matching ``Connection``'s ``deliver`` method (which writes or buffers). Presence is also held
by stand-ins that are no connection (``hub.OnlineClaim``, ``poll_presence.PresenceLease``):
``join``/``leave`` need only a ``PresenceHolder``.

Shapes:
    _by_user[kind][user_id] -> group of connections  (kind: events.CHAT or events.NOTIFY)
    _everyone[kind]          -> set of connections  (broadcast targets)
    _joined[(user_id, chat_id)] -> number of this process's connections joined to the chat
    _by_sid[sid]             -> group of connections opened with a token of that session
    conn.joined_chats        -> group of the chat ids ``conn`` is active in

A group is a tuple while it holds up to ``SMALL_GROUP`` items, then a set: almost always it
holds one (a tuple of one takes 48 bytes, a set 216), and rebuilding a tuple that small costs
less than the memory it saves; a large group (a socket joined to many chats) stays O(1).
    _expiring[second] / _warning[second] -> connections whose token expires / should be warned
                               then: a timing wheel keyed by epoch second, swept once a second
                               (no timer per connection)
    _per_user[user_id]       -> number of this process's connections of the user (any kind)
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, DefaultDict, Dict, Iterable, List, Optional, Protocol, Set, Tuple, Union

from .events import CHAT, NOTIFY, Event
from ..operations.metrics import Metrics

if TYPE_CHECKING:
    from .connection import Connection


SMALL_GROUP = 8  # a group this size or less is a tuple; past it, a set

Group = Union[Tuple[Any, ...], Set[Any]]  # see SMALL_GROUP


class PresenceHolder(Protocol):
    """What holds presence in chats: a ``Connection``, or a stand-in for streams and polls."""

    user_id: int
    joined_chats: Group  # the chat ids it is active in; kept by ConnectionRegistry.join/leave


def added(group: Group, item: Any) -> Group:
    """``group`` with ``item`` (which it does not hold): a new tuple while small, else the set, grown."""
    if isinstance(group, tuple):
        if len(group) < SMALL_GROUP:
            return group + (item,)
        group = set(group)
    group.add(item)
    return group


def removed(group: Group, item: Any) -> Group:
    """``group`` without ``item``: a new tuple, or the set, shrunk."""
    if isinstance(group, tuple):
        return tuple(x for x in group if x != item)
    group.discard(item)
    return group


class ConnectionRegistry:
    """Connections of this process, found by user id; presence counted per (user, chat)."""

    def __init__(self, metrics: Optional[Metrics] = None) -> None:
        self.metrics = metrics or Metrics()
        # Keyed by Event.kind (typed Optional: None is a frame written to one connection, never delivered here).
        self._by_user: Dict[Optional[str], Dict[int, Group]] = {CHAT: {}, NOTIFY: {}}
        self._everyone: Dict[Optional[str], Set[Connection]] = {CHAT: set(), NOTIFY: set()}
        self._joined: DefaultDict[Tuple[int, int], int] = defaultdict(int)
        self._per_user: Dict[int, int] = {}
        self.connections: Set[Connection] = set()
        self._by_sid: Dict[str, Group] = {}
        self._expiring: Dict[int, Set[Connection]] = {}
        self._warning: Dict[int, Set[Connection]] = {}
        self._swept: Optional[int] = None  # last epoch second swept

    def add(self, conn: Connection) -> None:
        """Register ``conn``; idempotent."""
        if conn in self.connections:
            return
        self.connections.add(conn)
        self.metrics.connection_opened(conn.transport)
        self._per_user[conn.user_id] = self._per_user.get(conn.user_id, 0) + 1
        for kind in conn.streams:
            users = self._by_user[kind]
            users[conn.user_id] = added(users.get(conn.user_id, ()), conn)
            self._everyone[kind].add(conn)
        if conn.sid is not None:
            self._by_sid[conn.sid] = added(self._by_sid.get(conn.sid, ()), conn)
        self._schedule(conn)

    # Sessions and token expiry ----------------------------------------------------------------

    def _slot(self, second: int) -> int:
        # A second already swept is never swept again: such a connection is due at the next sweep.
        return second if self._swept is None or second > self._swept else self._swept + 1

    def _schedule(self, conn: Connection) -> None:
        if conn.token_exp is None:
            return
        self._expiring.setdefault(self._slot(conn.token_exp), set()).add(conn)
        if conn.token_warn_at is not None:
            self._warning.setdefault(self._slot(conn.token_warn_at), set()).add(conn)

    def _unschedule(self, conn: Connection) -> None:
        for wheel in (self._expiring, self._warning):
            for second in (conn.token_exp, conn.token_warn_at, self._slot(0)):
                if second is None:
                    continue
                bucket = wheel.get(second)
                if bucket is not None and conn in bucket:
                    bucket.discard(conn)
                    if not bucket:
                        del wheel[second]

    def reauthenticate(self, conn: Connection, sid: str, exp: int, warn_at: int, version: int) -> None:
        """``conn`` presented a new token: move it to session ``sid`` and expiry ``exp``."""
        registered = conn in self.connections
        if registered:
            self._unschedule(conn)
            self._drop_sid(conn)
        conn.sid, conn.token_exp, conn.token_warn_at, conn.token_version = sid, exp, warn_at, version
        if registered:
            self._by_sid[sid] = added(self._by_sid.get(sid, ()), conn)
            self._schedule(conn)

    def _drop_sid(self, conn: Connection) -> None:
        if conn.sid is None:
            return
        conns = self._by_sid.get(conn.sid)
        if conns is not None:
            rest = removed(conns, conn)
            if rest:
                self._by_sid[conn.sid] = rest
            else:
                del self._by_sid[conn.sid]

    def session_connections(self, sid: str) -> Iterable[Connection]:
        """Connections opened with a token of session ``sid`` (O(1) lookup)."""
        return self._by_sid.get(sid, ())

    def user_connections(self, user_id: int) -> Set[Connection]:
        """Every connection of ``user_id``, whatever its streams."""
        found: Set[Connection] = set()
        for users in self._by_user.values():
            found.update(users.get(user_id, ()))
        return found

    def scheduled(self) -> int:
        """How many expiry and warning entries the wheel holds (0 once every connection left)."""
        return sum(len(b) for b in self._expiring.values()) + sum(len(b) for b in self._warning.values())

    def due(self, now: int) -> Tuple[List[Connection], List[Connection]]:
        """``(to warn, expired)``: connections whose warning / expiry second is at or before ``now``."""
        if self._swept is None:
            self._swept = now - 1
        warn: List[Connection] = []
        expired: List[Connection] = []
        while self._swept < now:
            self._swept += 1
            warn.extend(self._warning.pop(self._swept, ()))
            expired.extend(self._expiring.pop(self._swept, ()))
        return warn, expired

    def remove(self, conn: Connection) -> List[int]:
        """Unregister ``conn``; returns the chat ids whose presence of this user ended here."""
        if conn not in self.connections:
            return []
        self.connections.discard(conn)
        self.metrics.connection_closed(conn.transport)
        self._drop_sid(conn)
        if conn.token_exp is not None:
            self._unschedule(conn)
        left = self._per_user.get(conn.user_id, 1) - 1
        if left > 0:
            self._per_user[conn.user_id] = left
        else:
            self._per_user.pop(conn.user_id, None)
        for kind in conn.streams:
            users = self._by_user[kind]
            conns = users.get(conn.user_id)
            if conns is not None:
                rest = removed(conns, conn)
                if rest:
                    users[conn.user_id] = rest
                else:
                    del users[conn.user_id]
            self._everyone[kind].discard(conn)
        ended = [chat_id for chat_id in list(conn.joined_chats) if self.leave(conn, chat_id)]
        return ended

    def join(self, conn: PresenceHolder, chat_id: int) -> bool:
        """Mark ``conn`` active in ``chat_id``; True when the user was not active here before."""
        if chat_id in conn.joined_chats:
            return False
        conn.joined_chats = added(conn.joined_chats, chat_id)
        key = (conn.user_id, chat_id)
        self._joined[key] += 1
        return self._joined[key] == 1

    def leave(self, conn: PresenceHolder, chat_id: int) -> bool:
        """Drop ``conn``'s presence in ``chat_id``; True when the user is no longer active here."""
        if chat_id not in conn.joined_chats:
            return False
        conn.joined_chats = removed(conn.joined_chats, chat_id)
        key = (conn.user_id, chat_id)
        self._joined[key] -= 1
        if self._joined[key] <= 0:
            del self._joined[key]
            return True
        return False

    def is_active(self, user_id: int, chat_id: int) -> bool:
        """True when a connection of this process has ``user_id`` active in ``chat_id``."""
        return (user_id, chat_id) in self._joined

    def local_presence(self) -> List[Tuple[int, int]]:
        """Every (user_id, chat_id) active in this process."""
        return list(self._joined)

    def has_user(self, kind: str, user_id: int) -> bool:
        """True when ``user_id`` has a connection of ``kind`` here."""
        return user_id in self._by_user[kind]

    def user_count(self, user_id: int) -> int:
        """Number of this process's connections of ``user_id`` (every kind)."""
        return self._per_user.get(user_id, 0)

    def count(self, kind: Optional[str] = None) -> int:
        """Number of connections (of one stream kind, or all)."""
        return len(self.connections) if kind is None else len(self._everyone[kind])

    def all(self, kind: str) -> Iterable[Connection]:
        """Every connection carrying ``kind``."""
        return self._everyone[kind]

    def deliver(self, event: Event, user_ids: Optional[Iterable[int]], exclude: Optional[str] = None,
                skip_users: Optional[Iterable[int]] = None) -> int:
        """Hand ``event`` to the matching connections; ``user_ids`` None means everyone. Returns the count.

        ``skip_users`` (only with everyone) leaves those users out: a broadcast's muted and DND users.
        """
        targets: List[Connection]
        if user_ids is None:
            targets = list(self._everyone[event.kind])
            if skip_users:
                skip = set(skip_users)
                targets = [conn for conn in targets if conn.user_id not in skip]
        else:
            by_user = self._by_user[event.kind]
            targets = []
            for uid in user_ids:
                conns = by_user.get(uid)
                if conns:
                    targets.extend(conns)
        n = 0
        kind = event.kind
        if kind is None:  # a connection's own frame (auth_expired, errors) is never fanned out
            return 0
        delivered = self.metrics.delivered[kind]
        for conn in targets:
            if exclude is not None and conn.conn_id == exclude:
                continue
            conn.deliver(event)
            delivered[conn.transport] += 1
            n += 1
        return n
