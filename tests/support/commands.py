"""``python run.py`` commands and what their logs say."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.support.procs import ROOT, server_env


def run_admin(database_url: str, *args: str) -> subprocess.CompletedProcess:
    """``python run.py admin ARGS --database-url URL``."""
    return subprocess.run([sys.executable, "run.py", "admin", *args, "--database-url", database_url],
                          cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=120)


def worker_pids(log: str) -> dict:
    """slot -> pid of the newest worker started in each slot, from the supervisor's log."""
    pids = {}
    for slot, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log):
        pids[int(slot)] = int(pid)
    return pids
