"""Load-generator side of the scale-out scenarios (issue 26): ``cluster`` and ``connections``.

``cluster``: streams of users spread over N separate Squall processes, targeted notifications
through one ingress process at a fixed total rate; per process its CPU time (``/proc``, ns) and
its counters from ``/metrics`` over the measured window.

``connections``: many idle WebSockets held by a load generator split over several OS
processes (``multiprocessing``, each under the descriptor limit and on a source address of
its own), then one broadcast that must reach every one of them.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import time
import urllib.request
from typing import Dict, List, Optional

from .loadgen import HOST, R_RE, Publisher, dial, pooled, wait_until
from .procstat import ProcStat, own_cpu_seconds
from .protocols import WSClient
from .wakeup import run_wakeup

WARM = b'"warm":1'
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def parse_metrics(text: str) -> Dict[str, float]:
    """The figures the scenarios read from one Prometheus text scrape.

    ``delivered``: ``squall_events_delivered_total`` of kind ``notify`` (every transport);
    ``broker_in``: ``squall_broker_messages_total{direction="in"}``; ``discarded``:
    ``squall_broker_discarded_total``.
    """
    out = {"delivered": 0.0, "broker_in": 0.0, "discarded": 0.0}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), dict(LABEL_RE.findall(m.group(2) or "")), float(m.group(3))
        if name == "squall_events_delivered_total" and labels.get("kind") == "notify":
            out["delivered"] += value
        elif name == "squall_broker_messages_total" and labels.get("direction") == "in":
            out["broker_in"] += value
        elif name == "squall_broker_discarded_total":
            out["discarded"] += value
    return out


def scrape(port: int, token: str) -> Dict[str, float]:
    """GET ``/metrics`` of the process on ``port`` (bearer ``token``), parsed by ``parse_metrics``."""
    req = urllib.request.Request(f"http://{HOST}:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return parse_metrics(resp.read().decode())


async def open_ws(port: int, path: str, on_payload=None, source: Optional[str] = None,
                  timeout: float = 60.0) -> WSClient:
    """One WebSocket, ready once its first frame (the unread state) is in."""
    holder = {}

    def factory():
        c = WSClient(HOST, port, path, on_payload=on_payload)
        holder["c"] = c
        return c

    await dial(factory, port, source)
    await asyncio.wait_for(holder["c"].ready, timeout)
    return holder["c"]


# cluster ---------------------------------------------------------------------------------------

async def run_cluster(spec: dict) -> dict:
    """Targeted notifications at a fixed total rate over N processes; per-process CPU and counters.

    ``processes``: ``[{"name", "port", "pid"}]``, the stream-holding processes; ``ingress``: the
    same for the process that takes every publish request and holds no stream. ``users``:
    ``[{"id", "token", "proc"}]``, ``proc`` the index of the process holding the user's one
    WebSocket. Notification ``r`` goes to ``users[r % len(users)]``, one user per request.

    A warm-up notification to every user first proves every stream (and every shard
    subscription) live; then each process's CPU (``ProcStat.cpu_ns``) and counters are read,
    ``notifications`` are published at ``rate``/s, every user must get exactly its own, and the
    figures are read again. Each process's CPU with no traffic, measured over ``idle_window``
    seconds just before, is subtracted for the window's length (``cpu_ms``; ``raw_cpu_ms`` as read).
    """
    procs, ingress, users = spec["processes"], spec["ingress"], spec["users"]
    token, n_users = spec["metrics_token"], len(users)
    received: List[List[int]] = [[] for _ in users]
    warm = [0] * n_users

    def recorder(i):
        def on_payload(client, payload, now):
            if WARM in payload:
                warm[i] += 1
                return
            m = R_RE.search(payload)
            if m is not None:
                received[i].append(int(m.group(1)))
        return on_payload

    t_open = time.monotonic()
    results = await pooled([
        (lambda i=i: open_ws(procs[users[i]["proc"]]["port"],
                             spec["path"] + "?access_token=" + users[i]["token"], recorder(i)))
        for i in range(n_users)], spec.get("connect_concurrency", 50))
    open_s = time.monotonic() - t_open
    clients = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} streams failed to open: {errors[:3]}")
    publisher = Publisher({**spec, "port": ingress["port"]}, spec.get("publishers", 8))
    filler = "x" * spec.get("filler", 24)
    publish_errors: List[str] = []

    async def post(user: dict, r: int):
        conn = await publisher.free.get()
        try:
            data = {"r": r, "t": time.time()} if r >= 0 else {"warm": 1}
            body = {"user_ids": [user["id"]], "type": "invoice_paid", "message": f"Invoice {r} paid {filler}",
                    "data": data}
            status, reply = await conn.request("POST", spec["publish_path"], body, spec["service_token"])
            if status != 202:
                publish_errors.append(f"{status}: {str(reply)[:200]}")
        except Exception as exc:  # reported, not raised
            publish_errors.append(repr(exc))
        finally:
            publisher.free.put_nowait(conn)

    # Warm-up: one notification per user (no "r"), all of them must arrive: every shard subscribed.
    await asyncio.sleep(spec.get("settle", 0.5))
    await asyncio.gather(*(post(u, -1) for u in users))
    warmed = await wait_until(lambda: all(w >= 1 for w in warm), spec["timeout"], 0.02)
    if not warmed:
        raise RuntimeError(f"warm-up: {sum(1 for w in warm if w < 1)} of {n_users} streams got nothing "
                           f"(publish errors: {publish_errors[:3]})")
    await asyncio.sleep(spec.get("linger", 0.5))
    everyone = procs + [ingress]
    stats = [ProcStat(p["pid"]) for p in everyone]
    loop = asyncio.get_running_loop()
    # What each process spends with no traffic (timers, probes), per second: subtracted below,
    # or a process with fewer events in the same window would look dearer per event.
    idle0, t_idle = [s.cpu_ns() for s in stats], time.monotonic()
    await asyncio.sleep(spec.get("idle_window", 3.0))
    idle1, idle_s = [s.cpu_ns() for s in stats], time.monotonic() - t_idle
    m0 = [await loop.run_in_executor(None, scrape, p["port"], token) for p in everyone]
    cpu0 = [s.cpu_ns() for s in stats]
    own0, t0 = own_cpu_seconds(), time.time()

    total, rate = spec["notifications"], spec["rate"]
    tasks = []
    for r in range(total):
        delay = t0 + r / rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(post(users[r % n_users], r)))
    await asyncio.gather(*tasks)
    t_sent = time.time()
    complete = await wait_until(lambda: sum(len(x) for x in received) >= total, spec["timeout"], 0.02)
    await asyncio.sleep(spec.get("linger", 0.5))  # a duplicate or a stray would arrive now
    cpu1 = [s.cpu_ns() for s in stats]
    own1, t1 = own_cpu_seconds(), time.time()
    window = t1 - t0
    m1 = [await loop.run_in_executor(None, scrape, p["port"], token) for p in everyone]

    foreign = missing = duplicates = 0
    for i in range(n_users):
        want = set(range(i, total, n_users))
        got = received[i]
        foreign += sum(1 for r in got if r not in want)
        missing += len(want - set(got))
        duplicates += len(got) - len(set(got))
    rows = []
    for k, p in enumerate(everyone):
        d = {key: int(m1[k][key] - m0[k][key]) for key in ("delivered", "broker_in", "discarded")}
        raw_us = (cpu1[k] - cpu0[k]) / 1000.0
        idle_us_per_s = (idle1[k] - idle0[k]) / 1000.0 / idle_s
        cpu_us = max(0.0, raw_us - idle_us_per_s * window)
        rows.append({"name": p["name"], "ingress": p is ingress, "raw_cpu_ms": round(raw_us / 1000.0, 3),
                     "idle_cpu_ms_per_s": round(idle_us_per_s / 1000.0, 3), "cpu_ms": round(cpu_us / 1000.0, 3),
                     "users": sum(1 for u in users if u["proc"] == k) if p is not ingress else 0, **d,
                     "cpu_us_per_delivered": round(cpu_us / d["delivered"], 2) if d["delivered"] else None})
    dropped = sum(1 for c in clients if c.closed.done())
    for c in clients:
        c.close()
    publisher.close()
    delivered = sum(len(x) for x in received)
    return {
        "users": n_users, "notifications": total, "rate": rate, "received": delivered, "complete": complete,
        "exactly_once": complete and delivered == total and foreign == missing == duplicates == 0,
        "foreign": foreign, "missing": missing, "duplicates": duplicates, "dropped": dropped,
        "publish_errors": len(publish_errors), "publish_error_samples": publish_errors[:5],
        "achieved_rate": round(total / max(t_sent - t0, 1e-6), 1), "window_s": round(window, 3),
        "idle_window_s": round(idle_s, 3),
        "connects_per_s": round(n_users / max(open_s, 1e-6), 1),
        "loadgen_cpu_pct": round(100.0 * (own1 - own0) / max(t1 - t0, 1e-6), 1), "processes": rows,
    }


# connections -----------------------------------------------------------------------------------

def _holder_main(spec: dict, index: int, count: int, offset: int, pipe) -> None:
    """One holder process: open ``count`` WebSockets from its own source address, then obey ``pipe``."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_hold(spec, index, count, offset, pipe))


