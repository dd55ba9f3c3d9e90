"""Webhook settings a server refuses to start with (issue 23): one line, before anything runs.

The URL is read by the parser the sender uses (``urllib.parse.urlsplit``, as Tornado's client
does); the secret is a Standard Webhooks ``whsec_`` secret of 24 to 64 bytes; every number has
a range, tested at its ends and just past them.
"""
from __future__ import annotations

import base64

import pytest

from tornado_app.config import Config, load_config
from tornado_app.services.outbound.webhooks import (MAX_URL, backoff, check_webhook_config, parse_webhook_url,
                                                    retry_after_seconds)


def secret(n: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * n).decode()


GOOD = ["--webhook-url", "https://hooks.example.com/squall?x=1", "--webhook-secret", secret(32)]


def test_a_good_setup_and_the_defaults_load():
    _, config = load_config(GOOD)
    assert config.webhook_url.startswith("https://") and config.webhook_timeout == 10.0
    _, config = load_config([])
    assert (config.webhook_url, config.presence_grace, config.unseen_delay, config.webhook_retry_window) == \
        ("", 5.0, 600.0, 86400.0)


@pytest.mark.parametrize("url, says", [
    ("ftp://hooks.example.com/x", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("http:///nohost", "no host"),
    ("https://user:pass@hooks.example.com/x", "user:password@"),
    ("https://token@hooks.example.com/x", "user:password@"),
    ("https://hooks.example.com/x#frag", "fragment"),
    ("https://hooks.example.com:99999/x", "port"),
    ("https://hooks.example.com/a b", "at most"),
    ("https://127.0.0.2\\@hooks.example.com/x", "at most"),
    ("https://hooks.example.com/é", "at most"),
    ("https://hooks.example.com/" + "a" * MAX_URL, "at most"),
])
def test_bad_urls_are_refused_at_start(url, says):
    with pytest.raises(SystemExit) as exc:
        load_config(["--webhook-url", url, "--webhook-secret", secret(32)])
    assert says in str(exc.value)


def test_the_url_limit_is_inclusive():
    base = "https://hooks.example.com/"
    parse_webhook_url(base + "a" * (MAX_URL - len(base)))
    with pytest.raises(ValueError):
        parse_webhook_url(base + "a" * (MAX_URL - len(base) + 1))


@pytest.mark.parametrize("value, ok", [
    (secret(24), True), (secret(64), True), (secret(23), False), (secret(65), False),
    ("whsec_not*base64", False), (base64.b64encode(b"k" * 32).decode(), False), ("", False),
])
def test_secrets_must_be_whsec_base64_of_24_to_64_bytes(value, ok):
    argv = ["--webhook-url", "http://127.0.0.1:9/h", "--webhook-secret", value]
    if ok:
        load_config(argv)
    else:
        with pytest.raises(SystemExit) as exc:
            load_config(argv)
        assert "--webhook-secret" in str(exc.value)
        assert value[6:] not in str(exc.value) or not value[6:]  # the secret itself is never echoed


@pytest.mark.parametrize("name, low, high", [
    ("webhook_timeout", 0.5, 60.0), ("webhook_retry_window", 1.0, 7 * 86400.0), ("webhook_concurrency", 1, 256),
    ("presence_grace", 0.0, 3600.0), ("unseen_delay", 1.0, 7 * 86400.0),
])
def test_every_number_has_a_range(name, low, high):
    step = 1 if isinstance(low, int) else 0.01
    for value in (low, high):
        check_webhook_config(Config(**{name: value}))
    for value in (low - step, high + step):
        with pytest.raises(ValueError):
            check_webhook_config(Config(**{name: value}))


def test_backoff_is_full_jitter_capped_and_retry_after_wins():
    import random
    rng = random.Random(1)
    for attempts, bound in ((1, 1.0), (2, 2.0), (5, 16.0), (40, 3600.0)):
        delays = [backoff(attempts, None, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays) and max(delays) > bound / 2
    assert backoff(3, 2.0, rng) == 2.0
    assert backoff(3, 10_000.0, rng) == 600.0  # Retry-After is capped
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert 0 <= retry_after_seconds("Fri, 04 Dec 2026 15:00:00 GMT") < 10 ** 9
