"""Long-polling: ``/poll/notifications`` and ``/poll/chat``, for paths that buffer event streams.

A poll is "what came after id N": one complete JSON answer (``Content-Length``, never
streamed, never compressed, ``Cache-Control: no-store``) that no buffering proxy holds back::

    {"events": [<the JSON objects an SSE stream sends as data:>...],
     "last_event_id": "N" or "M-N", "unread_tag": "1a2b3c4d" or null}

While it waits, a poll is a subscriber in the registry like any stream (presence, caps,
broker wake-ups, shutdown); it reuses the streams' replay/resync logic, so replay and
live delivery never disagree. It answers as soon as it holds an event, at its timeout
with an empty list, and at once on shutdown or a broker gap (the client comes back and
resumes). ``unread_tag`` names the last ``unread`` state the client has: a poll without it
gets the ``unread`` state at once (as every new stream does); a poll that sends it back gets
the state only when it has changed since (between two polls the client holds no stream, so
it could have missed a change). Polls share the per-user read limit of ``GET /api/unread``
(``--reads-per-user-per-second``): past it, 429 with ``Retry-After`` before anything is read.
"""
from __future__ import annotations

import asyncio
import re
import zlib
from typing import Dict, List, Optional

from tornado.iostream import StreamClosedError

from tornado_app.errors import Unavailable, ValidationError
from tornado_app.services.delivery.connection import EndReason
from tornado_app.services.delivery.events import CHAT, NOTIFY, Event, dumps
from tornado_app.services.delivery.hub import ONLINE

from .base import BaseHandler, authenticated
from .sse import StreamEnd
from .streams import Subscriber, parse_last_event_id

_TAG = re.compile(r"^[0-9a-f]{8}$")
_UNREAD_PREFIX = '{"type":"unread"'


def unread_tag(frame: str) -> str:
    """A short name of one ``unread`` frame (CRC-32, 8 hex digits): equal frames, equal tags."""
    return "%08x" % zlib.crc32(frame.encode("utf-8"))


