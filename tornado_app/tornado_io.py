"""Every use of a private Tornado name, in one module, checked against the running Tornado.

Squall saves memory per connection and answers errors its own way by reaching into Tornado:

- ``LeanIOStream``: an ``IOStream`` whose two write queues (``_write_buffer._buffers`` and
  ``_write_futures``, 1.5 KB) exist only while something is queued; its ``_handle_write``
  override puts them back to nothing once all is sent.
- ``DetachedLoopProtocol``: a ``WebSocketProtocol13`` whose ``_receive_frame_loop`` runs in a
  task of its own, so the upgrade request's coroutines end once the socket is open
  (about 1.5 KB per idle WebSocket); it ``_abort``s the connection as Tornado would.
- ``break_handler_cycles`` (``RequestHandler._break_cycles``), ``drop_response_headers``
  (``RequestHandler._headers``) and ``status_reason`` (``RequestHandler._reason``).

A renamed private method upstream would silently stop being called (and memory would
regress), so at import this module checks that the running Tornado is one of
``TESTED_VERSIONS`` and that every private name in ``REQUIRED`` is still where it was, and
raises RuntimeError otherwise. tests/unit/test_tornado_io.py checks over real sockets that each
patch is still called. docs/operations.md ("Upgrading Tornado") says what to do on an upgrade.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable, Dict, Tuple

import tornado
import tornado.httputil
import tornado.iostream
import tornado.web
import tornado.websocket

from .tasks import spawn

log = logging.getLogger("squall.ws")

# The Tornado releases these patches were written and tested for (requirements.txt pins one).
TESTED_VERSIONS: Tuple[Tuple[int, int, int], ...] = ((6, 6, 1),)


def _has(owner, name: str) -> Callable[[], bool]:
    return lambda: hasattr(owner, name)


def _uses(owner, method: str, name: str) -> Callable[[], bool]:
    """True while ``owner.method``'s code reads, writes or calls ``name`` (an instance attribute
    cannot be found with ``hasattr`` on the class: where Tornado sets or calls it can)."""
    def check() -> bool:
        code = getattr(getattr(owner, method, None), "__code__", None)
        return code is not None and name in code.co_names
    return check


_IOS = tornado.iostream.BaseIOStream
_BUF = getattr(tornado.iostream, "_StreamBuffer", None)  # None: refused by check_tornado
_WS = tornado.websocket.WebSocketProtocol13
_RH = tornado.web.RequestHandler

# private name -> [(what is relied on, check)]: every private name this module uses, and how.
REQUIRED: Dict[str, list] = {
    "_write_buffer": [("BaseIOStream.__init__ sets _write_buffer", _uses(_IOS, "__init__", "_write_buffer")),
                      ("BaseIOStream.writing reads _write_buffer", _uses(_IOS, "writing", "_write_buffer"))],
    "_write_futures": [("BaseIOStream.__init__ sets _write_futures", _uses(_IOS, "__init__", "_write_futures")),
                       ("BaseIOStream.write queues on _write_futures", _uses(_IOS, "write", "_write_futures"))],
    "_StreamBuffer": [("tornado.iostream._StreamBuffer exists", _has(tornado.iostream, "_StreamBuffer"))],
    "_buffers": [("_StreamBuffer.__init__ sets _buffers", _uses(_BUF, "__init__", "_buffers")),
                 ("_StreamBuffer.append queues on _buffers", _uses(_BUF, "append", "_buffers"))],
    "_handle_write": [("BaseIOStream._handle_write exists", _has(_IOS, "_handle_write")),
                      ("BaseIOStream.write calls _handle_write", _uses(_IOS, "write", "_handle_write")),
                      ("BaseIOStream._handle_events calls _handle_write",
                       _uses(_IOS, "_handle_events", "_handle_write"))],
    "_receive_frame_loop": [("WebSocketProtocol13._receive_frame_loop exists", _has(_WS, "_receive_frame_loop")),
                            ("WebSocketProtocol13._accept_connection awaits _receive_frame_loop",
                             _uses(_WS, "_accept_connection", "_receive_frame_loop"))],
    "_abort": [("WebSocketProtocol._abort exists", _has(_WS, "_abort"))],
    "_break_cycles": [("RequestHandler._break_cycles exists", _has(_RH, "_break_cycles")),
                      ("RequestHandler._break_cycles drops ui", _uses(_RH, "_break_cycles", "ui"))],
    "_headers": [("RequestHandler.clear sets _headers", _uses(_RH, "clear", "_headers")),
                 ("RequestHandler.set_header writes _headers", _uses(_RH, "set_header", "_headers"))],
    "_reason": [("RequestHandler.set_status sets _reason", _uses(_RH, "set_status", "_reason"))],
}
PRIVATE_NAMES = frozenset(REQUIRED)

# Calls of each patched private method so far (tests check that Tornado still calls them).
PATCH_CALLS: Dict[str, int] = {"_handle_write": 0, "_receive_frame_loop": 0}


def check_tornado() -> None:
    """Raise RuntimeError unless the running Tornado is a tested version with every private name in place."""
    running = tuple(tornado.version_info[:3])
    if running not in TESTED_VERSIONS:
        tested = ", ".join(".".join(map(str, v)) for v in TESTED_VERSIONS)
        raise RuntimeError(
            f"Squall's Tornado patches (tornado_app/tornado_io.py) were written for Tornado {tested}; this is "
            f"Tornado {'.'.join(map(str, running))}. Install the version requirements.txt pins, or follow "
            "'Upgrading Tornado' in docs/operations.md.")
    missing = []
    for name, checks in REQUIRED.items():
        for what, check in checks:
            try:
                ok = check()
            except Exception:
                ok = False
            if not ok:
                missing.append(what)
    if missing:
        raise RuntimeError(
            f"Tornado {tornado.version} lacks private names Squall's patches rely on (tornado_app/tornado_io.py): "
            + "; ".join(missing) + ". See 'Upgrading Tornado' in docs/operations.md.")


check_tornado()


# Write queues that exist only while something is queued ----------------------------------

class _NoWrites:
    """Stands in for an ``IOStream``'s two write queues while nothing is queued on it.

    Each queue is a ``deque`` of 760 bytes; an idle stream (most of them) has nothing queued,
    and the fan-out path (handlers/fastwrite.py) sends on the socket without queueing at all.
    Read-only: reads see an empty queue, and ``append`` fails loudly (there is none).
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self):
        return iter(())

    def clear(self) -> None:
        """Nothing to clear (``IOStream.close`` clears its queues)."""


