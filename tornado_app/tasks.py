"""Background work: ``spawn()`` keeps its tasks and logs how they fail; ``Batcher`` groups calls.

``asyncio`` keeps only a weak reference to a task: a fire-and-forget ``ensure_future`` can be
collected before it finishes, and an exception it ends with is reported (if ever) when it is
collected. ``spawn`` holds every task in a set until it is done and logs an exception at once
(the type and the frames; the log formatter withholds the message, which may quote content).

``Batcher`` is the group commit the services share (chat messages, publishes, the state of new
streams, user lookups): the calls that arrive while one flush runs are flushed together by
the next, in one call (one statement, one transaction).
"""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Awaitable, Callable, Generic, List, Optional, Sequence, Set, Tuple, TypeVar

log = logging.getLogger("squall.tasks")

T = TypeVar("T")
R = TypeVar("R")

_running: Set["asyncio.Task"] = set()  # every task spawn() started that is not done yet


def spawn(coro: Awaitable, *, name: str,
          done: Optional[Callable[["asyncio.Task"], None]] = None) -> "asyncio.Task":
    """Run ``coro`` in a task kept until it is done; returns the task.

    An exception it ends with is logged (logger ``squall.tasks``, fields ``task`` and
    ``error``), even if someone also awaits the task; a cancellation is not. ``name`` says what
    the task does (``"chat.writer"``), never whom it serves or what it carries. ``done``, when
    given, is called with the finished task instead, and handles its outcome itself (a task per
    WebSocket uses it: no wrapping coroutine, so no second frame per connection).
    """
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    _running.add(task)
    task.add_done_callback(_finished if done is None else functools.partial(_finished_then, done))
    return task


def _finished_then(done: Callable[["asyncio.Task"], None], task: "asyncio.Task") -> None:
    _running.discard(task)
    try:
        done(task)
    except Exception as exc:
        log.error("background task %s failed (%s)", task.get_name(), type(exc).__name__, exc_info=exc,
                  extra={"task": task.get_name(), "error": type(exc).__name__})


def _finished(task: "asyncio.Task") -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed (%s)", task.get_name(), type(exc).__name__, exc_info=exc,
                  extra={"task": task.get_name(), "error": type(exc).__name__})


def running_tasks() -> frozenset:
    """The tasks spawned and not done yet (for tests and shutdown checks)."""
    return frozenset(_running)


class Batcher(Generic[T, R]):
    """``await submit(item)`` → its result, with every item of the moment flushed in one call.

    ``flush(items)`` handles a whole batch and returns one entry per item, in order: the
    item's result, or an Exception instance that fails that item alone. If ``flush`` raises,
    every item of that batch fails with the exception. Batches run one at a time, in arrival
    order; the first starts one loop turn after the first ``submit``, so the submits of one
    turn share it, and everything submitted during a flush goes into the next.
    ``max_batch`` (0: no limit) caps the items per flush; with ``weight``, it caps the sum of
    ``weight(item)`` instead (a batch always takes at least one item). ``after(items, results)``, when
    given, runs once the batch's waiters have their results, before the next flush starts
    (a failure there is logged; the waiters are answered already).

    Concurrency: call from the event loop only. A waiter that is cancelled does not cancel its
    item (it may be stored all the same).
    """

    def __init__(self, flush: Callable[[List[T]], Awaitable[Sequence]], *, name: str, max_batch: int = 0,
                 after: Optional[Callable[[List[T], Sequence], Awaitable[None]]] = None,
                 weight: Optional[Callable[[T], int]] = None):
        self.flush = flush
        self.name = name
        self.max_batch = max_batch
        self.weight = weight
        self.after = after
        self._queue: List[Tuple[T, "asyncio.Future"]] = []
        self._running = False  # a flush loop is scheduled or running
        self._idle: Optional["asyncio.Future"] = None  # resolves when the running loop ends
        self.flushes = 0  # flush calls that returned (tests check that concurrent submits share them)

    def __len__(self) -> int:
        """Items waiting for a flush (not counting the one running)."""
        return len(self._queue)

    async def submit(self, item: T) -> R:
        """Queue ``item``; its result once its batch is flushed. Raises what the flush gave it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future))
        if not self._running:
            self._running = True
            self._idle = loop.create_future()
            # Not started here: the submits of this loop turn join the first batch.
            loop.call_soon(self._start)
        return await future

    async def drain(self) -> None:
        """Wait until every item queued so far is flushed."""
        while self._running and self._idle is not None:
            await asyncio.shield(self._idle)

    def _start(self) -> None:
        spawn(self._run(), name=self.name)

    def _take(self) -> List[Tuple[T, "asyncio.Future"]]:
        cut = len(self._queue)
        if self.max_batch and self.weight is not None:
            total = 0
            for i, (item, _) in enumerate(self._queue):
                total += self.weight(item)
                if total > self.max_batch and i > 0:
                    cut = i
                    break
        elif self.max_batch:
            cut = min(cut, self.max_batch)
        batch, self._queue = self._queue[:cut], self._queue[cut:]
        return batch

    async def _run(self) -> None:
        batch: List[Tuple[T, "asyncio.Future"]] = []
        try:
            while self._queue:
                batch = self._take()
                items = [item for item, _ in batch]
                try:
                    results = await self.flush(items)
                    if len(results) != len(items):
                        raise RuntimeError(f"{self.name}: flush returned {len(results)} results for "
                                           f"{len(items)} items")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.flushes += 1
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                if self.after is not None:
                    try:
                        await self.after(items, results)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("%s: after a flush", self.name)
                batch = []
        except asyncio.CancelledError:
            for _, future in batch + self._queue:
                future.cancel()
            self._queue = []
            raise
        finally:
            self._running = False
            if self._idle is not None and not self._idle.done():
                self._idle.set_result(None)


# Items a sweep over every connection handles per turn of the event loop (``sliced``).
SWEEP_SLICE = 500


async def sliced(items: Sequence[T], fn: Callable[[T], R], per_turn: int = SWEEP_SLICE) -> List[R]:
    """``[fn(item) for item in items]``, giving the event loop a turn after every ``per_turn``.

    For the periodic sweeps over every connection (pings, SSE heartbeats, pong checks): at
    50,000 connections one pass in a single turn holds every other connection's events for
    a second or more; in slices, events are served between them (issue 26).
    """
    out: List[R] = []
    for start in range(0, len(items), per_turn):
        if start:
            await asyncio.sleep(0)
        out.extend(fn(item) for item in items[start:start + per_turn])
    return out
