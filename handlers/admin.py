"""The admin console's API: ``GET /api/admin/summary`` and ``POST /api/admin/announce`` (admins only)."""
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


ROUTES = [
    (r"/api/admin/summary", SummaryHandler),
    (r"/api/admin/announce", AnnounceHandler),
]
