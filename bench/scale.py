"""Scale-out scenarios of issue 26: ``python -m bench cluster`` and ``python -m bench connections50k``.

``cluster`` (item 3): N separate Squall processes (``run.py``, each its own port) share one
database and the Redis at 127.0.0.1:6379 (a broker prefix of their own per configuration);
users are spread over them, one WebSocket each; an ingress process (one more ``run.py``, no
streams) takes every publish request: targeted notifications, one user per request, at a
fixed total rate. Per process: CPU time over the window (``/proc/<pid>/task/*/schedstat``)
and, from its ``/metrics``, the events it delivered and the envelopes it received for nobody
(``squall_broker_discarded_total``). Each N runs with ``--routing sharded`` and then
``--routing broadcast`` (the old design), side by side, and (N > 1) beside one process alone
with what each of the N holds: 1/N of the users and 1/N of the events at 1/N of the rate. A
process's CPU per event depends on its own event rate (fewer events per wake-up and colder
caches at a lower rate), so "alone" is the cost a process of N should have if nothing but its
own users' events reached it.

``connections50k`` (item 4): one Squall with ``--processes`` workers (each under the
per-process descriptor limit) and a Redis broker; a load generator split over several
processes holds ``connections`` idle WebSockets, each holder process from a source address of
its own (127.0.N.2, .3, …: one address would run out of ephemeral ports near 28,000); then
one broadcast must reach every connection. Memory per connection: summed worker RSS after
minus before, divided by the connections held.

Their sizes are ``ScaleSizes`` (kept apart from ``runner.Sizes``: the other scenarios' stored
results stay valid when these run).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from tornado_app.httpserver import default_max_connections

from .runner import Bench, Sizes
from .servers import SERVICE_TOKEN, Server, reset_postgres, squall

REDIS_URL = "redis://127.0.0.1:6379/0"
METRICS_TOKEN = "bench-metrics-token"
WS_PATH = "/ws/notifications"


@dataclass
class ScaleSizes:
    """Sizes of the scale-out scenarios (the full configuration; ``SCALE_TINY`` for tests)."""

    cluster_max_n: int = 8  # N = 1, 2, 4, … up to this
    cluster_users: int = 400  # one WebSocket each, user i on process i mod N
    cluster_notifications: int = 8000  # per configuration, one user per request
    cluster_rate: float = 400.0  # notifications/s, the fixed total rate
    cluster_idle_window: float = 3.0  # seconds of no traffic measured per process (its idle CPU is subtracted)
    cluster_settle: float = 0.5  # seconds after the streams open, and after the last arrival (strays)
    cluster_wakeup_seconds: float = 5.0  # per rate, the trivial reader (bench/wakeup.py)
    connections: int = 50000
    connection_workers: int = 4  # --processes of the server
    connection_holders: int = 4  # load-generator processes
    connection_users: int = 2000  # tokens reused round-robin (25 connections a user at 50,000)
    timeout: float = 120.0


SCALE_TINY = ScaleSizes(cluster_max_n=2, cluster_users=8, cluster_notifications=40, cluster_rate=200.0,
                        cluster_idle_window=0.3, cluster_settle=0.1, cluster_wakeup_seconds=0.2,
                        connections=200, connection_workers=2, connection_holders=2, connection_users=20,
                        timeout=30.0)


def stop_all(servers: List[Server]) -> None:
    """SIGTERM to every server at once, then wait for each (SIGKILL to one still running after 30 s)."""
    for srv in servers:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
    for srv in servers:
        if srv.proc is None:
            continue
        try:
            srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            srv.stop(0.1)  # SIGKILL to its process group


def cluster_ns(max_n: int) -> List[int]:
    """1, 2, 4, … up to ``max_n`` (``max_n`` itself last when it is not a power of two)."""
    ns, n = [], 1
    while n < max_n:
        ns.append(n)
        n *= 2
    return ns + [max_n]


def _database(bench: Bench, pg_url: Optional[str], name: str) -> tuple:
    """``(url, label)``: PostgreSQL when given (dropped and re-created), else a SQLite file."""
    if pg_url:
        reset_postgres(pg_url)
        return pg_url, "PostgreSQL"
    return f"sqlite:///{os.path.join(bench.work, name + '.db')}", "SQLite (one file)"


def summarise(config: dict) -> dict:
    """The stream-holding processes' totals of one configuration."""
    holders = [p for p in config["processes"] if not p["ingress"]]
    ingress = next(p for p in config["processes"] if p["ingress"])
    cpu_ms = sum(p["cpu_ms"] for p in holders)
    delivered = sum(p["delivered"] for p in holders)
    discarded = sum(p["discarded"] for p in holders)
    per_process = [p["cpu_us_per_delivered"] for p in holders if p["cpu_us_per_delivered"] is not None]
    return {
        "cpu_ms": round(cpu_ms, 3), "delivered": delivered, "discarded": discarded,
        "broker_in": sum(p["broker_in"] for p in holders),
        "cpu_us_per_delivered": round(cpu_ms * 1000.0 / delivered, 2) if delivered else None,
        "cpu_us_per_delivered_min": min(per_process, default=None),
        "cpu_us_per_delivered_max": max(per_process, default=None),
        "discarded_per_delivered": round(discarded / delivered, 3) if delivered else None,
        "ingress_cpu_us_per_notification": round(ingress["cpu_ms"] * 1000.0 / config["notifications"], 2),
        "ingress_discarded": ingress["discarded"],
    }


