"""``login``: how long a good sign-in takes while a flood of bad ones hits the server.

One Squall process with the production password hashing (argon2id ``standard``), the default
hashing pool (2 threads, 16 queued, 2 per client address) and ``--trusted-proxies 127.0.0.1/32``
so that ``X-Forwarded-For`` names the (simulated) client addresses. The attacker sends waves
of ``flood`` concurrent logins with wrong passwords from one address; meanwhile the real user
signs in from another address, ``good_logins`` times. Reported: the good login's latency
without and during the flood, its statuses, and what the flood got (401 checked, 429 limited,
503 refused at once because the pool or the address was full).
"""
from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections import Counter

from .protocols import HTTPConn
from .servers import squall

ATTACKER = "203.0.113.66"
USER_ADDRESS = "198.51.100.7"


async def _login(port: int, username: str, password: str, address: str):
    conn = HTTPConn("127.0.0.1", port)
    started = time.perf_counter()
    try:
        status, _ = await conn.request("POST", "/api/auth/login", {"username": username, "password": password},
                                       headers={"X-Forwarded-For": address})
    finally:
        conn.close()
    return status, (time.perf_counter() - started) * 1000


async def _measure(port: int, flood: int, good_logins: int) -> dict:
    username = "alice_" + uuid.uuid4().hex[:6]
    conn = HTTPConn("127.0.0.1", port)
    status, _ = await conn.request("POST", "/api/auth/register", {"username": username, "password": "password123"},
                                   headers={"X-Forwarded-For": USER_ADDRESS})
    conn.close()
    if status != 201:
        raise RuntimeError(f"could not register the bench user: {status}")
    idle = [await _login(port, username, "password123", USER_ADDRESS) for _ in range(good_logins)]
    flood_codes: Counter = Counter()
    during = []
    for n in range(good_logins):
        wave = [asyncio.ensure_future(_login(port, f"nobody{n}_{i}", "wrong-password", ATTACKER))
                for i in range(flood)]
        await asyncio.sleep(0.01)  # the wave is in flight
        during.append(await _login(port, username, "password123", USER_ADDRESS))
        for status, _ in await asyncio.gather(*wave):
            flood_codes[status] += 1
    return {
        "flood_concurrency": flood,
        "good_logins": good_logins,
        "good_login_idle_p50_ms": round(statistics.median(ms for _, ms in idle), 1),
        "good_login_flood_p50_ms": round(statistics.median(ms for _, ms in during), 1),
        "good_login_flood_max_ms": round(max(ms for _, ms in during), 1),
        "good_login_statuses": dict(Counter(str(status) for status, _ in idle + during)),
        "good_login_ok": all(status == 200 for status, _ in idle + during),
        "flood_statuses": {str(k): v for k, v in sorted(flood_codes.items())},
    }


def run_login_flood(workdir: str, pin: dict, flood: int, good_logins: int, log=print) -> dict:
    """Start a server with production hashing, measure, stop it."""
    server = squall("squall-login", f"sqlite:///{os.path.join(workdir, 'login.db')}", workdir, pin)
    # later flags win: production hashing and the default pool, forwarded addresses believed
    server.argv += ["--password-hash-profile", "standard", "--trusted-proxies", "127.0.0.1/32",
                    "--hash-per-address", "2", "--hash-queue", "16"]
    server.start()
    try:
        result = asyncio.run(_measure(server.port, flood, good_logins))
    finally:
        server.stop()
    log(f"  good login: {result['good_login_idle_p50_ms']} ms alone, {result['good_login_flood_p50_ms']} ms "
        f"(max {result['good_login_flood_max_ms']} ms) during {flood} concurrent bad logins; "
        f"flood got {result['flood_statuses']}")
    return result
