"""``--processes N``: a supervisor that forks N serving workers on one port and restarts the dead.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads new
connections across the workers by their address hash (a single shared socket tends to
hand most connections to one busy-polling worker). The supervisor keeps a bound, never
listening socket on the port, so no unrelated program can take it while a worker restarts.

Workers share nothing in memory: events and presence cross between them through the
broker, which therefore must be Redis or PostgreSQL. Migrations run once, in the
supervisor, before the first fork.

Signals: SIGTERM/SIGINT to the supervisor → SIGTERM to every worker (each stops
gracefully), then exit 0. A worker that exits on its own is restarted, with a growing
delay (up to RESTART_MAX seconds) while workers keep dying right after starting.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import time
from typing import Callable, Dict

from .services.operations.metrics import forget_worker

log = logging.getLogger("squall.workers")

RESTART_MIN = 0.5
RESTART_MAX = 10.0
STOP_TIMEOUT = 30.0


class MemoryBrokerError(SystemExit):
    """Several processes were asked for with the one-process memory broker."""


def check_broker(config) -> None:
    """Raise MemoryBrokerError unless the broker can carry events between processes."""
    if config.broker_url in ("memory", "memory://", ""):
        raise MemoryBrokerError(
            f"--processes {config.processes} needs a shared broker: the memory broker cannot carry "
            "events between processes. Use --broker-url redis://host:6379/0 or "
            "--broker-url postgresql://… (and a PostgreSQL --database-url for the data).")


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) host:port with SO_REUSEPORT so only our workers can share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def migrate_once(config) -> None:
    """Create or migrate the schema before forking (workers then find it current)."""
    from models import init_db
    from models.schema import migrate
    db = init_db(config.database_url)
    try:
        version = migrate(db)
    finally:
        if hasattr(db, "close_all"):
            db.close_all()
        else:
            db.close()
    log.info("schema is at version %d", version)


def run_worker(config, serve: Callable, reserved: socket.socket) -> int:
    """In a forked child: bind our own SO_REUSEPORT socket and serve until SIGTERM."""
    from tornado_app.application import bind_socket
    reserved.close()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    try:
        sockets = bind_socket(config.host, config.port, reuse_port=True, backlog=config.listen_backlog)
        from tornado_app.eventloop import run
        run(serve(config, sockets), config.event_loop, config.switch_interval_ms)
        return 0
    except Exception:
        log.exception("worker %d failed", os.getpid())
        return 1


class Supervisor:
    """Forks the workers, restarts the ones that die, forwards SIGTERM/SIGINT."""

    def __init__(self, config, serve: Callable, reserved: socket.socket):
        self.config = config
        self.serve = serve
        self.reserved = reserved  # holds the port between worker restarts (reserve_port)
        self.workers: Dict[int, int] = {}  # pid -> worker slot (0..N-1)
        self.started_at: Dict[int, float] = {}  # slot -> when its current process started
        self.delay: Dict[int, float] = {}  # slot -> restart delay while it keeps crashing
        self.stopping = False

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def spawn(self, slot: int) -> None:
        """Fork the worker of ``slot``."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_worker(self.config.replace(worker=slot), self.serve, self.reserved)
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = slot
        self.started_at[slot] = time.monotonic()
        log.info("worker %d started (pid %d)", slot, pid)

    def run(self) -> int:
        """Supervise until told to stop; returns the process exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("starting %d workers on http://%s:%d", self.config.processes, self.config.host, self.config.port)
        for slot in range(self.config.processes):
            self.spawn(slot)
        pending: Dict[int, float] = {}  # slot -> monotonic time at which to restart it
        while not self.stopping:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for slot, when in list(pending.items()):
                    if now >= when and not self.stopping:
                        del pending[slot]
                        self.spawn(slot)
                time.sleep(0.1)
                continue
            ended = self.workers.pop(pid, None)
            if ended is None:
                continue
            slot = ended
            forget_worker(self.config.metrics_dir, slot)  # its connections are gone
            code = os.waitstatus_to_exitcode(status)
            # A worker that lived a while restarts at once; a crash loop backs off.
            lived = time.monotonic() - self.started_at.get(slot, 0)
            delay = RESTART_MIN if lived > RESTART_MAX else min(self.delay.get(slot, RESTART_MIN) * 2, RESTART_MAX)
            self.delay[slot] = delay
            log.warning("worker %d (pid %d) exited with %s; restarting in %.1f s", slot, pid, code, delay)
            pending[slot] = time.monotonic() + delay
        return self.stop_all()

    def stop_all(self) -> int:
        """SIGTERM every worker and wait for them (SIGKILL after STOP_TIMEOUT)."""
        log.info("stopping %d workers", len(self.workers))
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.workers and time.monotonic() < deadline:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid:
                self.workers.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in list(self.workers):
            log.warning("worker pid %d did not stop in %.0f s; killing it", pid, STOP_TIMEOUT)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.reserved.close()
        log.info("all workers stopped")
        return 0


def run_workers(config, serve: Callable) -> int:
    """Entry point of ``python run.py --processes N``; returns the exit code (2: bad configuration)."""
    try:
        check_broker(config)
    except MemoryBrokerError as exc:
        log.error("%s", exc.code)
        return 2
    migrate_once(config)
    if not config.metrics_dir:
        # Workers share their metrics here; any worker answers /metrics for all of them.
        config = config.replace(metrics_dir=tempfile.mkdtemp(prefix="squall-metrics-"))
    try:
        reserved = reserve_port(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 1
    return Supervisor(config, serve, reserved).run()
