"""The local registry of live connections: by user and stream, plus local presence.

It knows no broker and does no I/O of its own: ``deliver`` hands an event to each
matching connection's ``deliver`` method (which writes or buffers).

Shapes:
    _by_user[kind][user_id] -> set of connections  (kind: events.CHAT or events.NOTIFY)
    _everyone[kind]          -> set of connections  (broadcast targets)
    _joined[(user_id, chat_id)] -> number of this process's connections joined to the chat
    _per_user[user_id]       -> number of this process's connections of the user (any kind)
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional

from .events import CHAT, NOTIFY, Event


class ConnectionRegistry:
    """Connections of this process, found by user id; presence counted per (user, chat)."""

    def __init__(self):
        self._by_user = {CHAT: defaultdict(set), NOTIFY: defaultdict(set)}
        self._everyone = {CHAT: set(), NOTIFY: set()}
        self._joined = defaultdict(int)
        self._per_user = {}
        self.connections = set()

    def add(self, conn) -> None:
        """Register ``conn`` (it has ``user_id``, ``streams`` and ``deliver(event)``); idempotent."""
        if conn in self.connections:
            return
        self.connections.add(conn)
        self._per_user[conn.user_id] = self._per_user.get(conn.user_id, 0) + 1
        for kind in conn.streams:
            self._by_user[kind][conn.user_id].add(conn)
            self._everyone[kind].add(conn)

    def remove(self, conn) -> list:
        """Unregister ``conn``; returns the chat ids whose presence of this user ended here."""
        if conn not in self.connections:
            return []
        self.connections.discard(conn)
        left = self._per_user.get(conn.user_id, 1) - 1
        if left > 0:
            self._per_user[conn.user_id] = left
        else:
            self._per_user.pop(conn.user_id, None)
        for kind in conn.streams:
            users = self._by_user[kind]
            conns = users.get(conn.user_id)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del users[conn.user_id]
            self._everyone[kind].discard(conn)
        ended = [chat_id for chat_id in list(conn.joined_chats) if self.leave(conn, chat_id)]
        return ended

    def join(self, conn, chat_id: int) -> bool:
        """Mark ``conn`` active in ``chat_id``; True when the user was not active here before."""
        if chat_id in conn.joined_chats:
            return False
        conn.joined_chats.add(chat_id)
        key = (conn.user_id, chat_id)
        self._joined[key] += 1
        return self._joined[key] == 1

    def leave(self, conn, chat_id: int) -> bool:
        """Drop ``conn``'s presence in ``chat_id``; True when the user is no longer active here."""
        if chat_id not in conn.joined_chats:
            return False
        conn.joined_chats.discard(chat_id)
        key = (conn.user_id, chat_id)
        self._joined[key] -= 1
        if self._joined[key] <= 0:
            del self._joined[key]
            return True
        return False

    def is_active(self, user_id: int, chat_id: int) -> bool:
        """True when a connection of this process has ``user_id`` active in ``chat_id``."""
        return (user_id, chat_id) in self._joined

    def local_presence(self) -> list:
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

    def all(self, kind: str) -> Iterable:
        """Every connection carrying ``kind``."""
        return self._everyone[kind]

    def deliver(self, event: Event, user_ids: Optional[Iterable[int]], exclude: Optional[str] = None) -> int:
        """Hand ``event`` to the matching connections; ``user_ids`` None means everyone. Returns the count."""
        if user_ids is None:
            targets = list(self._everyone[event.kind])
        else:
            by_user = self._by_user[event.kind]
            targets = []
            for uid in user_ids:
                conns = by_user.get(uid)
                if conns:
                    targets.extend(conns)
        n = 0
        for conn in targets:
            if exclude is not None and conn.conn_id == exclude:
                continue
            conn.deliver(event)
            n += 1
        return n
