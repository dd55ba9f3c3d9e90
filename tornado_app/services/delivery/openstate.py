"""The state a new stream starts with, read for many concurrent opens at once.

A stream's open needs its user's ``unread`` frame and, for transports whose own cursor is
visible to the client (``/sse/chat`` ids, long-polls), the newest notification id the user
can see. After a restart every client reconnects together: one query per open would queue
thousands of database round trips. Like the chat's group commit, the opens that arrive
while a read is running are answered by the next one, a single statement for all of them.

In a single process the read runs on the writer thread, after every group commit queued
before the stream subscribed (commits skip the ``unread`` frames of users with no stream,
see ``NotificationService.unread_state``); with a broker it runs on a reader thread.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple


from ...tasks import Batcher
from ..storage.db import DatabaseExecutor
from .notification_store import latest_ids, unread_states

log = logging.getLogger("squall.openstate")

MAX_BATCH = 500  # users per statement (SQLite's parameter limit is 32,766; PostgreSQL's 65,535)


def open_states(unread_for: List[int], latest_for: List[int]) -> Tuple[Dict[int, str], Dict[int, int]]:
    """``(unread frames, newest notification ids)`` for a batch of opens. Database thread."""
    unread: Dict[int, str] = {}
    for i in range(0, len(unread_for), MAX_BATCH):
        unread.update(unread_states(unread_for[i:i + MAX_BATCH]))
    latest: Dict[int, int] = {}
    for i in range(0, len(latest_for), MAX_BATCH):
        latest.update(latest_ids(latest_for[i:i + MAX_BATCH]))
    return unread, latest


class OpenStateBatcher:
    """``await state(user_id, baseline)``: the ``unread`` frame (and newest notification id), batched."""

    def __init__(self, dbx: DatabaseExecutor, distributed: bool):
        self.dbx = dbx
        self.distributed = distributed
        self._batcher: Batcher[Tuple[int, bool], Tuple[str, Optional[int]]] = Batcher(
            self._read, name="open_state.read")
        self.batches = 0  # statements run (tests check that concurrent opens share them)
        self.opens = 0

    async def state(self, user_id: int, baseline: bool) -> Tuple[str, Optional[int]]:
        """``(unread frame, newest notification id or None when not asked)`` of ``user_id``."""
        return await self._batcher.submit((user_id, baseline))

    async def _read(self, batch: List[Tuple[int, bool]]) -> List[Tuple[str, Optional[int]]]:
        """One read for the opens of ``batch``. Raises the database's error (every open of the batch fails)."""
        unread_for = list({uid for uid, _ in batch})
        latest_for = list({uid for uid, wanted in batch if wanted})
        run = self.dbx.read if self.distributed else self.dbx.write_raw
        unread, latest = await run(open_states, unread_for, latest_for)
        self.batches += 1
        self.opens += len(batch)
        return [(unread[uid], latest[uid] if wanted else None) for uid, wanted in batch]
