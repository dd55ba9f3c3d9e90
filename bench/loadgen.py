"""The load generator: ``python -m bench.loadgen SPEC.json`` runs one scenario and prints its JSON result.

It runs pinned to the core the server does not use. Scenarios: ``users`` (register
accounts), ``fanout`` (subscribers + broadcast notifications), ``idle`` (many quiet
connections), ``chat`` (pairs of users on ``/ws/chat``), ``targeted``, and the scale-out
ones of bench/scale_load.py (``cluster``, ``connections``). Every wait is bounded by the
spec's ``timeout``; the process reports what it saw and exits by itself.
"""
from __future__ import annotations

import asyncio
import errno
import itertools
import json
import re
import resource
import socket
import sys
import time
from typing import Dict, List, Optional

from .protocols import HTTPConn, SSEClient, WSClient
from .procstat import ProcStat, own_cpu_seconds

HOST = "127.0.0.1"


def raise_fd_limit(want: int = 120_000) -> int:
    """Raise the open-files limit: to ``want`` where allowed (root), else the soft one to the hard one.

    The servers started from here inherit it (the idle scenario holds tens of thousands of sockets).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return max(soft, hard)


def percentile(values: List[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded for the report."""
    return round(seconds * 1000.0, 3)


async def pooled(coros, limit: int):
    """Run coroutine factories with at most ``limit`` in flight; returns results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(factory):
        async with sem:
            return await factory()

    return await asyncio.gather(*(one(f) for f in coros), return_exceptions=True)


async def wait_until(predicate, timeout: float, step: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


FIRST_SOURCE_PORT = 1024
_next_port: Dict[str, int] = {}  # source address -> the next port to try


def bind_next_port(sock: socket.socket, source: str) -> int:
    """Bind ``sock`` to ``source`` and the first port from the address's last one that is free; the port."""
    port = _next_port.get(source, FIRST_SOURCE_PORT)
    while True:
        if port > 65535:
            raise OSError(errno.EADDRNOTAVAIL, f"no port of {source} left")
        try:
            sock.bind((source, port))
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            port += 1
    _next_port[source] = port + 1
    return port


async def dial(factory, port: int, source: Optional[str] = None):
    """``loop.create_connection`` to ``HOST:port``, from the local address ``source`` when given.

    With a source address the socket is bound here, to a port this process picks (the next one
    of that address), not to port 0: for port 0 Linux searches the range for a free port and
    checks each candidate against every socket on that port, the earlier runs' TIME_WAIT ones
    included, and uvloop (libuv) also sets SO_REUSEADDR on a socket it binds for
    ``local_addr``, which makes the search slower still (1.6 ms a bind with 9,000 ports of the
    address in use): the load generator, not the server, set the rate of every open past the
    first few thousand.
    """
    loop = asyncio.get_running_loop()
    if not source:
        return await loop.create_connection(factory, HOST, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        bind_next_port(sock, source)
        await loop.sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return await loop.create_connection(factory, sock=sock)


async def connect(cls, port: int, path: str, latencies=None, timeout: float = 30.0, on_open=None,
                  source: str = None, on_head: bool = False):
    """Open one subscriber connection and wait for its first payload (or ``on_open``'s reply).

    ``source`` is the local address to connect from (127.0.0.x: past ~28,000 connections to
    one port, one source address runs out of ephemeral ports). ``on_head``: open as soon as
    the response head is in (101, or the SSE 200 and headers), for a server that sends nothing.
    """
    client_holder = {}

    def factory():
        c = cls(HOST, port, path, latencies=latencies)
        c.on_open = on_open
        c.ready_on_head = on_head
        client_holder["c"] = c
        return c

    await dial(factory, port, source)
    client = client_holder["c"]
    await asyncio.wait_for(client.ready, timeout)
    return client


def stream_path(spec: dict, transport: str, token: str) -> str:
    """The subscriber URL path for ``transport`` with the user's token."""
    return spec["paths"][transport] + "?access_token=" + token


# Scenarios -------------------------------------------------------------------------------

async def run_users(spec: dict) -> dict:
    """Register ``n`` users; returns their ids and tokens."""
    port, n = spec["port"], spec["n"]
    conns = [HTTPConn(HOST, port) for _ in range(min(16, n))]
    free = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)

    async def register(i):
        conn = await free.get()
        try:
            status, body = await conn.request("POST", "/api/auth/register",
                                              {"username": f"{spec.get('prefix', 'bench')}{i}",
                                               "password": "bench-password-1"})
            if status not in (200, 201):
                raise RuntimeError(f"register answered {status}: {body}")
            return {"id": body["user"]["id"], "token": body["access_token"]}
        finally:
            free.put_nowait(conn)

    t0 = time.monotonic()
    users = await asyncio.gather(*(register(i) for i in range(n)))
    for c in conns:
        c.close()
    return {"users": users, "seconds": round(time.monotonic() - t0, 3)}


