"""Test clients over real sockets: JSON over HTTP, WebSocket frames, raw SSE lines."""
from __future__ import annotations

import asyncio
import json
from typing import Optional
from urllib.parse import urlencode

import tornado.httpclient
import tornado.websocket

DEFAULT_TIMEOUT = 10.0


class ApiClient:
    """JSON HTTP calls against one server: ``await api.call("POST", "/api/…", body, token=…)``."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = tornado.httpclient.AsyncHTTPClient()

    async def call(self, method: str, path: str, body=None, token: Optional[str] = None,
                   headers: Optional[dict] = None, raw: Optional[bytes] = None):
        """``(status, parsed JSON or None)``; never raises for an HTTP error status."""
        hdrs = {"Content-Type": "application/json"}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        resp = await self.http.fetch(self.base_url + path, method=method, body=data, headers=hdrs,
                                     raise_error=False, request_timeout=DEFAULT_TIMEOUT)
        self.last_headers = resp.headers  # of the latest answer (Retry-After, Set-Cookie …)
        text = resp.body.decode("utf-8") if resp.body else ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return resp.code, parsed

    async def register(self, username: str, password: str = "password123", display_name: str = None) -> dict:
        """Register a user; returns ``{id, username, display_name, token, refresh}``."""
        body = {"username": username, "password": password}
        if display_name:
            body["display_name"] = display_name
        status, data = await self.call("POST", "/api/auth/register", body)
        assert status == 201, (status, data)
        return {**data["user"], "token": data["access_token"], "refresh": data["refresh_token"]}


class WSClient:
    """A WebSocket client reading JSON frames, with waits for a specific frame."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection):
        self.conn = conn

    @classmethod
    async def connect(cls, base_ws_url: str, path: str, token: Optional[str] = None, **query) -> "WSClient":
        """Connect to ``path`` with ``?access_token=`` and extra query arguments."""
        if token:
            query["access_token"] = token
        url = base_ws_url + path + (("?" + urlencode(query)) if query else "")
        conn = await asyncio.wait_for(tornado.websocket.websocket_connect(url), DEFAULT_TIMEOUT)
        return cls(conn)

    async def send(self, obj) -> None:
        """Send a JSON frame (or a raw string)."""
        await self.conn.write_message(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self, timeout: float = DEFAULT_TIMEOUT):
        """The next frame as JSON; None when the connection closed."""
        msg = await asyncio.wait_for(self.conn.read_message(), timeout)
        return None if msg is None else json.loads(msg)

    async def recv_type(self, *types: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The next frame whose ``type`` is one of ``types`` (others are skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise asyncio.TimeoutError(f"no frame of type {types}")
            frame = await self.recv(left)
            if frame is None:
                raise ConnectionError(f"closed while waiting for {types}: "
                                      f"{self.conn.close_code} {self.conn.close_reason}")
            if frame.get("type") in types:
                return frame

    async def request(self, frame: dict, *types: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Send ``frame`` and wait for the first reply of one of ``types``."""
        await self.send(frame)
        return await self.recv_type(*types, timeout=timeout)

    def close(self, code: int = 1000) -> None:
        """Close the socket."""
        self.conn.close(code)


class SSEClient:
    """A minimal EventSource parser over a raw socket (tests of the wire format use it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, headers: dict):
        self.reader, self.writer = reader, writer
        self.status, self.headers = status, headers
        self.retry = None
        self.last_event_id = None
        self.comments = []

    @classmethod
    async def connect(cls, host: str, port: int, path: str, token: Optional[str] = None,
                      headers: Optional[dict] = None, **query) -> "SSEClient":
        """GET ``path`` and read the response head; the body is read event by event."""
        if token:
            query["access_token"] = token
        target = path + (("?" + urlencode(query)) if query else "")
        reader, writer = await asyncio.open_connection(host, port)
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        hdrs = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        client = cls(reader, writer, status, hdrs)
        client._chunked = hdrs.get("transfer-encoding", "").lower() == "chunked"
        client._buf = b""
        return client

    async def _read_more(self) -> bool:
        if self._chunked:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.strip().split(b";")[0], 16)
            if size == 0:
                return False
            data = await self.reader.readexactly(size + 2)
            self._buf += data[:-2]
        else:
            data = await self.reader.read(65536)
            if not data:
                return False
            self._buf += data
        return True

    async def body_text(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The whole (non-stream) body, for error responses."""
        length = int(self.headers.get("content-length", "0"))
        data = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        return data.decode()

    async def next_event(self, timeout: float = DEFAULT_TIMEOUT) -> Optional[dict]:
        """The next dispatched event ``{"id", "event", "data"}`` per the EventSource rules; None at EOF."""
        deadline = asyncio.get_running_loop().time() + timeout
        data_lines, event_type = [], None
        while True:
            while b"\n" not in self._buf:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise asyncio.TimeoutError("no SSE event")
                if not await asyncio.wait_for(self._read_more(), left):
                    return None
            line, self._buf = self._buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode("utf-8")
            if line == "":
                if data_lines:
                    return {"id": self.last_event_id, "event": event_type or "message",
                            "data": "\n".join(data_lines)}
                data_lines, event_type = [], None
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data_lines.append(value)
            elif field == "id" and "\0" not in value:
                self.last_event_id = value
            elif field == "event":
                event_type = value
            elif field == "retry" and value.isdigit():
                self.retry = int(value)

    async def next_json(self, timeout: float = DEFAULT_TIMEOUT) -> Optional[dict]:
        """The next event's data as JSON."""
        event = await self.next_event(timeout)
        return None if event is None else json.loads(event["data"])

    async def next_type(self, *types: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The next event whose data ``type`` is one of ``types``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            data = await self.next_json(max(left, 0.001))
            if data is None:
                raise ConnectionError("stream ended")
            if data.get("type") in types:
                return data

    def close(self) -> None:
        """Drop the connection."""
        self.writer.close()
