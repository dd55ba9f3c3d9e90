"""``/ws/notifications``: the user's app-wide notification stream over a WebSocket."""
from __future__ import annotations

from tornado_app.errors import SquallError, ValidationError
from tornado_app.services.delivery.events import NOTIFY

from .streams import parse_last_event_id
from .websocket import BaseSocketHandler


class NotificationSocketHandler(BaseSocketHandler):
    """``/ws/notifications``: the user's app-wide stream; resumes from ``?last_event_id=N``."""

    streams = (NOTIFY,)
    transport = "ws_notifications"
    notify_baseline = False  # every event carries its own id: no cursor to seed

    def resume_position(self):
        """``?last_event_id=N``: replay notifications after N."""
        _, n = parse_last_event_id(self.get_query_argument("last_event_id", None))
        return None, n

    def on_message(self, raw):
        """Only ``ping`` and ``refresh`` are expected from the client; anything else gets an error frame.

        Synchronous: no task per frame, so none is left to be cancelled at shutdown.
        """
        frame = None
        try:
            frame = self.parse_frame(raw)
            if frame["type"] == "refresh":
                self.apply_refresh(frame)
                return
            if frame["type"] != "ping":
                raise ValidationError(f"Unknown frame type {frame['type'][:40]!r}", "unknown_type")
            self.send_json({"type": "pong"})
        except SquallError as exc:
            self.send_error_frame(exc, self.frame_client_id(frame) if frame else getattr(exc, "client_id", None))


ROUTES = [
    (r"/ws/notifications", NotificationSocketHandler),
]
