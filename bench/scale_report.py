"""The performance.md sections of the scale-out scenarios (bench/scale.py, issue 26)."""
from __future__ import annotations

from typing import List


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v.is_integer():
            return f"{int(v):,}"
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _host(section: dict) -> str:
    m = section.get("machine", {})
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB, Linux "
            f"{m.get('kernel', '?')}, Python {m.get('python', '?')}; load average when it ended "
            f"{section.get('loadavg_at_end', '?')}; measured {section.get('measured_at', '?')}")


def cluster_section(c: dict) -> List[str]:
    """Cluster simulation: per-process CPU per delivered and per discarded event, sharded vs broadcast."""
    s = c.get("sizes", {})
    by = {(x["n"], x["routing"]): x for x in c.get("configs", [])}
    ns = sorted({x["n"] for x in c.get("configs", [])})
    lines = ["## Cluster simulation (issue 26)", "",
             f"Command: `{c.get('machine', {}).get('argv', 'python -m bench cluster')}` (one run, every row below).",
             f"Host: {_host(c)}.", "",
             "N separate Squall processes (`run.py`, each on its own port, all pinned to core 0, the load",
             "generator and the ingress below on core 1) share one database "
             f"({c.get('database', '?')}) and the Redis at 127.0.0.1:6379,",
             "with a broker prefix of their own per row. "
             f"{_fmt(s.get('cluster_users'))} users, user i's one WebSocket on process i mod N; one more",
             "process, the ingress, holds no stream and takes every publish request (as a load balancer",
             "would send the API traffic to other hosts' processes; on core 0 it evicted the holders' caches",
             f"between their events): {_fmt(s.get('cluster_notifications'))} notifications, one user per",
             f"request, user r mod {_fmt(s.get('cluster_users'))} for notification r, at a fixed total rate of",
             f"{_fmt(s.get('cluster_rate'))}/s whatever N. A warm-up notification to every user first proves every",
             "stream and shard subscription live. Per process: CPU time over the measured window from",
             "`/proc/<pid>/task/*/schedstat` (ns), minus its CPU with no traffic (measured over "
             f"{_fmt(s.get('cluster_idle_window'))} s just",
             "before, scaled to the window); events delivered (`squall_events_delivered_total{kind=\"notify\"}`)",
             "and envelopes received for nobody here (`squall_broker_discarded_total`) from its `/metrics`.",
             "CPU time, not wall time: on 2 cores the N servers share one core, so wall-clock figures",
             "would measure the queue for the core.", "",
             "**CPU µs per delivered event** is the N processes' CPU over the window divided by the events",
             "they delivered (what a process pays per event for its own users, discards included; per process",
             "min–max in brackets). **Alone**: one process with only what each of the N holds (1/N of the users,",
             "1/N of the events at 1/N of the rate): a process's CPU per event depends on its own event rate",
             "(fewer events per wake-up of its loop at a lower rate), so this is what a process of N costs when",
             "nothing but its own users' events reaches it. **CPU µs per discarded event**: what broadcast",
             "routing costs over sharded routing at the same N and the same delivered load, divided by the",
             "envelopes it added (all of them discarded).", ""]
    reader = c.get("host_wakeup", {}).get("us_per_message", {})
    rate = s.get("cluster_rate")
    rows = []
    for n in ns:
        sh, bc = by.get((n, "sharded")), by.get((n, "broadcast"))
        al = by.get((n, "alone")) if n > 1 else sh
        if not sh or not bc or not al:
            continue
        a, b = sh["summary"], bc["summary"]

        def cell(sm):
            return (f"{_fmt(sm['cpu_us_per_delivered'])} ({_fmt(sm['cpu_us_per_delivered_min'])}–"
                    f"{_fmt(sm['cpu_us_per_delivered_max'])})")
        rows.append([str(n), _fmt(reader.get(str(rate / n)) if rate else None),
                     _fmt(al["summary"]["cpu_us_per_delivered"]) + ("" if n > 1 else " (= sharded)"),
                     cell(a), _fmt(a.get("vs_alone")), cell(b), _fmt(b.get("vs_alone")),
                     f"{_fmt(a['delivered'])} / {_fmt(b['delivered'])}",
                     f"{_fmt(a['discarded'])} / {_fmt(b['discarded'])}",
                     _fmt(b.get("cpu_us_per_discarded")),
                     f"{_fmt(a['ingress_cpu_us_per_notification'])} / {_fmt(b['ingress_cpu_us_per_notification'])}",
                     "yes" if all(x["exactly_once"] for x in (sh, bc, al)) else "**no**"])
    lines += _table(["N", "a trivial reader at the same per-process rate: CPU µs per message",
                     "alone: CPU µs per delivered event", "sharded: CPU µs per delivered event",
                     "sharded ÷ alone", "broadcast: CPU µs per delivered event", "broadcast ÷ alone",
                     "delivered (sharded / broadcast)", "discarded (sharded / broadcast)",
                     "CPU µs per discarded event", "ingress CPU µs per notification (sharded / broadcast)",
                     "every user got exactly its own"], rows)
    lines.append("")
    if c.get("sharded_spread") is not None:
        lines += [f"Sharded routing, a process of N ÷ one process alone with its load: at most "
                  f"**{_fmt(c.get('sharded_vs_alone_max'))}** (broadcast routing: up to "
                  f"**{_fmt(c.get('broadcast_vs_alone_max'))}**). Across N at the fixed total rate, dearest ÷ cheapest"
                  f" per delivered event: sharded **{_fmt(c['sharded_spread'])}**, broadcast N = {ns[-1]} ÷ N = {ns[0]}: "
                  f"**{_fmt(c.get('broadcast_growth'))}**.", ""]
    if c.get("reader_spread") is not None:
        lines += ["**The host's own rate effect.** At a fixed total rate a process of N gets 1/N of the events, and",
                  "this host charges any process more per message at a lower rate. A trivial reader",
                  "(`bench/wakeup.py`: a uvloop server that decodes newline-ended JSON from one TCP connection, as a",
                  "subscription reads envelopes, nothing more; pinned like the servers) paid, from the N = "
                  f"{ns[0]} rate to the N = {ns[-1]} rate, dearest ÷ cheapest **{_fmt(c['reader_spread'])}**.",
                  "Sharded figures less what the reader paid above its N = "
                  f"{ns[0]} cost (Squall's own cost per event at each N): "
                  + ", ".join(f"N = {n}: {_fmt(v)}" for n, v in zip(ns, c.get("sharded_less_host", []))) +
                  f"; dearest ÷ cheapest **{_fmt(c.get('sharded_less_host_spread'))}**.", ""]
    detail = []
    for x in c.get("configs", []):
        for p in x["processes"]:
            detail.append([str(x["n"]), x["routing"], p["name"], _fmt(p["users"]), _fmt(p["delivered"]),
                           _fmt(p["broker_in"]), _fmt(p["discarded"]), _fmt(p["raw_cpu_ms"]),
                           _fmt(p["idle_cpu_ms_per_s"]), _fmt(p["cpu_ms"]), _fmt(p["cpu_us_per_delivered"])])
    lines += ["<details><summary>Every process of every row</summary>", ""]
    lines += _table(["N", "routing", "process", "users", "delivered", "envelopes in", "discarded", "CPU ms (read)",
                     "idle CPU ms/s", "CPU ms (net of idle)", "CPU µs per delivered"], detail)
    lines += ["", "</details>", ""]
    rates = ", ".join(f"N={x['n']} {x['routing']} {_fmt(x['achieved_rate'])}/s" for x in c.get("configs", []))
    lines += [f"Publish rate reached: {rates}.", ""]
    if any(x["summary"]["discarded"] for x in c.get("configs", []) if x["routing"] != "broadcast"):
        lines += ["Discards with sharded routing are users of two processes whose ids fall in the same shard.", ""]
    if c.get("notes"):
        lines += [f"Notes on this run: {c['notes']}", ""]
    return lines


