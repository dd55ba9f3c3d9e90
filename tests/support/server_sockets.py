"""The server side of a test's own connection, for tests whose server runs in their process."""
from __future__ import annotations

import gc
import socket


def server_side(writer) -> socket.socket:
    """The server's socket of the client connection of ``writer`` (found by its peer address)."""
    here = writer.get_extra_info("sockname")
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() >= 0:
            try:
                if obj.getpeername() == here:
                    return obj
            except OSError:
                continue
    raise AssertionError("no server socket for this connection")


def corked(sock: socket.socket) -> bool:
    """True while Linux's TCP_CORK holds back what ``sock`` sends."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) != 0
