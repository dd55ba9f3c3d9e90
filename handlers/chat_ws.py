"""``/ws/chat``: send, join/leave (presence), typing, mark read, ping; acks and errors per frame."""
from __future__ import annotations

import logging

from tornado_app.errors import SquallError, ValidationError
from tornado_app.services.delivery.events import CHAT
from tornado_app.services.storage.ids import require_id

from .base import client_error
from .streams import parse_last_event_id
from .websocket import BaseSocketHandler

log = logging.getLogger("squall.ws.chat")


class ChatSocketHandler(BaseSocketHandler):
    """The chat stream of one user: messages of all the user's chats, typing, read receipts."""

    streams = (CHAT,)
    transport = "ws_chat"

    def resume_position(self):
        """``?last_event_id=M`` replays messages after id M (or ``M-N``: M is used)."""
        raw = self.get_query_argument("last_event_id", None)
        if raw and "-" not in raw:
            raw = f"{raw}-0"
        m, _ = parse_last_event_id(raw)
        return m, None

    def on_message(self, raw):
        """Dispatch one client frame (a coroutine); frames that arrive during shutdown are dropped.

        The socket is closing with 1001 then, and a task started now may be cancelled before
        it runs when the loop stops (logged as an error); the client resends unacknowledged
        sends after reconnecting.
        """
        if self.services.closing:
            return None
        return self.handle_frame(raw)

    async def handle_frame(self, raw):
        """Run one client frame; a bad frame gets an error frame and the socket stays open."""
        client_id = None
        try:
            frame = self.parse_frame(raw)
            client_id = self.frame_client_id(frame)
            action = self.ACTIONS.get(frame["type"])
            if action is None:
                raise ValidationError(f"Unknown frame type {frame['type'][:40]!r}", "unknown_type")
            await action(self, frame)
        except SquallError as exc:
            self.send_error_frame(exc, client_id if client_id is not None else getattr(exc, "client_id", None))
        except Exception as raised:
            known = client_error(raised)
            if known is None:
                log.error("chat frame failed (%s)", type(raised).__name__, exc_info=raised)
                known = SquallError("Something went wrong on the server", "internal_error", 500)
            self.send_error_frame(known, client_id)

    async def do_send(self, frame: dict) -> None:
        """``send_message``: ack to this socket after commit; ``message`` to every other socket."""
        message = await self.services.chat.send_message(self.authenticated_user_id, frame,
                                                        exclude_conn=self.conn_id)
        self.send_json({"type": "message_ack", "client_id": message["client_id"], "message": message})

    async def do_join(self, frame: dict) -> None:
        """``join_chat``: this user is active in the chat (no notifications) while joined here."""
        chat_id = require_id(frame.get("chat_id"), "chat_id")
        await self.services.chat.require_member(self.authenticated_user_id, chat_id)
        await self.services.hub.join(self.live_connection(), chat_id)
        self.send_json({"type": "joined", "chat_id": chat_id})

    async def do_leave(self, frame: dict) -> None:
        """``leave_chat``: no longer active in the chat on this connection."""
        chat_id = require_id(frame.get("chat_id"), "chat_id")
        await self.services.chat.require_member(self.authenticated_user_id, chat_id)
        await self.services.hub.leave(self.live_connection(), chat_id)
        self.send_json({"type": "left", "chat_id": chat_id})

    async def do_typing(self, frame: dict) -> None:
        """``typing``: tell the other members."""
        await self.services.chat.typing(self.authenticated_user_id, frame.get("chat_id"))

    async def do_mark_read(self, frame: dict) -> None:
        """``mark_read``: move the read position; receipts to the others."""
        await self.services.chat.mark_read(self.authenticated_user_id, frame.get("chat_id"), frame.get("message_id"),
                                           wait=False)

    async def do_edit(self, frame: dict) -> None:
        """``edit_message`` (``chat_id``, ``message_id``, ``content``) → ``message_edited`` to every member's stream."""
        await self.services.chat.changes.edit(self.authenticated_user_id, frame.get("chat_id"), frame.get("message_id"),
                                              frame.get("content"))

    async def do_delete(self, frame: dict) -> None:
        """``delete_message`` (``chat_id``, ``message_id``) → ``message_deleted`` to every member's stream."""
        await self.services.chat.changes.delete(self.authenticated_user_id, frame.get("chat_id"), frame.get("message_id"))

    async def do_react(self, frame: dict) -> None:
        """``react`` (``chat_id``, ``message_id``, ``emoji``) → ``reaction`` (nothing when already there)."""
        await self.services.chat.changes.react(self.authenticated_user_id, frame.get("chat_id"), frame.get("message_id"),
                                               frame.get("emoji"), True)

    async def do_unreact(self, frame: dict) -> None:
        """``unreact`` (``chat_id``, ``message_id``, ``emoji``) → ``reaction`` with ``added: false``."""
        await self.services.chat.changes.react(self.authenticated_user_id, frame.get("chat_id"), frame.get("message_id"),
                                               frame.get("emoji"), False)

    async def do_ping(self, frame: dict) -> None:
        """``ping`` → ``pong``."""
        self.send_json({"type": "pong"})

    async def do_refresh(self, frame: dict) -> None:
        """``refresh``: a new access token extends this connection (``refreshed``)."""
        self.apply_refresh(frame)

    ACTIONS = {
        "refresh": do_refresh,
        "send_message": do_send,
        "join_chat": do_join,
        "leave_chat": do_leave,
        "typing": do_typing,
        "mark_read": do_mark_read,
        "ping": do_ping,
        "edit_message": do_edit,
        "delete_message": do_delete,
        "react": do_react,
        "unreact": do_unreact,
    }


ROUTES = [
    (r"/ws/chat", ChatSocketHandler),
]
