"""The Redis Cluster broker (issue 26): sharded pub/sub, so each shard channel's traffic stays on its node.

URL: ``redis+cluster://host:port[,host:port…][?prefix=…]`` (``rediss+cluster://`` for TLS): any
nodes of the cluster, as startup nodes; the client learns the rest (CLUSTER SLOTS).

Everything is as in the Redis broker (redis.py: channels, presence keys, routing), except:
    publish     SPUBLISH: the message goes to the master owning the channel's slot (and its
                replicas), never across the cluster bus to every node as PUBLISH would.
    subscribe   SSUBSCRIBE on the master owning each channel, one connection per master (a
                channel per SSUBSCRIBE: Redis refuses channels of several slots in one).
    broadcast   the broadcast channel is a shard channel too: its traffic is on one master.

Failover: a master that dies breaks its connection; the listener then asks the cluster for
its slots again (the replica promoted in the meantime owns them), subscribes every wanted
channel on the new owners, and calls ``on_gap``: local streams resume from the database, so
what was published while the slot had no master is not lost (it was stored first). Publishes
that failed in the meantime make this process's streams resume once the cluster answers again.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Tuple
from urllib.parse import urlparse

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from ....tasks import spawn
from .base import BrokerUnavailable
from .redis import BACKOFF_FIRST, BACKOFF_MAX, COMMAND_TIMEOUT, RedisBroker

log = logging.getLogger("squall.broker.cluster")

SCHEMES = ("redis+cluster", "rediss+cluster")
MAX_STARTUP_NODES = 64


def parse_cluster_url(url: str) -> Tuple[List[Tuple[str, int]], bool]:
    """``([(host, port)], tls)`` of a ``redis+cluster://`` URL. Raises ValueError."""
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES:
        raise ValueError("a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://")
    if "@" in parsed.netloc:
        raise ValueError("a Redis Cluster URL carries no credentials here (use ACLs on a private network)")
    nodes = []
    for item in parsed.netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("each node of a Redis Cluster URL is host:port")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes or len(nodes) > MAX_STARTUP_NODES:
        raise ValueError(f"a Redis Cluster URL names 1 to {MAX_STARTUP_NODES} nodes")
    if parsed.path not in ("", "/"):
        raise ValueError("a Redis Cluster has one database: give no /db in the URL")
    return nodes, parsed.scheme == "rediss+cluster"


def _outcome_taken(task: asyncio.Task) -> None:
    """A reader task ended: its error (if any) is raised in the listener, which logs it once."""
    if not task.cancelled():
        task.exception()


class RedisClusterBroker(RedisBroker):
    """SPUBLISH/SSUBSCRIBE on a Redis Cluster; presence keys spread over its slots."""

    def __init__(self, origin: str, url: str, **options: Any):
        super().__init__(origin, url, **options)
        self.startup_nodes, self.tls = parse_cluster_url(self.url)
        self._readers: Dict[str, Any] = {}  # master name -> its PubSub, while subscribed
        self._rebuild = asyncio.Event()  # a channel's owner is unknown to us: subscribe everything again

    @property
    def _cluster(self) -> RedisCluster:
        """The cluster client, between start and stop. Raises BrokerUnavailable otherwise."""
        client = self._client
        if not isinstance(client, RedisCluster):
            raise BrokerUnavailable("the Redis Cluster broker is not started")
        return client

    def _where(self) -> str:
        return "cluster " + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def _connect(self) -> Any:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self.startup_nodes], ssl=self.tls,
                            socket_connect_timeout=5, socket_timeout=COMMAND_TIMEOUT, socket_keepalive=True,
                            health_check_interval=30)

    async def _send(self, sends: List[Tuple[str, str]]) -> None:
        """SPUBLISH each ``(channel, text)`` to the master of its slot (concurrently when several)."""
        if len(sends) == 1:
            await self._cluster.spublish(*sends[0])
            return
        await asyncio.gather(*(self._cluster.spublish(channel, text) for channel, text in sends))

    async def _subscribe_shards(self, shards: List[int]) -> None:
        await self._ssubscribe([self.shard_channel(s) for s in shards])

    async def _unsubscribe_shards(self, shards: List[int]) -> None:
        for shard in shards:
            channel = self.shard_channel(shard)
            reader = self._reader_of(channel)
            if reader is not None:
                await asyncio.wait_for(reader.sunsubscribe(channel), COMMAND_TIMEOUT)

    def _reader_of(self, channel: str) -> Any:
        """The subscription connection of the master owning ``channel``'s slot (None: not one we read)."""
        node = self._cluster.get_node_from_key(channel)
        return None if node is None else self._readers.get(node.name)

    async def _ssubscribe(self, channels: List[str]) -> None:
        if not self._readers:
            return  # the listener subscribes every wanted channel once it is (back) up
        for channel in channels:
            reader = self._reader_of(channel)
            if reader is None:  # the slot moved to a master we do not read: start over
                self._rebuild.set()
                return
            await asyncio.wait_for(reader.ssubscribe(channel), COMMAND_TIMEOUT)

    async def _listen_forever(self) -> None:
        """Learn the slots, SSUBSCRIBE on each master, read them all; on any failure start over."""
        delay = BACKOFF_FIRST
        while not self._stopping:
            readers: Dict[str, Any] = {}
            tasks: List[asyncio.Task] = []
            try:
                self._rebuild.clear()
                await self._cluster.initialize()  # connects the client the first time
                await self._cluster.nodes_manager.initialize()  # the slots now (a replica may have taken over)
                for node in self._cluster.get_primaries():
                    readers[node.name] = Redis(host=node.host, port=int(node.port), ssl=self.tls, socket_connect_timeout=5,
                                               socket_keepalive=True, health_check_interval=30).pubsub()
                self._readers = readers
                await self._ssubscribe([self.channel, *self._wanted_channels()])
                # The listener takes each reader's outcome itself (asyncio.wait below): done=_outcome_taken.
                tasks = [spawn(self._read(name, pubsub), name="broker.cluster.read", done=_outcome_taken)
                         for name, pubsub in readers.items()]
                tasks.append(spawn(self._rebuild.wait(), name="broker.cluster.rebuild", done=_outcome_taken))
                if self._lost:
                    log.warning("Redis broker: resubscribed on %d master(s) of the %s", len(readers), self._where())
                    self._lost = False
                    self._publish_failed = False
                    await self._refresh_presence()
                    self._notify_gap()
                self._subscribed.set()
                delay = BACKOFF_FIRST
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a reader's error is raised here
                raise ConnectionError("a shard channel moved to another master")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a master gone, a slot moved, the cluster unreachable: start over
                self._lose_subscription()
                log.warning("Redis broker: subscriptions on the %s lost (%s: %s); retrying in %.0f s",
                            self._where(), type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                for task in tasks:
                    task.cancel()
                if self._readers is readers:
                    self._readers = {}
                for pubsub in readers.values():
                    try:
                        await pubsub.aclose()
                    except Exception:  # closing a broken connection may fail again; nothing to do
                        pass

    async def _read(self, name: str, pubsub: Any) -> None:
        """Dispatch the messages of one master's subscription connection (returns only by raising)."""
        while True:
            if not pubsub.subscribed:
                # Nothing subscribed on this master (yet, or any more): there is no connection to read.
                await asyncio.sleep(0.1)
                continue
            message = await pubsub.get_message(timeout=15.0)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "smessage":
                self._dispatch(message["data"])
            elif kind == "ssubscribe":
                self._on_subscribed(message["channel"])

