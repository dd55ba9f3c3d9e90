"""Raw stream requests for the admission tests: one request head on a fresh socket, its answer head."""
from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Optional, Tuple


def request_head(port: int, path: str, headers: Optional[dict] = None) -> bytes:
    """A GET of ``path`` as bytes; a ``/ws/*`` path is a WebSocket upgrade."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if path.startswith("/ws/"):
        lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                  "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode()]
    elif path.startswith("/sse/"):
        lines += ["Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader) -> Tuple[int, dict, Optional[dict]]:
    """``(status, headers, JSON body, text or None)``; the body is read for answers that end (not 101/200 streams)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *rest = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in rest if ":" in ln)}
    status = int(status_line.split()[1])
    body = None
    if "content-length" in headers:
        raw = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:  # Tornado's own plain-text answers (a malformed upgrade)
            body = raw.decode("utf-8", "replace")
    return status, headers, body


async def stream_request(port: int, path: str, headers: Optional[dict] = None,
                         local_addr: Optional[str] = None):
    """Send one request on a new connection (from ``local_addr`` if given):
    ``(status, headers, body, writer)``; close the writer when done."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(local_addr, 0) if local_addr else None)
    writer.write(request_head(port, path, headers))
    status, answer_headers, body = await read_answer(reader)
    return status, answer_headers, body, writer


class KeepAliveApi:
    """JSON API calls on one kept-alive connection, as a backend's pooled HTTP client makes them
    (Tornado's AsyncHTTPClient opens a new connection per request, which waits in the accept
    queue behind whatever else is connecting)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def call(self, method: str, path: str, body=None, token: Optional[str] = None) -> Tuple[int, Optional[dict]]:
        """``(status, JSON body)`` of one request on the kept connection (opened on first use)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Connection: keep-alive",
                 "Content-Type: application/json", f"Content-Length: {len(data)}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        assert self.reader is not None
        status, headers, answer = await read_answer(self.reader)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer

    def close(self) -> None:
        """Close the kept connection (the next call opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None
