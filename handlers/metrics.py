"""``GET /metrics``: the Prometheus text format of every live worker of this host."""
import hmac

from prometheus_client import CONTENT_TYPE_LATEST

from tornado_app.errors import Forbidden, Unauthorized

from .base import BaseHandler


def metrics_scrape(method):
    """Mark the scrape route: it takes the metrics token, or the separate metrics listener."""
    method.squall_access = "metrics"
    return method


class MetricsHandler(BaseHandler):
    """GET /metrics."""

    @metrics_scrape
    def get(self):
        """The figures; 401 without the ``--metrics-token`` bearer, 403 on the main port when none is set."""
        config = self.services.config
        if not self.settings.get("metrics_listener"):
            if not config.metrics_token:
                raise Forbidden("/metrics is off on this port: set --metrics-token, or scrape --metrics-port",
                                "metrics_disabled")
            token = self.bearer_token() or ""
            if not hmac.compare_digest(token.encode(), config.metrics_token.encode()):
                raise Unauthorized("A valid metrics token is required", "invalid_metrics_token")
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.services.metrics.exposition())


ROUTES = [
    (r"/metrics", MetricsHandler),
]
