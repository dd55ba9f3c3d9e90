"""Brokers between processes: memory (one process), Redis pub/sub, PostgreSQL LISTEN/NOTIFY.

The factory lives here, not in ``base``: the backends import ``base``, and ``base`` imports none
of them, so there is no circle between the modules of this package.
"""
from .base import Broker, BrokerUnavailable, check_prefix

__all__ = ["Broker", "BrokerUnavailable", "create_broker"]


def create_broker(url: str, origin: str, **options) -> Broker:
    """The broker for ``url`` (memory, redis://, redis+cluster://, postgresql://); drivers import lazily.

    ``prefix=`` (``--broker-prefix``) starts every name; a URL's ``?prefix=`` does the same,
    and giving both is refused (ValueError): one of them would be silently ignored.
    """
    prefix = options.pop("prefix", "") or ""
    if prefix:
        check_prefix(prefix)
        from urllib.parse import parse_qsl, urlparse
        if any(key == "prefix" for key, _ in parse_qsl(urlparse(url).query)):
            raise ValueError("give the broker prefix once: --broker-prefix or the URL's ?prefix=, not both")
        options["prefix"] = prefix
    if url in ("memory", "memory://", ""):
        from .memory import MemoryBroker
        return MemoryBroker(origin)
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from .cluster import RedisClusterBroker
        return RedisClusterBroker(origin, url, **options)
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .redis import RedisBroker
        except ImportError as exc:  # pragma: no cover - redis is in requirements.txt
            raise RuntimeError("the Redis broker needs the 'redis' package: pip install redis") from exc
        return RedisBroker(origin, url, **options)
    if url.startswith(("postgres://", "postgresql://")):
        from .postgres import PostgresBroker
        return PostgresBroker(origin, url, **options)
    raise ValueError(f"unsupported broker URL {url!r}: use memory, redis://…, redis+cluster://… or postgresql://…")
