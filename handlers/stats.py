"""``GET /api/stats`` (service token): this process's live connections, for operators and tests."""
from tornado_app.services.delivery.events import CHAT, NOTIFY

from .base import BaseHandler, service_only


class StatsHandler(BaseHandler):
    """GET /api/stats."""

    @service_only
    def get(self):
        """``{connections: {total, chat, notifications}, notification_streams_by_user: {id: n}}`` of this process."""
        registry = self.services.registry
        by_user = {}
        for conn in registry.all(NOTIFY):
            key = str(conn.user_id)
            by_user[key] = by_user.get(key, 0) + 1
        self.send_json({"connections": {"total": registry.count(), "chat": registry.count(CHAT),
                                        "notifications": registry.count(NOTIFY)},
                        "notification_streams_by_user": by_user})


ROUTES = [
    (r"/api/stats", StatsHandler),
]
