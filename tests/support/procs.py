"""Real Squall server processes for tests: ``python run.py`` on a free port, waited for, stopped."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End a child: SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``python run.py`` child; ``url``, ``port``, ``stop()``, ``kill()``, ``log()``."""

    def __init__(self, args: list, env: dict, port: int, log_path: str, nofile: Optional[int] = None,
                 cwd: str = ROOT):
        self.args, self.env, self.port, self.log_path, self.cwd = args, env, port, log_path, cwd
        self.nofile = nofile  # descriptor limit (soft and hard) of the child, when given
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        """Start and wait until ``/healthz`` answers 200."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py"), *self.args],
                                     cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=self._limit_descriptors)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become healthy in {timeout}s:\n{self.log()}")

    def _limit_descriptors(self) -> None:
        if self.nofile is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group (workers included)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def log(self) -> str:
        """What the server printed so far."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-20000:]
        except OSError:
            return ""


def server_env(**extra) -> dict:
    """The environment for a child server: this one, plus test-friendly defaults and ``extra``."""
    env = dict(os.environ)
    env.setdefault("JWT_SECRET", "test-jwt-secret-" + "x" * 32)
    env.setdefault("SERVICE_TOKEN", "test-service-token")
    env.setdefault("PASSWORD_HASH_PROFILE", "fast")
    env.setdefault("LOG_LEVEL", "warning")
    env.setdefault("REGISTRATIONS_PER_ADDRESS_PER_MINUTE", "100000")  # tests register from one address
    env.setdefault("HASH_PER_ADDRESS", "64")
    env.setdefault("LOGINS_PER_ADDRESS_PER_MINUTE", "100000")
    env.setdefault("REFRESHES_PER_ADDRESS_PER_MINUTE", "100000")
    env.setdefault("REFRESHES_PER_SESSION_PER_MINUTE", "100000")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_server(tmp_path, *args: str, port: Optional[int] = None, nofile: Optional[int] = None,
                 cwd: str = ROOT, **env) -> ServerProcess:
    """Start ``run.py --port <free> *args`` with ``env`` added; logs go to ``tmp_path``.

    ``nofile`` sets the child's descriptor limit (soft and hard: the server cannot raise it);
    ``cwd`` is the folder it starts in (the project's by default).
    """
    port = port or free_port()
    log_path = os.path.join(str(tmp_path), f"server-{port}.log")
    return ServerProcess(["--port", str(port), *args], server_env(**env), port, log_path, nofile, cwd).start()
