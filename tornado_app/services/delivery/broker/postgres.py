"""The PostgreSQL broker: LISTEN/NOTIFY read from the IOLoop, presence in an unlogged table.

Envelopes travel as NOTIFY payloads, which PostgreSQL caps at 8000 bytes. A larger envelope
is stored in ``<prefix>_payload`` and its id is notified instead, in the same transaction:
NOTIFY is delivered on commit, so the row always exists when the id arrives. Rows are
pruned after PAYLOAD_KEEP seconds.

Connections:
    listen   dedicated, autocommit; its socket is watched by the IOLoop (add_handler), and
             on readiness we ``poll()`` and drain ``notifies`` without blocking.
    work     one connection used by one executor thread: NOTIFY, payload reads, presence.
             The loop never waits on it; one thread also keeps this process's NOTIFYs in order.

Notify payloads: ``"j" + JSON envelope`` or ``"r" + payload row id``.

Names (``<prefix>`` is ``squall`` unless ``--broker-prefix`` or the URL's ``?prefix=…`` names
another; ``<scope>`` is the first 16 characters of the installation id, see base.py). NOTIFY
reaches only listeners of the same database, so deployments with their own databases are
apart anyway; the scope keeps apart those that share one broker database.
    channel <prefix>_<scope>_events
    <prefix>_<scope>_payload(id bigserial, data text, created_at timestamptz)
    <prefix>_<scope>_presence(chat_id, user_id, origin, expires_at timestamptz)  UNLOGGED: a crash
        loses only claims that would have expired anyway.
Without a scope (a broker made outside a server, as the contract tests do) ``<prefix>_`` alone.
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List, Optional, Set
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from tornado.ioloop import IOLoop

from ....tasks import spawn
from .base import DEFAULT_PREFIX, Broker, BrokerUnavailable, scope_of

log = logging.getLogger("squall.broker.postgres")

NOTIFY_LIMIT = 7900  # bytes; PostgreSQL's default cap is 8000 including the channel name
PAYLOAD_KEEP = 300  # seconds a large payload row is kept for slow receivers
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


def split_prefix(url: str, default: str = DEFAULT_PREFIX):
    """``(url without ?prefix=, prefix)``; the prefix must be a plain identifier."""
    parsed = urlparse(url)
    prefix = default
    kept = []
    for key, value in parse_qsl(parsed.query, keep_blank_values=True):
        if key == "prefix":
            prefix = value or default
        else:
            kept.append((key, value))
    if not prefix.replace("_", "").isalnum() or not prefix[0].isalpha():
        raise ValueError(f"broker prefix {prefix!r} must be letters, digits and underscores")
    if parsed.scheme == "postgres":
        parsed = parsed._replace(scheme="postgresql")
    return urlunparse(parsed._replace(query=urlencode(kept))), prefix.lower()


class PostgresBroker(Broker):
    """LISTEN/NOTIFY between processes; large envelopes by id; presence with expiry."""

    distributed = True

    def __init__(self, origin: str, url: str, presence_ttl: float = 15.0, prefix: str = "", **options):
        super().__init__(origin)
        self.url, self.prefix = split_prefix(url, prefix or DEFAULT_PREFIX)
        self.presence_ttl = float(presence_ttl)
        self._name(self.prefix)
        self._executor: Optional[ThreadPoolExecutor] = None  # between start and stop
        self._work = None  # used only on the executor thread
        self._listen = None
        self._listen_fd = None  # kept: a broken connection can no longer tell its fileno()
        self._started_loop: Optional[asyncio.AbstractEventLoop] = None
        self._queue: asyncio.Queue[str] = asyncio.Queue()  # notification payloads (a new one at each start)
        self._tasks: List[asyncio.Task] = []
        self._stopping = False
        self._listening = False
        self._gap_pending = False  # something was missed; clients resume once we listen again

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        """The loop the broker was started on. Raises BrokerUnavailable before start."""
        loop = self._started_loop
        if loop is None:
            raise BrokerUnavailable("the PostgreSQL broker is not started")
        return loop

    def _name(self, namespace: str) -> None:
        self.namespace = namespace
        self.channel = f"{namespace}_events"
        self._payload_table = sql.Identifier(f"{namespace}_payload")
        self._presence_table = sql.Identifier(f"{namespace}_presence")

    def scope(self, installation_id: str) -> None:
        """Names become ``<prefix>_<scope>_…`` (call before ``start``)."""
        self._name(f"{self.prefix}_{scope_of(installation_id)}")

    # Work connection (executor thread only) ------------------------------------------------

    def _work_conn(self):
        if self._work is None or self._work.closed:
            # A statement timeout: a hung server must not hold up senders indefinitely.
            self._work = psycopg2.connect(self.url, connect_timeout=5, keepalives=1, keepalives_idle=30,
                                          options="-c statement_timeout=5000")
            self._work.autocommit = False
        return self._work

    def _run(self, fn, *args):
        """Run ``fn(cursor, *args)`` in one transaction on the work connection (executor thread)."""
        conn = self._work_conn()
        try:
            with conn:  # commit, or roll back on error
                with conn.cursor() as cur:
                    return fn(cur, *args)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # The connection is broken; drop it so the next call reconnects.
            try:
                conn.close()
            except Exception:  # already closed
                pass
            self._work = None
            raise

    async def _call(self, fn, *args):
        return await self._loop.run_in_executor(self._executor, self._run, fn, *args)

    def _create_tables(self, cur) -> None:
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id BIGSERIAL PRIMARY KEY, data TEXT NOT NULL, "
                            "created_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(self._payload_table))
        cur.execute(sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} (chat_id BIGINT NOT NULL, "
                            "user_id BIGINT NOT NULL, origin TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL, "
                            "PRIMARY KEY (chat_id, user_id, origin))").format(self._presence_table))

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self, receiver, presence_source=None, on_gap=None) -> None:
        """Create the broker tables, LISTEN, start delivering and refreshing presence."""
        await super().start(receiver, presence_source, on_gap)
        self._started_loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="squall-pg-broker")
        self._queue = asyncio.Queue()
        self._stopping = False
        for attempt in range(3):
            try:
                await self._call(self._create_tables)
                break
            except (psycopg2.IntegrityError, psycopg2.errors.DuplicateTable):
                # Two processes created the tables at once; the other one won.
                if attempt == 2:
                    raise
        await self._loop.run_in_executor(self._executor, self._connect_listener)
        self._tasks = [spawn(self._deliver_forever(), name="broker.postgres.deliver"),
                       spawn(self._maintain_forever(), name="broker.postgres.maintain")]

    def _connect_listener(self) -> None:
        """Open the LISTEN connection (blocking: runs on the executor thread)."""
        # TCP keepalives: a LISTEN connection only reads, so without them a silently dropped
        # connection (host gone, NAT timeout) would never be noticed.
        conn = psycopg2.connect(self.url, connect_timeout=5, keepalives=1, keepalives_idle=30,
                                keepalives_interval=10, keepalives_count=3)
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self._listen = conn
        self._loop.call_soon_threadsafe(self._watch_listener)

    def _watch_listener(self) -> None:
        if self._stopping or self._listen is None:
            return
        self._listen_fd = self._listen.fileno()
        IOLoop.current().add_handler(self._listen_fd, self._on_readable, IOLoop.READ)
        self._listening = True
        # Anything already queued on the socket before the handler was added
        self._on_readable(None, None)

    async def stop(self) -> None:
        """Stop listening, drop this process's presence claims, close the connections."""
        self._stopping = True
        self._drop_listener()
        for task in self._tasks:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._executor is not None:
            try:
                await asyncio.wait_for(self._call(self._delete_claims), 2)
            except Exception:  # the claims expire by themselves
                pass
            await self._loop.run_in_executor(self._executor, self._close_work)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_work(self) -> None:
        if self._work is not None:
            self._work.close()
            self._work = None

    def _drop_listener(self) -> None:
        conn, self._listen = self._listen, None
        fd, self._listen_fd = self._listen_fd, None
        self._listening = False
        if fd is not None:
            IOLoop.current().remove_handler(fd)
        if conn is None:
            return
        try:
            conn.close()
        except Exception:  # already broken
            pass

    # Receiving ---------------------------------------------------------------------------

    def _on_readable(self, fd, events) -> None:
        """The LISTEN socket is readable: poll without blocking and queue the notifies."""
        conn = self._listen
        if conn is None:
            return
        try:
            conn.poll()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            log.warning("PostgreSQL broker: listen connection lost (%s)", str(exc).strip())
            self._drop_listener()
            self._gap_pending = True
            self._tasks.append(spawn(self._relisten(), name="broker.postgres.relisten"))
            return
        while conn.notifies:
            note = conn.notifies.pop(0)
            self._queue.put_nowait(note.payload)

    async def _deliver_forever(self) -> None:
        """Deliver queued notifies in order; large ones are read from the payload table first."""
        while True:
            payload = await self._queue.get()
            try:
                if payload.startswith("r"):
                    data = await self._call(self._read_payload, int(payload[1:]))
                    if data is None:
                        log.error("PostgreSQL broker: payload %s is gone (pruned?)", payload[1:])
                        continue
                else:
                    data = payload[1:]
                self._hand_over(json.loads(data))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("PostgreSQL broker: could not deliver a notification")

    def _read_payload(self, cur, row_id: int):
        cur.execute(sql.SQL("SELECT data FROM {} WHERE id = %s").format(self._payload_table), (row_id,))
        row = cur.fetchone()
        return row[0] if row else None

    async def _relisten(self) -> None:
        """Reconnect the LISTEN connection with capped backoff, then make local clients resume."""
        delay = BACKOFF_FIRST
        while not self._stopping:
            try:
                await self._loop.run_in_executor(self._executor, self._connect_listener)
                log.warning("PostgreSQL broker: listening again on %s", self.channel)
                await asyncio.sleep(0)  # let _watch_listener run first
                self._after_recovery()
                return
            except psycopg2.Error as exc:
                log.warning("PostgreSQL broker: reconnect failed (%s); retrying in %.0f s",
                            str(exc).strip(), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _after_recovery(self) -> None:
        if self._gap_pending and self._listening:
            self._gap_pending = False
            if self._on_gap is not None:
                try:
                    self._on_gap()
                except Exception:
                    log.exception("handling a broker gap failed")

    # Publishing --------------------------------------------------------------------------

    def _notify(self, cur, text: str) -> None:
        if len(text.encode("utf-8")) + 1 <= NOTIFY_LIMIT:
            cur.execute("SELECT pg_notify(%s, %s)", (self.channel, "j" + text))
            return
        cur.execute(sql.SQL("INSERT INTO {} (data) VALUES (%s) RETURNING id").format(self._payload_table), (text,))
        row_id = cur.fetchone()[0]
        cur.execute("SELECT pg_notify(%s, %s)", (self.channel, f"r{row_id}"))

    async def publish(self, envelope: dict) -> None:
        """NOTIFY the envelope (by id when large); failures are logged, not raised."""
        text = json.dumps(envelope, separators=(",", ":"))
        try:
            await self._call(self._notify, text)
        except psycopg2.Error as exc:
            # Committed data resumes from the database once the broker is back.
            # Warn once per outage; every failure would flood the log under load.
            level = logging.DEBUG if self._gap_pending else logging.WARNING
            self._gap_pending = True
            log.log(level, "PostgreSQL broker: publish failed (%s); clients will resume from the database",
                    str(exc).strip())
            return
        self._after_recovery()

    # Presence ----------------------------------------------------------------------------

    def _claim(self, cur, claims) -> None:
        cur.execute(sql.SQL(
            "INSERT INTO {} (chat_id, user_id, origin, expires_at) "
            "SELECT c, u, %s, now() + make_interval(secs => %s) FROM unnest(%s::bigint[], %s::bigint[]) AS t(c, u) "
            "ON CONFLICT (chat_id, user_id, origin) DO UPDATE SET expires_at = EXCLUDED.expires_at"
        ).format(self._presence_table),
            (self.origin, self.presence_ttl, [c for _, c in claims], [u for u, _ in claims]))

    def _unclaim(self, cur, user_id: int, chat_id: int) -> None:
        cur.execute(sql.SQL("DELETE FROM {} WHERE chat_id = %s AND user_id = %s AND origin = %s")
                    .format(self._presence_table), (chat_id, user_id, self.origin))

    def _delete_claims(self, cur) -> None:
        cur.execute(sql.SQL("DELETE FROM {} WHERE origin = %s").format(self._presence_table), (self.origin,))

    async def presence_changed(self, user_id: int, chat_id: int, active: bool) -> None:
        """Claim (with expiry) or drop this process's presence of ``user_id`` in ``chat_id``."""
        try:
            if active:
                await self._call(self._claim, [(user_id, chat_id)])
            else:
                await self._call(self._unclaim, user_id, chat_id)
        except psycopg2.Error as exc:
            # A missed claim is renewed by the refresher; a missed removal expires by itself.
            log.warning("PostgreSQL broker: presence update failed (%s)", str(exc).strip())

    def _active(self, cur, chat_id: int, user_ids: list) -> Set[int]:
        cur.execute(sql.SQL("SELECT DISTINCT user_id FROM {} WHERE chat_id = %s AND user_id = ANY(%s) "
                            "AND expires_at > now()").format(self._presence_table), (chat_id, user_ids))
        return {row[0] for row in cur.fetchall()}

    async def active_users(self, chat_id: int, user_ids: Iterable[int]) -> Set[int]:
        """Users of ``user_ids`` with an unexpired claim in ``chat_id`` (database clock)."""
        user_ids = [int(u) for u in user_ids]
        if not user_ids:
            return set()
        return await self._call(self._active, int(chat_id), user_ids)

    def _maintain(self, cur, claims) -> None:
        if claims:
            self._claim(cur, claims)
        cur.execute(sql.SQL("DELETE FROM {} WHERE expires_at < now()").format(self._presence_table))
        cur.execute(sql.SQL("DELETE FROM {} WHERE created_at < now() - make_interval(secs => %s)")
                    .format(self._payload_table), (PAYLOAD_KEEP,))

    async def _maintain_forever(self) -> None:
        """Every presence_ttl/3: renew our claims, drop expired ones and old payload rows."""
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            try:
                await self._call(self._maintain, list(self._presence_source()))
                self._after_recovery()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("PostgreSQL broker: presence refresh failed (%s)", str(exc).strip())

    async def ping(self) -> None:
        """Raise BrokerUnavailable unless PostgreSQL answers and we are listening."""
        try:
            await self._call(lambda cur: cur.execute("SELECT 1"))
        except psycopg2.Error as exc:
            raise BrokerUnavailable(f"PostgreSQL broker: {str(exc).strip()}") from exc
        if not self._listening:
            raise BrokerUnavailable("PostgreSQL broker is not listening")
