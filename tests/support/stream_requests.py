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
