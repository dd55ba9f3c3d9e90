"""The service API for the product's backend (issue 22): users, chats and messages by external id.

Every route takes only the service token (``Authorization: Bearer <SERVICE_TOKEN>``); a
user's token gets 403 ``invalid_service_token``. External ids in paths arrive URL-decoded
(Tornado unquotes path groups) and are checked by the service.
"""
from .base import BaseHandler, service_only

EXTERNAL_ID = r"([^/]+)"
CHAT_ID = r"([0-9]{1,18})"


class ServiceUserHandler(BaseHandler):
    """PUT/DELETE /api/service/users/{external_id}."""

    @service_only
    async def put(self, external_id):
        """Upsert ``{display_name?, avatar_url?, disabled?}``: 201 when created, else 200, with the user."""
        user, created = await self.services.service_api.upsert_user(external_id, self.json_body())
        self.send_json({"user": user}, 201 if created else 200)

    @service_only
    async def delete(self, external_id):
        """Erase the user's account and personal data; their messages stay as "Deleted user"."""
        self.send_json(await self.services.service_api.delete_user(external_id))


class ServiceRevokeHandler(BaseHandler):
    """POST /api/service/users/{external_id}/revoke."""

    @service_only
    async def post(self, external_id):
        """Refuse the user's tokens issued until now; every stream of the user closes (``logged_out``)."""
        self.send_json(await self.services.service_api.revoke_user(external_id))


class ServiceUserChatsHandler(BaseHandler):
    """GET /api/service/users/{external_id}/chats."""

    @service_only
    async def get(self, external_id):
        """A page of the user's chats with unread counts: ``?limit=&before=`` as ``GET /api/chats``."""
        limit = self.int_argument("limit", self.services.config.chats_page_size, 1, 500)
        before = self.int_argument("before")
        self.send_json(await self.services.service_api.user_chats(external_id, limit, before))


class ServiceChatsHandler(BaseHandler):
    """POST /api/service/chats."""

    @service_only
    async def post(self):
        """Create ``{kind, members, title?, key?}``: 201 when created, 200 for the chat the key (or pair) names."""
        chat, created = await self.services.service_api.create_chat(self.json_body())
        self.send_json({"chat": chat}, 201 if created else 200)


class ServiceMembersHandler(BaseHandler):
    """POST /api/service/chats/{id}/members."""

    @service_only
    async def post(self, chat_id):
        """Add ``{external_ids}`` to a group chat; those already in are left as they are."""
        self.send_json(await self.services.service_api.add_members(self.path_id(chat_id), self.json_body()))


class ServiceMemberHandler(BaseHandler):
    """DELETE /api/service/chats/{id}/members/{external_id}."""

    @service_only
    async def delete(self, chat_id, external_id):
        """Remove a member of a group chat; it stops receiving the chat at once, on every process."""
        self.send_json(await self.services.service_api.remove_member(self.path_id(chat_id), external_id))


class ServiceMessagesHandler(BaseHandler):
    """POST /api/service/chats/{id}/messages."""

    @service_only
    async def post(self, chat_id):
        """Post ``{sender?, content, message_type?, client_id?}``: 201 when stored, 200 for a repeated client_id."""
        message, created = await self.services.service_api.post_message(self.path_id(chat_id), self.json_body())
        self.send_json({"message": message}, 201 if created else 200)


ROUTES = [
    (rf"/api/service/users/{EXTERNAL_ID}", ServiceUserHandler),
    (rf"/api/service/users/{EXTERNAL_ID}/revoke", ServiceRevokeHandler),
    (rf"/api/service/users/{EXTERNAL_ID}/chats", ServiceUserChatsHandler),
    (r"/api/service/chats", ServiceChatsHandler),
    (rf"/api/service/chats/{CHAT_ID}/members", ServiceMembersHandler),
    (rf"/api/service/chats/{CHAT_ID}/members/{EXTERNAL_ID}", ServiceMemberHandler),
    (rf"/api/service/chats/{CHAT_ID}/messages", ServiceMessagesHandler),
]
