"""A reconnect storm in one helper process: many notification streams (WebSocket and SSE, over
raw sockets) that connect at once, retry with full jitter and ``Retry-After`` when refused, and
resume with their last event id.

    python -m tests.support.storm_client PORT TOKENS_JSON

Commands on stdin, one per line; each answers one JSON line on stdout:
    connect          open every stream       -> {"connected": n, "seconds": s, "refused": r}
    drop             close every stream at once and reconnect (resuming) -> the same shape
    report IDS_JSON  stop; per stream, compare the ids received with IDS -> {"duplicates", "missing", ...}
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import sys
import time

BACKOFF_BASE, BACKOFF_CAP = 0.5, 8.0


class Stream:
    """One client: a /ws/notifications or /sse/notifications stream that keeps what it receives."""

    def __init__(self, port: int, token: str, kind: str):
        self.port, self.token, self.kind = port, token, kind
        self.ids = []
        self.last_id = None
        self.writer = None
        self.task = None
        self.refused = 0

    async def open(self) -> None:
        """Connect, retrying refusals with full jitter and never sooner than Retry-After."""
        attempt = 0
        while True:
            status, retry_after = await self._try_open()
            if status in (101, 200):
                return
            self.refused += 1
            ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)
            await asyncio.sleep(retry_after + random.uniform(0, ceiling))
            attempt += 1

    async def _try_open(self):
        path = f"/{'ws' if self.kind == 'ws' else 'sse'}/notifications?access_token={self.token}"
        if self.last_id is not None:
            path += f"&last_event_id={self.last_id}"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return 0, 1.0
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if self.kind == "ws":
            lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                      "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode()]
        else:
            lines += ["Accept: text/event-stream"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            writer.close()
            return 0, 1.0
        status = int(head.split(b" ", 2)[1])
        if status not in (101, 200):
            retry_after = 1.0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"retry-after:"):
                    retry_after = float(line.split(b":", 1)[1])
            writer.close()
            return status, retry_after
        self.writer = writer
        self.task = asyncio.ensure_future(self._read_ws(reader) if self.kind == "ws" else self._read_sse(reader))
        return status, 0.0

    def _got(self, event_id) -> None:
        self.ids.append(event_id)
        self.last_id = event_id

    async def _read_ws(self, reader) -> None:
        try:
            while True:
                b1, b2 = await reader.readexactly(2)
                n = b2 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                payload = await reader.readexactly(n)
                opcode = b1 & 0x0F
                if opcode == 8:
                    return
                if opcode == 9:  # ping: answer a masked pong
                    mask = os.urandom(4)
                    self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask
                                      + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
                    continue
                if opcode == 1:
                    frame = json.loads(payload)
                    if frame.get("id") is not None:
                        self._got(frame["id"])
        except (asyncio.IncompleteReadError, OSError, asyncio.CancelledError):
            return

    async def _read_sse(self, reader) -> None:
        buf = b""
        try:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    return
                buf += (await reader.readexactly(size + 2))[:-2]
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if line.startswith(b"id: "):
                            self._got(int(line[4:]))
        except (asyncio.IncompleteReadError, OSError, asyncio.CancelledError, ValueError):
            return

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()
        self.writer = self.task = None


async def open_all(streams) -> dict:
    t0 = time.monotonic()
    before = sum(s.refused for s in streams)
    await asyncio.gather(*(s.open() for s in streams))
    return {"connected": len(streams), "seconds": round(time.monotonic() - t0, 2),
            "refused": sum(s.refused for s in streams) - before}


async def main(port: int, tokens: list) -> None:
    streams = [Stream(port, token, "ws" if n % 2 else "sse") for n, token in enumerate(tokens)]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line:
            return
        command, _, arg = line.partition(" ")
        if command == "connect":
            result = await open_all(streams)
        elif command == "drop":
            for s in streams:
                s.close()
            result = await open_all(streams)
        elif command == "report":
            await asyncio.sleep(0.5)
            expected = json.loads(arg)
            result = {"duplicates": sum(len(s.ids) - len(set(s.ids)) for s in streams),
                      "missing": sum(len(set(expected) - set(s.ids)) for s in streams),
                      "out_of_order": sum(s.ids != sorted(s.ids) for s in streams),
                      "streams": len(streams)}
            for s in streams:
                s.close()
        else:
            result = {"error": f"unknown command {command}"}
        print(json.dumps(result), flush=True)
        if command == "report":
            return


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), json.loads(open(sys.argv[2]).read())))
