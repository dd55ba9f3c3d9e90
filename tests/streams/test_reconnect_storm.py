"""A reconnect storm: 2,000 notification streams (half WebSocket, half SSE) in a helper process
drop at once and come back together, retrying with full jitter and Retry-After and resuming
with their last event id. Established clients keep their notification latency within a few
times its baseline, every stream is back within the documented time, and none receives a
duplicate or misses an event."""
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Tuple

import pytest

from tests.support.clients import ApiClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tests.support.procs import ROOT, start_server
from tests.support.stream_requests import KeepAliveApi

STREAMS = 2000
USERS = 100  # 20 streams each, under the per-user cap of 32
RATE, BURST = 300, 50
BASELINE_PROBES = 25
WORST_MS = 100  # issue 26: the worst latency of an established client during the storm
QUIET_OTHERS = 0.25  # cores other processes may use during the storm for the machine to count as quiet


async def latency(api, watchers, user_id) -> float:
    """Seconds from publishing a notification to the user until all their sockets have it.

    ``api`` is a KeepAliveApi: the publishing backend holds its connection, as a pooled HTTP
    client does, so the figure is the established connections' (a new connection's request
    first waits its turn in the accept queue behind the storm's)."""
    t0 = time.monotonic()
    status, body = await api.call("POST", "/api/notifications", {"user_ids": [user_id], "message": "probe"},
                                  token=SERVICE_TOKEN)
    assert status == 202
    for ws in watchers:
        while (await ws.recv_type("announcement"))["id"] != body["ids"][0]:
            pass
    return time.monotonic() - t0


def cpu_ticks(*pids: int) -> Tuple[int, int]:
    """(clock ticks the whole machine was busy, ticks of ``pids``) so far, from /proc."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    machine = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = 0
    for pid in pids:
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        own += int(stat[11]) + int(stat[12])  # utime, stime
    return machine, own


async def broadcast(api, ids) -> None:
    status, body = await api.call("POST", "/api/notifications", {"broadcast": True, "message": "to all"},
                                  token=SERVICE_TOKEN)
    assert status == 202
    ids.append(body["ids"][0])


@pytest.mark.slow
@pytest.mark.gen_test(timeout=180)
async def test_2000_streams_reconnect_together_without_loss_or_duplicate(tmp_path):
    server = start_server(tmp_path, "--database-url", f"sqlite:///{tmp_path}/s.db",
                          "--max-handshakes-per-second", str(RATE), "--handshake-burst", str(BURST),
                          # the helper's 2,000 streams all come from 127.0.0.1
                          "--max-connections-per-address", str(STREAMS + 100))
    helper = None
    try:
        api = ApiClient(server.url)
        stamp = str(int(time.time() * 1000) % 10 ** 8)
        users = [await api.register(f"s{n}_{stamp}") for n in range(USERS)]
        watcher = await api.register(f"watch_{stamp}")
        watchers = [await WSClient.connect(server.ws_url, "/ws/notifications", watcher["token"]) for _ in range(3)]
        # the baseline: the same probes, at the same pace, before the storm (on a busy machine
        # its worst case holds the scheduling delays the storm's figure would hold anyway)
        quiet = []
        publisher = KeepAliveApi(server.port)
        for _ in range(BASELINE_PROBES):
            quiet.append(await latency(publisher, watchers, watcher["id"]))
            await asyncio.sleep(0.2)
        baseline = statistics.median(quiet)

        tokens_file = tmp_path / "tokens.json"
        tokens_file.write_text(json.dumps([users[n % USERS]["token"] for n in range(STREAMS)]))
        helper = subprocess.Popen([sys.executable, "-m", "tests.support.storm_client", str(server.port), str(tokens_file)],
                                  cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ))
        loop = asyncio.get_running_loop()

        async def command(line: str) -> dict:
            helper.stdin.write((line + "\n").encode())
            helper.stdin.flush()
            return json.loads(await loop.run_in_executor(None, helper.stdout.readline))

        first = await command("connect")
        assert first["connected"] == STREAMS
        ids = []
        for _ in range(3):
            await broadcast(api, ids)

        # the storm: every stream drops and comes back at once, while events keep flowing
        pids = (server.proc.pid, helper.pid, os.getpid())
        ticks_before, started = cpu_ticks(*pids), time.monotonic()
        storm = asyncio.ensure_future(command("drop"))
        during = []
        while not storm.done():
            await broadcast(api, ids)
            during.append(await latency(publisher, watchers, watcher["id"]))
            await asyncio.sleep(0.2)
        again = storm.result()
        ticks_after = cpu_ticks(*pids)
        # the CPU other processes took from this 2-core-sized test while the storm ran, in cores
        others = ((ticks_after[0] - ticks_before[0]) - (ticks_after[1] - ticks_before[1])) \
            / os.sysconf("SC_CLK_TCK") / (time.monotonic() - started)
        publisher.close()
        for _ in range(2):
            await broadcast(api, ids)
        report = await command("report " + json.dumps(ids))

        assert again["connected"] == STREAMS
        assert again["refused"] > 0  # the handshake rate did shape the storm
        # documented: N / rate seconds (or, on a machine too busy for the rate, as long as the
        # first N opens took in this run) plus Retry-After (at most 5 s) and the jitter (at most 8 s)
        assert again["seconds"] < max(STREAMS / RATE, first["seconds"]) + 5 + 8 + 5, (first, again)
        assert report == {"duplicates": 0, "missing": 0, "out_of_order": 0, "streams": STREAMS}
        assert len(during) >= 3
        assert statistics.median(during) < max(5 * baseline, 0.25), (baseline, during)
        # issue 26: no stall for the established clients. On a quiet machine (other processes
        # took less than a quarter of a core during the storm) the worst probe is under 100 ms.
        # On a busy one (CI runs its PostgreSQL pass beside this one) the scheduler's own delays
        # reach hundreds of ms whatever the server does, so the bound is relative: nine probes
        # in ten under 100 ms or twice the worst of the quiet probes (docs/operations.md,
        # "Reconnect storms: what was measured").
        ranked = sorted(during)
        p90 = ranked[int(0.9 * len(ranked))]
        print(f"storm: established client latency, quiet worst {max(quiet) * 1000:.1f} ms "
              f"(median {baseline * 1000:.1f}), storm p90 {p90 * 1000:.1f} ms, worst {ranked[-1] * 1000:.1f} ms "
              f"of {len(during)} probes; other processes used {others:.2f} cores")
        if others < QUIET_OTHERS:
            assert ranked[-1] < WORST_MS / 1000, (others, sorted(quiet), ranked)
        else:
            assert p90 < max(WORST_MS / 1000, 2 * max(quiet)), (others, sorted(quiet), ranked)
    finally:
        if helper is not None and helper.poll() is None:
            helper.kill()
        server.kill()
