"""Group commit for the publish API: notifications that arrive together are stored together.

A backend publishing to single users sends many small requests. Each used to be one
transaction (a user check and an insert); now the requests that arrive while a
transaction runs are stored by the next one: one user check (``SELECT id ... IN``) and
one multi-row ``INSERT ... RETURNING`` for all of them (``notification_store.store_batch``). Every request still gets its own
answer: its ids, or its own error (a request naming an unknown user fails alone). A
notification is committed before its request is answered and before it is delivered.
"""
from __future__ import annotations

import datetime
import logging
from typing import List, Optional

import peewee

from ...tasks import Batcher
from ..storage.db import DatabaseExecutor
from .notification_store import store_batch

log = logging.getLogger("squall.publisher")

# Rows per transaction (a request is never split; one larger than this is a transaction of its
# own). Smaller transactions pipeline: while the writer stores the next one, the event loop
# delivers and answers the last one's requests (PostgreSQL's slower inserts overlap the
# loop's work instead of adding to it).
MAX_ROWS = 400


def rows_of(item: tuple) -> int:
    """The rows one queued publish stores: one per recipient (a broadcast: one)."""
    user_ids, _, _, _, recipients, _ = item
    chosen = recipients if recipients is not None else user_ids
    return 1 if chosen is None else max(1, len(chosen))


class PublishWriter:
    """``await store(user_ids | None, type, payload(s), created_at, recipients=None)`` → ids, group-committed."""

    def __init__(self, dbx: DatabaseExecutor) -> None:
        self.dbx = dbx
        # Each item: (user_ids, type, payloads, created_at, recipients, hidden), as store_batch takes it.
        self._batcher: Batcher[tuple, List[int]] = Batcher(self._write, name="publisher.store",
                                                           max_batch=MAX_ROWS, weight=rows_of)
        self.transactions = 0  # commits so far (tests check that concurrent publishes share them)

    async def store(self, user_ids: Optional[List[int]], ntype: str, payloads, created_at: datetime.datetime,
                    recipients: Optional[List[int]] = None, hidden: Optional[List[int]] = None) -> List[int]:
        """Queue one publish; the ids of ``recipients`` (default ``user_ids``) once committed.

        ``payloads`` is one JSON text for all, or one per recipient; ``hidden`` are the users
        a broadcast is stored as read and cleared for. Raises NotFound (any of ``user_ids``
        unknown) or the database's error.
        """
        return await self._batcher.submit((user_ids, ntype, payloads, created_at, recipients, hidden))

    async def _write(self, batch: List[tuple]) -> list:
        """One transaction for ``batch``: per request its ids, or NotFound. Raises the database's error."""
        try:
            try:
                results = await self.dbx.write(store_batch, batch)
            except (peewee.IntegrityError, peewee.DataError):
                # A user id the foreign key refused, or one past PostgreSQL's integer column
                # (store_batch does not look them up first): once more, each request checked,
                # so only those naming an unknown user fail.
                self.transactions += 1
                results = await self.dbx.write(store_batch, batch, True)
        except Exception as exc:
            log.warning("storing %d publish requests failed (%s)", len(batch), type(exc).__name__)
            raise
        self.transactions += 1
        return results