def connections_section(r: dict) -> List[str]:
    """Connections held by one host (--processes workers), one broadcast reaching all of them."""
    s = r.get("sizes", {})
    lines = [f"## {_fmt(s.get('connections'))} connections on one host (issue 26)", "",
             f"Command: `{r.get('machine', {}).get('argv', 'python -m bench connections50k')}`. Host: {_host(r)}.", "",
             f"One Squall with `--processes {_fmt(r.get('workers'))}` (SO_REUSEPORT workers, pinned to core 0, Redis",
             f"broker, {r.get('database', '?')}), each worker under the descriptor limit of "
             f"{_fmt(r.get('fd_limit'))} (a worker allows",
             f"itself {_fmt(r.get('worker_connections_cap'))} client connections). The load generator is split over",
             f"{_fmt(r.get('holders'))} processes (`multiprocessing`, pinned to core 1), each connecting from its own",
             "source address (" + ", ".join(r.get("sources", [])) + ") so that no address runs out of",
             "ephemeral ports (32768–60999 here: about 28,000 connections per source address to one port).",
             f"Idle WebSockets (`/ws/notifications`), {_fmt(s.get('connection_users'))} users, tokens reused",
             "round-robin; then one broadcast through the publish API must reach every connection (each",
             "holder counts a new frame on each of its connections).", ""]
    lines += _table(["asked", "held at once", "connect errors", "connects/s", "server CPU ms per open",
                     "broadcast reached", "broadcast: last receipt after", "workers' RSS before → after",
                     "KB per connection"],
                    [[_fmt(r.get("connections")), _fmt(r.get("held")), _fmt(r.get("connect_errors")),
                      _fmt(r.get("connects_per_s")), _fmt(r.get("server_cpu_ms_per_open")),
                      _fmt(r.get("broadcast_reached")), f"{_fmt(r.get('broadcast_seconds'))} s",
                      f"{_fmt(r.get('rss_before_mb'))} → {_fmt(r.get('rss_after_mb'))} MB",
                      _fmt(r.get("kb_per_connection"))]])
    lines.append("")
    workers = ", ".join(f"{_fmt(w['rss_before_mb'])} → {_fmt(w['rss_after_mb'])} MB"
                        + (f" ({_fmt(w['descriptors'])} descriptors open)" if "descriptors" in w else "")
                        for w in r.get("per_worker", []))
    lines += [f"Per worker RSS: {workers}. Per holder held: "
              + ", ".join(_fmt(h) for h in r.get("held_per_holder", [])) + ".", ""]
    if r.get("connect_error_samples"):
        lines += ["Connect errors (samples): " + "; ".join(r["connect_error_samples"]), ""]
    if r.get("notes"):
        lines += [f"Notes on this run: {r['notes']}", ""]
    return lines
