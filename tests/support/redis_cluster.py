"""A real local Redis Cluster for tests: 6 ``redis-server`` processes (3 masters, 3 replicas) on free ports.

Started with ``--cluster-enabled yes`` and joined by ``redis-cli --cluster create … --cluster-replicas 1
--cluster-yes``. ``--cluster-node-timeout`` is short (NODE_TIMEOUT_MS) so that a killed master's
replica is promoted within a few seconds.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import List

import redis

NODE_TIMEOUT_MS = 1000
NODES = 6


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalRedisCluster:
    """Six redis-server children in ``directory``; ``url`` is the broker URL (``redis+cluster://…``)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.ports: List[int] = []
        self.procs: List[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…`` (every node a startup node)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        """Start the six servers, create the cluster, wait until every node reports cluster_state:ok."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        for _ in range(NODES):
            port = cluster_port()
            node_dir = os.path.join(self.directory, f"node-{port}")
            os.makedirs(node_dir, exist_ok=True)
            self.ports.append(port)
            self.procs.append(subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", os.path.join(node_dir, "nodes.conf"),
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no",
                 # a replica may take over however long ago it last heard its master, and syncs at once
                 "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
                 "--dir", node_dir, "--logfile", os.path.join(node_dir, "redis.log"), "--daemonize", "no"]))
        for port in self.ports:
            self._wait_ping(port)
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        self.wait_ok()
        self.wait_replicas()

    def wait_replicas(self, timeout: float = 60) -> None:
        """Wait until every replica's link to its master is up (synced: ready to take over)."""
        deadline = time.monotonic() + timeout
        for port in self.live_ports():
            while True:
                info = redis.Redis(port=port, socket_connect_timeout=1).info("replication")
                if info["role"] == "master" or info.get("master_link_status") == "up":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica on port {port} did not sync")
                time.sleep(0.1)

    def _wait_ping(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=port, socket_connect_timeout=1).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {port} did not start")

    def wait_ok(self, timeout: float = 60) -> None:
        """Wait until every live node says cluster_state:ok with every slot assigned."""
        deadline = time.monotonic() + timeout
        for port, proc in zip(self.ports, self.procs):
            if proc.poll() is not None:
                continue
            while True:
                info = redis.Redis(port=port, socket_connect_timeout=1).cluster("info")
                if info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster not ok on port {port}: {info}")
                time.sleep(0.1)

    def role(self, port: int) -> str:
        """``master`` or ``slave`` (Redis's word) of the node on ``port``."""
        return redis.Redis(port=port, socket_connect_timeout=1).info("replication")["role"]

    def master_of_key(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot now."""
        client = redis.Redis(port=self.live_ports()[0], socket_connect_timeout=1)
        slot = client.cluster("keyslot", key)
        for start, end, master, *_ in client.cluster("slots"):
            if start <= slot <= end:
                return int(master[1])
        raise RuntimeError(f"slot {slot} is not covered")

    def live_ports(self) -> List[int]:
        """Ports of the nodes still running."""
        return [p for p, proc in zip(self.ports, self.procs) if proc.poll() is None]

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash: no goodbye to the cluster)."""
        proc = self.procs[self.ports.index(port)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def masters(self) -> List[int]:
        """Ports of the masters that own slots, as a live node sees them (CLUSTER SLOTS)."""
        client = redis.Redis(port=self.live_ports()[0], socket_connect_timeout=1)
        return sorted({int(master[1]) for _, _, master, *_ in client.cluster("slots")})

    def wait_promoted(self, dead_port: int, timeout: float = 60) -> None:
        """Wait until the dead master owns no slot any more (its replica took over) and the cluster is ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if dead_port not in self.masters():
                    self.wait_ok(timeout=max(0.5, deadline - time.monotonic()))
                    return
            except (RuntimeError, redis.RedisError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"no replica took over from the master on port {dead_port}")

    def stop(self) -> None:
        """Stop every node."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
