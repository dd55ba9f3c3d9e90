"""``subscribe``: a user's notification stream as an async iterator that never loses an event.

Flow: connect (SSE ``/sse/notifications``, or ``/ws/notifications``) with the user's token in
the ``Authorization`` header and the id of the last notification seen (``Last-Event-ID`` /
``?last_event_id=``) → the server replays what came after it, then live events → the stream
ends (server restart, network, ``auth_expired``) → wait (full jitter) → ask the token
provider for a token → connect again with the last id. The server's replay is in id order
with no gap and no duplicate (docs/protocol.md, section 4, "Resume"); this iterator also
drops any notification whose id is not above the last one it yielded.

Ended for good (raised from the iterator): a refusal that waiting will not fix (400, 401,
403: an expired static token, a revoked or deleted user); ``max_attempts`` failed
connections in a row (``SquallConnectionError``).
"""
from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlencode

import httpx

from .errors import ApiError, SquallConnectionError, error_from_response

TokenSource = str | Callable[[], str | Awaitable[str]]
Transport = Literal["sse", "websocket"]
Event = dict[str, Any]

# Frames about the connection itself, handled here and not yielded.
CONNECTION_FRAMES = frozenset({"auth_expired", "token_expiring", "refreshed", "pong"})
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class _StreamEnded(Exception):
    """The server ended the stream (shutdown, ``auth_expired``, close frame): reconnect and resume."""


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """A random delay in [0, min(cap, base * 2**attempt)] (AWS's "full jitter")."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each complete SSE event (lines joined by ``\\n``); comments and other fields skipped.

    An event cut off by a disconnect (no blank line after it) is not yielded: the resume
    replays it.
    """
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


class Subscription:
    """``async for event in subscribe(url, token)``: notifications and state events (``unread``,
    ``resync``, ``preferences``, ``mute``) as dicts, in order, across reconnects.

    ``last_event_id`` is the id of the last notification yielded: store it to resume a later
    subscription from there (``subscribe(..., last_event_id=...)``). Close with ``aclose()``
    or ``async with``.
    """

    def __init__(self, base_url: str, token: TokenSource, *, last_event_id: int | None = None,
                 transport: Transport = "sse", idle_timeout: float = 60.0, connect_timeout: float = 10.0,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, max_attempts: int | None = None) -> None:
        if transport not in ("sse", "websocket"):
            raise ValueError("transport is 'sse' or 'websocket'")
        if last_event_id is not None and (not isinstance(last_event_id, int) or last_event_id < 0):
            raise ValueError("last_event_id is an integer of at least 0")
        self.base_url = base_url.rstrip("/")
        self.last_event_id = last_event_id
        self.transport = transport
        self.connections = 0  # streams opened so far (1 + the reconnects)
        self._token_source = token
        self._idle_timeout = idle_timeout  # the server pings every 15 s (SSE) / 20 s (WebSocket)
        self._connect_timeout = connect_timeout
        self._backoff = (backoff_base, backoff_cap)
        self._max_attempts = max_attempts
        self._events: AsyncGenerator[Event, None] | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._events is None:
            self._events = self._run()
        return await self._events.__anext__()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the open stream; the iterator ends."""
        if self._events is not None:
            await self._events.aclose()

    async def _token(self) -> str:
        if isinstance(self._token_source, str):
            return self._token_source
        token = self._token_source()
        if inspect.isawaitable(token):
            token = await token
        if not isinstance(token, str) or not token:
            raise ValueError("the token provider must return a non-empty string")
        return token

    async def _run(self) -> AsyncGenerator[Event, None]:
        """Connect, yield, reconnect: the loop the module docstring describes."""
        failures = 0
        while True:
            retry_after = 0.0
            try:
                token = await self._token()
                opener = self._open_sse if self.transport == "sse" else self._open_websocket
                async for event in opener(token):
                    failures = 0  # the stream works: the next wait starts small again
                    event_id = event.get("id")
                    if isinstance(event_id, int) and not isinstance(event_id, bool):
                        if self.last_event_id is not None and event_id <= self.last_event_id:
                            continue
                        self.last_event_id = event_id
                    yield event
            except ApiError as exc:
                if exc.status not in RETRY_STATUSES:
                    raise
                retry_after = exc.retry_after or 0.0
                failures += 1
            except (_StreamEnded, httpx.TransportError, OSError, asyncio.TimeoutError) as exc:
                if not isinstance(exc, _StreamEnded):
                    failures += 1
            if self._max_attempts is not None and failures >= self._max_attempts:
                raise SquallConnectionError(f"no stream after {failures} attempts in a row")
            # Never sooner than the server's Retry-After; full jitter so clients do not return together.
            await asyncio.sleep(max(retry_after, full_jitter(failures, *self._backoff)))

    def _query(self) -> str:
        return urlencode({"last_event_id": self.last_event_id}) if self.last_event_id is not None else ""

    async def _open_sse(self, token: str) -> AsyncIterator[Event]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        timeout = httpx.Timeout(self._connect_timeout, read=self._idle_timeout)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            async with http.stream("GET", self.base_url + "/sse/notifications", headers=headers) as response:
                if response.status_code != 200:
                    raise error_from_response(response.status_code, await response.aread(),
                                              response.headers.get("Retry-After"))
                self.connections += 1
                async for data in parse_sse(response.aiter_lines()):
                    event = _decode(data)
                    if event is None:
                        continue
                    if event.get("type") == "auth_expired":
                        raise _StreamEnded(str(event.get("reason")))
                    if event.get("type") not in CONNECTION_FRAMES:
                        yield event
        raise _StreamEnded("the server ended the stream")

    async def _open_websocket(self, token: str) -> AsyncIterator[Event]:
        try:
            from websockets.asyncio.client import connect
            from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("transport='websocket' needs the websockets package: "
                              "pip install 'squall-client[websocket]'") from exc
        query = self._query()
        url = self.base_url.replace("http", "ws", 1) + "/ws/notifications" + (f"?{query}" if query else "")
        try:
            async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, proxy=None,
                               open_timeout=self._connect_timeout, ping_interval=20,
                               ping_timeout=self._idle_timeout) as socket:
                self.connections += 1
                async for raw in socket:
                    event = _decode(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
                    if event is None:
                        continue
                    if event.get("type") == "token_expiring" and not isinstance(self._token_source, str):
                        # A fresh token keeps this socket open past the old one's expiry.
                        await socket.send(json.dumps({"type": "refresh", "access_token": await self._token()}))
                    if event.get("type") not in CONNECTION_FRAMES:
                        yield event
        except InvalidStatus as exc:
            response = exc.response
            raise error_from_response(response.status_code, bytes(response.body or b""),
                                      response.headers.get("Retry-After")) from exc
        except (ConnectionClosed, InvalidHandshake) as exc:
            raise _StreamEnded(type(exc).__name__) from exc
        raise _StreamEnded("the server closed the socket")


def _decode(data: str) -> Event | None:
    try:
        event = json.loads(data)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def subscribe(base_url: str, token: TokenSource, *, last_event_id: int | None = None,
              transport: Transport = "sse", **options: Any) -> Subscription:
    """A user's notification stream on the Squall at ``base_url`` (see ``Subscription``).

    ``token`` is the user's token (a Squall access token, or one minted with ``mint_token``),
    or a callable (plain or async) returning a fresh one: it is called before every connect,
    so a stream outlives its tokens. ``transport="websocket"`` needs ``squall-client[websocket]``.
    """
    return Subscription(base_url, token, last_event_id=last_event_id, transport=transport, **options)
