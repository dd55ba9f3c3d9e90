"""``python run.py --processes N``: refused with the memory broker; with Redis, N workers share
the port, deliver across each other, and a worker that dies is replaced."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.support.clients import ApiClient, WSClient
from tests.support.procs import ROOT, server_env
from tests.support.scaleout import (SERVICE_TOKEN, ThrowawayPostgres, open_private_chat, redis_broker_url,
                                    register, send_http)
from tests.support.commands import worker_pids

# Odd, so the two workers never hold equal counts; all on one worker by chance: 2 ** -14
SOCKETS = 15


def test_memory_broker_with_several_processes_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "run.py", "--processes", "2", "--database-url",
                           f"sqlite:///{tmp_path}/x.db"], cwd=ROOT, env=server_env(BROKER_URL="memory"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--processes 2 needs a shared broker" in done.stderr
    assert "redis://" in done.stderr


@pytest.fixture
def shared_db():
    """A throw-away PostgreSQL database for the test."""
    db = ThrowawayPostgres()
    yield db
    db.drop()


async def chat_counts(url: str, samples: int = 40) -> set:
    """The distinct per-worker counts of chat connections seen by ``samples`` fresh requests."""
    seen = set()
    for _ in range(samples):
        status, stats = await ApiClient(url).call("GET", "/api/stats", token=SERVICE_TOKEN,
                                                  headers={"Connection": "close"})
        assert status == 200
        seen.add(stats["connections"]["chat"])
    return seen


async def open_spread(server, token: str) -> list:
    """Chat sockets of one user until both workers hold some (checked through /api/stats)."""
    sockets = []
    for _ in range(SOCKETS):
        ws = await WSClient.connect(server.ws_url, "/ws/chat", token)
        await ws.request({"type": "ping"}, "pong")
        sockets.append(ws)
    counts = await chat_counts(server.url)
    # Two workers, each with some of the sockets: two counts that add up to all of them.
    if not (len(counts) == 2 and sum(counts) == SOCKETS and 0 not in counts):
        await close_all(server, sockets)
        raise AssertionError(f"sockets not spread over two workers: {counts}")
    return sockets


async def close_all(server, sockets) -> None:
    """Close ``sockets`` and wait until no worker counts a chat connection any more."""
    for ws in sockets:
        ws.close()
    deadline = asyncio.get_running_loop().time() + 30
    while await chat_counts(server.url, samples=10) != {0}:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)


async def deliver_to_all(api, alice, chat_id, sockets, content):
    """Send from some worker; every socket (on both workers) gets that message exactly once."""
    sent = await send_http(api, alice, chat_id, content)
    for ws in sockets:
        assert (await ws.recv_type("message"))["message"]["id"] == sent["id"]
    return sent


@pytest.mark.gen_test(timeout=180)
async def test_two_workers_share_the_port_and_deliver_across(shared_db, server_factory):
    server = server_factory("--processes", "2", "--database-url", shared_db.url,
                            "--broker-url", redis_broker_url(), LOG_LEVEL="info")
    api = ApiClient(server.url)
    alice, bob = await register(api, "alice"), await register(api, "bob")
    chat_id = await open_private_chat(api, alice, bob)
    sockets = await open_spread(server, bob["token"])
    # Messages come in through whichever worker accepts the request; each reaches all sockets
    # once (the second one is the sentinel for the first).
    for i in range(3):
        await deliver_to_all(api, alice, chat_id, sockets, f"message {i}")

    # A worker killed outright is replaced; its clients reconnect and both workers serve again.
    before = worker_pids(server.log())
    assert sorted(before) == [0, 1]
    os.kill(before[0], signal.SIGKILL)
    deadline = asyncio.get_running_loop().time() + 60
    while worker_pids(server.log()).get(0) == before[0]:
        assert asyncio.get_running_loop().time() < deadline, server.log()
        await asyncio.sleep(0.1)
    assert re.search(rf"worker 0 \(pid {before[0]}\) exited", server.log())
    await close_all(server, sockets)
    deadline = asyncio.get_running_loop().time() + 60
    while True:  # until the new worker accepts connections too
        try:
            sockets = await open_spread(server, bob["token"])
            break
        except AssertionError:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.5)
    for i in range(2):
        await deliver_to_all(api, alice, chat_id, sockets, f"after restart {i}")
    await close_all(server, sockets)

    # SIGTERM to the supervisor stops every worker gracefully, exit code 0.
    assert server.stop(signal.SIGTERM) == 0
    for pid in worker_pids(server.log()).values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
