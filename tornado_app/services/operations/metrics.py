"""Metrics: plain counters on the hot paths, exported in the Prometheus format at scrape time.

The hot paths (delivery, commit, publish) only add to ints and small dicts of this
process's ``Metrics``: no lock, no object per event. ``prometheus_client`` does the
exposition: a custom collector turns a *snapshot* (a plain, JSON-able dict) into metric
families when ``/metrics`` is scraped.

With ``--processes N`` every worker writes its snapshot to ``<metrics dir>/w<slot>.json``
once a second; the worker that answers a scrape merges its own live snapshot with the
other live workers' files (a dead worker's file is ignored and removed by the
supervisor), so any worker answers for the whole host. Counters of a worker that died
restart from zero with its replacement, which Prometheus' ``rate()`` reads as a reset.

Label values are bounded: transports, kinds, error codes, route patterns, HTTP methods
(a fixed set plus ``other``), statuses and worker slots. Never a user id, username, chat
id or any content.
"""
from __future__ import annotations

import bisect
import glob
import json
import logging
import os
import time
from typing import Any, Dict, Iterable, List, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger("squall.metrics")

TRANSPORTS = ("ws_chat", "ws_notifications", "sse_notifications", "sse_chat", "poll_notifications", "poll_chat")
# Upper bounds in seconds, shared by the latency histograms.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# name -> (type, help, label names). Counters are exported with a ``_total`` suffix.
SPEC = {
    "connections": ("gauge", "Open client connections", ("transport", "process")),
    "handshakes": ("counter", "Stream and WebSocket opens, accepted or refused (reason: error code)",
                   ("transport", "outcome", "reason")),
    "messages_stored": ("counter", "Chat messages committed to the database", ()),
    "notifications_stored": ("counter", "Notifications committed to the database", ()),
    "events_delivered": ("counter", "Events handed to client connections", ("transport", "kind")),
    "events_replayed": ("counter", "Stored events replayed to resuming connections", ("kind",)),
    "resyncs": ("counter", "resync frames sent (a resume past the replay limit or retention)", ()),
    "slow_consumer_disconnects": ("counter", "Connections closed for lagging too far behind", ("transport",)),
    "errors": ("counter", "Errors answered to clients (HTTP error bodies and WebSocket error frames)", ("code",)),
    "http_requests": ("counter", "HTTP requests by route pattern, method and status", ("route", "method", "status")),
    "send_commit_seconds": ("histogram", "Chat send accepted -> committed", ()),
    "delivery_seconds": ("histogram", "Chat send accepted (kind=chat) or event published (kind=notify) "
                         "-> written to this process's connections", ("kind",)),
    "database_up": ("gauge", "1 when the database answered the last probe", ("process",)),
    "broker_up": ("gauge", "1 when the broker answered the last probe", ("process",)),
    "broker_messages": ("counter", "Envelopes published to (out) and received from (in) the broker", ("direction",)),
    "broker_discarded": ("counter", "Targeted envelopes received that named no connection of this process "
                         "(routing waste: sharded routing keeps it near 0, broadcast routing does not)", ()),
    "broker_reconnects": ("counter", "Broker reconnects after which streams were asked to resume", ()),
    "processes": ("gauge", "Serving processes whose numbers are included", ()),
    # Web Push (issue 11); outcome: sent, gone (404/410: subscription deleted), failed, dropped (queue full)
    "pushes": ("counter", "Web Push requests by outcome", ("outcome",)),
    "push_retries": ("counter", "Web Push requests retried after 429 or 5xx", ()),
    "push_skipped_online": ("counter", "Pushes not sent because the user had a stream open (any process)", ()),
    "push_queue": ("gauge", "Web Push requests waiting or in flight", ("process",)),
    # Webhooks (issue 23); outcome: delivered (2xx), retried (timeout, network error, 5xx, 429: tried
    # again later), failed (refused, or its retry window ended)
    "webhook_deliveries": ("counter", "Webhook attempts by outcome", ("outcome",)),
}
PUSH_OUTCOMES = ("sent", "gone", "failed", "dropped")
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")
# The ``method`` label: the methods the API answers (OPTIONS for browsers' preflights), any
# other one as "other". A client may send any token as a method; each would be a new series.
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class Histogram:
    """Bucket counts (not cumulative) and the sum of observed values."""

    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value`` seconds."""
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value


class Metrics:
    """This process's counters. Increment them directly on the hot paths."""

    def __init__(self, process: str = "0"):
        self.process = process
        self.started = time.time()
        self.connections = dict.fromkeys(TRANSPORTS, 0)
        self.handshakes: Dict[tuple, int] = {}
        self.messages_stored = 0
        self.notifications_stored = 0
        # kind -> transport -> count: the registry looks up the kind once per event
        self.delivered: Dict[str, Dict[str, int]] = {"chat": dict.fromkeys(TRANSPORTS, 0),
                                                     "notify": dict.fromkeys(TRANSPORTS, 0)}
        self.replayed = {"chat": 0, "notify": 0}
        self.resyncs = 0
        self.slow_consumer = dict.fromkeys(TRANSPORTS, 0)
        self.errors: Dict[str, int] = {}
        self.http: Dict[tuple, int] = {}
        self.send_commit = Histogram()
        self.delivery = {"chat": Histogram(), "notify": Histogram()}
        self.database_up = 1
        self.broker_up = 1
        self.broker_in = 0
        self.broker_out = 0
        self.broker_discarded = 0
        self.broker_reconnects = 0
        self.pushes = dict.fromkeys(PUSH_OUTCOMES, 0)  # Web Push (issue 11)
        self.push_retries = 0
        self.push_skipped_online = 0
        self.push_queue = 0
        self.webhooks = dict.fromkeys(WEBHOOK_OUTCOMES, 0)  # issue 23

    # Helpers for the colder paths (a dict key of a few strings) -------------------------------

    def connection_opened(self, transport: str) -> None:
        """A stream of ``transport`` is open (and counted as an accepted handshake)."""
        self.connections[transport] = self.connections.get(transport, 0) + 1
        key = (transport, "accepted", "ok")
        self.handshakes[key] = self.handshakes.get(key, 0) + 1

    def connection_closed(self, transport: str) -> None:
        """A stream of ``transport`` that was open has closed."""
        self.connections[transport] = self.connections.get(transport, 0) - 1

    def handshake_refused(self, transport: str, reason: str) -> None:
        """An open of ``transport`` was refused with the error code ``reason``."""
        key = (transport, "refused", reason)
        self.handshakes[key] = self.handshakes.get(key, 0) + 1

    def error(self, code: str) -> None:
        """An error with ``code`` was answered to a client."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def request(self, route: str, method: str, status: int) -> None:
        """One HTTP request finished (an invented ``method`` is counted as ``other``)."""
        key = (route, method if method in HTTP_METHODS else "other", str(status))
        self.http[key] = self.http.get(key, 0) + 1

    # Snapshots --------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Every figure as a JSON-able dict: ``{"pid", "process", "counters", "gauges", "histograms"}``."""
        c = {
            "handshakes": [[*k, v] for k, v in self.handshakes.items()],
            "messages_stored": [[self.messages_stored]],
            "notifications_stored": [[self.notifications_stored]],
            "events_delivered": [[t, kind, v] for kind, by in self.delivered.items() for t, v in by.items()],
            "events_replayed": [[k, v] for k, v in self.replayed.items()],
            "resyncs": [[self.resyncs]],
            "slow_consumer_disconnects": [[t, v] for t, v in self.slow_consumer.items()],
            "errors": [[k, v] for k, v in self.errors.items()],
            "http_requests": [[*k, v] for k, v in self.http.items()],
            "broker_messages": [["in", self.broker_in], ["out", self.broker_out]],
            "broker_discarded": [[self.broker_discarded]],
            "broker_reconnects": [[self.broker_reconnects]],
            "pushes": [[k, v] for k, v in self.pushes.items()],
            "push_retries": [[self.push_retries]],
            "push_skipped_online": [[self.push_skipped_online]],
            "webhook_deliveries": [[k, v] for k, v in self.webhooks.items()],
        }
        g = {
            "connections": [[t, self.process, v] for t, v in self.connections.items()],
            "database_up": [[self.process, self.database_up]],
            "broker_up": [[self.process, self.broker_up]],
            "push_queue": [[self.process, self.push_queue]],
        }
        h = {
            "send_commit_seconds": [[list(self.send_commit.counts), self.send_commit.sum]],
            "delivery_seconds": [[k, list(v.counts), v.sum] for k, v in self.delivery.items()],
        }
        return {"pid": os.getpid(), "process": self.process, "started": self.started, "time": time.time(),
                "counters": c, "gauges": g, "histograms": h}