class Publisher:
    """A few keep-alive connections posting broadcast notifications with a send timestamp."""

    def __init__(self, spec: dict, connections: int = 4):
        self.spec = spec
        self.free: asyncio.Queue = asyncio.Queue()
        self.conns = [HTTPConn(HOST, spec["port"]) for _ in range(connections)]
        for c in self.conns:
            self.free.put_nowait(c)
        self.errors: List[str] = []
        self.filler = "x" * spec.get("filler", 24)

    async def publish(self, seq: int) -> None:
        """POST one broadcast; ``data.t`` is the send time (seconds since the epoch)."""
        conn = await self.free.get()
        try:
            body = {"broadcast": True, "message": f"Bench notification {seq} {self.filler}",
                    "data": {"seq": seq, "t": time.time()}}
            status, reply = await conn.request("POST", self.spec["publish_path"], body, self.spec["service_token"])
            if status not in (201, 202):  # 201: Nchan with subscribers present
                self.errors.append(f"{status}: {str(reply)[:200]}")
        except Exception as exc:  # reported, not raised: the run still ends and says so
            self.errors.append(repr(exc))
        finally:
            self.free.put_nowait(conn)

    def close(self) -> None:
        """Close every connection."""
        for c in self.conns:
            c.close()


async def open_subscribers(spec: dict, transport: str, n: int, latencies=None, offset: int = 0) -> tuple:
    """``n`` subscribers (tokens from ``offset`` on, reused round-robin); returns (clients, errors, seconds).

    A subscriber is open when its first payload arrives, or with the spec's ``open_on_head`` when
    its response head does (a server that sends nothing on open).
    """
    cls = WSClient if transport == "ws" else SSEClient
    tokens = spec["tokens"]
    t0 = time.monotonic()
    spread = spec.get("spread_sources", False)
    on_head = spec.get("open_on_head", False)
    results = await pooled([
        (lambda i=i: connect(cls, spec["port"], stream_path(spec, transport, tokens[(offset + i) % len(tokens)]),
                             latencies, spec.get("connect_timeout", 60.0),
                             source=f"127.0.{spec.get('source_net', 0)}.{2 + (offset + i) // 20000}"
                             if spread else None, on_head=on_head))
        for i in range(n)], spec.get("connect_concurrency", 100))
    seconds = time.monotonic() - t0
    clients = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    return clients, errors, seconds


async def run_fanout(spec: dict) -> dict:
    """Subscribers on one transport, ``events`` broadcasts (burst or at ``rate``/s), timed deliveries."""
    transport, n_subs, n_events, rate = spec["transport"], spec["subscribers"], spec["events"], spec["rate"]
    latencies: List[float] = []
    clients, errors, _ = await open_subscribers(spec, transport, n_subs, latencies)
    latencies.clear()  # the first (state) frames carry no timestamp, but be sure
    await asyncio.sleep(spec.get("settle", 0.3))
    server = ProcStat(spec["server_pid"])
    publisher = Publisher(spec, spec.get("publishers", 4))
    expected = len(clients) * (n_events + 1)
    cpu0, own0, t0 = server.cpu_seconds(), own_cpu_seconds(), time.time()

    async def burst():
        seqs = iter(range(n_events))

        async def worker():
            for seq in seqs:
                await publisher.publish(seq)

        await asyncio.gather(*(worker() for _ in publisher.conns))

    async def paced():
        tasks = []
        for seq in range(n_events):
            delay = t0 + seq / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(publisher.publish(seq)))
        await asyncio.gather(*tasks)

    await (burst() if rate <= 0 else paced())
    complete = await wait_until(lambda: sum(c.count for c in clients) >= expected, spec["timeout"])
    cpu1, own1 = server.cpu_seconds(), own_cpu_seconds()
    t_last = max((c.last for c in clients), default=t0)
    elapsed = max(t_last - t0, 1e-6)
    deliveries = sum(c.count for c in clients) - len(clients)
    rss = server.memory()
    closed = sum(1 for c in clients if c.closed.done())
    for c in clients:
        c.close()
    publisher.close()
    wall = max(time.time() - t0, 1e-6)
    return {
        "subscribers": len(clients), "events": n_events, "rate": rate,
        "deliveries": deliveries, "expected_deliveries": len(clients) * n_events, "complete": complete,
        "seconds": round(elapsed, 4),
        "deliveries_per_s": round(deliveries / elapsed, 1),
        "latency_p50_ms": ms(percentile(latencies, 50)), "latency_p99_ms": ms(percentile(latencies, 99)),
        "latency_max_ms": ms(max(latencies, default=0.0)),
        "server_cpu_us_per_delivery": round((cpu1 - cpu0) * 1e6 / max(deliveries, 1), 2),
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 1),
        "loadgen_cpu_pct": round(100.0 * (own1 - own0) / wall, 1),
        "peak_rss_mb": rss["peak_mb"], "rss_mb": rss["rss_mb"],
        "connect_errors": errors[:5] + ([f"... {len(errors)} in all"] if len(errors) > 5 else []),
        "publish_errors": publisher.errors[:5], "closed_early": closed,
    }


