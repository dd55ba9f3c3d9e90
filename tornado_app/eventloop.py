"""The event loop a serving process runs on: uvloop (the default, when installed) or asyncio.

Tornado runs on any asyncio loop; uvloop's is written in C on libuv and makes every socket
operation, callback and timer cheaper (handshakes and fan-out both gain; see
docs/performance.md, which measures the two loops side by side).
"""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, Callable, Coroutine, Optional, TypeVar

T = TypeVar("T")

log = logging.getLogger("squall.loop")


def loop_factory(name: str) -> Optional[Callable[[], asyncio.AbstractEventLoop]]:
    """A new-loop factory for ``name`` (``uvloop`` or ``asyncio``); None means asyncio's default.

    ``uvloop`` falls back to asyncio with a warning when the package is not installed.
    """
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on the asyncio event loop (pip install uvloop)")
            return None
        return uvloop.new_event_loop
    if name != "asyncio":
        raise ValueError(f"unknown event loop {name!r} (asyncio or uvloop)")
    return None


def run(main: Coroutine[Any, Any, T], name: str, switch_interval_ms: Optional[float] = None) -> T:
    """Run the coroutine ``main`` to completion on a new loop of kind ``name``; returns its result.

    ``switch_interval_ms``: Python's switch interval for the process (``--switch-interval-ms``).
    The database threads release the GIL while PostgreSQL or SQLite works and need it back for
    every answer; with the loop busy, each waits up to the interval (5 ms by default) for the
    loop to yield it, a wait per statement of a write transaction that its commit then waits
    for. A shorter interval lets each answer in sooner for a few more thread switches.
    """
    if switch_interval_ms is not None:
        sys.setswitchinterval(switch_interval_ms / 1000.0)
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop running now (for the start-up log line and /stats)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