def merge(snapshots: Iterable[dict]) -> dict:
    """Sum snapshots of several processes (same label values add up)."""
    processes: List[dict] = []
    # section -> metric name -> label values -> value (histograms: [bucket counts, sum])
    sections: Dict[str, Dict[str, Dict[tuple, Any]]] = {"counters": {}, "gauges": {}, "histograms": {}}
    for snap in snapshots:
        processes.append({k: snap[k] for k in ("pid", "process", "started", "time")})
        for section in ("counters", "gauges"):
            for name, rows in snap[section].items():
                acc = sections[section].setdefault(name, {})
                for row in rows:
                    key = tuple(row[:-1])
                    acc[key] = acc.get(key, 0) + row[-1]
        for name, rows in snap["histograms"].items():
            acc = sections["histograms"].setdefault(name, {})
            for row in rows:
                key = tuple(row[:-2])
                counts, total = row[-2], row[-1]
                have = acc.get(key)
                if have is None:
                    acc[key] = [list(counts), total]
                else:
                    have[0] = [a + b for a, b in zip(have[0], counts)]
                    have[1] += total
    return {**sections, "processes": processes}


def families(merged: dict) -> List:
    """prometheus_client metric families for a merged snapshot."""
    fams: List[Metric] = []
    for name, (kind, help_text, labels) in SPEC.items():
        full = "squall_" + name
        if name == "processes":
            gauge = GaugeMetricFamily(full, help_text)
            gauge.add_metric([], len(merged["processes"]))
            fams.append(gauge)
        elif kind == "histogram":
            histogram = HistogramMetricFamily(full, help_text, labels=list(labels))
            for key, (counts, total) in sorted(merged["histograms"].get(name, {}).items()):
                cumulative, buckets = 0, []
                for bound, n in zip([*map(_fmt_bound, BUCKETS), "+Inf"], counts):
                    cumulative += n
                    buckets.append((bound, cumulative))
                histogram.add_metric(list(key), buckets, total)
            fams.append(histogram)
        else:
            fam = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(full, help_text,
                                                                                      labels=list(labels))
            section = "counters" if kind == "counter" else "gauges"
            for key, value in sorted(merged[section].get(name, {}).items()):
                fam.add_metric(list(key), value)
            fams.append(fam)
    return fams


