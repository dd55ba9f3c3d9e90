"""What this host charges a process per message at a given message rate: a trivial subscriber.

The cluster simulation (bench/scale.py) sends a fixed total rate over N processes, so each
process gets 1/N of it, and a process's CPU per event depends on its own event rate: at a
lower rate each message wakes a process from sleep, with cold caches (and, in a virtual
machine, a virtual CPU the host may have descheduled). This measures that effect apart
from Squall: ``python -m bench.wakeup PORT`` is a uvloop server that reads newline-ended
JSON messages over one TCP connection and decodes each (as a broker subscription reads
envelopes), nothing more; the load generator (``run_wakeup``) sends it the same number of
messages at each rate and reads its CPU time (``/proc/<pid>/task/*/schedstat``), net of its
CPU with no traffic. The report shows its µs per message beside Squall's at each N.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Dict

HOST = "127.0.0.1"


async def serve(port: int) -> None:
    """Read and decode lines until the peer closes; forever."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                break
            json.loads(line)
        writer.close()

    server = await asyncio.start_server(handle, HOST, port)
    async with server:
        await server.serve_forever()


async def run_wakeup(spec: dict) -> dict:
    """Load-generator side: ``messages_per_rate`` messages at each of ``rates``; the reader's CPU µs per message.

    ``spec``: ``port`` and ``pid`` of the reader, ``rates`` (messages/s), ``seconds`` per rate
    (at least ``min_messages``), ``idle_window`` (its CPU with no traffic, subtracted),
    ``size`` (bytes of a message, about an envelope's).
    """
    from .procstat import ProcStat  # the load generator's helpers (imported where it runs)
    deadline = time.monotonic() + spec.get("timeout", 30.0)
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, spec["port"])
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    stat = ProcStat(spec["pid"])
    filler = "x" * max(0, spec.get("size", 300) - 40)
    out: Dict[str, float] = {}
    for rate in spec["rates"]:
        n = max(spec.get("min_messages", 200), int(rate * spec.get("seconds", 5.0)))
        idle0, t_idle = stat.cpu_ns(), time.monotonic()
        await asyncio.sleep(spec.get("idle_window", 2.0))
        idle_ns_per_s = (stat.cpu_ns() - idle0) / (time.monotonic() - t_idle)
        c0, t0 = stat.cpu_ns(), time.monotonic()
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(json.dumps({"i": i, "user_ids": [i], "pad": filler}).encode() + b"\n")
            await writer.drain()
        await asyncio.sleep(0.2)  # the last lines read
        window = time.monotonic() - t0
        net_ns = max(0.0, stat.cpu_ns() - c0 - idle_ns_per_s * window)
        out[str(rate)] = round(net_ns / 1000.0 / n, 2)
    writer.close()
    return {"us_per_message": out, "size": spec.get("size", 300)}


def main(argv=None) -> int:
    """``python -m bench.wakeup PORT``: the reader (uvloop, as Squall runs by default)."""
    port = int((argv if argv is not None else sys.argv[1:])[0])
    import uvloop
    uvloop.run(serve(port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
