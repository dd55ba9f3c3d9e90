"""The Redis broker: envelopes over one pub/sub channel, presence in sorted sets with expiry.

Why one channel for every envelope: each process delivers to its own connections whatever
the user, so every process needs every envelope anyway; per-user channels would cost a
SUBSCRIBE per connected user and buy nothing. Redis pub/sub is fire-and-forget, so what
matters is that messages and notifications are stored *before* they are published; a
process that lost its subscription tells its clients to resume (``on_gap``).

Keys (``<prefix>`` is ``squall`` unless ``--broker-prefix`` or the URL's ``?prefix=…`` names
another; ``<scope>`` is the first 16 characters of the installation id, see base.py, so
deployments sharing one Redis never meet):
    <prefix>:<scope>:events              the pub/sub channel; messages are JSON envelopes
    <prefix>:<scope>:presence:<chat_id>  sorted set; member "<user_id>|<origin>", score = expiry (epoch s)
Without a scope (a broker made outside a server, as the contract tests do) ``<prefix>:`` alone.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Dict, Iterable, Optional, Set
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ....tasks import spawn
from .base import DEFAULT_PREFIX, Broker, BrokerUnavailable, scope_of

log = logging.getLogger("squall.broker.redis")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
COMMAND_TIMEOUT = 5.0  # seconds; a hung Redis must not hold up senders indefinitely


def split_prefix(url: str, default: str = DEFAULT_PREFIX):
    """``(url without ?prefix=, prefix)``: the key prefix is ours, not a redis-py option."""
    parsed = urlparse(url)
    params = parse_qsl(parsed.query, keep_blank_values=True)
    prefix = default
    kept = []
    for key, value in params:
        if key == "prefix":
            prefix = value or default
        else:
            kept.append((key, value))
    return urlunparse(parsed._replace(query=urlencode(kept))), prefix


class RedisBroker(Broker):
    """Pub/sub on one channel plus shared, self-expiring presence (redis-py asyncio)."""

    distributed = True

    def __init__(self, origin: str, url: str, presence_ttl: float = 15.0, prefix: str = "", **options):
        super().__init__(origin)
        self.url, self.prefix = split_prefix(url, prefix or DEFAULT_PREFIX)
        self.namespace = self.prefix  # every key and the channel start with it
        self.channel = f"{self.namespace}:events"
        self.presence_ttl = float(presence_ttl)
        self._client: Optional[aioredis.Redis] = None  # between start and stop
        self._listener: Optional[asyncio.Task] = None
        self._refresher: Optional[asyncio.Task] = None
        self._subscribed = asyncio.Event()
        self._stopping = False
        self._lost = False  # True from a lost subscription until the next one is established
        self._publish_failed = False  # a publish failed; local clients must resume once Redis answers

    def scope(self, installation_id: str) -> None:
        """Names become ``<prefix>:<scope>:…`` (call before ``start``)."""
        self.namespace = f"{self.prefix}:{scope_of(installation_id)}"
        self.channel = f"{self.namespace}:events"

    def _presence_key(self, chat_id: int) -> str:
        return f"{self.namespace}:presence:{int(chat_id)}"

    def _member(self, user_id: int) -> str:
        return f"{int(user_id)}|{self.origin}"

    async def start(self, receiver, presence_source=None, on_gap=None) -> None:
        """Connect, subscribe (waits up to 10 s for the first subscription), start refreshing presence."""
        await super().start(receiver, presence_source, on_gap)
        self._stopping = False
        # Keepalives and health checks: the subscription only reads, so a silently dropped
        # connection must be noticed by the socket itself.
        self._client = aioredis.from_url(self.url, socket_connect_timeout=5, socket_timeout=None,
                                         socket_keepalive=True, health_check_interval=30)
        self._listener = spawn(self._listen_forever(), name="broker.redis.listen")
        self._refresher = spawn(self._refresh_forever(), name="broker.redis.refresh")
        try:
            await asyncio.wait_for(self._subscribed.wait(), 10)
        except asyncio.TimeoutError:
            # Start anyway: the listener keeps retrying and /readyz reports the broker down.
            log.error("Redis broker at %s is not reachable yet; retrying in the background", self._where())

    @property
    def _redis(self) -> aioredis.Redis:
        """The client, between start and stop. Raises BrokerUnavailable otherwise."""
        client = self._client
        if client is None:
            raise BrokerUnavailable("the Redis broker is not started")
        return client

    def _where(self) -> str:
        parsed = urlparse(self.url)
        return f"{parsed.hostname}:{parsed.port or 6379}"

    async def stop(self) -> None:
        """Unsubscribe, drop this process's presence claims, close the client."""
        self._stopping = True
        for task in (self._listener, self._refresher):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._listener = self._refresher = None
        if self._client is not None:
            try:
                await asyncio.wait_for(self._clear_presence(), 2)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass  # the claims expire by themselves
            await self._client.aclose()
            self._client = None

    async def _listen_forever(self) -> None:
        """Subscribe and dispatch; on any failure reconnect with capped backoff and resubscribe."""
        delay = BACKOFF_FIRST
        while not self._stopping:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if self._lost:
                    log.warning("Redis broker: resubscribed to %s on %s", self.channel, self._where())
                    self._lost = False
                    self._publish_failed = False
                    await self._refresh_presence()
                    self._notify_gap()
                self._subscribed.set()
                delay = BACKOFF_FIRST
                while True:
                    # A bounded wait lets redis-py send its health-check PING on quiet channels.
                    message = await pubsub.get_message(timeout=15.0)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection errors of every kind: retry
                self._subscribed.clear()
                self._lost = True
                log.warning("Redis broker: subscription on %s lost (%s: %s); retrying in %.0f s",
                            self._where(), type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # closing a broken connection may fail again; nothing to do
                    pass

    def _dispatch(self, raw) -> None:
        try:
            envelope = json.loads(raw)
        except ValueError:
            log.error("Redis broker: dropped a message that is not a JSON envelope")
            return
        self._hand_over(envelope)

    def _notify_gap(self) -> None:
        if self._on_gap is not None:
            try:
                self._on_gap()
            except Exception:
                log.exception("handling a broker gap failed")

    async def publish(self, envelope: dict) -> None:
        """PUBLISH the envelope; failures are logged, not raised (stored events resume from the database)."""
        try:
            await asyncio.wait_for(self._redis.publish(self.channel, json.dumps(envelope, separators=(",", ":"))),
                                   COMMAND_TIMEOUT)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            # The sender's data is already committed; receivers that missed this resume
            # with Last-Event-ID: processes whose subscription broke when it comes back,
            # this process as soon as Redis answers again (see _recovered).
            # Warn once per outage; every failure would flood the log under load.
            level = logging.DEBUG if self._publish_failed else logging.WARNING
            self._publish_failed = True
            log.log(level, "Redis broker: publish failed (%s: %s); clients will resume from the database",
                    type(exc).__name__, exc)
            return
        self._recovered()

    def _recovered(self) -> None:
        """Redis answered: if a publish failed before, this process's clients missed it; make them resume."""
        if self._publish_failed:
            self._publish_failed = False
            log.warning("Redis broker: reachable again after failed publishes; clients resume")
            self._notify_gap()

    # Presence -----------------------------------------------------------------------------

    async def presence_changed(self, user_id: int, chat_id: int, active: bool) -> None:
        """Claim (with expiry) or drop this process's presence of ``user_id`` in ``chat_id``."""
        key = self._presence_key(chat_id)
        try:
            if active:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(key, {self._member(user_id): time.time() + self.presence_ttl})
                    pipe.expire(key, int(self.presence_ttl * 2) + 1)
                    await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT)
            else:
                await asyncio.wait_for(self._redis.zrem(key, self._member(user_id)), COMMAND_TIMEOUT)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            # A missed claim is renewed by the refresher; a missed removal expires by itself.
            log.warning("Redis broker: presence update failed (%s)", exc)

    async def active_users(self, chat_id: int, user_ids: Iterable[int]) -> Set[int]:
        """Users of ``user_ids`` with an unexpired claim in ``chat_id`` (one round trip)."""
        wanted = {int(u) for u in user_ids}
        if not wanted:
            return set()
        members = await asyncio.wait_for(
            self._redis.zrangebyscore(self._presence_key(chat_id), time.time(), "+inf"), COMMAND_TIMEOUT)
        active: Set[int] = set()
        for member in members:
            if not isinstance(member, bytes):  # never: the client does not decode responses
                continue
            uid = int(member.split(b"|", 1)[0])
            if uid in wanted:
                active.add(uid)
        return active

    async def _refresh_presence(self) -> None:
        """Renew every claim of this process and drop expired claims of the same chats."""
        claims = self._presence_source()
        if not claims:
            return
        now = time.time()
        expiry = now + self.presence_ttl
        by_chat: Dict[int, Dict[str, float]] = {}
        for user_id, chat_id in claims:
            by_chat.setdefault(chat_id, {})[self._member(user_id)] = expiry
        async with self._redis.pipeline(transaction=False) as pipe:
            for chat_id, members in by_chat.items():
                key = self._presence_key(chat_id)
                pipe.zadd(key, members)
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.expire(key, int(self.presence_ttl * 2) + 1)
            await pipe.execute()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            try:
                await self._refresh_presence()
                await self._redis.ping()
                self._recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Redis broker: presence refresh failed (%s: %s)", type(exc).__name__, exc)

    async def _clear_presence(self) -> None:
        claims = self._presence_source()
        if not claims:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, chat_id in claims:
                pipe.zrem(self._presence_key(chat_id), self._member(user_id))
            await pipe.execute()

    async def ping(self) -> None:
        """Raise BrokerUnavailable unless Redis answers and our subscription is live."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Redis at {self._where()}: {exc}") from exc
        if not self._subscribed.is_set():
            raise BrokerUnavailable("Redis subscription is not established")
