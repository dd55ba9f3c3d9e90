"""Turns the results document into ``docs/performance.md``: machine, tables, ratios, targets, profiles."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import List, Optional

from .scale_report import cluster_section, connections_section


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("tornado", "peewee", "uvloop", "psycopg2"):
        try:
            module = __import__(mod)
            versions[mod] = str(getattr(module, "__version__", None) or getattr(module, "version")).split(" ")[0]
        except Exception:
            versions[mod] = "not installed"
    try:
        sqlite = __import__("sqlite3").sqlite_version
    except Exception:
        sqlite = "?"
    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        pg = "?"
    try:
        with open("/proc/loadavg") as f:
            loadavg = " ".join(f.read().split()[:3])
    except OSError:
        loadavg = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_at_end": loadavg, "memory_gb": mem_gb, "kernel": platform.release(),
            "python": platform.python_version(), "sqlite": sqlite, "postgresql_client": pg, **versions,
            "argv": " ".join(["python -m bench", *_without_notes(sys.argv[1:])])}


def _without_notes(args: List[str]) -> List[str]:
    """The command line without the ``--notes`` text (printed on its own in the report)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--notes":
            skip = True
        elif not a.startswith("--notes="):
            out.append(a)
    return out


def _get(doc: dict, *path, default=None):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return default
        doc = doc[key]
    return doc