async def _hold(spec: dict, index: int, count: int, offset: int, pipe) -> None:
    loop = asyncio.get_running_loop()
    tokens = spec["tokens"]
    source = f"127.0.{spec.get('source_net', 1)}.{2 + index}"
    t0 = time.monotonic()
    results = await pooled([
        (lambda i=i: open_ws(spec["port"], spec["path"] + "?access_token=" + tokens[(offset + i) % len(tokens)],
                             source=source, timeout=spec.get("connect_timeout", 120.0)))
        for i in range(count)], spec.get("connect_concurrency", 50))
    seconds = time.monotonic() - t0
    clients = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    pipe.send({"held": len(clients), "errors": len(errors), "error_samples": errors[:3],
               "seconds": round(seconds, 3), "source": source})
    await loop.run_in_executor(None, pipe.recv)  # "arm"
    before = [c.count for c in clients]
    pipe.send("armed")
    timeout = await loop.run_in_executor(None, pipe.recv)  # how long to wait for the broadcast
    t_wait = time.time()
    await wait_until(lambda: all(c.count > b for c, b in zip(clients, before)), timeout, 0.1)
    reached = sum(1 for c, b in zip(clients, before) if c.count > b)
    last = max((c.last for c, b in zip(clients, before) if c.count > b), default=t_wait)
    dropped = sum(1 for c in clients if c.closed.done())
    pipe.send({"reached": reached, "dropped": dropped, "last": last})
    for c in clients:
        c.close()
    await asyncio.sleep(0.2)


