"""Chats over HTTP: list, create, history, send, mark read, typing, unread counts, message search."""
from tornado_app.errors import ValidationError

from .base import BaseHandler, authenticated


class ChatsHandler(BaseHandler):
    """GET/POST /api/chats."""

    @authenticated
    async def get(self):
        """A page of the caller's chats, most recent activity first: ``?limit=&before=``.

        ``before`` is the last chat id of the previous page (``next_before``); the default
        page size is ``--chats-page-size``, at most 500.
        """
        limit = self.int_argument("limit", self.services.config.chats_page_size, 1, 500)
        before = self.int_argument("before")
        chats = await self.services.chat.list_chats(self.user_id, limit, before)
        self.send_json({"chats": chats, "next_before": chats[-1]["id"] if len(chats) == limit else None})

    @authenticated
    async def post(self):
        """``{user_id}``: the private chat (found or created); ``{member_ids, title}``: a new group."""
        body = self.json_body()
        chat = self.services.chat
        if "user_id" in body and "member_ids" not in body:
            self.send_json({"chat": await chat.open_private_chat(self.user_id, body["user_id"])}, 200)
        elif "member_ids" in body:
            self.send_json({"chat": await chat.create_group(self.user_id, body["member_ids"],
                                                             body.get("title"))}, 201)
        else:
            raise ValidationError("give 'user_id' (private chat) or 'member_ids' and 'title' (group chat)")


class ChatHandler(BaseHandler):
    """GET/PATCH /api/chats/{id}."""

    @authenticated
    async def get(self, chat_id):
        """One chat of the caller, or a group they left or were removed from (``"member": false``)."""
        self.send_json({"chat": await self.services.chat.visible_chat(self.user_id, self.path_id(chat_id))})

    @authenticated
    async def patch(self, chat_id):
        """Rename a group: ``{title}`` (owner, admin); answers the chat (handlers/groups.py has the rest)."""
        body = self.json_body()
        self.send_json({"chat": await self.services.groups.rename(self.user_id, self.path_id(chat_id),
                                                                  body.get("title"))})


class MessagesHandler(BaseHandler):
    """GET/POST /api/chats/{id}/messages."""

    @authenticated
    async def get(self, chat_id):
        """A page of history, oldest to newest: ``?before_id=&limit=`` (default 50, at most 200)."""
        before_id = self.int_argument("before_id")
        limit = self.int_argument("limit", 50, 1, 200)
        messages = await self.services.chat.history(self.user_id, self.path_id(chat_id), before_id, limit)
        self.send_json({"messages": messages})

    @authenticated
    async def post(self, chat_id):
        """Send ``{content, message_type?, client_id?}``; 201 once stored, delivered like a WS send."""
        body = self.json_body()
        body.pop("recipient_id", None)
        body["chat_id"] = self.path_id(chat_id)
        message = await self.services.chat.send_message(self.user_id, body)
        self.send_json({"message": message}, 201)


class MessageHandler(BaseHandler):
    """PATCH/DELETE /api/chats/{id}/messages/{message_id}: edit, delete for everyone (issue 25)."""

    @authenticated
    async def patch(self, chat_id, message_id):
        """``{content}``: the sender edits within ``--edit-window``; answers the ``message_edited`` event."""
        body = self.json_body()
        self.send_json(await self.services.chat.changes.edit(
            self.user_id, self.path_id(chat_id), self.path_id(message_id, "message_id"), body.get("content")))

    @authenticated
    async def delete(self, chat_id, message_id):
        """The sender deletes the message for everyone; answers the ``message_deleted`` event."""
        self.send_json(await self.services.chat.changes.delete(
            self.user_id, self.path_id(chat_id), self.path_id(message_id, "message_id")))


class ReactionHandler(BaseHandler):
    """PUT/DELETE /api/chats/{id}/messages/{message_id}/reactions/{emoji} (issue 25)."""

    @authenticated
    async def put(self, chat_id, message_id, emoji):
        """Add the caller's ``emoji`` (URL-encoded); idempotent. Answers the ``reaction`` event."""
        self.send_json(await self.services.chat.changes.react(
            self.user_id, self.path_id(chat_id), self.path_id(message_id, "message_id"), emoji, True))

    @authenticated
    async def delete(self, chat_id, message_id, emoji):
        """Remove the caller's ``emoji``; idempotent."""
        self.send_json(await self.services.chat.changes.react(
            self.user_id, self.path_id(chat_id), self.path_id(message_id, "message_id"), emoji, False))


class ReadHandler(BaseHandler):
    """POST /api/chats/{id}/read."""

    @authenticated
    async def post(self, chat_id):
        """Mark read up to ``{message_id}``; read receipts and unread updates follow."""
        body = self.json_body()
        self.send_json(await self.services.chat.mark_read(self.user_id, self.path_id(chat_id), body.get("message_id")))


class TypingHandler(BaseHandler):
    """POST /api/chats/{id}/typing."""

    @authenticated
    async def post(self, chat_id):
        """Tell the other members the caller is typing."""
        await self.services.chat.typing(self.user_id, self.path_id(chat_id))
        self.send_json({"ok": True})


class UnreadHandler(BaseHandler):
    """GET /api/unread."""

    @authenticated
    async def get(self):
        """``{total, chats: {chat_id: count}}``; 429 past the per-user read limit."""
        self.services.reads.check(self.user_id)
        self.send_json(await self.services.chat.unread(self.user_id))


class SearchHandler(BaseHandler):
    """GET /api/search."""

    @authenticated
    async def get(self):
        """Messages of the caller's chats matching ``q``: ``?q=&chat_id=&limit=&cursor=``.

        Best match first; ``limit`` 20 by default, at most 50; ``cursor`` is the previous
        page's ``next_cursor``. 404 for a ``chat_id`` the caller is not a member of.
        """
        chat_id = self.int_argument("chat_id")
        if chat_id is not None:
            await self.services.chat.require_member(self.user_id, chat_id)
        limit = self.int_argument("limit", 20, 1, 50)
        self.send_json(await self.services.search.search(
            self.user_id, self.get_query_argument("q", None), chat_id, limit, self.get_query_argument("cursor", None)))


ROUTES = [
    (r"/api/chats", ChatsHandler),
    (r"/api/chats/([0-9]{1,18})", ChatHandler),
    (r"/api/chats/([0-9]{1,18})/messages", MessagesHandler),
    (r"/api/chats/([0-9]{1,18})/messages/([0-9]{1,18})", MessageHandler),
    (r"/api/chats/([0-9]{1,18})/messages/([0-9]{1,18})/reactions/([^/]{1,200})", ReactionHandler),
    (r"/api/chats/([0-9]{1,18})/read", ReadHandler),
    (r"/api/chats/([0-9]{1,18})/typing", TypingHandler),
    (r"/api/unread", UnreadHandler),
    (r"/api/search", SearchHandler),
]
