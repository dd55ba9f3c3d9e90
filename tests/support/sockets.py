"""Raw sockets against the test server: a stream opened by hand, one that stops reading."""
from __future__ import annotations

import asyncio
import socket


async def open_stalled(http_port, path, token):
    """A connection that sends its request, reads the response head, then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", http_port))
    reader, writer = await asyncio.open_connection(sock=sock)
    extra = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") if path.startswith("/ws/") else ""
    writer.write((f"GET {path}?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1:{http_port}\r\n"
                  f"{extra}\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.split(b" ")[1] in (b"101", b"200"), head
    return reader, writer


async def read_to_eof(reader, timeout: float = 15.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            return received
        received += chunk


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def open_raw_stream(http_port: int, token: str, version: str, rcvbuf: int = 0):
    """A raw ``GET /sse/notifications``; returns (reader, writer) after the response head."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", http_port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /sse/notifications?access_token={token} {version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head  # Tornado answers 1.0 clients with a 1.1 status line
    assert (b"Transfer-Encoding: chunked" in head) == (version == "HTTP/1.1")
    return reader, writer
