"""Database binding: one DatabaseProxy that every model uses, initialised from a URL."""
from __future__ import annotations

import datetime
from typing import Any, Iterable, Iterator, Tuple, cast
from urllib.parse import parse_qsl, unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase

database_proxy = peewee.DatabaseProxy()
SQLITE_BUSY_TIMEOUT_MS = 1000
POSTGRES_CONNECT_TIMEOUT = 5  # seconds; an unreachable server fails fast (503) instead of hanging


def utcnow() -> datetime.datetime:
    """Current UTC time as a naive datetime (stored as UTC everywhere)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class BaseModel(peewee.Model):
    """Base of every Squall model, bound to the proxy that ``init_db`` fills in."""

    class Meta:
        database = database_proxy
        legacy_table_names = False


def open_database(url: str, max_connections: int = 16) -> peewee.Database:
    """Open (not yet connect) the database named by ``url``: SQLite or PostgreSQL."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else (url[len("sqlite://"):] or ":memory:")
        return peewee.SqliteDatabase(path or ":memory:", pragmas={
            "journal_mode": "wal",        # readers never block the writer
            "synchronous": "normal",      # durable at each WAL checkpoint; safe against corruption
            "foreign_keys": 1,
            # A write waits this long for a lock held by another process, then the API answers
            # 503 database_unavailable (a send: store_failed) instead of hanging.
            "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
            "cache_size": -16000,
        }, check_same_thread=False)
    if url.startswith(("postgres://", "postgresql://")):
        parsed = urlparse(url)
        params = dict(parse_qsl(parsed.query))
        kwargs = {
            "host": parsed.hostname or "127.0.0.1",
            "port": parsed.port or 5432,
            "user": unquote(parsed.username) if parsed.username else "postgres",
        }
        if parsed.password:
            kwargs["password"] = unquote(parsed.password)
        kwargs["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT
        kwargs.update(params)
        return PooledPostgresqlDatabase(
            parsed.path.lstrip("/") or "postgres", max_connections=max_connections,
            stale_timeout=300, timeout=30, **kwargs)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///file.db or postgresql://user@host/db")


def init_db(url: str, max_connections: int = 16) -> peewee.Database:
    """Open the database at ``url`` and bind every model to it."""
    db = open_database(url, max_connections=max_connections)
    database_proxy.initialize(db)
    return db


def tuples(query: peewee.BaseQuery) -> Iterator[Tuple[Any, ...]]:
    """Run ``query`` and iterate over its rows as tuples (``query.tuples()``, typed as what it gives:
    peewee's stubs type the rows of a model query as model instances whatever the row type)."""
    return iter(cast(Iterable[Tuple[Any, ...]], query.tuples()))


def is_postgres(db: object) -> bool:
    """True when ``db`` (a database, or the proxy standing for one) is a PostgreSQL database."""
    if isinstance(db, peewee.DatabaseProxy):
        db = db.obj
    return isinstance(db, peewee.PostgresqlDatabase)
