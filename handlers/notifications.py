"""Notifications over HTTP: history, clear, read, the publish API for backends, a test event."""
import time

from tornado_app.services.storage.ids import require_ids

from .base import BaseHandler, authenticated, service_only


def _ids(body: dict):
    ids = body.get("ids")
    return None if ids is None else require_ids(ids, "ids")


class NotificationsHandler(BaseHandler):
    """GET /api/notifications (user) and POST /api/notifications (publish API, service token)."""

    @authenticated
    async def get(self):
        """History, newest first: ``?before_id=&limit=`` (default 50, at most 200)."""
        before_id = self.int_argument("before_id")
        limit = self.int_argument("limit", 50, 1, 200)
        items = await self.services.notifications.history(self.user_id, before_id, limit)
        self.send_json({"notifications": items})

    @service_only
    async def post(self):
        """Publish ``{user_ids? external_ids? | broadcast, type?, message, data?, push?}``; 202 with the ids and skipped users."""
        self.send_json(await self.services.service_api.publish(self.json_body()), 202)


class ClearHandler(BaseHandler):
    """POST /api/notifications/clear."""

    @authenticated
    async def post(self):
        """Clear all notifications, or ``{ids}``, or those of one ``{type}`` (the test page clears ``test``)."""
        body = self.json_body()
        count = await self.services.notifications.clear(self.user_id, _ids(body), body.get("type"))
        self.send_json({"cleared": count})


class MarkReadHandler(BaseHandler):
    """POST /api/notifications/read."""

    @authenticated
    async def post(self):
        """Mark all notifications read, or ``{ids}``."""
        count = await self.services.notifications.mark_read(self.user_id, _ids(self.json_body()))
        self.send_json({"read": count})


class TestEventHandler(BaseHandler):
    """POST /api/notifications/test: a ``test`` notification to oneself (the test page's probe)."""

    @authenticated
    async def post(self):
        """Store and deliver a ``test`` notification whose timestamp is the server's clock."""
        item = await self.services.notifications.send_test(self.user_id, int(time.time() * 1000))
        self.send_json({"notification": item}, 201)


ROUTES = [
    (r"/api/notifications", NotificationsHandler),
    (r"/api/notifications/clear", ClearHandler),
    (r"/api/notifications/read", MarkReadHandler),
    (r"/api/notifications/test", TestEventHandler),
]
