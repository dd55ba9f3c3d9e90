"""Starting and stopping the servers under test, pinned to their core."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE_TOKEN = "bench-service-token"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinning() -> dict:
    """``{"server": [...], "loadgen": [...]}`` taskset prefixes: core 0 for the server, core 1 for load."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return {"server": ["taskset", "-c", "0"], "loadgen": ["taskset", "-c", "1"], "pinned": True}
    return {"server": [], "loadgen": [], "pinned": False}


class Server:
    """One server child process (Squall or the baseline) on a free port of 127.0.0.1."""

    def __init__(self, name: str, argv: List[str], log_path: str, env: Optional[dict] = None, cwd: str = ROOT):
        self.name = name
        self.cwd = cwd
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log_path = log_path
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        # True for a server that sends nothing on open (``baseline.py --plain``): the load generator
        # counts its stream as open when the 101 / the SSE response head arrives, not the first frame.
        self.opens_on_head = False

    @property
    def pid(self) -> int:
        """The server's process id (taskset execs it, so the pid is the server's own)."""
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> "Server":
        """Start and wait until ``/healthz`` answers."""
        return self.launch().wait_healthy(timeout)

    def launch(self) -> "Server":
        """Start the process without waiting (``wait_healthy`` waits): several start side by side."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait_healthy(self, timeout: float = 60.0) -> "Server":
        """Wait until ``/healthz`` answers; RuntimeError with the end of its log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy in {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL the process group if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def restart(self) -> "Server":
        """Stop and start again on the same port (a SQLite database and tokens carry over)."""
        self.stop()
        return self.start()

    def log(self) -> str:
        """The end of what the server printed."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""


def squall(name: str, database_url: str, workdir: str, pin: dict, event_loop: str = "uvloop",
           root: str = ROOT, extra_args: Optional[List[str]] = None) -> Server:
    """Squall, one process, memory broker, fast password hashing, rate limits out of the way.

    ``root``: the source tree whose ``run.py`` serves (another commit's checkout for
    ``python -m bench compare``); the same interpreter and options either way. ``extra_args``
    are added to the command line (the webhook scenario's ``--webhook-url``).
    """
    argv = [*pin["server"], sys.executable, os.path.join(root, "run.py"), "--port", "{port}",
            "--event-loop", event_loop,
            "--host", "127.0.0.1", "--database-url", database_url, "--service-token", SERVICE_TOKEN,
            "--jwt-secret", "bench-jwt-secret-0123456789abcdef0123456789", "--password-hash-profile", "fast",
            "--log-level", "warning", "--rate-limit-per-second", "100000", "--rate-limit-burst", "100000",
            "--messages-per-user-per-day", "0",  # scenarios store far more than a day's quota per sender
            "--registrations-per-address-per-minute", "1000000", "--hash-per-address", "64", "--hash-queue", "1024",
            "--token-ttl", "86400",  # tokens registered at the start must outlast every scenario
            # load generators open thousands of streams at once: no handshake pacing (0 = off)
            "--max-handshakes-per-second", "0",
            # ... all of them from 127.0.0.1: no per-address connection limit (0 = off)
            "--max-connections-per-address", "0", *(extra_args or [])]
    # PYTHONPATH dropped: the tree at ``root`` imports its own modules, never this one's.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "PORT", "PYTHONPATH")}
    return Server(name, argv, os.path.join(workdir, f"{name}.log"), env, cwd=root)


def baseline(workdir: str, pin: dict, by_user: bool = False, plain: bool = False) -> Server:
    """The bare-Tornado baseline (``bench/baseline.py``); ``by_user`` for targeted publishes.

    ``plain``: ``--plain``, handlers that verify nothing and send nothing, named ``baseline-plain``
    (the reference for connects/s: a stream is open when its 101 or its SSE headers arrive).
    """
    argv = [*pin["server"], sys.executable, "-m", "bench.baseline", "--port", "{port}"] + (
        ["--by-user"] if by_user else []) + (["--plain"] if plain else [])
    name = "baseline-plain" if plain else "baseline"
    log = "baseline-plain.log" if plain else "baseline-by-user.log" if by_user else "baseline.log"
    server = Server(name, argv, os.path.join(workdir, log))
    server.opens_on_head = plain
    return server


def reset_postgres(url: str) -> None:
    """Drop and create the database named in ``url`` (a bench database of its own)."""
    import psycopg2
    base, _, name = url.rpartition("/")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"the PostgreSQL bench URL needs a plain database name: {url}")
    conn = psycopg2.connect(base + "/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