def ratio(a, b) -> Optional[float]:
    """``a / b`` rounded, or None when either is missing or b is zero."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return None
    return round(a / b, 2)


def targets(doc: dict) -> List[dict]:
    """Each target of the issue with its measured value and whether it is met."""
    f = lambda srv, case, key: _get(doc, "fanout", srv, case, "median", key)  # noqa: E731
    i = lambda srv, key: _get(doc, "idle", srv, "median", key)  # noqa: E731
    c = lambda db, case, key: _get(doc, "chat", db, case, "median", key)  # noqa: E731
    t = lambda db, case, key: _get(doc, "targeted", db, case, "median", key)  # noqa: E731
    rows = []

    def add(num, what, value, goal, ok, loadgen=None):
        rows.append({"target": num, "what": what, "value": value, "goal": goal,
                     "met": None if value is None else bool(ok), "loadgen": loadgen})

    r = ratio(f("squall", "ws_burst", "deliveries_per_s"), f("baseline", "ws_burst", "deliveries_per_s"))
    add("1", "WS fan-out deliveries/s, Squall / bare Tornado", r, "≥ 1.5", r is not None and r >= 1.5,
        f("squall", "ws_burst", "loadgen_cpu_pct"))
    r = ratio(f("squall", "sse_burst", "deliveries_per_s"), f("baseline", "sse_burst", "deliveries_per_s"))
    add("2", "SSE fan-out deliveries/s, Squall / bare Tornado", r, "≥ 1.1", r is not None and r >= 1.1,
        f("squall", "sse_burst", "loadgen_cpu_pct"))
    r = ratio(f("squall", "ws_rate", "latency_p99_ms"), f("baseline", "ws_rate", "latency_p99_ms"))
    add("3", "WS p99 latency at the steady rate, Squall / bare Tornado", r, "≤ 0.8", r is not None and r <= 0.8,
        f("squall", "ws_rate", "loadgen_cpu_pct"))
    r = ratio(f("squall", "sse_rate", "latency_p99_ms"), f("baseline", "sse_rate", "latency_p99_ms"))
    add("3", "SSE p99 latency at the steady rate, Squall / bare Tornado", r, "≤ 0.8", r is not None and r <= 0.8,
        f("squall", "sse_rate", "loadgen_cpu_pct"))
    r = ratio(i("squall", "ws_kb_per_connection"), i("baseline", "ws_kb_per_connection"))
    add("4", "idle KB per WebSocket, Squall / bare Tornado", r, "≤ 1.1", r is not None and r <= 1.1)
    r = ratio(i("squall", "sse_kb_per_connection"), i("baseline", "sse_kb_per_connection"))
    add("4", "idle KB per SSE stream, Squall / bare Tornado", r, "≤ 1.1", r is not None and r <= 1.1)
    held, reached, errs = (i("squall", "concurrent_connections"), i("squall", "broadcast_reached"),
                           i("squall", "connect_errors"))
    wanted = _get(doc, "sizes", "idle_ws", default=0) + _get(doc, "sizes", "idle_sse", default=0)
    value = None if held is None else f"{held} held, {reached} reached, {errs} errors"
    add("4", f"{wanted:,} concurrent connections on one process, no error", value, f"{wanted:,} / 0 errors",
        held == wanted and reached == wanted and errs == 0)
    v = c("sqlite", "burst", "messages_per_s")
    add("5", "chat on SQLite: messages/s stored, acked and delivered", v, "≥ 5,000", v is not None and v >= 5000,
        c("sqlite", "burst", "loadgen_cpu_pct"))
    v = c("sqlite", "rate", "delivery_p99_ms")
    rate = _get(doc, "sizes", "chat_rate", default=0)
    add("5", f"chat on SQLite: p99 send→delivery at {rate:,.0f} messages/s (ms)", v, "< 25",
        v is not None and v < 25, c("sqlite", "rate", "loadgen_cpu_pct"))
    r = ratio(c("postgres", "burst", "messages_per_s"), c("sqlite", "burst", "messages_per_s"))
    add("5", "chat on PostgreSQL / SQLite, messages/s", r, "≥ 0.5", r is not None and r >= 0.5,
        c("postgres", "burst", "loadgen_cpu_pct"))
    for row in rows:
        row["target"] = "6." + row["target"]  # issue 6's targets, held by issue 13 (item 6)
    rows.extend(targets_13(doc, f, i, t, add, rows))
    targets_26(i, t, add)
    return rows


def targets_13(doc: dict, f, i, t, add, rows) -> List[dict]:
    """The targets of issue 13 (added to ``rows`` through ``add``); returns nothing new."""
    for transport in ("ws", "sse"):
        key = f"{transport}_connects_per_s"
        r = ratio(i("squall", key), i("baseline", key))
        add("13.1", f"{transport.upper()} connects/s with auth and an unread event, Squall / bare Tornado", r,
            "≥ 0.9", r is not None and r >= 0.9, i("squall", f"{transport}_connect_loadgen_cpu_pct"))
    for batch in (1, 10, 100):
        v = t("sqlite", f"batch{batch}", "notifications_per_s")
        add("13.2", f"targeted notifications/s stored and delivered, SQLite, {batch} user(s) per request", v,
            "≥ 20,000", v is not None and v >= 20000, t("sqlite", f"batch{batch}", "loadgen_cpu_pct"))
    rate = _get(doc, "sizes", "targeted_rate", default=0)
    v = t("sqlite", "rate", "latency_p99_ms")
    add("13.2", f"targeted p99 publish→delivery at {rate:,.0f} notifications/s, SQLite (ms)", v, "< 50",
        v is not None and v < 50, t("sqlite", "rate", "loadgen_cpu_pct"))
    r = ratio(t("postgres", "batch100", "notifications_per_s"), t("sqlite", "batch100", "notifications_per_s"))
    add("13.2", "targeted notifications/s, PostgreSQL / SQLite (100 per request)", r, "≥ 0.7",
        r is not None and r >= 0.7, t("postgres", "batch100", "loadgen_cpu_pct"))
    cases = [c for db in ("sqlite", "postgres") for c in (_get(doc, "targeted", db) or {}).values()
             if isinstance(c, dict) and "median" in c]
    if cases:
        bad = [sum(c["median"].get(k, 0) for c in cases) for k in ("foreign", "missing", "duplicates")]
        ok = all(c["median"].get("exactly_once") for c in cases)
        value = f"{len(cases)} cases: {bad[0]} foreign, {bad[1]} missing, {bad[2]} twice"
    else:
        value, ok = None, False
    add("13.3", "targeted: each user got exactly its own notifications (every case, every run)", value,
        "0 / 0 / 0", ok)
    wanted = _get(doc, "sizes", "idle_ws", default=0) + _get(doc, "sizes", "idle_sse", default=0)
    for transport in ("ws", "sse"):
        v = i("squall", f"{transport}_kb_per_connection")
        add("13.3", f"KB per idle {transport.upper()}, each of a different user, {wanted:,} held", v, "≤ 12",
            v is not None and v <= 12)
    hold = _get(doc, "idle_max", "squall") or {}
    most = _get(doc, "sizes", "idle_max", default=0)
    value = (f"{hold['concurrent_connections']:,} held, {hold['broadcast_reached']:,} reached,"
             f" {hold['connect_errors']} errors, RSS {hold.get('rss_after_mb')} MB") if hold else (
        _get(doc, "idle_max", "note"))
    add("13.3", f"{most:,} connections held by one process, a broadcast reaching every one", value,
        f"{most:,} / 0 errors", bool(hold) and hold["concurrent_connections"] == most
        and hold["broadcast_reached"] == most and hold["connect_errors"] == 0,
        hold.get("ws_connect_loadgen_cpu_pct"))
    # Issue 13 asks for uvloop as the default loop, measured against asyncio's: it sets no figure.
    for key, what in (("ws_connects_per_s", "WS connects/s"), ("sse_connects_per_s", "SSE connects/s")):
        r = ratio(i("squall", key), i("squall-asyncio", key))
        add("13.4", f"{what}, uvloop / asyncio loop", r, "measured", r is not None)
    for case in ("ws_burst", "sse_burst"):
        r = ratio(f("squall", case, "deliveries_per_s"), f("squall-asyncio", case, "deliveries_per_s"))
        runs = [_get(doc, "fanout", srv, case, "runs") or [] for srv in ("squall", "squall-asyncio")]
        add("13.4", f"{case.replace('_', ' ')} fan-out deliveries/s, uvloop / asyncio loop (runs: uvloop"
                    f" {spread(runs[0], 'deliveries_per_s')}, asyncio {spread(runs[1], 'deliveries_per_s')})",
            r, "measured", r is not None)
    nchan = doc.get("nchan") or {}
    add("13.5", "Nchan measured in the same run (fan-out and idle)",
        "yes" if nchan.get("measured") else f"no: {nchan.get('note', 'not run')}", "yes", bool(nchan.get("measured")))
    return []


def targets_26(i, t, add) -> None:
    """The figures of issue 26, item 6 (added through ``add``): connects against the plain baseline,
    single publishes against bare Tornado, PostgreSQL against SQLite."""
    for transport in ("ws", "sse"):
        key = f"{transport}_connects_per_s"
        r = ratio(i("squall", key), i("baseline-plain", key))
        add("26.6", f"{transport.upper()} connects/s, Squall / a plain Tornado handler that verifies nothing", r,
            "≥ 0.9", r is not None and r >= 0.9,
            None if r is None else i("squall", f"{transport}_connect_loadgen_cpu_pct"))  # none: not measured
    r = ratio(t("sqlite", "batch1", "notifications_per_s"), t("baseline", "batch1", "notifications_per_s"))
    add("26.6", "targeted notifications/s at 1 user per request, Squall / bare Tornado (same requests)", r,
        "≥ 0.8", r is not None and r >= 0.8, t("sqlite", "batch1", "loadgen_cpu_pct"))
    r = ratio(t("postgres", "batch100", "notifications_per_s"), t("sqlite", "batch100", "notifications_per_s"))
    add("26.6", "targeted notifications/s, PostgreSQL / SQLite (100 per request)", r, "≥ 0.8",
        r is not None and r >= 0.8, t("postgres", "batch100", "loadgen_cpu_pct"))


def plain_note(doc: dict) -> List[str]:
    """Below the targets: how busy the load generator was opening the plain baseline's streams.

    The 26.6 connect rows show Squall's side; when the generator was near its limit on the plain
    side, the plain rate is a lower bound and the ratio an upper bound.
    """
    pcts = [(t.upper(), i_get(doc, "baseline-plain", f"{t}_connect_loadgen_cpu_pct")) for t in ("ws", "sse")]
    if not all(isinstance(p, (int, float)) for _, p in pcts):
        return []
    busy = any(p >= 90 for _, p in pcts)
    return ["Rows 26.6 on connects: the plain baseline (`bench/baseline.py --plain`) was opened with the load"
            " generator at " + " and ".join(f"{p:.0f}% ({t})" for t, p in pcts) + " of its core"
            + ("; at 90% or more the plain rate is a lower bound and the ratio an upper bound." if busy else "."),
            ""]


def http_ceiling(doc: dict) -> List[str]:
    """Why 20,000 targeted notifications/s at 1 user per request is out of reach: Tornado's request rate."""
    sq = _get(doc, "targeted", "sqlite", "batch1", "median") or {}
    bl = _get(doc, "targeted", "baseline", "batch1", "median") or {}
    if not (sq.get("requests_per_s") and bl.get("requests_per_s")):
        return []
    return [f"At 1 user per request every notification is one HTTP request. Bare Tornado answering the same"
            f" `POST /api/notifications` requests on the same core, storing nothing, served"
            f" {fmt(bl['requests_per_s'])} requests/s in this run ({fmt(bl.get('server_cpu_us_per_notification'))}"
            f" µs of server CPU each); Squall, storing and delivering each notification, served"
            f" {fmt(sq['requests_per_s'])}/s, {fmt(ratio(sq['requests_per_s'], bl['requests_per_s']))}× that."
            + (" The target of 20,000 notifications/s is above what Tornado's HTTP layer answers on this core at"
               " one notification per request, so it can only be reached with batches (10 and 100 per request)."
               if bl["requests_per_s"] < 20000 else ""),
            ""]


