"""Running blocking Peewee work off the event loop.

All writes go through one writer thread per process (SQLite allows one writer at a time;
group commit makes it fast). Reads use a small pool of reader threads.

Event ids are database ids, and a resume asks for "everything after id N"; so ids must
become visible in id order, or a resume could skip a row committed late with a lower id.
One writer thread gives that within a process; on PostgreSQL, where several processes
write, each write transaction takes a transaction-level advisory lock first, so ids are
drawn and committed one transaction at a time across all processes.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import peewee
from playhouse.pool import PooledDatabase

from models import is_postgres

log = logging.getLogger("squall.db")

# pg_advisory_xact_lock key that orders write transactions across processes ("SQWR")
WRITE_ORDER_LOCK = 0x53515752


def _unavailable_types() -> tuple:
    types = [peewee.OperationalError, peewee.InterfaceError, sqlite3.OperationalError, sqlite3.InterfaceError]
    try:
        import psycopg2
        types += [psycopg2.OperationalError, psycopg2.InterfaceError]
    except ImportError:  # SQLite-only installs
        pass
    return tuple(types)


UNAVAILABLE_ERRORS = _unavailable_types()


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be used right now (unreachable, locked past
    the busy timeout, connection lost), as raised by Peewee or by a raw driver cursor."""
    return isinstance(exc, UNAVAILABLE_ERRORS)


class DatabaseExecutor:
    """Runs functions that use Peewee in worker threads; ``await read(fn)`` / ``await write(fn)``."""

    def __init__(self, db: peewee.Database, readers: int = 0):
        self.db = db
        self.pooled = is_postgres(db)
        if readers <= 0:
            readers = 8 if self.pooled else 2
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="squall-db-write")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="squall-db-read")
        # The newest job queued on the writer thread: it runs jobs in order, so once it is
        # done every write queued before it is committed (``read_after_writes``).
        self._last_write: Optional[asyncio.Future] = None

    def _call(self, fn: Callable, args, kwargs) -> Any:
        # Pooled (PostgreSQL) connections go back to the pool after each call; SQLite keeps
        # one connection per thread open for the life of the process.
        self.db.connect(reuse_if_open=True)
        try:
            return fn(*args, **kwargs)
        finally:
            if self.pooled and not self.db.in_transaction():
                self.db.close()

    async def read(self, fn: Callable, *args, **kwargs) -> Any:
        """Run a read-only ``fn(*args, **kwargs)`` on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, functools.partial(self._call, fn, args, kwargs))

    async def read_after_writes(self, fn: Callable, *args, **kwargs) -> Any:
        """Run a read-only ``fn`` on a reader thread once every write queued so far has finished.

        For reads that must see the writes already queued by this process, not only those
        committed: a stream's first ``unread`` state after the group commits its open may have
        missed (``NotificationService.unread_state``). The writer thread stays free for writes;
        a reader's next statement sees what they committed (SQLite WAL, PostgreSQL read
        committed: a new statement sees every commit that finished before it began).
        """
        pending = self._last_write
        if pending is not None and not pending.done() and pending.get_loop() is asyncio.get_running_loop():
            await asyncio.wait((pending,))  # its outcome belongs to its own caller
        return await self.read(fn, *args, **kwargs)

    def _queue_write(self, job: Callable) -> asyncio.Future:
        future = asyncio.get_running_loop().run_in_executor(self._writer, job)
        self._last_write = future
        return future

    def _transaction(self, fn: Callable, *args, **kwargs) -> Any:
        # On the writer thread: ``fn`` inside one transaction (ordered across processes on PostgreSQL).
        with self.db.atomic():
            if self.pooled:
                self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_ORDER_LOCK,))
            return fn(*args, **kwargs)

    async def write(self, fn: Callable, *args, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` on the writer thread, inside one transaction."""
        return await self._queue_write(functools.partial(self._call, self._transaction, (fn, *args), kwargs))

    async def write_then_read(self, write: Callable[[], Any], read: Callable[[], Any]) -> Any:
        """Run ``write()`` on the writer thread inside one transaction, then ``read()`` on the same
        thread once it is committed (outside the transaction and its lock); returns what ``read`` returns.

        One trip to one thread, for background work that writes and then reads a little (presence:
        last seen stored, co-members read): no reader thread is woken, or started, for it.
        """
        def both():
            self._transaction(write)
            return read()

        return await self._queue_write(functools.partial(self._call, both, (), {}))

    async def write_raw(self, fn: Callable, *args) -> Any:
        """Run ``fn(*args)`` on the writer thread without an enclosing transaction."""
        return await self._queue_write(functools.partial(self._call, fn, args, {}))

    async def ping(self) -> None:
        """One ``SELECT 1`` on a reader thread: raises when the database does not answer (the monitor)."""
        await self.read(lambda: self.db.execute_sql("SELECT 1"))

    async def check(self) -> None:
        """Raise unless the database could take a write now (``/readyz``).

        SQLite: ``BEGIN IMMEDIATE`` on a connection of its own with a 1 s busy timeout, so a
        lock held by another process shows (``SELECT 1`` takes no lock). PostgreSQL: a real
        query on a pooled connection (a stopped server fails it).
        """
        path = None if self.pooled else self.db.database
        if path is None:
            await self.read(lambda: self.db.execute_sql("SELECT 1").fetchall())
            return
        if path == ":memory:":
            return

        def take_lock():
            conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()

        await asyncio.get_running_loop().run_in_executor(self._readers, take_lock)

    def close(self) -> None:
        """Wait for queued work, then close every connection."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        try:
            db = self.db
            if isinstance(db, PooledDatabase):  # PostgreSQL (open_database pools it): every pooled connection
                db.close_all()
            else:
                db.close()
        except Exception:  # closing on shutdown must not mask the real exit reason
            log.exception("closing the database")
