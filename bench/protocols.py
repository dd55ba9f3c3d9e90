"""Minimal client protocols for the load generator: raw asyncio, frames parsed as cheaply as possible.

The load generator must never be the bottleneck, so these speak just enough HTTP/1.1,
WebSocket (RFC 6455) and Server-Sent Events to count and time what arrives: no per-frame
objects, one clock read per ``data_received`` call, and the send timestamp of a
notification found by a byte search instead of a JSON parse.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import struct
import time
from typing import Callable, List, Optional

T_RE = re.compile(rb'"t":(-?[0-9.eE+]+)')


def stamp_of(payload: bytes) -> Optional[float]:
    """The ``"t":<float>`` send timestamp inside a JSON payload, or None."""
    m = T_RE.search(payload)
    return float(m.group(1)) if m else None


def ws_client_frame(text: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame; the mask is all zeros (legal) so the payload is sent as is."""
    n = len(text)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + b"\x00\x00\x00\x00" + text


class StreamClient(asyncio.Protocol):
    """Shared state of one subscriber connection: counts, latencies, open/closed futures."""

    def __init__(self, request: bytes, on_payload: Optional[Callable] = None, latencies: Optional[List] = None):
        self.request = request
        self.on_payload = on_payload
        self.latencies = latencies
        self.transport = None
        self.buf = b""
        self.upgraded = False
        self.count = 0          # payloads received (the first state frame included)
        self.ready = asyncio.get_running_loop().create_future()   # first payload arrived (or the head)
        self.closed = asyncio.get_running_loop().create_future()  # connection lost
        self.error: Optional[str] = None
        self.last = 0.0         # time of the last payload
        self.on_open: Optional[Callable] = None  # called once the response head is in
        # ``ready`` when the response head (101 / SSE 200) is in, not at the first payload: for a
        # server that sends nothing on open (bench/baseline.py --plain)
        self.ready_on_head = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.error or "closed before the first event"))

    def fail(self, why: str) -> None:
        """Record an error and drop the connection."""
        self.error = why
        if self.transport is not None:
            self.transport.close()

    def _buffered(self, data: bytes):
        """Every unparsed byte after the response head; None while the head is incomplete."""
        buf = self.buf + data if self.buf else data
        self.buf = buf
        if not self.upgraded:
            if not self._headers_done():
                return None
            buf = self.buf
        return buf

    def _headers_done(self) -> bool:
        """Consume the HTTP response head; False until it is complete."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buf[:end]
        status = head.split(b" ", 2)[1:2]
        if status not in ([b"101"], [b"200"]):
            self.fail(head.split(b"\r\n", 1)[0].decode("latin-1") + " " + self.buf[end + 4:end + 200].decode("latin-1"))
            return False
        self.upgraded = True
        self.buf = self.buf[end + 4:]
        if self.ready_on_head and not self.ready.done():
            self.ready.set_result(None)
        if self.on_open is not None:
            self.on_open(self)
        return True

    def got(self, payload: bytes, now: float) -> None:
        """One event payload arrived at ``now``."""
        self.count += 1
        self.last = now
        if self.count == 1 and not self.ready.done():
            self.ready.set_result(None)
        if self.latencies is not None:
            t = stamp_of(payload)
            if t is not None:
                self.latencies.append(now - t)
        if self.on_payload is not None:
            self.on_payload(self, payload, now)

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()


class WSClient(StreamClient):
    """A WebSocket subscriber: handshake, then unmasked server frames parsed in place."""

    def __init__(self, host: str, port: int, path: str, **kw):
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        super().__init__(request, **kw)

    def send_text(self, text: bytes) -> None:
        """Send one text frame."""
        self.transport.write(ws_client_frame(text))

    def data_received(self, data: bytes):
        buf = self._buffered(data)
        if buf is None:
            return
        now = time.time()
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, ln = buf[i], buf[i + 1] & 0x7F
            h = 2
            if ln == 126:
                if n - i < 4:
                    break
                ln = (buf[i + 2] << 8) | buf[i + 3]
                h = 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln = struct.unpack_from("!Q", buf, i + 2)[0]
                h = 10
            end = i + h + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op == 0x1 or op == 0x2:
                self.got(buf[i + h:end], now)
            elif op == 0x9:  # ping: answer with the same payload
                self.transport.write(ws_client_frame(buf[i + h:end], 0xA))
            elif op == 0x8:
                self.error = self.error or f"server closed: {buf[i + h:end][:2].hex()} {buf[i + h + 2:end][:80]!r}"
                self.transport.close()
            i = end
        self.buf = buf[i:] if i < n else b""


class SSEClient(StreamClient):
    """An EventSource subscriber: counts ``data:`` lines; ignores chunk framing and comments."""

    def __init__(self, host: str, port: int, path: str, **kw):
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                   f"Cache-Control: no-cache\r\n\r\n").encode()
        super().__init__(request, **kw)

    def data_received(self, data: bytes):
        buf = self._buffered(data)
        if buf is None:
            return
        now = time.time()
        i = 0
        # Every event is written as one chunk, so a "data: " line is never split by chunk framing.
        while True:
            j = buf.find(b"data: ", i)
            if j < 0:
                break
            k = buf.find(b"\n", j)
            if k < 0:
                i = j
                break
            self.got(buf[j + 6:k], now)
            i = k + 1
        rest = buf[i:]
        # Keep only what can still start a "data: " line.
        self.buf = rest if rest.startswith(b"data: ") else rest[-5:]


class HTTPConn:
    """One keep-alive HTTP/1.1 connection for JSON requests (publish API, setup calls)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def request(self, method: str, path: str, body=None, token: Optional[str] = None,
                      headers: Optional[dict] = None):
        """``(status, parsed JSON body or None)``; reconnects when the server closed the connection."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(data)}",
                "Content-Type: application/json"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        status_line = await self.reader.readline()
        if not status_line:
            self.writer = None
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            raw = b"".join(parts)
        else:
            raw = await self.reader.readexactly(length) if length else b""
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
