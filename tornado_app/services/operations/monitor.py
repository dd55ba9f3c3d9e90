"""The monitor: probes the database and broker, shares this worker's figures, keeps a short history.

Once a second it writes this worker's metrics snapshot for the other workers (with
``--processes N``). Every ``admin_sample_seconds`` it probes the database and the broker
(the ``database_up``/``broker_up`` gauges) and samples the merged figures of the host into
a ring of the last 15 minutes, which the admin console draws.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Awaitable, Callable, Deque, Dict, Optional

from ...tasks import spawn
from .metrics import SPEC, TRANSPORTS, MetricsHub, quantile

log = logging.getLogger("squall.monitor")

HISTORY_SECONDS = 15 * 60
PROBE_TIMEOUT = 2.0


class Monitor:
    """Background sampling for ``/metrics`` (other workers) and ``/api/admin/summary``."""

    def __init__(self, hub: MetricsHub, sample_seconds: float,
                 probe_database: Callable[[], Awaitable], probe_broker: Callable[[], Awaitable]):
        self.hub = hub
        self.sample_seconds = sample_seconds
        self.probe_database = probe_database
        self.probe_broker = probe_broker
        self.history: Deque[dict] = collections.deque(maxlen=max(2, int(HISTORY_SECONDS / sample_seconds) + 1))
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        """Start the background loop (and take the first sample now)."""
        self.sample()
        self.hub.write_own()
        self._task = spawn(self._run(), name="monitor.sample")

    def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        next_sample = time.monotonic() + self.sample_seconds
        tick = min(1.0, self.sample_seconds)
        while True:
            await asyncio.sleep(tick)
            try:
                self.hub.write_own()
                if time.monotonic() >= next_sample:
                    next_sample += self.sample_seconds
                    await self.probe()
                    self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sampling the metrics failed")

    async def probe(self) -> None:
        """Set the database and broker up/down gauges from one quick check each."""
        metrics = self.hub.metrics
        metrics.database_up = await _succeeds(self.probe_database)
        metrics.broker_up = await _succeeds(self.probe_broker)

    def sample(self) -> None:
        """Append the host's figures now to the history."""
        merged = self.hub.merged()
        counters, gauges, hists = merged["counters"], merged["gauges"], merged["histograms"]
        connections = dict.fromkeys(TRANSPORTS, 0)
        by_process: Dict[str, Dict[str, int]] = {}
        for (transport, process), n in gauges.get("connections", {}).items():
            connections[transport] = connections.get(transport, 0) + n
            by_process.setdefault(process, dict.fromkeys(TRANSPORTS, 0))[transport] = n
        self.history.append({
            "t": time.time(),
            "connections": connections,
            "by_process": by_process,
            "processes": merged["processes"],
            "database_up": {p: v for (p,), v in gauges.get("database_up", {}).items()},
            "broker_up": {p: v for (p,), v in gauges.get("broker_up", {}).items()},
            "delivered": sum(counters.get("events_delivered", {}).values()),
            "messages": sum(counters.get("messages_stored", {}).values()),
            "notifications": sum(counters.get("notifications_stored", {}).values()),
            "slow": sum(counters.get("slow_consumer_disconnects", {}).values()),
            # The Errors figure is the server's own failures (5xx); refused requests (4xx: a bad
            # password, an expired token) are shown apart, they are the clients' errors.
            "errors": _answers(counters, "5"),
            "client_errors": _answers(counters, "4"),
            "latency": list(hists.get("delivery_seconds", {}).get(("chat",), [[0], 0])[0]),
        })

    def summary(self) -> dict:
        """The admin console's JSON: current figures, processes and the 15-minute series."""
        self.sample_now_if_stale()
        samples = list(self.history)
        last = samples[-1]
        series = []
        for prev, cur in zip(samples, samples[1:]):
            dt = max(cur["t"] - prev["t"], 1e-6)
            delta = [max(0, b - a) for a, b in zip(prev["latency"], cur["latency"])] if len(
                prev["latency"]) == len(cur["latency"]) else cur["latency"]
            p50, p99 = quantile(delta, 0.5), quantile(delta, 0.99)
            series.append({
                "t": round(cur["t"], 3),
                "connections": sum(cur["connections"].values()),
                "deliveries_per_s": round(max(0, cur["delivered"] - prev["delivered"]) / dt, 2),
                "messages_per_s": round(max(0, cur["messages"] - prev["messages"]) / dt, 2),
                "notifications_per_s": round(max(0, cur["notifications"] - prev["notifications"]) / dt, 2),
                "p50_ms": None if p50 is None else round(p50 * 1000, 2),
                "p99_ms": None if p99 is None else round(p99 * 1000, 2),
                "slow_consumer_cuts": max(0, cur["slow"] - prev["slow"]),
                "errors": max(0, cur["errors"] - prev["errors"]),
                "client_errors": max(0, cur["client_errors"] - prev["client_errors"]),
            })
        now = time.time()
        processes = []
        for proc in sorted(last["processes"], key=lambda p: str(p["process"])):
            name = str(proc["process"])
            age = now - proc["time"]
            processes.append({
                "process": name, "pid": proc["pid"],
                "state": "up" if age < 5 else "stale",
                "uptime_s": round(now - proc["started"]),
                "connections": last["by_process"].get(name, dict.fromkeys(TRANSPORTS, 0)),
                "database_up": bool(last["database_up"].get(name, 0)),
                "broker_up": bool(last["broker_up"].get(name, 0)),
            })
        return {"time": round(now, 3), "sample_seconds": self.sample_seconds,
                "connections": last["connections"], "totals": {
                    "connections": sum(last["connections"].values()),
                    "messages_stored": last["messages"], "notifications_stored": last["notifications"],
                    "events_delivered": last["delivered"], "slow_consumer_cuts": last["slow"],
                    "errors": last["errors"], "client_errors": last["client_errors"]},
                "processes": processes, "series": series}

    def sample_now_if_stale(self) -> None:
        """Sample at once when the newest sample is older than the interval (a quiet loop, a test)."""
        if not self.history or time.time() - self.history[-1]["t"] >= self.sample_seconds:
            self.sample()


def _answers(counters: dict, status_class: str) -> int:
    """HTTP answers whose status starts with ``status_class`` ("5": 5xx), from ``http_requests``."""
    at = SPEC["http_requests"][2].index("status")
    return sum(n for labels, n in counters.get("http_requests", {}).items() if str(labels[at]).startswith(status_class))


async def _succeeds(check: Callable[[], Awaitable]) -> int:
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT)
        return 1
    except asyncio.CancelledError:
        raise
    except Exception:
        return 0