def worker_pids(master: int) -> List[int]:
    """The child processes of ``master`` (the ``--processes`` workers), from ``/proc``."""
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def open_descriptors(pid: int) -> int:
    """How many descriptors ``pid`` has open (its connections and a few dozen more)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def run_connections(spec: dict) -> dict:
    """``connections`` idle WebSockets split over ``holders`` processes, held at once; one broadcast.

    Memory per connection: summed RSS of the server's workers (children of ``server_pid``)
    after the connections are held minus before, divided by the connections held.
    """
    n, holders = spec["connections"], spec["holders"]
    workers = worker_pids(spec["server_pid"]) or [spec["server_pid"]]
    await asyncio.sleep(spec.get("settle", 1.0))
    rss0 = {p: ProcStat(p).memory()["rss_kb"] for p in workers}
    cpu0 = sum(ProcStat(p).cpu_seconds() for p in workers)
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    shares = [n // holders + (1 if k < n % holders else 0) for k in range(holders)]
    t0 = time.monotonic()
    for k in range(holders):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_holder_main, args=(spec, k, shares[k], sum(shares[:k]), child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    loop = asyncio.get_running_loop()
    try:
        opened = [await loop.run_in_executor(None, p.recv) for p in pipes]
        connect_s = time.monotonic() - t0
        held = sum(o["held"] for o in opened)
        cpu1 = sum(ProcStat(p).cpu_seconds() for p in workers)
        await asyncio.sleep(spec.get("settle", 1.0))
        rss1 = {p: ProcStat(p).memory()["rss_kb"] for p in workers}
        per_worker = [{"pid": p, "rss_before_mb": round(rss0[p] / 1024, 1), "rss_after_mb": round(rss1[p] / 1024, 1),
                       "descriptors": open_descriptors(p)} for p in workers]
        for p in pipes:
            p.send("arm")
        for p in pipes:
            await loop.run_in_executor(None, p.recv)
        publisher = Publisher(spec, 1)
        t_pub = time.time()
        await publisher.publish(0)
        publisher.close()
        for p in pipes:
            p.send(spec["timeout"])
        reached = [await loop.run_in_executor(None, p.recv) for p in pipes]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    total_reached = sum(r["reached"] for r in reached)
    growth = sum(rss1.values()) - sum(rss0.values())
    return {
        "connections": n, "held": held, "holders": holders, "workers": len(workers),
        "connect_errors": sum(o["errors"] for o in opened),
        "connect_error_samples": [s for o in opened for s in o["error_samples"]][:5],
        "held_per_holder": [o["held"] for o in opened], "sources": [o["source"] for o in opened],
        "connect_seconds": round(connect_s, 2), "connects_per_s": round(held / max(connect_s, 1e-6), 1),
        "server_cpu_ms_per_open": round((cpu1 - cpu0) * 1e3 / max(held, 1), 3),
        "broadcast_reached": total_reached, "dropped": sum(r["dropped"] for r in reached),
        "broadcast_seconds": round(max(r["last"] for r in reached) - t_pub, 3) if total_reached else None,
        "publish_errors": publisher.errors[:5],
        "rss_before_mb": round(sum(rss0.values()) / 1024, 1), "rss_after_mb": round(sum(rss1.values()) / 1024, 1),
        "kb_per_connection": round(growth / max(held, 1), 2), "per_worker": per_worker,
        "worker_connections_cap": spec.get("worker_cap"), "fd_limit": spec.get("fd_limit"),
    }


SCENARIOS = {"cluster": run_cluster, "connections": run_connections, "wakeup": run_wakeup}
