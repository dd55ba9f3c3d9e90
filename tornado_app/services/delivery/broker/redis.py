"""The Redis broker: envelopes over pub/sub channels, presence in sorted sets with expiry.

Routing (broker/shards.py, issue 26). ``sharded`` (the default): a targeted envelope travels
on the channels of its users' shards, and a process subscribes only to the shards of the
users it holds, so its cost follows its own users, not the deployment's traffic; broadcasts,
control messages and envelopes spanning more than FANOUT_LIMIT shards travel on the broadcast
channel, which every process reads. ``broadcast`` (``--routing broadcast``, the design before
issue 26, kept for comparison): every envelope on the broadcast channel, every process reads
everything. Redis pub/sub is fire-and-forget, so what matters is that messages and
notifications are stored *before* they are published; a process that lost its subscription
tells its clients to resume (``on_gap``).

Keys (``<prefix>`` is ``squall`` unless ``--broker-prefix`` or the URL's ``?prefix=…`` names
another; ``<scope>`` is the first 16 characters of the installation id, see base.py, so
deployments sharing one Redis never meet):
    <prefix>:<scope>:events              the broadcast channel; messages are JSON envelopes
    <prefix>:<scope>:u:<shard>           the channel of one shard of users (sharded routing)
    <prefix>:<scope>:presence:<chat_id>  sorted set; member "<user_id>|<origin>", score = expiry (epoch s)
Without a scope (a broker made outside a server, as the contract tests do) ``<prefix>:`` alone.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ....tasks import spawn
from .base import DEFAULT_PREFIX, Broker, BrokerUnavailable, scope_of
from .shards import DEFAULT_LINGER, DEFAULT_SHARDS, ROUTINGS, SHARDED, SUBSCRIBE_BATCH, ShardInterest, split

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
    """Pub/sub on a broadcast channel and shard channels, plus shared, self-expiring presence (redis-py asyncio)."""

    distributed = True

    def __init__(self, origin: str, url: str, presence_ttl: float = 15.0, prefix: str = "",
                 routing: str = SHARDED, shards: int = DEFAULT_SHARDS, shard_linger: float = DEFAULT_LINGER,
                 **options: Any):
        super().__init__(origin)
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}")
        self.url, self.prefix = split_prefix(url, prefix or DEFAULT_PREFIX)
        self.routing = routing
        self.shards = int(shards)
        self._interest: Optional[ShardInterest] = None
        if routing == SHARDED:
            self._interest = ShardInterest(self.shards, float(shard_linger), self._subscribe_shards,
                                           self._unsubscribe_shards)
        self._pubsub: Any = None  # the live subscription connection (sharded routing subscribes on it)
        self._name(self.prefix)
        self.presence_ttl = float(presence_ttl)
        self._client: Optional[aioredis.Redis] = None  # between start and stop (a RedisCluster in the cluster broker)
        self._listener: Optional[asyncio.Task] = None
        self._refresher: Optional[asyncio.Task] = None
        self._subscribed = asyncio.Event()
        self._stopping = False
        self._lost = False  # True from a lost subscription until the next one is established
        self._publish_failed = False  # a publish failed; local clients must resume once Redis answers

    def _name(self, namespace: str) -> None:
        self.namespace = namespace  # every key and channel starts with it
        self.channel = f"{namespace}:events"
        self._shard_prefix = f"{namespace}:u:"
        self._shard_prefix_bytes = self._shard_prefix.encode()

    def scope(self, installation_id: str) -> None:
        """Names become ``<prefix>:<scope>:…`` (call before ``start``)."""
        self._name(f"{self.prefix}:{scope_of(installation_id)}")

    def shard_channel(self, shard: int) -> str:
        """The channel of ``shard``."""
        return f"{self._shard_prefix}{shard}"

    # Sharded routing ----------------------------------------------------------------------

    def hold(self, user_id: int) -> None:
        """Subscribe the shard of ``user_id`` (at once, or keep it past its linger)."""
        if self._interest is not None:
            self._interest.hold(user_id)

    def release(self, user_id: int) -> None:
        """Unsubscribe the shard of ``user_id`` ``shard_linger`` s after its last user here left."""
        if self._interest is not None:
            self._interest.release(user_id)

    async def ready(self, user_id: int) -> None:
        """Wait until the shard of ``user_id`` is subscribed. Raises BrokerUnavailable after READY_TIMEOUT."""
        if self._interest is None or self._lost:
            # Lost: once back, the listener subscribes every wanted shard, then makes every local
            # stream resume (on_gap), which covers this one's window.
            return
        try:
            await self._interest.ready(user_id)
        except asyncio.TimeoutError:
            raise BrokerUnavailable("Redis broker: the subscription of a shard was not confirmed in time") from None

    def subscribed_shards(self) -> int:
        """Shard channels subscribed and confirmed."""
        return 0 if self._interest is None else self._interest.subscribed()

    async def _subscribe_shards(self, shards: List[int]) -> None:
        pubsub = self._pubsub
        if pubsub is not None:  # otherwise the listener subscribes every wanted shard once it is back
            await asyncio.wait_for(pubsub.subscribe(*[self.shard_channel(s) for s in shards]), COMMAND_TIMEOUT)

    async def _unsubscribe_shards(self, shards: List[int]) -> None:
        pubsub = self._pubsub
        if pubsub is not None:
            await asyncio.wait_for(pubsub.unsubscribe(*[self.shard_channel(s) for s in shards]), COMMAND_TIMEOUT)

    def _shard_of_channel(self, channel: bytes) -> Optional[int]:
        if channel.startswith(self._shard_prefix_bytes):
            tail = channel[len(self._shard_prefix_bytes):]
            if tail.isdigit():
                return int(tail)
        return None

    def _on_subscribed(self, channel: bytes) -> None:
        """A SUBSCRIBE was acknowledged: release the streams waiting for that shard."""
        if self._interest is not None:
            shard = self._shard_of_channel(channel)
            if shard is not None:
                self._interest.confirmed(shard)

    def _wanted_channels(self) -> List[str]:
        """The shard channels to subscribe after (re)connecting."""
        if self._interest is None:
            return []
        return [self.shard_channel(s) for s in sorted(self._interest.wanted)]

    def _presence_key(self, chat_id: int) -> str:
        return f"{self.namespace}:presence:{int(chat_id)}"

    def _member(self, user_id: int) -> str:
        return f"{int(user_id)}|{self.origin}"

    async def start(self, receiver, presence_source=None, on_gap=None) -> None:
        """Connect, subscribe (waits up to 10 s for the first subscription), start refreshing presence."""
        await super().start(receiver, presence_source, on_gap)
        self._stopping = False
        self._client = self._connect()
        self._listener = spawn(self._listen_forever(), name="broker.redis.listen")
        self._refresher = spawn(self._refresh_forever(), name="broker.redis.refresh")
        try:
            await asyncio.wait_for(self._subscribed.wait(), 10)
        except asyncio.TimeoutError:
            # Start anyway: the listener keeps retrying and /readyz reports the broker down.
            log.error("Redis broker at %s is not reachable yet; retrying in the background", self._where())

    def _connect(self) -> Any:
        """The client (the cluster broker makes a cluster client)."""
        # Keepalives and health checks: the subscription only reads, so a silently dropped
        # connection must be noticed by the socket itself.
        return aioredis.from_url(self.url, socket_connect_timeout=5, socket_timeout=None,
                                 socket_keepalive=True, health_check_interval=30)

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
        if self._interest is not None:
            self._interest.close()
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
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self._pubsub = pubsub
                wanted = self._wanted_channels()
                for start in range(0, len(wanted), SUBSCRIBE_BATCH):
                    await pubsub.subscribe(*wanted[start:start + SUBSCRIBE_BATCH])
                if self._lost:
                    log.warning("Redis broker: resubscribed to %s (and %d shard channels) on %s",
                                self.channel, len(wanted), self._where())
                    self._lost = False
                    self._publish_failed = False
                    await self._refresh_presence()
                    self._notify_gap()
                self._subscribed.set()
                delay = BACKOFF_FIRST
                while True:
                    # A bounded wait lets redis-py send its health-check PING on quiet channels.
                    message = await pubsub.get_message(timeout=15.0)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind == "message":
                        self._dispatch(message["data"])
                    elif kind == "subscribe":
                        self._on_subscribed(message["channel"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection errors of every kind: retry
                self._lose_subscription()
                log.warning("Redis broker: subscription on %s lost (%s: %s); retrying in %.0f s",
                            self._where(), type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                if self._pubsub is pubsub:
                    self._pubsub = None
                try:
                    await pubsub.aclose()
                except Exception:  # closing a broken connection may fail again; nothing to do
                    pass

    def _lose_subscription(self) -> None:
        self._subscribed.clear()
        self._lost = True
        if self._interest is not None:
            self._interest.reset()

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
        """PUBLISH the envelope (on its shards' channels, or the broadcast one); failures are logged, not raised.

        Stored events resume from the database.
        """
        if self._interest is None:
            sends = [(self.channel, envelope)]
        else:
            sends = [(self.channel if shard is None else self.shard_channel(shard), part)
                     for shard, part in split(envelope, self.shards)]
        try:
            await asyncio.wait_for(self._send([(channel, json.dumps(part, separators=(",", ":")))
                                               for channel, part in sends]), COMMAND_TIMEOUT)
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

    async def _send(self, sends: List[Tuple[str, str]]) -> None:
        """PUBLISH each ``(channel, text)``: one command, or one pipelined round trip for several."""
        if len(sends) == 1:
            await self._redis.publish(*sends[0])
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, text in sends:
                pipe.publish(channel, text)
            await pipe.execute()

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
