"""The baseline: a minimal bare-Tornado broadcast server, as one would write it from the docs.

``python -m bench.baseline --port N``. No database, no auth, no replay: subscribers on
``/ws/notifications`` (``write_message`` per subscriber) and ``/sse/notifications``
(``write`` + ``flush`` per subscriber), and ``POST /api/notifications`` with
``{"broadcast": true, "message", "data"}`` that builds one notification and sends it to all,
or ``{"user_ids": [...], "message", "data"}`` that sends one notification to each named user's
subscribers (the targeted benchmark's ceiling: nothing is stored).
Each subscriber first gets an ``unread`` frame, as Squall's streams do, so the same load
generator knows when it is subscribed. Tokens are not verified; with ``--by-user`` (the
targeted benchmark only, so the fan-out and idle figures carry no index) a subscriber's user is
read from its ``access_token``'s ``sub`` claim, so the baseline gets the same URLs as Squall.

``--plain`` (issue 26, item 6: the connect-rate reference): handlers that verify nothing and send
nothing. ``/ws/notifications?access_token=...`` answers the upgrade with 101 and then stays
silent (no frame, no ping); ``/sse/notifications?...`` answers 200 with the ``text/event-stream``
headers flushed and then stays silent until the client goes away. No publish API, no index:
the cost of accepting an upgrade in Tornado and holding it, nothing more.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime
import itertools
import json
import signal

import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

UNREAD = json.dumps({"type": "unread", "total": 0, "chats": {}})


def user_of(token: str) -> str:
    """The ``sub`` claim of a JWT, unverified (the baseline does no auth); "" when unreadable."""
    try:
        part = token.split(".")[1]
        return str(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("sub", ""))
    except (IndexError, ValueError, binascii.Error, AttributeError):
        return ""


def notification(nid: int, body: dict, now: str) -> str:
    """The JSON text of one notification built from a publish request's body."""
    return json.dumps({"id": nid, "type": body.get("type", "announcement"), "message": body["message"],
                       "timestamp": now, "data": body.get("data")}, separators=(",", ":"))


class Subscribers:
    """The two sets of live subscribers, and each user's subscribers."""

    def __init__(self, by_user: bool = False):
        self.ws = set()
        self.sse = set()
        self.indexed = by_user
        self.by_user = {}
        self.ids = itertools.count(1)

    def add(self, handler, kind: set) -> None:
        """Subscribe ``handler`` to ``kind`` and, when indexing, to its user."""
        kind.add(handler)
        if self.indexed:
            handler.user = user_of(handler.get_argument("access_token", ""))
            self.by_user.setdefault(handler.user, set()).add(handler)

    def discard(self, handler, kind: set) -> None:
        """Unsubscribe ``handler``."""
        kind.discard(handler)
        mine = self.by_user.get(getattr(handler, "user", None))
        if mine is not None:
            mine.discard(handler)
            if not mine:
                del self.by_user[handler.user]


class WSHandler(tornado.websocket.WebSocketHandler):
    """A WebSocket subscriber."""

    def initialize(self, subs: Subscribers):
        self.subs = subs

    def check_origin(self, origin):
        return True

    def open(self):
        """Subscribe and send the first frame."""
        self.subs.add(self, self.subs.ws)
        self.write_message(UNREAD)

    def deliver(self, text: str, nid: int) -> None:
        """One notification."""
        try:
            self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_message(self, message):
        """Clients send nothing that matters here."""

    def on_close(self):
        self.subs.discard(self, self.subs.ws)