def host_wakeup(bench: Bench, rates: List[float], sizes: ScaleSizes, started: List[Server], log=print) -> dict:
    """A trivial reader's CPU µs per message at each per-process rate of the simulation (bench/wakeup.py).

    Pinned like the Squall processes; what this host charges any process per message at that
    rate, shown beside Squall's CPU per delivered event at each N.
    """
    reader = Server("wakeup-reader", [*bench.pin["server"], sys.executable, "-m", "bench.wakeup", "{port}"],
                    os.path.join(bench.work, "wakeup-reader.log"))
    started.append(reader)
    reader.launch()
    try:
        r = bench.loadgen({"scenario": "wakeup", "port": reader.port, "pid": reader.pid, "rates": rates,
                           "seconds": sizes.cluster_wakeup_seconds, "idle_window": sizes.cluster_idle_window,
                           "min_messages": 20, "timeout": sizes.timeout})
    finally:
        reader.stop()
    log("  a trivial reader's CPU per message: " + ", ".join(f"{v} µs at {k}/s" for k, v in r["us_per_message"].items()))
    return r


def cluster(bench: Bench, sizes: ScaleSizes, pg_url: Optional[str], started: List[Server], log=print) -> dict:
    """Every N, sharded then broadcast routing; returns the ``cluster`` section of the results."""
    db, db_label = _database(bench, pg_url, "cluster")
    host = host_wakeup(bench, [sizes.cluster_rate / n for n in cluster_ns(sizes.cluster_max_n)], sizes, started, log)
    users: Optional[list] = None
    configs = []
    tag = f"b{os.getpid()}"
    for n in cluster_ns(sizes.cluster_max_n):
        # "alone": one process with only what each of the N holds (its users, 1/N of the events at
        # 1/N of the rate): what a process of N should cost if nothing but its own users reached it.
        for routing in (("alone",) if n > 1 else ()) + ("sharded", "broadcast"):
            procs = 1 if routing == "alone" else n
            extra = ["--broker-url", REDIS_URL, "--broker-prefix", f"{tag}n{n}{routing}",
                     "--routing", "sharded" if routing == "alone" else routing, "--metrics-token", METRICS_TOKEN]
            # The ingress holds no stream: it runs on the load generator's core, as API traffic would
            # reach other hosts' processes. On the holders' core it evicted their caches between events.
            group = [squall(f"cluster-n{n}-{routing}-ingress", db, bench.work, {**bench.pin, "server": bench.pin["loadgen"]},
                            extra_args=extra)]
            group += [squall(f"cluster-n{n}-{routing}-p{k}", db, bench.work, bench.pin, extra_args=extra)
                      for k in range(procs)]
            started.extend(group)
            if users is None:
                group[0].start()  # the first alone: it creates the schema
            for srv in group:
                if srv.proc is None:
                    srv.launch()
            for srv in group:
                srv.wait_healthy()
            try:
                if users is None:
                    users = bench.loadgen({"scenario": "users", "port": group[0].port, "n": sizes.cluster_users,
                                           "prefix": "cluster", "timeout": sizes.timeout})["users"]
                share = 1 if routing != "alone" else n
                placed = [{**u, "proc": i % procs} for i, u in enumerate(users[:len(users) // share])]
                r = bench.loadgen({
                    "scenario": "cluster", "timeout": sizes.timeout, "path": WS_PATH,
                    "idle_window": sizes.cluster_idle_window, "settle": sizes.cluster_settle,
                    "linger": sizes.cluster_settle,
                    "processes": [{"name": f"p{k}", "port": s.port, "pid": s.pid} for k, s in enumerate(group[1:])],
                    "ingress": {"name": "ingress", "port": group[0].port, "pid": group[0].pid},
                    "users": placed, "notifications": sizes.cluster_notifications // share,
                    "rate": sizes.cluster_rate / share,
                    "publish_path": "/api/notifications", "service_token": SERVICE_TOKEN,
                    "metrics_token": METRICS_TOKEN})
            finally:
                stop_all(group)
            config = {"n": n, "routing": routing, **r}
            config["summary"] = summarise(config)
            configs.append(config)
            sm = config["summary"]
            log(f"  N={n} {routing}: {sm['cpu_us_per_delivered']} µs CPU per delivered event (processes "
                f"{sm['cpu_us_per_delivered_min']}–{sm['cpu_us_per_delivered_max']}), {sm['discarded']} discarded, "
                f"exactly once {r['exactly_once']}, rate {r['achieved_rate']}/s, loadgen {r['loadgen_cpu_pct']}% CPU")
    # The marginal cost of a discarded envelope: what broadcast routing adds over sharded routing
    # at the same N and the same delivered load, divided by the envelopes it added.
    for n in cluster_ns(sizes.cluster_max_n):
        sh = next(c["summary"] for c in configs if c["n"] == n and c["routing"] == "sharded")
        bc = next(c["summary"] for c in configs if c["n"] == n and c["routing"] == "broadcast")
        extra_discards = bc["discarded"] - sh["discarded"]
        bc["cpu_us_per_discarded"] = (round((bc["cpu_ms"] - sh["cpu_ms"]) * 1000.0 / extra_discards, 2)
                                      if extra_discards > 0 else None)
    sharded = [c["summary"]["cpu_us_per_delivered"] for c in configs if c["routing"] == "sharded"]
    broadcast = [c["summary"]["cpu_us_per_delivered"] for c in configs if c["routing"] == "broadcast"]
    # A process of N against one process alone with the same users and events (N = 1: the cluster of one)
    vs_alone: Dict[str, List[float]] = {}
    for n in cluster_ns(sizes.cluster_max_n):
        alone = next(c["summary"] for c in configs if c["n"] == n and c["routing"] == ("alone" if n > 1 else "sharded"))
        for routing in ("sharded", "broadcast"):
            sm = next(c["summary"] for c in configs if c["n"] == n and c["routing"] == routing)
            if sm["cpu_us_per_delivered"] and alone["cpu_us_per_delivered"]:
                sm["vs_alone"] = round(sm["cpu_us_per_delivered"] / alone["cpu_us_per_delivered"], 3)
                vs_alone.setdefault(routing, []).append(sm["vs_alone"])
    # The host's own rate effect: a trivial reader's µs per message at each N's per-process rate. Taken
    # out of the sharded figures (what the reader pays above its N = 1 cost), what is left is Squall's.
    reader = [host["us_per_message"][str(sizes.cluster_rate / n)] for n in cluster_ns(sizes.cluster_max_n)]
    adjusted = [round(x - (r - reader[0]), 2) for x, r in zip(sharded, reader)] if len(sharded) == len(reader) else []
    return {"sizes": {k: v for k, v in asdict(sizes).items() if k.startswith("cluster") or k == "timeout"},
            "database": db_label, "broker": "Redis 127.0.0.1:6379, a prefix of its own per configuration",
            "configs": configs, "host_wakeup": host,
            "reader_spread": round(max(reader) / min(reader), 3) if reader and min(reader) else None,
            "sharded_less_host": adjusted,
            "sharded_less_host_spread": (round(max(adjusted) / min(adjusted), 3)
                                         if adjusted and min(adjusted) > 0 else None),
            "sharded_spread": round(max(sharded) / min(sharded), 3) if sharded and min(sharded) else None,
            "broadcast_growth": round(broadcast[-1] / broadcast[0], 3) if broadcast and broadcast[0] else None,
            "sharded_vs_alone_max": max(vs_alone.get("sharded", []), default=None),
            "broadcast_vs_alone_max": max(vs_alone.get("broadcast", []), default=None),
            "loadavg_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def check_connection_sizes(sizes: ScaleSizes, fd_limit: int) -> int:
    """Each worker's connection cap under ``fd_limit``; ValueError when the sizes do not fit under it.

    The kernel spreads accepted connections over the workers (SO_REUSEPORT) by a hash, not
    evenly: a tenth of margin is kept under each worker's cap. A holder process needs its
    sockets and 100 descriptors more (its interpreter, pipes, the publisher).
    """
    cap = default_max_connections(fd_limit)  # what each worker allows itself (run.py raises its limit to this)
    per_worker = -(-sizes.connections // sizes.connection_workers)
    per_holder = -(-sizes.connections // sizes.connection_holders)
    if per_worker * 1.1 > cap or per_holder + 100 > fd_limit:
        raise ValueError(f"{sizes.connections:,} connections need more workers or holders: {per_worker:,} per "
                         f"worker (cap {cap:,} under the descriptor limit {fd_limit:,}, a tenth kept as margin), "
                         f"{per_holder:,} per load-generator process")
    return cap


def connections(bench: Bench, sizes: ScaleSizes, pg_url: Optional[str], started: List[Server], log=print) -> dict:
    """``connections`` idle WebSockets over ``connection_workers`` workers; one broadcast must reach all."""
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    cap = check_connection_sizes(sizes, fd_limit)
    db, db_label = _database(bench, pg_url, "connections")
    prefix = f"b{os.getpid()}conn"
    server = squall("squall-connections", db, bench.work, bench.pin,
                    extra_args=["--processes", str(sizes.connection_workers), "--broker-url", REDIS_URL,
                                "--broker-prefix", prefix])
    started.append(server)
    server.start()
    try:
        users = bench.loadgen({"scenario": "users", "port": server.port, "n": sizes.connection_users,
                               "prefix": "conn", "timeout": max(sizes.timeout, sizes.connection_users / 100.0)})
        r = bench.loadgen({"scenario": "connections", "port": server.port, "server_pid": server.pid,
                           "path": WS_PATH, "tokens": [u["token"] for u in users["users"]],
                           "connections": sizes.connections, "holders": sizes.connection_holders,
                           "publish_path": "/api/notifications", "service_token": SERVICE_TOKEN,
                           "timeout": max(sizes.timeout, 300.0), "worker_cap": cap, "fd_limit": fd_limit})
    finally:
        server.stop()
    log(f"  {r['held']:,} held over {r['workers']} workers ({r['connects_per_s']:,.0f} connects/s), broadcast "
        f"reached {r['broadcast_reached']:,} in {r['broadcast_seconds']} s, {r['connect_errors']} errors, "
        f"{r['kb_per_connection']} KB per connection (workers' RSS {r['rss_before_mb']} → {r['rss_after_mb']} MB)")
    return {"sizes": {k: v for k, v in asdict(sizes).items() if k.startswith("connection") or k == "timeout"},
            "database": db_label, "broker": "Redis 127.0.0.1:6379", **r,
            "loadavg_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def run_scale(scenario: str, sizes: ScaleSizes, runs: int, pg_url: Optional[str], log=print) -> dict:
    """Run ``cluster`` or ``connections50k``; returns ``{section: result}``."""
    bench = Bench(Sizes(), runs, False, log, fanout_runs=1)  # its sizes are not used here
    started: List[Server] = []
    try:
        if scenario == "cluster":
            log("cluster simulation")
            return {"cluster": cluster(bench, sizes, pg_url, started, log)}
        log(f"{sizes.connections:,} connections on one host")
        return {"connections": connections(bench, sizes, pg_url, started, log)}
    finally:
        for srv in started:
            srv.stop()
        bench.close()