NO_WRITES = _NoWrites()


class LeanIOStream(tornado.iostream.IOStream):
    """An ``IOStream`` whose write queues exist only while something is queued (``NO_WRITES``
    otherwise): 1.5 KB less per idle connection."""

    def __init__(self, sock, **kwargs):
        super().__init__(sock, **kwargs)
        self._write_futures = NO_WRITES
        self._write_buffer._buffers = NO_WRITES

    def write(self, data):
        if self._write_futures is NO_WRITES and self._write_buffer is not None:
            self._write_futures = deque()
            self._write_buffer._buffers = deque()
        return super().write(data)

    def _handle_write(self) -> None:
        PATCH_CALLS["_handle_write"] += 1
        super()._handle_write()
        buffer = self._write_buffer
        if buffer is not None and not buffer and not self._write_futures:
            # All sent: back to no queues. Tornado types its private queues as deques; the stand-in
            # reads as an empty one (_NoWrites), which the type checker cannot know.
            self._write_futures = NO_WRITES  # type: ignore[assignment]
            buffer._buffers = NO_WRITES  # type: ignore[assignment]


def write_queues_released(stream: tornado.iostream.IOStream) -> bool:
    """True when ``stream`` holds no write queues (a ``LeanIOStream`` with nothing queued)."""
    buffer = stream._write_buffer
    return stream._write_futures is NO_WRITES and (buffer is None or buffer._buffers is NO_WRITES)


# WebSocket frames read in a task of their own ----------------------------------------------

class DetachedLoopProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's WebSocket protocol, with its frame-reading loop in a task of its own.

    Tornado awaits that loop at the bottom of the upgrade request (``RequestHandler._execute``
    -> ``get`` -> ``accept_connection`` -> ``_accept_connection``), which keeps those coroutine
    frames, their task and its callbacks alive for the life of every WebSocket: about 1.5 KB
    per idle connection. Here the upgrade request ends once the connection is open; only the
    loop stays, and what ended it is handled as ``accept_connection`` would have.
    """

    async def _receive_frame_loop(self) -> None:
        PATCH_CALLS["_receive_frame_loop"] += 1
        spawn(super()._receive_frame_loop(), name="ws.frames", done=self._loop_ended)

    def _loop_ended(self, loop: "asyncio.Task") -> None:
        if loop.cancelled():  # shutdown
            self._abort()
            return
        exc = loop.exception()
        if exc is None:
            return
        if isinstance(exc, ValueError):  # as accept_connection: a malformed frame
            log.debug("malformed WebSocket frame received", exc_info=exc)
        else:
            self.handler.log_exception(type(exc), exc, exc.__traceback__)
        self._abort()


def detached_protocol(protocol):
    """``protocol`` (what ``WebSocketHandler.get_websocket_protocol`` made) reading frames in a
    task of its own; any protocol but Tornado's own is returned as it is."""
    if type(protocol) is tornado.websocket.WebSocketProtocol13:
        return DetachedLoopProtocol(protocol.handler, False, protocol.params)
    return protocol


# RequestHandler internals -------------------------------------------------------------------

def break_handler_cycles(handler: tornado.web.RequestHandler) -> None:
    """Drop the handler's reference cycle through its UI modules (``finish()`` would have), so a
    handler that never finishes (a detached stream) is freed without the cycle collector."""
    handler._break_cycles()


def drop_response_headers(handler: tornado.web.RequestHandler) -> None:
    """Replace the response headers already written with an empty set (memory per connection)."""
    handler._headers = tornado.httputil.HTTPHeaders()


def response_headers(handler: tornado.web.RequestHandler) -> tornado.httputil.HTTPHeaders:
    """The response headers ``handler`` holds (for tests)."""
    return handler._headers


def status_reason(handler: tornado.web.RequestHandler) -> str:
    """The reason phrase of the handler's response status (``"Not Found"``)."""
    return handler._reason