async def run_idle(spec: dict) -> dict:
    """Hold ``ws`` WebSockets and ``sse`` streams at once; memory per connection, connect rate, a live check."""
    server = ProcStat(spec["server_pid"])
    await asyncio.sleep(spec.get("settle", 0.5))
    rss0 = server.memory()["rss_kb"]
    cpu0, own0, t0 = server.cpu_seconds(), own_cpu_seconds(), time.monotonic()
    ws, ws_errors, ws_s = await open_subscribers(spec, "ws", spec["ws"])
    cpu1, own1, t1 = server.cpu_seconds(), own_cpu_seconds(), time.monotonic()
    await asyncio.sleep(spec.get("settle", 0.5))
    rss1 = server.memory()["rss_kb"]
    # SSE streams take the users after the WebSockets' ones: with enough users, each
    # connection is a different user (as in real life: no per-user state is shared).
    cpu2, own2, t2 = server.cpu_seconds(), own_cpu_seconds(), time.monotonic()
    sse, sse_errors, sse_s = await open_subscribers(spec, "sse", spec["sse"], offset=spec["ws"])
    cpu3, own3, t3 = server.cpu_seconds(), own_cpu_seconds(), time.monotonic()
    await asyncio.sleep(spec.get("settle", 0.5))
    rss2 = server.memory()["rss_kb"]
    everyone = ws + sse
    publish_errors: List[str] = []
    reached = None
    if not spec.get("open_on_head", False):  # a server that sends nothing has no broadcast to check
        # The connections must still work: one broadcast must reach every one of them.
        before = {id(c): c.count for c in everyone}
        publisher = Publisher(spec, 1)
        await publisher.publish(0)
        publisher.close()
        publish_errors = publisher.errors
        await wait_until(lambda: all(c.count > before[id(c)] for c in everyone), spec["timeout"], 0.05)
        reached = sum(1 for c in everyone if c.count > before[id(c)])
    dropped = sum(1 for c in everyone if c.closed.done())
    for c in everyone:
        c.close()
    return {
        "ws_connections": len(ws), "sse_connections": len(sse),
        "distinct_users": min(len(spec["tokens"]), spec["ws"] + spec["sse"]),
        "ws_kb_per_connection": round((rss1 - rss0) / max(len(ws), 1), 2),
        "sse_kb_per_connection": round((rss2 - rss1) / max(len(sse), 1), 2),
        "ws_connects_per_s": round(len(ws) / max(ws_s, 1e-6), 1),
        "sse_connects_per_s": round(len(sse) / max(sse_s, 1e-6), 1),
        "ws_cpu_ms_per_open": round((cpu1 - cpu0) * 1e3 / max(len(ws), 1), 3),
        "sse_cpu_ms_per_open": round((cpu3 - cpu2) * 1e3 / max(len(sse), 1), 3),
        "ws_connect_loadgen_cpu_pct": round(100.0 * (own1 - own0) / max(t1 - t0, 1e-6), 1),
        "sse_connect_loadgen_cpu_pct": round(100.0 * (own3 - own2) / max(t3 - t2, 1e-6), 1),
        "concurrent_connections": len(everyone), "broadcast_reached": reached, "dropped": dropped,
        "connect_errors": len(ws_errors) + len(sse_errors),
        "connect_error_samples": (ws_errors + sse_errors)[:5] + publish_errors[:5],
        "opened_on": "response head" if spec.get("open_on_head", False) else "first event",
        "rss_before_mb": round(rss0 / 1024, 1), "rss_after_mb": round(rss2 / 1024, 1),
    }


