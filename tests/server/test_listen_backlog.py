"""The accept backlog: 4096 by default (the kernel caps it at net.core.somaxconn), set by
``--listen-backlog``, at least 1. A queue of Tornado's 128 overflowed in a reconnect storm and
the kernel reset clients whose SYN cookie it could no longer check."""
import os
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, start_server
from tests.support.scaleout import redis_broker_url


def backlog_of(port: int) -> int:
    """The backlog of the socket listening on ``port``: ``Send-Q`` in ``ss -ltn``."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    backlogs = {int(line.split()[2]) for line in out.splitlines() if line.strip()}
    assert len(backlogs) == 1, out
    return backlogs.pop()


def somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


@pytest.mark.parametrize("flag, expected", [(None, 4096), ("300", 300), ("1", 1)])
def test_the_listening_socket_gets_the_backlog(tmp_path, flag, expected):
    args = ["--database-url", f"sqlite:///{tmp_path}/b.db"] + (["--listen-backlog", flag] if flag else [])
    server = start_server(tmp_path, *args)
    try:
        assert backlog_of(server.port) == min(expected, somaxconn())
    finally:
        server.kill()


def test_workers_listen_with_the_backlog(tmp_path):
    server = start_server(tmp_path, "--database-url", f"sqlite:///{tmp_path}/w.db", "--processes", "2",
                          "--broker-url", redis_broker_url(), "--listen-backlog", "257")
    try:
        assert backlog_of(server.port) == min(257, somaxconn())
    finally:
        server.kill()


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_backlog_under_1_is_refused_at_start(tmp_path, value):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--port", "0", "--listen-backlog", value,
                           "--database-url", f"sqlite:///{tmp_path}/r.db"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    assert "--listen-backlog must be at least 1" in proc.stderr
