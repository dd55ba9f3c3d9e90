"""Groups that change and presence over HTTP (issue 25): members, roles, leaving, ``GET /api/presence``.

Renaming is ``PATCH /api/chats/{id}`` in handlers/chats.py (same path as the chat itself).
"""
from .base import BaseHandler, authenticated


class MembersHandler(BaseHandler):
    """POST /api/chats/{id}/members."""

    @authenticated
    async def post(self, chat_id):
        """Add ``{user_id}`` to a group (owner, admin); 201 with the chat."""
        body = self.json_body()
        chat = await self.services.groups.add_member(self.user_id, self.path_id(chat_id), body.get("user_id"))
        self.send_json({"chat": chat}, 201)


class MemberHandler(BaseHandler):
    """PATCH/DELETE /api/chats/{id}/members/{user_id}."""

    @authenticated
    async def patch(self, chat_id, user_id):
        """Set ``{role}`` (``admin``, ``member``, or ``owner`` to transfer ownership): the owner only."""
        body = self.json_body()
        chat = await self.services.groups.set_role(self.user_id, self.path_id(chat_id),
                                                   self.path_id(user_id, "user_id"), body.get("role"))
        self.send_json({"chat": chat})

    @authenticated
    async def delete(self, chat_id, user_id):
        """Remove a member (owner; admin: members only), or leave (your own id): ``removed_at_message_id``."""
        self.send_json(await self.services.groups.remove_member(self.user_id, self.path_id(chat_id),
                                                                self.path_id(user_id, "user_id")))


class PresenceHandler(BaseHandler):
    """GET /api/presence."""

    @authenticated
    async def get(self):
        """``?user_ids=1,2``: ``{"presence": [{user_id, online, last_seen}]}`` of those who share a chat with you."""
        presence = self.services.presence
        ids = presence.parse_ids(self.get_query_argument("user_ids", None))
        self.send_json({"presence": await presence.lookup(self.user_id, ids)})


ROUTES = [
    (r"/api/chats/([0-9]{1,18})/members", MembersHandler),
    (r"/api/chats/([0-9]{1,18})/members/([0-9]{1,18})", MemberHandler),
    (r"/api/presence", PresenceHandler),
]
