"""The fan-out hot path: put an event's bytes on a connection with the least work per connection."""
from __future__ import annotations

from typing import Optional, Tuple

from tornado.concurrent import Future
from tornado.iostream import IOStream


def _plain_stream_types() -> tuple:
    from tornado_app.httpserver import CountedIOStream
    return (IOStream, CountedIOStream)


_PLAIN = frozenset(_plain_stream_types())


def write_direct(stream: IOStream, data: bytes) -> Optional[Tuple[Future, int]]:
    """Send ``data`` on ``stream``; None when the kernel took all of it, else ``(future, unsent bytes)``.

    When nothing is queued on the stream (the usual case in a fan-out), the bytes go to the
    socket with one ``send()``: no Future, no write buffer and no loop callback per
    connection, which is most of what ``IOStream.write`` costs. Whatever the socket does not
    take, and any socket error, goes through ``IOStream.write`` behind it, which keeps the
    order, buffers the rest and closes the stream on errors as usual.
    Raises StreamClosedError (from ``IOStream.write``) when the stream is closed.
    """
    # TLS streams (SSLIOStream) and anything unusual take the ordinary path; plain sockets
    # (IOStream, or the server's CountedIOStream, which only counts opens and closes) are sent on.
    if type(stream) in _PLAIN and not stream.writing() and not stream.closed():
        try:
            sent = stream.socket.send(data)
        except OSError:  # EAGAIN, or an error that IOStream.write meets again and handles
            sent = 0
        if sent == len(data):
            return None
        data = data[sent:]
    return stream.write(data), len(data)
