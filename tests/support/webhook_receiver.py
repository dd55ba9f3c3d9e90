"""A webhook receiver on 127.0.0.1 for the tests (issue 23): a real HTTP server on its own thread.

Every request is verified with the ``standardwebhooks`` package (the receiver a product would
write); ``verified`` holds the parsed events, ``requests`` every request as received, and
``answers`` is a queue of ``(status, headers)`` answered in order (then 200), to the requests
of the event type ``answers_for`` only when it is set. ``stall`` set:
requests wait until it is cleared (a receiver that hangs). Works from in-process tests and
with ``run.py`` children alike, since it needs no event loop of the test.
"""
from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple

from standardwebhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"squall-webhook-test-key-0123456789ab").decode()


def new_secret() -> str:
    """A fresh Standard Webhooks secret (32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Received:
    """One request: its headers (lower-case names), raw body, arrival time and verification outcome."""

    def __init__(self, headers: Dict[str, str], body: bytes, at: float, event: Optional[dict], error: str):
        self.headers, self.body, self.at, self.event, self.error = headers, body, at, event, error


class WebhookReceiver:
    """``with WebhookReceiver(secret) as r: ...``; ``r.url`` is where Squall should POST."""

    def __init__(self, secret: str = SECRET, port: int = 0):
        self.secret = secret
        self.requests: List[Received] = []
        self.answers: List[Tuple[int, Dict[str, str]]] = []
        # ``rule(event body) -> (status, headers) or None``: answers before ``answers`` when it returns one
        self.rule: Optional[Callable[[dict], Optional[Tuple[int, Dict[str, str]]]]] = None
        self.arrived = 0  # requests whose body was read (counted before a stall holds them)
        self.answers_for: Optional[str] = None  # an event type: only its requests take from ``answers``
        self.stall = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.arrived += 1
                try:
                    event, error = Webhook(receiver.secret).verify(body, headers), ""
                except Exception as exc:
                    event, error = None, f"{type(exc).__name__}: {exc}"
                while receiver.stall.is_set():
                    if receiver._released.wait(0.05):
                        break
                with receiver._lock:
                    receiver.requests.append(Received(headers, body, time.time(), event, error))
                    parsed = json.loads(body) if body.startswith(b"{") else {}
                    ruled = receiver.rule(parsed) if receiver.rule is not None else None
                    scripted = receiver.answers and receiver.answers_for in (None, parsed.get("type"))
                    if ruled is not None:
                        status, extra = ruled
                    else:
                        status, extra = receiver.answers.pop(0) if scripted else (200, {})
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/squall"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        """End a stall: waiting requests are answered."""
        self.stall.clear()
        self._released.set()

    @property
    def verified(self) -> List[dict]:
        """The events of the requests whose signature verified, in arrival order."""
        with self._lock:
            return [r.event for r in self.requests if r.event is not None]

    def of_type(self, kind: str) -> List[dict]:
        return [e for e in self.verified if e["type"] == kind]

    def _timed_out(self, timeout: float) -> AssertionError:
        with self._lock:
            kinds = [json.loads(r.body or b"{}").get("type") for r in self.requests]
        return AssertionError(f"webhooks not as expected after {timeout} s; received {kinds}")

    def wait(self, predicate: Callable[["WebhookReceiver"], bool], timeout: float = 20.0) -> None:
        """Block until ``predicate(self)`` holds (tests of ``run.py`` children); AssertionError after ``timeout``."""
        deadline = time.time() + timeout
        while not predicate(self):
            if time.time() > deadline:
                raise self._timed_out(timeout)
            time.sleep(0.05)

    async def until(self, predicate: Callable[["WebhookReceiver"], bool], timeout: float = 20.0) -> None:
        """``wait`` without blocking the loop (tests of the in-process server)."""
        deadline = time.time() + timeout
        while not predicate(self):
            if time.time() > deadline:
                raise self._timed_out(timeout)
            await asyncio.sleep(0.05)
