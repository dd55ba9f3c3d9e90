"""A throw-away PostgreSQL cluster on its own port (initdb + pg_ctl), for tests that stop the
database server; the shared server on 5432 is never touched."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional

from tests.support.procs import free_port


def pg_bin(name: str) -> Optional[str]:
    """The newest installed PostgreSQL server binary ``name``, or None."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else None


class TempCluster:
    """``initdb`` a cluster in a temporary directory; ``start()``, ``stop()``, ``destroy()``."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="squall-pg-")
        self.data = os.path.join(self.dir, "data")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as postgres
            shutil.chown(self.dir, "postgres")
        self._run([pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"])

    def _run(self, args: List[str]) -> None:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([pg_bin("pg_ctl"), "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "log"),
                   "-w", "start"])

    def stop(self) -> None:
        """Stop the server at once (``-m fast``: connections are cut)."""
        self._run([pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        """Stop (if running) and delete the cluster."""
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
