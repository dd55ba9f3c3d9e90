"""Health checks: ``/healthz`` (process up) and ``/readyz`` (database and broker reachable)."""
import asyncio

from .base import BaseHandler, public


class HealthHandler(BaseHandler):
    """GET /healthz."""

    @public
    def get(self):
        """200 while the process serves; 503 once it is shutting down."""
        if self.services.closing:
            self.send_json({"status": "shutting_down"}, 503)
        else:
            self.send_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    """GET /readyz."""

    @public
    async def get(self):
        """200 when the database and the broker answer within 2 s; 503 with what failed."""
        checks = {}
        try:
            await asyncio.wait_for(self.services.dbx.check(), 2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            await asyncio.wait_for(self.services.broker.ping(), 2)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values()) and not self.services.closing
        self.send_json({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


ROUTES = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
]