def spread(runs: List[dict], key: str) -> str:
    """``lowest – highest`` of ``key`` over the runs (how far one run can be from the median)."""
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return f"{fmt(min(values))} – {fmt(max(values))}" if len(values) > 1 else "—"


def fmt(v) -> str:
    """A number for a table cell."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


FANOUT_COLS = [("deliveries_per_s", "deliveries/s"), ("latency_p50_ms", "p50 ms"), ("latency_p99_ms", "p99 ms"),
               ("latency_max_ms", "max ms"), ("server_cpu_us_per_delivery", "server CPU µs/delivery"),
               ("peak_rss_mb", "peak RSS MB"), ("loadgen_cpu_pct", "load generator CPU %"),
               ("complete", "all delivered")]
IDLE_COLS = [("ws_kb_per_connection", "KB per WS"), ("sse_kb_per_connection", "KB per SSE"),
             ("ws_connects_per_s", "WS connects/s"), ("sse_connects_per_s", "SSE connects/s"),
             ("ws_cpu_ms_per_open", "CPU ms per WS open"), ("sse_cpu_ms_per_open", "CPU ms per SSE open"),
             ("ws_connect_loadgen_cpu_pct", "load generator CPU % (WS opens)"),
             ("sse_connect_loadgen_cpu_pct", "load generator CPU % (SSE opens)"), ("distinct_users", "users"),
             ("concurrent_connections", "held at once"), ("broadcast_reached", "broadcast reached"),
             ("connect_errors", "errors")]
SERVERS = ("squall", "squall-asyncio", "baseline", "baseline-plain", "nchan")
TARGETED_COLS = [("notifications_per_s", "notifications/s"), ("requests_per_s", "requests/s"),
                 ("latency_p50_ms", "p50 ms"), ("latency_p99_ms", "p99 ms"),
                 ("server_cpu_us_per_notification", "server CPU µs/notification"),
                 ("loadgen_cpu_pct", "load generator CPU %"), ("stored", "stored"), ("delivered", "delivered"),
                 ("foreign", "foreign"), ("missing", "missing"), ("duplicates", "twice"),
                 ("exactly_once", "exactly once")]


def i_get(doc: dict, srv: str, key: str):
    """A median figure of the idle scenario."""
    return _get(doc, "idle", srv, "median", key)


CHAT_COLS = [("messages_per_s", "messages/s"), ("ack_p50_ms", "ack p50 ms"), ("ack_p99_ms", "ack p99 ms"),
             ("delivery_p50_ms", "delivery p50 ms"), ("delivery_p99_ms", "delivery p99 ms"),
             ("server_cpu_us_per_message", "server CPU µs/message"), ("loadgen_cpu_pct", "load generator CPU %"),
             ("errors", "errors"), ("complete", "all acked+delivered")]


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render(doc: dict) -> str:
    """The whole ``docs/performance.md``."""
    m = doc.get("machine", {})
    s = doc.get("sizes", {})
    lines = [
        "# Performance",
        "",
        "Generated by `python -m bench all` (this file and [bench-results.json](bench-results.json) are",
        "overwritten on every run; nothing here is typed in by hand). The raw JSON keeps every run.",
        "",
        "## How it is measured",
        "",
        "- One Squall process (SQLite, memory broker) is pinned to core 0 with `taskset -c 0`; the load",
        "  generator (`bench/loadgen.py`: raw asyncio protocols on uvloop, one clock read per socket read,",
        "  WebSocket frames and SSE `data:` lines found by byte scanning) is pinned to core 1. Its CPU use",
        "  is reported beside every figure: below 100% means it was not the bottleneck.",
        "- The baseline `bench/baseline.py` is a minimal bare-Tornado broadcast server (`write_message` per",
        "  WebSocket subscriber, `write` + `flush` per SSE subscriber, one `json.dumps` per event, no database,",
        "  no auth), run in the same invocation on the same core, with the same load generator.",
        "- The plain baseline `bench/baseline.py --plain` (`baseline-plain`, idle scenario only) verifies",
        "  nothing and sends nothing: a WebSocket gets its 101 and no frame, an SSE request its 200 and",
        "  `text/event-stream` headers and no event. Its streams count as open when that response head",
        "  arrives (Squall's and `baseline`'s when their first event does: auth and the `unread` state",
        "  are part of Squall's open); it is issue 26's reference for connects/s.",
        "- Peers in the same run: Squall on uvloop (`squall`, the default `--event-loop`), the same Squall",
        "  on asyncio's loop (`squall-asyncio`, same database and tokens), bare Tornado (`baseline`; and",
        "  `baseline-plain` in the idle scenario) and, when installed, Nchan (`nchan`: Debian's nginx +",
        "  `libnginx-mod-nchan`, one process, pinned to the same core, no auth, publishing the request",
        "  body as is; `bench/nchan.py`): the limit of what the kernel allows on this machine. Squall",
        "  runs with its hardening limits, token checks and metrics at their defaults, except the",
        "  handshake rate (off: the load generator opens thousands of streams at once), per-address",
        "  login/registration limits and a 24 h token lifetime, so the tokens minted at the start",
        "  outlive the run (each open still verifies its token).",
        "- Fan-out: subscribers connect (`/ws/notifications`, `/sse/notifications`), then broadcast",
        "  notifications go through the publish API (`POST /api/notifications`, 4 keep-alive connections),",
        "  as fast as accepted (burst) or at a steady rate. Each notification carries its send time in",
        "  `data.t`; latency is send → arrival at the subscriber. Deliveries/s counts from the first publish to",
        "  the last arrival. Server CPU comes from `/proc/<pid>/stat` (utime+stime) over the same window.",
        "  Squall stores every notification in SQLite before delivering it; the baseline stores nothing.",
        "- Idle: on a fresh server process, WebSockets and then SSE streams are opened (100 handshakes in",
        "  flight) and held together; RSS growth (`/proc/<pid>/status` VmRSS) per connection and connects/s",
        "  and the server's CPU per open are measured, then one broadcast must reach every held",
        "  connection. Each connection is a different user (as in real life); each open verifies its",
        "  token and gets its user's `unread` state. `baseline-plain` gets the same URLs and tokens, the",
        "  same 100 handshakes in flight and a fresh process per run, measured right after Squall in each",
        "  round; it has no broadcast to check.",
        "- Targeted: see its section below.",
        "- Chat: pairs of users, each with a private chat, both members on `/ws/chat` and joined; one",
        "  member sends, the other receives. Burst: each sender keeps a window of sends waiting for",
        "  their acks. Rate: a steady total rate spread over the senders. Every message is stored (group",
        "  commit) before its ack and its delivery.",
        _runs_line(doc),
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; memory {m.get('memory_gb', '?')} GB;"
        f" Linux {m.get('kernel', '?')}",
        f"- Python {m.get('python', '?')}, Tornado {m.get('tornado', '?')}, Peewee {m.get('peewee', '?')},"
        f" SQLite {m.get('sqlite', '?')}, uvloop {m.get('uvloop', '?')},"
        f" psycopg2 {m.get('psycopg2', '?')}, {m.get('postgresql_client', '?')}",
        f"- Load average (1/5/15 min) when the run ended: {m.get('loadavg_at_end', '?')}; other work on the"
        " machine shares both cores, so compare the ratios within one run more than absolute figures",
        f"- Pinned: {'yes (server core 0, load generator core 1)' if doc.get('pinned') else 'no (fewer than 2 cores or no taskset)'}",
        f"- Command: `{m.get('argv', 'python -m bench all')}`; generated {doc.get('generated_at', '?')}",
        "- Measured: " + ", ".join(f"{k} {(doc.get('measured_at') or {}).get(k, 'in an earlier run of this file')}"
                                   for k in ("fanout", "idle", "targeted", "chat") if k in doc),
        f"- Sizes: {s.get('subscribers')} subscribers × {s.get('events')} events (steady rate"
        f" {s.get('rate')}/s); idle {s.get('idle_ws')} WS + {s.get('idle_sse')} SSE; chat {s.get('chat_pairs')}"
        f" pairs, burst {s.get('chat_per_sender')} messages per sender (window {s.get('chat_window')}),"
        f" steady {s.get('chat_rate')} messages/s; targeted {s.get('targeted_users')} users,"
        f" {s.get('targeted_notifications')} notifications per case",
        f"- Nchan: {(doc.get('nchan') or {}).get('version') or (doc.get('nchan') or {}).get('note', 'not run')}",
        "",
    ]
    if doc.get("notes"):
        lines += ["Notes on this run: " + doc["notes"], ""]
    rows = targets(doc)
    lines += ["## Targets (issues 6, 13 and 26)", "",
              "Rows 6.x are issue 6's targets, re-measured here (issue 13 asks that they hold); 13.x are issue"
              " 13's; 26.6 are issue 26's (item 6: connects against the plain baseline, single publishes against"
              " bare Tornado, PostgreSQL against SQLite). The load generator's CPU share is given where one scenario measures the figure; at 90% or"
              " more the figure is marked as a lower bound (the generator, not the server, was the limit)."
              " For 13.4 the issue sets no figure (uvloop is the default loop, measured against asyncio's): the"
              " ratio is reported with the range of the runs of each, which shows how much of it is noise.", ""]
    lines += table(["#", "what", "measured", "load generator CPU %", "target", "met"],
                   [[r["target"], r["what"], fmt(r["value"]) + (" (lower bound)" if r["value"] is not None and isinstance(
                       r.get("loadgen"), (int, float)) and r["loadgen"] >= 90 else ""), fmt(r.get("loadgen")), r["goal"],
                     "—" if r["met"] is None else ("**yes**" if r["met"] else "**no**")] for r in rows])
    lines.append("")
    lines += plain_note(doc)
    lines += http_ceiling(doc)
    if "fanout" in doc:
        lines += ["## Notification fan-out", ""]
        body = []
        for case in ("ws_burst", "sse_burst", "ws_rate", "sse_rate"):
            for srv in SERVERS:
                med = _get(doc, "fanout", srv, case, "median")
                if med is None:
                    continue
                label = case.replace("_", " ").replace("rate", f"{s.get('rate')}/s")
                body.append([label, srv] + [fmt(med.get(k)) for k, _ in FANOUT_COLS[:1]]
                            + [spread(_get(doc, "fanout", srv, case, "runs") or [], "deliveries_per_s")]
                            + [fmt(med.get(k)) for k, _ in FANOUT_COLS[1:]])
        lines += table(["case", "server", FANOUT_COLS[0][1], "lowest – highest run"]
                       + [h for _, h in FANOUT_COLS[1:]], body)
        busy = [(case, srv, _get(doc, "fanout", srv, case, "median", "loadgen_cpu_pct"))
                 for case in ("ws_burst", "sse_burst", "ws_rate", "sse_rate") for srv in SERVERS]
        busy = [(c, srv, pct) for c, srv, pct in busy if isinstance(pct, (int, float)) and pct >= 80]
        if busy:
            lines += ["", "The load generator used " + ", ".join(f"{pct:.0f}% of its core ({srv} {c.replace('_', ' ')})"
                                                        for c, srv, pct in busy)
                      + ": near its limit, so those deliveries/s are a lower bound for the server."]
        lines += ["", "Ratios Squall / bare Tornado and Squall / Nchan (CPU µs per delivery of each beside them;"
                      " server CPU is read in clock ticks of 10 ms, so tiny runs show 0 or multiples of 50):", ""]
        rb = []
        for case in ("ws_burst", "sse_burst", "ws_rate", "sse_rate"):
            sq, bl, nc = (_get(doc, "fanout", srv, case, "median") for srv in ("squall", "baseline", "nchan"))
            if sq and bl:
                nc = nc or {}
                rb.append([case.replace("_", " "), fmt(ratio(sq["deliveries_per_s"], bl["deliveries_per_s"])),
                           fmt(ratio(sq["deliveries_per_s"], nc.get("deliveries_per_s"))),
                           fmt(ratio(sq["latency_p99_ms"], bl["latency_p99_ms"])),
                           fmt(ratio(sq["latency_p99_ms"], nc.get("latency_p99_ms"))),
                           fmt(sq["server_cpu_us_per_delivery"]), fmt(bl["server_cpu_us_per_delivery"]),
                           fmt(nc.get("server_cpu_us_per_delivery"))])
        lines += table(["case", "deliveries/s ÷ Tornado", "deliveries/s ÷ Nchan", "p99 ÷ Tornado", "p99 ÷ Nchan",
                        "CPU µs/delivery Squall", "Tornado", "Nchan"], rb)
        lines.append("")
    if "idle" in doc:
        lines += ["## Idle connections", ""]
        body = []
        for srv in SERVERS:
            med = _get(doc, "idle", srv, "median")
            if med:
                body.append([srv] + [fmt(med.get(k)) for k, _ in IDLE_COLS])
        lines += table(["server"] + [h for _, h in IDLE_COLS], body)
        rb = []
        for key, label in (("ws_kb_per_connection", "KB per idle WS"), ("sse_kb_per_connection", "KB per idle SSE"),
                           ("ws_connects_per_s", "WS connects/s"), ("sse_connects_per_s", "SSE connects/s"),
                           ("ws_cpu_ms_per_open", "server CPU ms per WS open"),
                           ("sse_cpu_ms_per_open", "server CPU ms per SSE open")):
            v = {srv: i_get(doc, srv, key) for srv in SERVERS}
            rb.append([label, fmt(ratio(v["squall"], v["baseline"])), fmt(ratio(v["squall"], v["baseline-plain"])),
                       fmt(ratio(v["squall"], v["nchan"])), fmt(ratio(v["squall"], v["squall-asyncio"]))])
        lines += ["", "Ratios (Squall on uvloop divided by each; plain Tornado: `baseline-plain`, open at its 101"
                      " or SSE headers):", ""]
        lines += table(["figure", "÷ bare Tornado", "÷ plain Tornado", "÷ Nchan", "÷ Squall on asyncio"], rb)
        lines.append("")
    if "targeted" in doc:
        lines += ["## Targeted notifications (publish API, one user per notification)", "",
                  f"{s.get('targeted_users'):,} users, each a different user with one stream (half WebSocket, half"
                  f" SSE); {s.get('targeted_notifications'):,} notifications per case, published through"
                  " `POST /api/notifications` with `user_ids` lists of 1, 10 or 100 users (8 keep-alive"
                  f" connections, one request in flight each), or at a steady {s.get('targeted_rate'):,.0f}/s"
                  f" ({s.get('targeted_rate_batch')} per request). Each notification is stored (group commit)"
                  " before its request is answered and before delivery. Every stream records the request number"
                  " of each notification it gets: foreign (another user's), missing and twice must all be 0."
                  " The three servers (Squall on SQLite, Squall on PostgreSQL for 100 per request, bare"
                  " Tornado) run side by side, their runs interleaved case by case.", ""]
        body = []
        for db in ("sqlite", "postgres", "baseline"):
            for case, med in sorted(((c, v.get("median")) for c, v in (_get(doc, "targeted", db) or {}).items()
                                     if isinstance(v, dict)), key=lambda cv: (cv[0] == "rate", cv[0])):
                if med:
                    label = (f"steady {med.get('rate'):,.0f}/s, {med.get('batch')} per request" if case == "rate"
                             else f"{med.get('batch')} per request")
                    where = "bare Tornado (stores nothing)" if db == "baseline" else db
                    body.append([where, label] + [fmt(med.get(k)) for k, _ in TARGETED_COLS])
        lines += table(["database", "case"] + [h for _, h in TARGETED_COLS], body)
        lines.append("")
        rb = []
        for case, base in sorted((_get(doc, "targeted", "baseline") or {}).items()):
            sq = _get(doc, "targeted", "sqlite", case, "median") or {}
            bl = base.get("median") or {}
            if sq and bl:
                rb.append([f"{bl.get('batch')} per request",
                           fmt(ratio(sq.get("requests_per_s"), bl.get("requests_per_s"))),
                           fmt(sq.get("server_cpu_us_per_notification")),
                           fmt(bl.get("server_cpu_us_per_notification"))])
        if rb:
            lines += ["Squall on SQLite beside bare Tornado answering the same requests (`bench/baseline.py --by-user`:"
                      " subscribers indexed by user, one `json.dumps` and one write per notification, nothing stored,"
                      " no auth), interleaved in the same run:", ""]
            lines += table(["case", "requests/s, Squall ÷ bare Tornado", "server CPU µs/notification, Squall",
                            "bare Tornado"], rb)
            lines.append("")
        if _get(doc, "targeted", "postgres_error"):
            lines += [f"PostgreSQL was not measured: {_get(doc, 'targeted', 'postgres_error')}", ""]
    if "chat" in doc:
        lines += ["## Chat (`/ws/chat`, stored messages)", ""]
        body = []
        for db in ("sqlite", "postgres"):
            for case in ("burst", "rate"):
                med = _get(doc, "chat", db, case, "median")
                if med:
                    label = "as fast as accepted" if case == "burst" else f"steady {s.get('chat_rate')}/s"
                    body.append([db, label] + [fmt(med.get(k)) for k, _ in CHAT_COLS])
        lines += table(["database", "case"] + [h for _, h in CHAT_COLS], body)
        lines.append("")
        if _get(doc, "chat", "postgres_error"):
            lines += [f"PostgreSQL was not measured: {_get(doc, 'chat', 'postgres_error')}", ""]
    if "webhooks" in doc:
        lines += webhooks_section(doc["webhooks"], s)
    if "login" in doc:
        lg = doc["login"]
        lines += ["## Login under a flood (`python -m bench login`)", "",
                  "Production argon2id hashing, the default pool (2 threads, 16 queued, 2 per address); waves of "
                  f"{lg.get('flood_concurrency')} concurrent wrong-password logins from one address while the real "
                  "user signs in from another (see `bench/login_flood.py` and docs/security.md).", ""]
        lines += table(["good login alone (p50)", "during the flood (p50)", "during the flood (max)",
                        "good login statuses", "what the flood got"],
                       [[f"{fmt(lg.get('good_login_idle_p50_ms'))} ms", f"{fmt(lg.get('good_login_flood_p50_ms'))} ms",
                         f"{fmt(lg.get('good_login_flood_max_ms'))} ms", fmt(lg.get("good_login_statuses")),
                         fmt(lg.get("flood_statuses"))]])
        lines.append("")
    if doc.get("cluster"):
        lines += cluster_section(doc["cluster"])
    if doc.get("connections"):
        lines += connections_section(doc["connections"])
    if doc.get("compare") or doc.get("comparisons"):
        lines += before_and_after(doc["compare"]) if doc.get("compare") else [COMPARE_HEADING, ""]
        for label, kept in doc.get("comparisons", {}).items():  # --label: each under its own heading
            lines += before_and_after(kept, f"### {label}")
    else:
        lines += [COMPARE_HEADING, "",
                  "No comparison stored yet: `python -m bench compare --ref COMMIT` measures a commit and this",
                  "tree run by run and writes this section (see \"How to compare two commits\").", ""]
    lines += [
        "## What the hot paths do",
        "",
        "- **Serialise once, frame once, write raw.** A notification is JSON text once per fan-out",
        "  (`Event`); its WebSocket frame (unmasked, identical for every uncompressed connection) and its",
        "  SSE encoding, pre-framed as one HTTP/1.1 chunk, are built on first use and cached on the event.",
        "- **One `send()` per connection, nothing else.** `handlers/fastwrite.py` writes those bytes",
        "  straight to the socket when nothing is queued on the stream: no Future, no write buffer, no",
        "  loop callback per connection (most of what `IOStream.write` costs). A partial send or an error",
        "  falls back to `IOStream.write`, which keeps order, the slow-consumer limit and close handling.",
        "- **No database query per recipient.** Delivery is by user id through the in-memory",
        "  `ConnectionRegistry`; a broadcast is one row, stored before it is delivered.",
        "- **Group commit with set-wise statements.** `MessageWriter` stores every send that arrived",
        "  while the previous transaction ran in one transaction: messages by a prepared single-row",
        "  INSERT ... RETURNING per row on SQLite (one multi-row INSERT on PostgreSQL), counters with one",
        "  executemany per kind of row on SQLite and one `UPDATE ... FROM (VALUES ...)` per kind on",
        "  PostgreSQL. Each send is acknowledged after its commit; if the database refuses anything",
        "  in a batch, the batch is stored send by send in savepoints so a bad send fails alone.",
        "- **Small idle connections.** Once a stream is live it owns its socket: an SSE stream detaches",
        "  from Tornado's HTTP layer as a WebSocket does, and a WebSocket's frame loop runs in a task of",
        "  its own, so neither keeps the request's coroutines, task, head (the token in its URL), headers",
        "  or delegates. No write queues while nothing is queued, no replay sets until a replay, user,",
        "  session and joined-chat groups as tuples while small, the handshake's attributes dropped and",
        "  the handler's dict rebuilt at its size, a one-Future stream-end flag for SSE.",
        "- **Blocking work stays off the loop.** SQLite/PostgreSQL run on the writer and reader threads.",
        "- **Short collector pauses.** At start-up the server freezes its objects out of the garbage",
        "  collector and raises the collection thresholds (`tune_gc` in `tornado_app/application.py`);",
        "  full collections over every live connection showed as 100-200 ms outliers in the chat p99.",
        "",
        "- **Batched opens.** The `unread` state of every stream opening at the same moment is read in",
        "  one statement (`OpenStateBatcher`, services/delivery/openstate.py), like the group commit; streams whose",
        "  events carry their own ids (`/ws/notifications`, `/sse/notifications`) read no resume baseline.",
        "- **Group-committed publishes.** Publish requests that arrive while a transaction runs are",
        "  stored by the next one: one user check and one multi-row INSERT ... RETURNING for all",
        "  (`PublishWriter`, services/delivery/publisher.py); a request naming an unknown user fails alone.",
        "- **uvloop** is the default event loop (`--event-loop uvloop|asyncio`).",
        "",
    ]
    profiles = doc.get("profiles") or {}
    if profiles:
        lines += ["## Where the time goes (py-spy, Squall process)", "",
                  "Sampled with `py-spy record --format raw` during one extra run of each scenario (not one of",
                  "the measured runs; it includes that run's set-up: connecting, and opening chats). Own time is",
                  "the leaf function (C calls count to their Python caller: `write_direct` is mostly the",
                  "`send()` system call); by area groups leaf frames by library.", ""]
        order = ["fanout_ws_burst", "fanout_sse_burst", "idle_connect", "targeted_batch10", "chat_sqlite_burst"]
        for name in sorted(profiles, key=lambda n: (order.index(n) if n in order else len(order), n)):
            prof = profiles[name]
            lines += [f"### {name} ({prof.get('samples', 0):,} samples, {prof.get('waiting_pct', 0)}% of them"
                      " threads waiting for work; the shares below are of the busy samples)", ""]
            areas = ", ".join(f"{a['function']} {a['pct']}%" for a in prof.get("areas", [])[:8])
            lines += [f"By area: {areas}", ""]
            own = prof.get("own", [])[:10]
            lines += table(["own time", "function"], [[f"{o['pct']}%", f"`{o['function']}`"] for o in own])
            lines.append("")
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "pip install -r requirements-dev.txt",
        "python -m bench all                 # the full configuration, medians of 3 runs (about 10 minutes)",
        "python -m bench all --tiny --runs 1 # seconds: what tests/docs/test_bench.py runs",
        "python -m bench fanout|idle|chat|targeted|login|webhooks  # one scenario; merged into the existing results",
        "python -m bench cluster             # issue 26: N = 1, 2, 4, 8 processes, sharded vs broadcast (minutes)",
        "python -m bench connections50k      # issue 26: 50,000 WebSockets over --processes workers (minutes)",
        "apt-get install libnginx-mod-nchan  # optional: Nchan as a peer (skipped with a note without it)",
        "```",
        "",
        "Options: `--runs N`, `--no-profile`, `--pg-url postgresql://postgres@127.0.0.1:5432/squall_bench`",
        "(the bench drops and re-creates that database), `--no-pg`, `--out-dir DIR`. See `python -m bench --help`.",
        "",
    ]
    lines += HOW_TO_COMPARE
    return "\n".join(lines)


WEBHOOK_LABELS = {"off": "webhooks off", "receiver_ok": "receiver answers 200 at once",
                  "receiver_stalled": "receiver never answers"}


def webhooks_section(wh: dict, s: dict) -> list:
    """The chat scenario with webhooks off, to a receiver that answers and to one that stalls (issue 23)."""
    lines = ["## Chat while the webhook receiver stalls (`python -m bench webhooks`)", "",
             "The chat scenario on SQLite, one server at a time: webhooks off; every message.created sent to a",
             "receiver that answers 200 at once; and sent to one that accepts the connection and never answers",
             "(each attempt times out after 10 s; the events wait in the outbox). A send only adds outbox rows",
             "to its own transaction, so delivery to users should not depend on the receiver.", ""]
    body = []
    for label in ("off", "receiver_ok", "receiver_stalled"):
        for case in ("burst", "rate"):
            med = _get(wh, label, case, "median")
            if med:
                name = "as fast as accepted" if case == "burst" else f"steady {s.get('chat_rate')}/s"
                runs = [r.get("delivery_p99_ms") for r in _get(wh, label, case, "runs") or []]
                spread = ", ".join(fmt(v) for v in runs) if runs else "—"
                body.append([WEBHOOK_LABELS[label], name] + [fmt(med.get(k)) for k, _ in CHAT_COLS] + [spread])
    lines += table(["webhooks", "case"] + [h for _, h in CHAT_COLS] + ["delivery p99 ms of each run"], body)
    received = wh.get("received") or {}
    lines += ["", f"Requests the receivers got: {fmt(received.get('receiver_ok'))} answered, "
                  f"{fmt(received.get('receiver_stalled'))} held without an answer."]
    if wh.get("loadavg_at_end"):
        lines += ["", f"Load average (1/5/15 min) when this scenario ended: {wh['loadavg_at_end']}."]
    if wh.get("notes"):
        lines += ["", f"Notes on this scenario: {wh['notes']}"]
    lines.append("")
    return lines


HOW_TO_COMPARE = [
    "## How to compare two commits",
    "",
    "```sh",
    "python -m bench compare --ref main                 # main before, this tree (with its uncommitted changes) after",
    "python -m bench compare --ref 6de5f48 --runs 5 --size idle_ws=2000 --size idle_sse=2000 --notes 'quiet machine'",
    "python -m bench compare --ref HEAD --tiny          # seconds: what tests/docs/test_bench.py runs",
    "python -m bench compare --ref c330d61 --label 'Presence (issue 25)'   # kept beside the others, own heading",
    "python -m bench report                             # re-render this file (the comparison too) from the JSON",
    "```",
    "",
    "`--ref` (any commit: sha, branch, tag) is checked out into a temporary `git worktree`, removed",
    "afterwards, and served by its own `run.py` with the same interpreter, options and load generator as",
    "this tree. Both Squalls run on core 0, one at a time, each on a fresh SQLite database of its own;",
    "the scenarios are those of `python -m bench` (the same code in `bench/runner.py`): fan-out",
    "(WS and SSE, burst and steady), idle memory per connection and connects/s (WS and SSE, a fresh",
    "process per run), chat on SQLite (burst and steady) and targeted notifications (10 users per",
    "request). Runs alternate, before, after, before, after …, so a busy moment of the machine weighs on",
    "both. `--scenarios fanout,idle,chat,targeted` picks some of them.",
    "",
    "Default sizes (`--size NAME=VALUE` changes any field of `Sizes` in `bench/runner.py`, repeatable):",
    "1,000 fan-out subscribers × 200 events (steady case 50/s), 2,000 idle WebSockets and 2,000 idle SSE",
    "streams (each a different user), chat 500 pairs × 20 messages (window 4; steady 2,500/s,",
    "20 per sender), targeted 2,000 users and 10,000 notifications; 5 runs per side. That is 8 to 9",
    "minutes on this 2-core machine when it is otherwise quiet (per run and side about 21 s of fan-out,",
    "11 s idle, 12 s chat, 4 s targeted, estimated from the timings above, plus start-up and",
    "registering the users); `--tiny` takes about 35 s, `--runs 3` about 6 minutes.",
    "The ref must accept the options `bench/servers.py` passes to `run.py` (any commit since",
    "`--max-connections-per-address` exists).",
    "",
    "**Noise.** For each figure, the spread of one side's runs is `(highest − lowest) ÷ median`; the",
    "noise is the larger of the two sides' spreads. A difference is *within noise* when",
    "`|after ÷ before − 1| ≤ noise`: the medians are closer than runs of the same code are to one",
    "another. Outside it the verdict is *better* or *worse* (by the figure's direction: more per second",
    "is better, fewer KB, µs or ms is better). One run per side gives no verdict. Why the whole range:",
    "a median moves much less than one run, so for two builds of the same code a difference of medians",
    "beyond the range of five runs is rare (under 1% per figure if runs scatter normally), while a real",
    "change larger than that range shows. A change smaller than the noise cannot be told from it by",
    "this machine: run more (`--runs 9`) on a quiet machine to narrow it. The results go under",
    "`\"compare\"` in bench-results.json (every run kept) and survive later `python -m bench` runs until",
    "the next comparison. With `--label TEXT` (one line, at most 100 characters) a comparison goes under",
    "`\"comparisons\"` instead, kept beside the others and shown under its own heading in \"Before and",
    "after\"; a later comparison with the same label replaces it.",
    "",
]


COMPARE_HEADING = "## Before and after (`python -m bench compare`)"


def before_and_after(c: dict, heading: str = COMPARE_HEADING) -> List[str]:
    """The "Before and after" section (or a labelled comparison's, under ``heading``): both commits'
    medians and spreads, the ratio and the verdict."""
    m = c.get("machine", {})
    dirty = " with uncommitted changes" if c.get("head_dirty") else ""
    lines = [heading, "",
             f"Before: `{c.get('ref')}` ({str(c.get('ref_commit', ''))[:12]}); after: this tree "
             f"({str(c.get('head', ''))[:12]}{dirty}). Measured {c.get('date')} on {m.get('cpu') or '?'}, "
             f"{m.get('cores')} cores, load average at the end {m.get('loadavg_at_end')}; {c.get('runs')} runs per"
             " side, interleaved (before, after, before, after …); scenarios "
             f"{', '.join(c.get('scenarios', []))}. Noise and verdicts: see \"How to compare two commits\".", ""]
    if c.get("notes"):
        lines += ["Notes on this comparison: " + c["notes"], ""]
    sizes = c.get("sizes", {})
    shown = ("subscribers", "events", "rate", "idle_ws", "idle_sse", "chat_pairs", "chat_per_sender", "chat_rate",
             "targeted_users", "targeted_notifications")
    lines += ["Sizes: " + ", ".join(f"{k} {fmt(sizes[k])}" for k in shown if k in sizes) + ".", ""]
    rows = []
    for f in c.get("figures", []):
        b, a = f["before"], f["after"]
        rows.append([f["label"], fmt(b["median"]), f"{fmt(b['min'])} – {fmt(b['max'])}", fmt(a["median"]),
                     f"{fmt(a['min'])} – {fmt(a['max'])}", fmt(f["ratio"]),
                     "—" if f["noise"] is None else f"{100 * f['noise']:.1f}%", f"**{f['verdict']}**"])
    lines += table(["figure", "before (median)", "before (runs)", "after (median)", "after (runs)",
                    "after ÷ before", "noise (spread of the runs)", "verdict"], rows)
    lines.append("")
    checks = c.get("checks", {})
    failed = [f"{side} {scenario}" for side, by in checks.items() for scenario, ok in by.items() if not ok]
    lines += [("Every run of both sides delivered everything without errors." if not failed else
               "**Incomplete runs** (something not delivered or an error): " + ", ".join(failed) + "."), ""]
    verdicts = [f["verdict"] for f in c.get("figures", [])]
    if verdicts:
        within = sum(v == "within noise" for v in verdicts)
        lines += [f"{within} of {len(verdicts)} figures within noise"
                  + "".join(f", {sum(v == w for v in verdicts)} {w}" for w in ("better", "worse")
                            if any(v == w for v in verdicts)) + ".", ""]
    return lines


def _runs_line(doc: dict) -> str:
    """How many runs each figure is the median of (per scenario once one was re-run alone with --runs)."""
    runs_of = doc.get("runs_of") or {}
    if len(set(runs_of.values())) > 1:
        names = {"fanout": "fan-out"}
        each = ", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(runs_of.items()))
        return f"- Each figure is the median of its scenario's runs ({each}), runs interleaved between the servers."
    runs = next(iter(runs_of.values())) if runs_of else doc.get("runs", "?")
    return (f"- Each figure is the median of {runs} run{'' if runs == 1 else 's'}"
            + (f" ({doc['fanout_runs']} for fan-out)" if not runs_of and doc.get("fanout_runs", runs) != runs else "")
            + " (runs interleaved between the servers).")