class SSEHandler(tornado.web.RequestHandler):
    """A Server-Sent Events subscriber."""

    def initialize(self, subs: Subscribers):
        self.subs = subs

    async def get(self):
        """Headers, the first event, then wait until the client goes away."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.closed = asyncio.Event()
        self.subs.add(self, self.subs.sse)
        try:
            self.write(f"data: {UNREAD}\n\n")
            await self.flush()
            await self.closed.wait()
        except StreamClosedError:
            pass
        finally:
            self.subs.discard(self, self.subs.sse)

    def send(self, chunk: str) -> None:
        """Write one event and flush it."""
        try:
            self.write(chunk)
            self.flush()
        except StreamClosedError:
            self.closed.set()

    def deliver(self, text: str, nid: int) -> None:
        """One notification."""
        self.send(f"id: {nid}\ndata: {text}\n\n")

    def on_connection_close(self):
        if hasattr(self, "closed"):
            self.closed.set()


class PublishHandler(tornado.web.RequestHandler):
    """``POST /api/notifications``: one notification to every subscriber, or one to each named user.

    ``user_ids`` needs ``--by-user`` (400 without it).
    """

    def initialize(self, subs: Subscribers):
        self.subs = subs

    def post(self):
        """Serialise once, then ``write_message`` / ``write`` + ``flush`` per subscriber."""
        body = json.loads(self.request.body)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if "user_ids" in body:
            if not self.subs.indexed:
                self.set_status(400)
                self.finish({"error": "user_ids needs --by-user"})
                return
            ids = []
            for user in body["user_ids"]:
                nid = next(self.subs.ids)
                ids.append(nid)
                text = notification(nid, body, now)
                for sub in list(self.subs.by_user.get(str(user), ())):
                    sub.deliver(text, nid)
            self.set_status(202)
            self.finish({"ids": ids})
            return
        nid = next(self.subs.ids)
        text = notification(nid, body, now)
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


class PlainWSHandler(tornado.websocket.WebSocketHandler):
    """``--plain``: accept the upgrade (101) and do nothing else."""

    def check_origin(self, origin):
        return True

    def on_message(self, message):
        """Nothing is read."""


class PlainSSEHandler(tornado.web.RequestHandler):
    """``--plain``: 200 with the event-stream headers flushed, then nothing until the client goes away."""

    async def get(self):
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.closed = asyncio.Event()
        try:
            await self.flush()
            await self.closed.wait()
        except StreamClosedError:
            pass

    def on_connection_close(self):
        if hasattr(self, "closed"):
            self.closed.set()


class Health(tornado.web.RequestHandler):
    """``GET /healthz``."""

    def get(self):
        self.finish({"status": "ok"})


def application(by_user: bool = False, plain: bool = False) -> tornado.web.Application:
    """The baseline's routes: the broadcast server, or with ``plain`` the handlers that do nothing."""
    if plain:
        return tornado.web.Application([
            (r"/ws/notifications", PlainWSHandler),
            (r"/sse/notifications", PlainSSEHandler),
            (r"/healthz", Health),
        ])  # no ping interval: a plain WebSocket gets no frame at all
    subs = Subscribers(by_user)
    return tornado.web.Application([
        (r"/ws/notifications", WSHandler, {"subs": subs}),
        (r"/sse/notifications", SSEHandler, {"subs": subs}),
        (r"/api/notifications", PublishHandler, {"subs": subs}),
        (r"/healthz", Health),
    ], websocket_ping_interval=20)


async def serve(port: int, by_user: bool = False, plain: bool = False) -> None:
    """Listen on 127.0.0.1 until SIGTERM/SIGINT."""
    app = application(by_user, plain)
    server = app.listen(port, "127.0.0.1", idle_connection_timeout=3600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main() -> None:
    """Parse ``--port``, ``--by-user`` and ``--plain`` and serve."""
    parser = argparse.ArgumentParser(description="bare-Tornado broadcast baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--by-user", action="store_true", help="index subscribers by user (targeted publishes)")
    parser.add_argument("--plain", action="store_true",
                        help="verify nothing, send nothing: 101 / event-stream headers only (connect-rate reference)")
    args = parser.parse_args()
    if args.plain and args.by_user:
        parser.error("--plain serves no publishes: --by-user does not apply")
    asyncio.run(serve(args.port, args.by_user, args.plain))


if __name__ == "__main__":
    main()
