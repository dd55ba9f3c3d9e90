"""A test Web Push service (RFC 8030 push endpoint) on 127.0.0.1, and a test browser's keys.

It records every push request, answers with the statuses it is told to (201 by default),
verifies the VAPID ``Authorization`` header against Squall's ``/api/push/key``, and
decrypts the aes128gcm payload with the subscription's private key (``http_ece``).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from urllib.parse import urlparse

import http_ece
import jwt
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.clients import ApiClient


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BrowserKeys:
    """What a browser's PushManager holds for one subscription: a P-256 key pair and an auth secret."""

    def __init__(self):
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.p256dh = b64url(self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))

    def subscription(self, endpoint: str) -> dict:
        """``PushSubscription.toJSON()``."""
        return {"endpoint": endpoint, "expirationTime": None,
                "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> dict:
        """The JSON payload of one aes128gcm push body."""
        return json.loads(http_ece.decrypt(body, private_key=self.private_key, auth_secret=self.auth,
                                           version="aes128gcm"))


def verify_vapid(authorization: str, public_key: str, endpoint: str) -> dict:
    """Check ``vapid t=<jwt>,k=<key>``: signed by ``public_key``, ``aud`` = the endpoint's origin,
    ``exp`` within 24 h. Returns the claims; raises AssertionError or a jwt error."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid", authorization
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert fields["k"] == public_key
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(public_key))
    origin = "{0.scheme}://{0.netloc}".format(urlparse(endpoint))
    claims = jwt.decode(fields["t"], point, algorithms=["ES256"], audience=origin)
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600, claims
    assert claims["sub"].startswith(("mailto:", "https:"))
    return claims


class PushServer:
    """``await PushServer.start()``; ``received`` holds ``(path, headers, body)``; ``statuses`` is a queue.

    ``delay`` (seconds) slows every answer down; a 3xx answer sends ``Location: <location>``.
    """

    def __init__(self):
        self.received = []
        self.arrivals = []  # loop time of each push, as received
        self.statuses = []  # answered in order, then 201
        self.delay = 0.0
        self.location = None
        self._arrived = asyncio.Event()
        self.server = None
        self.port = None

    @classmethod
    async def start(cls) -> "PushServer":
        self = cls()
        outer = self

        class Endpoint(tornado.web.RequestHandler):
            async def post(self, name):
                outer.received.append((self.request.path, dict(self.request.headers), self.request.body))
                outer.arrivals.append(asyncio.get_running_loop().time())
                outer._arrived.set()
                status = outer.statuses.pop(0) if outer.statuses else 201
                if outer.delay:
                    await asyncio.sleep(outer.delay)
                self.set_status(status)
                if status == 503:
                    self.set_header("Retry-After", "0")
                if 300 <= status < 400 and outer.location:
                    self.set_header("Location", outer.location)

        app = tornado.web.Application([(r"/push/([a-z0-9]+)", Endpoint)])
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets(sockets)
        return self

    def endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/push/{name}"

    async def wait_for(self, count: int, timeout: float = 15.0) -> list:
        """Wait until ``count`` pushes have arrived in all; returns them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"only {len(self.received)} of {count} pushes arrived"
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass
        return self.received[:count]

    def stop(self) -> None:
        self.server.stop()


async def subscribe(api: ApiClient, user: dict, endpoint: str, keys: BrowserKeys = None):
    """Subscribe ``user`` to pushes at ``endpoint`` (a test browser's keys, new unless given)."""
    keys = keys or BrowserKeys()
    status, body = await api.call("POST", "/api/push/subscriptions", keys.subscription(endpoint), token=user["token"])
    assert status == 201, body
    return keys