def _fmt_bound(bound: float) -> str:
    return repr(float(bound))


class _Collector:
    """A prometheus_client collector over a function that returns a merged snapshot."""

    def __init__(self, source):
        self.source = source

    def collect(self):
        return families(self.source())


class MetricsHub:
    """This process's Metrics plus the snapshots of the other workers of the host."""

    def __init__(self, metrics: Metrics, directory: Optional[str] = None):
        self.metrics = metrics
        self.directory = directory
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self.merged))

    def exposition(self) -> bytes:
        """The Prometheus text format of every live process's figures."""
        return generate_latest(self.registry)

    def snapshots(self) -> List[dict]:
        """This process's live snapshot and the other live workers' latest ones."""
        own = self.metrics.snapshot()
        found = [own]
        if not self.directory:
            return found
        for path in sorted(glob.glob(os.path.join(self.directory, "w*.json"))):
            try:
                with open(path) as f:
                    snap = json.load(f)
            except (OSError, ValueError):
                continue  # being replaced, or the worker died mid-write
            if snap.get("pid") == own["pid"] or not _alive(snap.get("pid")):
                continue
            found.append(snap)
        return found

    def merged(self) -> dict:
        """The sum of :meth:`snapshots`."""
        return merge(self.snapshots())

    def write_own(self) -> None:
        """Publish this worker's snapshot for the others (atomic replace)."""
        if not self.directory:
            return
        path = os.path.join(self.directory, f"w{self.metrics.process}.json")
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.metrics.snapshot(), f)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write the metrics snapshot: %s", exc.strerror or exc)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_worker(directory: Optional[str], slot: int) -> None:
    """Remove a dead worker's snapshot (called by the supervisor when it reaps the worker)."""
    if directory:
        try:
            os.unlink(os.path.join(directory, f"w{slot}.json"))
        except FileNotFoundError:
            pass


def quantile(counts: List[int], q: float) -> Optional[float]:
    """The ``q`` quantile (seconds) of non-cumulative bucket ``counts``, interpolated in its bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            lower = BUCKETS[i - 1] if i > 0 else 0.0
            upper = BUCKETS[i] if i < len(BUCKETS) else BUCKETS[-1]
            return lower + (upper - lower) * ((rank - seen) / n)
        seen += n
    return BUCKETS[-1]
