"""Notification preferences, chat mutes and Web Push subscriptions over HTTP (issue 11)."""
from tornado_app.errors import ValidationError
from tornado_app.services.delivery.preferences import parse_time

from .base import BaseHandler, authenticated, public


class PreferencesHandler(BaseHandler):
    """GET/PATCH /api/me/preferences."""

    @authenticated
    async def get(self):
        """``{sound, toasts, push, dnd_until, muted_types}`` with the defaults filled in."""
        self.send_json(await self.services.preferences.preferences(self.user_id))

    @authenticated
    async def patch(self):
        """Merge the given fields; every stream of the user gets a ``preferences`` event."""
        self.send_json(await self.services.preferences.update(self.user_id, self.json_body()))


class MuteHandler(BaseHandler):
    """PUT/DELETE /api/chats/{id}/mute."""

    @authenticated
    async def put(self, chat_id):
        """Mute the chat ``{until: ISO time | null}`` (null: until unmuted)."""
        chat_id = self.path_id(chat_id)
        body = self.json_body()
        if "until" not in body:
            raise ValidationError("give 'until': an ISO time, or null to mute until unmuted")
        until = parse_time(body["until"], "until")
        await self.services.chat.require_member(self.user_id, chat_id)
        self.send_json(await self.services.preferences.set_mute(self.user_id, chat_id, until))

    @authenticated
    async def delete(self, chat_id):
        """Unmute the chat."""
        chat_id = self.path_id(chat_id)
        await self.services.chat.require_member(self.user_id, chat_id)
        self.send_json(await self.services.preferences.clear_mute(self.user_id, chat_id))


class PushKeyHandler(BaseHandler):
    """GET /api/push/key."""

    @public
    async def get(self):
        """``{public_key}``: the VAPID application server key for ``PushManager.subscribe``."""
        self.send_json({"public_key": self.services.push.public_key})


class PushSubscriptionsHandler(BaseHandler):
    """GET/POST/DELETE /api/push/subscriptions."""

    @authenticated
    async def get(self):
        """The caller's subscriptions, newest first."""
        self.send_json({"subscriptions": await self.services.push.listing(self.user_id)})

    @authenticated
    async def post(self):
        """Store ``PushSubscription.toJSON()`` (``{endpoint, keys: {p256dh, auth}}``); 201."""
        agent = self.request.headers.get("User-Agent", "")
        self.send_json({"subscription": await self.services.push.subscribe(self.user_id, self.json_body(), agent)},
                       201)

    @authenticated
    async def delete(self):
        """Delete the caller's subscription: ``?endpoint=`` (or a JSON body ``{endpoint}``)."""
        endpoint = self.get_query_argument("endpoint", None)
        if endpoint is None:
            endpoint = self.json_body().get("endpoint")
        await self.services.push.unsubscribe(self.user_id, endpoint)
        self.send_json({"deleted": True})


ROUTES = [
    (r"/api/me/preferences", PreferencesHandler),
    (r"/api/chats/([0-9]{1,18})/mute", MuteHandler),
    (r"/api/push/key", PushKeyHandler),
    (r"/api/push/subscriptions", PushSubscriptionsHandler),
]
