"""The baseline: a minimal bare-Tornado broadcast server, as one would write it from the docs.

``python -m bench.baseline --port N``. No database, no auth, no replay: subscribers on
``/ws/notifications`` (``write_message`` per subscriber) and ``/sse/notifications``
(``write`` + ``flush`` per subscriber), and ``POST /api/notifications`` with
``{"broadcast": true, "message", "data"}`` that builds one notification and sends it to all.
Each subscriber first gets an ``unread`` frame, as Squall's streams do, so the same load
generator knows when it is subscribed.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import signal

import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

UNREAD = json.dumps({"type": "unread", "total": 0, "chats": {}})


class Subscribers:
    """The two sets of live subscribers."""

    def __init__(self):
        self.ws = set()
        self.sse = set()
        self.ids = itertools.count(1)


class WSHandler(tornado.websocket.WebSocketHandler):
    """A WebSocket subscriber."""

    def initialize(self, subs: Subscribers):
        self.subs = subs

    def check_origin(self, origin):
        return True

    def open(self):
        """Subscribe and send the first frame."""
        self.subs.ws.add(self)
        self.write_message(UNREAD)

    def on_message(self, message):
        """Clients send nothing that matters here."""

    def on_close(self):
        self.subs.ws.discard(self)


class SSEHandler(tornado.web.RequestHandler):
    """A Server-Sent Events subscriber."""

    def initialize(self, subs: Subscribers):
        self.subs = subs

    async def get(self):
        """Headers, the first event, then wait until the client goes away."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.closed = asyncio.Event()
        self.subs.sse.add(self)
        try:
            self.write(f"data: {UNREAD}\n\n")
            await self.flush()
            await self.closed.wait()
        except StreamClosedError:
            pass
        finally:
            self.subs.sse.discard(self)

    def send(self, chunk: str) -> None:
        """Write one event and flush it."""
        try:
            self.write(chunk)
            self.flush()
        except StreamClosedError:
            self.closed.set()

    def on_connection_close(self):
        if hasattr(self, "closed"):
            self.closed.set()


class PublishHandler(tornado.web.RequestHandler):
    """``POST /api/notifications``: broadcast one notification to every subscriber."""

    def initialize(self, subs: Subscribers):
        self.subs = subs

    def post(self):
        """Serialise once, then ``write_message`` / ``write`` + ``flush`` per subscriber."""
        body = json.loads(self.request.body)
        nid = next(self.subs.ids)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        text = json.dumps({"id": nid, "type": body.get("type", "announcement"), "message": body["message"],
                           "timestamp": now, "data": body.get("data")}, separators=(",", ":"))
        for ws in list(self.subs.ws):
            try:
                ws.write_message(text)
            except tornado.websocket.WebSocketClosedError:
                pass
        chunk = f"id: {nid}\ndata: {text}\n\n"
        for sse in list(self.subs.sse):
            sse.send(chunk)
        self.set_status(202)
        self.finish({"ids": [nid]})


class Health(tornado.web.RequestHandler):
    """``GET /healthz``."""

    def get(self):
        self.finish({"status": "ok"})


async def serve(port: int) -> None:
    """Listen on 127.0.0.1 until SIGTERM/SIGINT."""
    subs = Subscribers()
    app = tornado.web.Application([
        (r"/ws/notifications", WSHandler, {"subs": subs}),
        (r"/sse/notifications", SSEHandler, {"subs": subs}),
        (r"/api/notifications", PublishHandler, {"subs": subs}),
        (r"/healthz", Health),
    ], websocket_ping_interval=20)
    server = app.listen(port, "127.0.0.1", idle_connection_timeout=3600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main() -> None:
    """Parse ``--port`` and serve."""
    parser = argparse.ArgumentParser(description="bare-Tornado broadcast baseline")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
