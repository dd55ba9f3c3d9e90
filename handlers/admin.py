"""The admin console's API (admins only): ``GET /api/admin/summary``, ``POST /api/admin/announce``,
``GET /api/admin/webhooks`` and ``POST /api/admin/webhooks/{id}/retry`` (issue 23)."""
from tornado_app.errors import ValidationError

from .base import BaseHandler, admin_only


class SummaryHandler(BaseHandler):
    """GET /api/admin/summary."""

    @admin_only
    def get(self):
        """Connections, rates, latency and errors of the host's live workers, with a 15-minute series."""
        self.send_json(self.services.monitor.summary())


class AnnounceHandler(BaseHandler):
    """POST /api/admin/announce."""

    @admin_only
    async def post(self):
        """``{message, usernames?: [...]}``: an announcement to those users (or everyone) via the publish path."""
        body = self.json_body()
        usernames = body.get("usernames")
        request = {"type": "announcement", "message": body.get("message")}
        if usernames is None:
            request["broadcast"] = True
        else:
            if (not isinstance(usernames, list) or not usernames or len(usernames) > 1000
                    or not all(isinstance(u, str) for u in usernames)):
                raise ValidationError("'usernames' must be a non-empty list of at most 1000 usernames")
            request["user_ids"] = list((await self.services.users.ids_of(usernames)).values())
        ids = await self.services.notifications.publish(request)
        self.send_json({"ids": ids, "recipients": "everyone" if usernames is None else len(request["user_ids"])},
                       201)


class WebhooksHandler(BaseHandler):
    """GET /api/admin/webhooks."""

    @admin_only
    async def get(self):
        """``?status=pending|delivered|failed&limit=1..200`` (default 50): the newest deliveries, no bodies."""
        status = self.get_query_argument("status", None) or None
        limit = self.int_argument("limit", 50, maximum=200)
        self.send_json(await self.services.webhooks.recent(limit, status))


class WebhookRetryHandler(BaseHandler):
    """POST /api/admin/webhooks/{id}/retry."""

    @admin_only
    async def post(self, raw_id):
        """Send a failed delivery again (a fresh retry window): 200 with it; 404 ``delivery_not_found``,
        409 ``not_failed`` or ``webhooks_disabled``."""
        self.send_json(await self.services.webhooks.retry(self.path_id(raw_id, "id")))


ROUTES = [
    (r"/api/admin/summary", SummaryHandler),
    (r"/api/admin/announce", AnnounceHandler),
    (r"/api/admin/webhooks", WebhooksHandler),
    (r"/api/admin/webhooks/([0-9]{1,18})/retry", WebhookRetryHandler),
]