class ChatPeer(WSClient):
    """A ``/ws/chat`` connection that times acks (sender) and deliveries (receiver)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.on_payload = ChatPeer.handle
        self.sent: Dict[str, float] = {}
        self.stats = None

    @staticmethod
    def handle(self, payload: bytes, now: float) -> None:
        """Route one frame by type."""
        frame = json.loads(payload)
        kind = frame.get("type")
        st = self.stats
        if kind == "message_ack":
            t = st.sent_at.get(frame["client_id"])
            if t is not None:
                st.acks.append(now - t)
            st.on_ack(self)
        elif kind == "message":
            t = st.sent_at.get(frame["message"].get("client_id"))
            if t is not None:
                st.deliveries.append(now - t)
            st.delivered += 1
        elif kind == "error":
            st.errors.append(f"{frame.get('code')}: {frame.get('message')}")
            st.on_ack(self)


class ChatStats:
    """Shared counters of a chat run."""

    def __init__(self):
        self.sent_at: Dict[str, float] = {}
        self.acks: List[float] = []
        self.deliveries: List[float] = []
        self.delivered = 0
        self.errors: List[str] = []
        self.on_ack = lambda peer: None


async def run_chat(spec: dict) -> dict:
    """``pairs`` private chats on ``/ws/chat``: one member sends, the other receives; all joined."""
    port, users, pairs = spec["port"], spec["users"], spec["pairs"]
    per_sender, window, rate = spec["messages_per_sender"], spec["window"], spec["rate"]
    # Chats: found or created (the same pairs on every run).
    conns = [HTTPConn(HOST, port) for _ in range(8)]
    free = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)

    async def open_chat(i):
        conn = await free.get()
        try:
            a, b = users[2 * i], users[2 * i + 1]
            status, body = await conn.request("POST", "/api/chats", {"user_id": b["id"]}, a["token"])
            if status not in (200, 201):
                raise RuntimeError(f"open chat answered {status}: {body}")
            return body["chat"]["id"]
        finally:
            free.put_nowait(conn)

    chat_ids = await asyncio.gather(*(open_chat(i) for i in range(pairs)))
    for c in conns:
        c.close()
    stats = ChatStats()

    async def join(user, chat_id):
        loop = asyncio.get_running_loop()
        holder = {}

        def factory():
            p = ChatPeer(HOST, port, "/ws/chat?access_token=" + user["token"])
            p.stats = stats
            p.on_open = lambda peer: peer.send_text(
                json.dumps({"type": "join_chat", "chat_id": chat_id}).encode())
            holder["p"] = p
            return p

        await loop.create_connection(factory, HOST, port)
        await asyncio.wait_for(holder["p"].ready, spec.get("connect_timeout", 60.0))
        return holder["p"]

    peers = await pooled([(lambda i=i, k=k: join(users[2 * i + k], chat_ids[i]))
                          for i in range(pairs) for k in (0, 1)], 100)
    failed = [repr(p)[:200] for p in peers if isinstance(p, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} chat connections failed: {failed[:3]}")
    senders = [(peers[2 * i], chat_ids[i]) for i in range(pairs)]
    ids = itertools.count()
    run_tag = spec.get("tag", "r")
    left = {id(p): per_sender for p, _ in senders}
    total = pairs * per_sender

    def send(peer, chat_id):
        if left[id(peer)] <= 0:
            return
        left[id(peer)] -= 1
        cid = f"{run_tag}{next(ids)}"
        stats.sent_at[cid] = time.time()
        peer.send_text(b'{"type":"send_message","chat_id":%d,"content":"bench message %s","client_id":"%s"}'
                       % (chat_id, cid.encode(), cid.encode()))

    chat_of = {id(p): c for p, c in senders}
    server = ProcStat(spec["server_pid"])
    await asyncio.sleep(spec.get("settle", 0.3))
    cpu0, own0, t0 = server.cpu_seconds(), own_cpu_seconds(), time.time()
    if rate <= 0:
        # As fast as accepted: each sender keeps ``window`` sends waiting for their acks.
        stats.on_ack = lambda peer: send(peer, chat_of[id(peer)]) if id(peer) in chat_of else None
        for peer, chat_id in senders:
            for _ in range(window):
                send(peer, chat_id)
    else:
        # A steady total rate, spread round-robin over the senders in 5 ms ticks.
        order = itertools.cycle(senders)
        sent = 0
        while sent < total:
            due = min(total, int((time.time() - t0) * rate) + 1)
            while sent < due:
                peer, chat_id = next(order)
                if left[id(peer)] > 0:
                    send(peer, chat_id)
                    sent += 1
            await asyncio.sleep(0.005)
    complete = await wait_until(lambda: len(stats.acks) + len(stats.errors) >= total and stats.delivered
                                >= total - len(stats.errors), spec["timeout"])
    cpu1, own1 = server.cpu_seconds(), own_cpu_seconds()
    t_last = max((p.last for p in peers), default=t0)
    elapsed = max(t_last - t0, 1e-6)
    wall = max(time.time() - t0, 1e-6)
    rss = server.memory()
    for p in peers:
        p.close()
    done = min(len(stats.acks), stats.delivered)
    return {
        "pairs": pairs, "messages": total, "rate": rate, "acked": len(stats.acks), "delivered": stats.delivered,
        "complete": complete, "seconds": round(elapsed, 4),
        "messages_per_s": round(done / elapsed, 1),
        "ack_p50_ms": ms(percentile(stats.acks, 50)), "ack_p99_ms": ms(percentile(stats.acks, 99)),
        "delivery_p50_ms": ms(percentile(stats.deliveries, 50)),
        "delivery_p99_ms": ms(percentile(stats.deliveries, 99)),
        "delivery_max_ms": ms(max(stats.deliveries, default=0.0)),
        "server_cpu_us_per_message": round((cpu1 - cpu0) * 1e6 / max(done, 1), 2),
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 1),
        "loadgen_cpu_pct": round(100.0 * (own1 - own0) / wall, 1),
        "peak_rss_mb": rss["peak_mb"], "errors": len(stats.errors), "error_samples": stats.errors[:5],
    }


R_RE = re.compile(rb'"r":([0-9]+)')


async def run_targeted(spec: dict) -> dict:
    """Notifications to single users through the publish API, ``batch`` users per request.

    ``users`` (each a different user) hold one stream each, even ones a WebSocket, odd ones
    SSE. Request ``r`` names ``batch`` users round-robin and carries ``data.r`` (and the send
    time ``data.t``); each stream records the ``r`` of every notification it gets, so the
    result can prove exactly-once: no notification of another user, none missing, none twice.
    ``rate`` 0 sends as fast as accepted (``publishers`` keep-alive connections, one request
    in flight each), otherwise ``rate`` notifications per second.
    """
    users, batch, total, rate = spec["users"], spec["batch"], spec["notifications"], spec["rate"]
    n_users = len(users)
    batch = min(batch, n_users)  # a request names each user at most once
    received: List[List[int]] = [[] for _ in range(n_users)]
    latencies: List[float] = []

    def recorder(i):
        def on_payload(client, payload, now):
            m = R_RE.search(payload)
            if m is not None:
                received[i].append(int(m.group(1)))
        return on_payload

    async def open_one(i):
        transport = "ws" if i % 2 == 0 else "sse"
        cls = WSClient if transport == "ws" else SSEClient
        loop = asyncio.get_running_loop()
        holder = {}

        def factory():
            c = cls(HOST, spec["port"], stream_path(spec, transport, users[i]["token"]), latencies=latencies,
                    on_payload=recorder(i))
            holder["c"] = c
            return c

        await loop.create_connection(factory, HOST, spec["port"])
        await asyncio.wait_for(holder["c"].ready, spec.get("connect_timeout", 60.0))
        return holder["c"]

    t_open = time.monotonic()
    results = await pooled([(lambda i=i: open_one(i)) for i in range(n_users)], spec.get("connect_concurrency", 100))
    open_s = time.monotonic() - t_open
    clients = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    latencies.clear()
    await asyncio.sleep(spec.get("settle", 0.3))
    requests = (total + batch - 1) // batch
    members = [[(r * batch + j) % n_users for j in range(min(batch, total - r * batch))] for r in range(requests)]
    publisher = Publisher(spec, spec.get("publishers", 8))
    stored_ids: List[int] = []
    filler = "x" * spec.get("filler", 24)
    server = ProcStat(spec["server_pid"])
    cpu0, own0, t0 = server.cpu_seconds(), own_cpu_seconds(), time.time()

    async def post(r):
        conn = await publisher.free.get()
        try:
            body = {"user_ids": [users[i]["id"] for i in members[r]], "type": "invoice_paid",
                    "message": f"Invoice {r} paid {filler}", "data": {"r": r, "t": time.time()}}
            status, reply = await conn.request("POST", spec["publish_path"], body, spec["service_token"])
            if status != 202:
                publisher.errors.append(f"{status}: {str(reply)[:200]}")
            else:
                stored_ids.extend(reply["ids"])
        except Exception as exc:  # reported, not raised
            publisher.errors.append(repr(exc))
        finally:
            publisher.free.put_nowait(conn)

    if rate <= 0:
        order = iter(range(requests))

        async def worker():
            for r in order:
                await post(r)

        await asyncio.gather(*(worker() for _ in publisher.conns))
    else:
        tasks = []
        per_request = batch / rate
        for r in range(requests):
            delay = t0 + r * per_request - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(post(r)))
        await asyncio.gather(*tasks)
    t_sent = time.time()
    complete = await wait_until(lambda: sum(len(x) for x in received) >= total, spec["timeout"])
    await asyncio.sleep(spec.get("linger", 0.3))  # a duplicate or a stray would arrive now
    cpu1, own1 = server.cpu_seconds(), own_cpu_seconds()
    t_last = max((c.last for c in clients), default=t0)
    elapsed = max(t_last - t0, 1e-6)
    wall = max(time.time() - t0, 1e-6)
    expected: List[List[int]] = [[] for _ in range(n_users)]
    for r, who in enumerate(members):
        for i in who:
            expected[i].append(r)
    foreign = missing = duplicates = 0
    for i in range(n_users):
        got, want = received[i], expected[i]
        want_set = set(want)
        foreign += sum(1 for r in got if r not in want_set)
        seen = set(got)
        missing += sum(1 for r in want_set if r not in seen)
        duplicates += len(got) - len(seen)
    delivered = sum(len(x) for x in received)
    dropped = sum(1 for c in clients if c.closed.done())
    for c in clients:
        c.close()
    publisher.close()
    return {
        "users": n_users, "ws_streams": (n_users + 1) // 2, "sse_streams": n_users // 2, "batch": batch,
        "rate": rate, "requests": requests, "notifications": total, "stored": len(set(stored_ids)),
        "delivered": delivered, "complete": complete,
        "exactly_once": delivered == total and foreign == 0 and missing == 0 and duplicates == 0
        and len(set(stored_ids)) == total,
        "foreign": foreign, "missing": missing, "duplicates": duplicates,
        "seconds": round(elapsed, 4), "publish_seconds": round(t_sent - t0, 4),
        "notifications_per_s": round(delivered / elapsed, 1),
        "requests_per_s": round(requests / max(t_sent - t0, 1e-6), 1),
        "latency_p50_ms": ms(percentile(latencies, 50)), "latency_p99_ms": ms(percentile(latencies, 99)),
        "latency_max_ms": ms(max(latencies, default=0.0)),
        "server_cpu_us_per_notification": round((cpu1 - cpu0) * 1e6 / max(delivered, 1), 2),
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 1),
        "loadgen_cpu_pct": round(100.0 * (own1 - own0) / wall, 1),
        "connects_per_s": round(len(clients) / max(open_s, 1e-6), 1),
        "connect_errors": len(errors), "connect_error_samples": errors[:5],
        "publish_errors": len(publisher.errors), "publish_error_samples": publisher.errors[:5],
        "dropped": dropped, "peak_rss_mb": server.memory()["peak_mb"],
    }


SCENARIOS = {"users": run_users, "fanout": run_fanout, "idle": run_idle, "chat": run_chat, "targeted": run_targeted}


def main(argv=None) -> int:
    """Read the spec file, run its scenario, print one JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    raise_fd_limit()
    try:
        import uvloop  # a faster loop keeps the load generator well ahead of the server
        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    from .scale_load import SCENARIOS as SCALE  # imported here: it imports this module's helpers
    scenario = {**SCENARIOS, **SCALE}[spec["scenario"]]
    result = asyncio.run(asyncio.wait_for(scenario(spec), spec.get("deadline", 600)))
    result["loop"] = loop_name
    out = json.dumps(result)
    if spec.get("result_path"):
        with open(spec["result_path"], "w") as f:
            f.write(out)
    else:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