class BasePollHandler(Subscriber, BaseHandler):
    """One long-poll: subscribe, resume from the client's id, answer with the first events (or none)."""

    accepts_ticket = True  # a stream route (see ServicesMixin.accepts_ticket)
    head_like_get = False  # HEAD cannot wait for events: 405
    _answer: Optional[StreamEnd] = None  # set once the poll waits: "the answer is due"
    _answered: Optional[asyncio.Event] = None  # set once the answer is written (or the client gone)

    def prepare(self):
        """No body checks (a GET); 503 while shutting down, like the streams; failed authentications
        count against the client address, and page elements may not poll with the cookie."""
        if self.is_preflight():  # CORS: answered by ``options``, without a credential (handlers/base.py)
            return
        if self.services.closing:
            raise Unavailable("The server is shutting down", "shutting_down")
        self.authenticate_stream()
        self.check_fetch_dest()

    def compute_etag(self):
        """No ETag: a poll's answer is never to be revalidated (or answered 304)."""
        return None

    def poll_arguments(self):
        """``(timeout seconds, unread tag)`` from the query. Raises ValidationError."""
        config = self.services.config
        timeout = self.int_argument("timeout", default=None, minimum=0, maximum=int(config.poll_max_timeout))
        tag = self.get_query_argument("unread_tag", None) or None
        if tag is not None and not _TAG.match(tag):
            raise ValidationError("'unread_tag' must be the unread_tag of an earlier answer", "invalid_unread_tag")
        return (config.poll_timeout if timeout is None else timeout), tag

    def resume_ids(self):
        """``(message id, notification id)`` from ``?last_event_id=`` (or a ``Last-Event-ID`` header)."""
        raw = self.get_query_argument("last_event_id", None) or self.request.headers.get("Last-Event-ID")
        return parse_last_event_id(raw)

    async def poll(self, last_message_id: Optional[int], last_notification_id: Optional[int],
                   active_chat: Optional[int] = None) -> None:
        """Collect the events after the given ids (waiting up to the timeout for the first) and answer."""
        timeout, self.client_tag = self.poll_arguments()
        services = self.services
        # A waiting poll counts as one of the user's streams (no handshake-rate budget: a busy
        # poller asks once per batch of events, which is not a reconnect storm).
        services.admission.check_user(self.authenticated_user_id)
        self._user_reserved = True
        self._max_pending = services.config.max_pending_bytes
        self.events: List[str] = []  # JSON texts, in delivery order
        self._body_bytes = 0
        self._left_out: Dict[Optional[str], int] = {}  # kind -> lowest event id left for the next poll (answer full)
        answer = self._answer = StreamEnd()
        self._answered = asyncio.Event()
        self._gone = False
        user_id = self.authenticated_user_id
        lease = await services.poll_presence.hold(user_id, active_chat) if active_chat is not None else None
        # Between polls the user still has a notification stream (no Web Push) for the grace period.
        online = await services.poll_presence.hold(user_id, ONLINE)
        try:
            try:
                await self.start_streams(last_message_id, last_notification_id)
                if not answer.is_set() and timeout > 0:
                    timer = asyncio.get_running_loop().call_later(timeout, answer.set)
                    try:
                        await answer.wait()
                    finally:
                        timer.cancel()
            finally:
                # Ended before the answer is built: whatever arrived up to here is in it, and
                # nothing more will be (the cursors stay as the answer's events left them).
                await self.stop_streams()
        finally:
            if lease is not None:
                services.poll_presence.release(lease)
            services.poll_presence.release(online)
        if self._gone:
            return
        if services.closing:
            self.set_header("Connection", "close")  # come back on another process
        self.clear_header("Content-Encoding")
        try:
            await self.finish(self.answer_body())
        except StreamClosedError:
            pass

    def cursor(self, kind: str) -> int:
        """The last id of ``kind`` this answer covers: the next poll resumes after it."""
        last = self.connection.cursor(kind) if self.connection is not None else 0
        left_out = self._left_out.get(kind)
        return last if left_out is None else min(last, left_out - 1)

    def last_event_id(self):
        """The resume position of this answer, in this route's format."""
        return str(self.cursor(NOTIFY))

    def answer_body(self) -> str:
        """``{"events": [...], "last_event_id": ..., "unread_tag": ...}`` (the events' JSON kept as sent)."""
        tag = self.client_tag
        for data in self.events:
            if data.startswith(_UNREAD_PREFIX):
                tag = unread_tag(data)
        return ('{"events":[' + ",".join(self.events) + '],"last_event_id":' + dumps(self.last_event_id())
                + ',"unread_tag":' + dumps(tag) + "}")

    async def send_initial_state(self, last_notification_id: Optional[int]) -> Optional[int]:
        """The ``unread`` state at once, unless the poll's ``unread_tag`` shows the client has it already."""
        state = await self.services.notifications.unread_state(self.authenticated_user_id)
        if self.client_tag is None or unread_tag(state) != self.client_tag:
            self.send_event(Event(NOTIFY, state))
        return None

    def send_event(self, event: Event) -> None:
        """Add the event to the answer (which is then due); past the size limit, leave it for the next poll."""
        size = len(event.data)
        if self.events and self._body_bytes + size > self._max_pending:
            if event.id is not None:
                lowest = self._left_out.get(event.kind)
                self._left_out[event.kind] = event.id if lowest is None else min(lowest, event.id)
            self._due()
            return
        self.events.append(event.data)
        self._body_bytes += size
        self._due()

    def _due(self) -> None:
        """The answer is due: the waiting poll resumes and answers."""
        if self._answer is not None:
            self._answer.set()

    def close_for(self, reason: EndReason) -> None:
        """Answer now with what the poll has: on shutdown or a broker gap (the client resumes),
        for a slow consumer (too much arrived during the replay: the rest comes with the next
        poll), and with ``auth_expired`` when logged out or the token expired while waiting."""
        if reason.auth and self._answer is not None and not self._answer.is_set():
            self.send_event(Event(None, reason.auth_frame()))
        self._due()

    async def said_goodbye(self) -> None:
        """Wait until this poll's answer is written (or its client went away)."""
        if self._answered is not None:
            await self._answered.wait()

    def on_finish(self) -> None:
        """Answered (or refused) before the poll registered: its per-user slot is free now."""
        self.release_admission()
        if self._answered is not None:
            self._answered.set()

    def on_connection_close(self) -> None:
        """The client went away: stop waiting, answer nobody."""
        if self._answer is not None:
            self._gone = True
            self._due()
        if self._answered is not None:
            self._answered.set()


class NotificationPollHandler(BasePollHandler):
    """``GET /poll/notifications``: the notification stream, one answer per request."""

    streams = (NOTIFY,)
    transport = "poll_notifications"

    @authenticated
    async def get(self):
        """Events after ``?last_event_id=N`` (none: the unread state at once), or wait up to ``?timeout=``."""
        self.services.reads.check(self.user_id)
        _, last_n = self.resume_ids()
        await self.poll(None, last_n)


class ChatPollHandler(BasePollHandler):
    """``GET /poll/chat``: chat frames and notifications; ``?chat_id=C`` keeps the poller active in C."""

    streams = (CHAT, NOTIFY)
    transport = "poll_chat"

    @authenticated
    async def get(self):
        """Events after ``?last_event_id=M-N``; ``last_event_id`` of the answer is ``"M-N"`` too."""
        self.services.reads.check(self.user_id)
        active_chat = None
        if self.get_query_argument("chat_id", None):
            active_chat = self.int_argument("chat_id")
            await self.services.chat.require_member(self.user_id, active_chat)
        last_m, last_n = self.resume_ids()
        await self.poll(last_m, last_n, active_chat)

    def last_event_id(self):
        return f"{self.cursor(CHAT)}-{self.cursor(NOTIFY)}"


ROUTES = [
    (r"/poll/notifications", NotificationPollHandler),
    (r"/poll/chat", ChatPollHandler),
]
