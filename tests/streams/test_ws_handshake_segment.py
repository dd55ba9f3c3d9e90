"""A WebSocket's 101 and its first frame leave together (TCP_CORK until open() has written them).

handlers/websocket.py corks the handshake's socket in get() (``CountedIOStream.cork``, which
also holds back Tornado's TCP_NODELAY: setting it pushes out what the cork holds) and uncorks
it once open() has started the streams, or at once when the upgrade is refused (the
connection may serve a next request). Checked from both ends: what one read of the client
gets, and the server socket's TCP_CORK afterwards (the test server runs in this process).
"""
from __future__ import annotations

import asyncio
import socket

import pytest

from tests.support.server_sockets import corked, server_side

UPGRADE = ("GET /ws/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: {version}\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")


async def upgrade(users, http_port, version: int):
    """A raw upgrade request of a new user on ``/ws/notifications``: ``(reader, writer)``."""
    (bob,) = await users("bob")
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(UPGRADE.format(token=bob["token"], version=version).encode())
    return reader, writer


@pytest.mark.gen_test(timeout=30)
async def test_the_101_and_the_unread_frame_arrive_in_one_read(users, http_port):
    reader, writer = await upgrade(users, http_port, 13)
    try:
        first = await asyncio.wait_for(reader.read(65536), 10)
        head, _, rest = first.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        # the frame came with the head: an unmasked text frame carrying the unread state
        assert rest[:1] == b"\x81" and b'"type":"unread"' in rest, first
        sock = server_side(writer)
        assert not corked(sock)  # uncorked: later frames leave at once
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0  # and unbuffered
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_refused_upgrade_is_uncorked(users, http_port):
    """Tornado refuses an unknown protocol version (426) after prepare() authenticated it."""
    reader, writer = await upgrade(users, http_port, 12)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 426"), head
        assert not corked(server_side(writer))
    finally:
        writer.close()
