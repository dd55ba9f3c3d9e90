"""A webhook receiver for ``python -m bench webhooks``: answers 200 at once (``ok``) or never (``stall``).

A stalled request is held open without an answer until the sender gives up (its
``--webhook-timeout``) or the receiver stops; ``count`` is the requests received either way.
It runs on threads of the bench runner, not on the server's pinned core.
"""
from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "whsec_" + base64.b64encode(b"squall-bench-webhook-secret-0123").decode()


class Receiver:
    """``with Receiver("ok" | "stall") as r: r.url``."""

    def __init__(self, mode: str):
        if mode not in ("ok", "stall"):
            raise ValueError(mode)
        self.mode = mode
        self.count = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.count += 1
                if receiver.mode == "stall":
                    receiver._stop.wait()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
