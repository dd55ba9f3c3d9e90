"""One scrape of ``/metrics``, parsed."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


METRICS_TOKEN = "test-metrics-token"


async def scrape(api) -> dict:
    """``{(sample name, ((label, value), ...)): value}`` of one scrape (parsed by prometheus_client)."""
    status, text = await api.call("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200, text
    assert api.last_headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples
