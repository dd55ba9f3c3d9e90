"""Operations: what keeps a process observable and within its limits.

- ``Metrics`` and ``MetricsHub``: counters on the hot paths, the Prometheus text at scrape time.
- ``Monitor``: probes the database and the broker, shares this worker's figures, keeps history.
- ``RateLimiter`` (token buckets per key, ``address_key``), ``MessageQuota`` and ``ReadLimit``.

Uses only ``storage``.
"""
from .metrics import Metrics, MetricsHub
from .monitor import Monitor
from .ratelimit import RateLimiter, address_key
from .usage import MessageQuota, ReadLimit

__all__ = ["Metrics", "MetricsHub", "Monitor", "RateLimiter", "address_key", "MessageQuota", "ReadLimit"]
