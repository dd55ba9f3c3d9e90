"""Web Push: VAPID keys, subscriptions, and pushes to users who have no stream open anywhere.

Flow: a notification is delivered → ``offer`` (memory only: the user's cached preferences
say push is on, not Do Not Disturb, and they have subscriptions) → ``_consider`` asks the
broker whether the user has a notification stream on any process (``Hub.online_users``) →
each subscription's push is queued in its user's queue → ``push_threads`` threads take pushes
from the users' queues in turn (round-robin), encrypt them (``pywebpush``/``http-ece``), sign
them (``py-vapid``) and POST them with urllib3 to the checked address (``push_transport``),
off the event loop.

A push service answering 404/410 has forgotten the subscription: it is deleted. 429, 5xx and
network errors are retried ``retries`` times with exponential backoff (1 s, 2 s, 4 s, …, or
the service's ``Retry-After`` up to 60 s); the wait happens on the event loop, not in a
thread, and the push then joins the back of its user's queue. Any other answer (3xx
included: redirects are never followed) is a failed push. Past ``queue`` pushes waiting,
backing off or in flight, or ``queue_per_user`` of one user's, new ones are dropped and
counted: delivery to live connections never waits for a push, and one user's burst takes
its turn like everyone else's instead of delaying them.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import logging
import re
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Deque, Dict, List, Optional, Set

import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from models import PushSubscription, Setting, utcnow
from ...config import Config
from ...errors import NotFound, ValidationError
from ...tasks import spawn
from ..storage.db import DatabaseExecutor
from ..delivery.control import SubscriptionsChanged
from ..delivery.hub import Hub
from ..operations.metrics import Metrics
from ..delivery.preferences import PreferenceService
from .push_transport import PushRefused, PushTarget, parse_endpoint, post, resolve

log = logging.getLogger("squall.push")

VAPID_SETTING = "vapid_private_key"
MAX_ENDPOINT = 2048
MAX_PAYLOAD = 3000  # bytes of JSON before encryption (push services take ~4 KB encrypted)
BODY_CHARS = 200
RETRY_AFTER_MAX = 60.0
VAPID_LIFETIME = 12 * 3600  # seconds a VAPID signature is valid (push services take up to 24 h)
BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# The HTTP client's loggers name the request path, which is the endpoint's capability: a
# debug line "POST /fcm/send/<id>" would let a log reader push to that browser.
CLIENT_LOGGERS = ("urllib3", "requests")


def b64url(data: bytes) -> str:
    """Unpadded base64url, as Web Push keys are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url. Raises ValueError."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def browser_keys(keys) -> tuple:
    """``(p256dh, auth)`` of a subscription's ``keys``, checked: an uncompressed P-256 point on
    the curve, and a 16-byte secret, both base64url. Raises ValidationError."""
    if not isinstance(keys, dict):
        raise ValidationError("'keys' must be an object with 'p256dh' and 'auth'", "invalid_subscription")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    for name, value, size in (("p256dh", p256dh, 65), ("auth", auth, 16)):
        try:
            raw = b64url_decode(value) if isinstance(value, str) and BASE64URL.fullmatch(value) else b""
        except (ValueError, binascii.Error):
            raw = b""
        valid = len(raw) == size
        if valid and name == "p256dh":
            try:  # 0x04 || X || Y, and (X, Y) on the curve: a bad one would fail at every push
                valid = raw[0] == 4 and bool(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw))
            except ValueError:
                valid = False
        if not valid:
            raise ValidationError(f"'keys.{name}' must be the browser's base64url {name} key ({size} bytes"
                                  + (", an uncompressed P-256 point)" if name == "p256dh" else ")"),
                                  "invalid_subscription")
    return p256dh, auth


@dataclasses.dataclass
class QueuedPush:
    """One push of one subscription, from queued to sent, gone or failed."""

    sub: PushSubscription
    data: bytes
    topic: str
    urgency: str
    attempt: int = 0


def new_private_key() -> str:
    """A fresh VAPID private key: the raw 32-byte P-256 scalar, base64url."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def public_key_of(vapid: Vapid02) -> str:
    """The application server key browsers subscribe with: the uncompressed P-256 point, base64url."""
    return b64url(vapid.public_key.public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint))


def push_payload(frame: dict) -> dict:
    """What a push carries for a notification frame (documented in docs/protocol.md)."""
    if frame.get("type") in ("new_message", "mention"):
        chat_id = frame.get("chat_id")
        return {"type": frame["type"], "id": frame.get("id"), "title": frame.get("sender_name", "Squall"),
                "body": frame.get("content_preview", "")[:BODY_CHARS], "chat_id": chat_id,
                "url": f"/chat/{chat_id}", "tag": f"chat-{chat_id}"}
    if frame.get("type") == "notification_withdrawn":
        # Same tag (and so Topic) as the notification it withdraws: the push service replaces a push
        # not yet delivered, and the service worker closes a shown notification whose id is ``id``.
        chat_id = frame.get("chat_id")
        return {"type": "notification_withdrawn", "id": frame.get("id"), "title": "", "body": "",
                "chat_id": chat_id, "url": f"/chat/{chat_id}", "tag": f"chat-{chat_id}"}
    return {"type": frame.get("type"), "id": frame.get("id"), "title": "Squall",
            "body": str(frame.get("message", ""))[:BODY_CHARS], "chat_id": None, "url": "/",
            "tag": f"type-{frame.get('type')}"[:32]}


def _shrink(payload: dict) -> bytes:
    data = _json(payload)
    while len(data) > MAX_PAYLOAD and payload["body"]:
        payload["body"] = payload["body"][: len(payload["body"]) // 2]
        data = _json(payload)
    return data


def _json(obj) -> bytes:
    import json
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class PushService:
    """VAPID keys, the subscriptions API, and the bounded queue of outgoing pushes."""

    def __init__(self, config: Config, dbx: DatabaseExecutor, hub: Hub, preferences: PreferenceService,
                 metrics: Metrics):
        self.config = config
        self.dbx = dbx
        self.hub = hub
        self.preferences = preferences
        self.metrics = metrics
        self.vapid: Optional[Vapid02] = None
        self.public_key = ""
        self._pool = ThreadPoolExecutor(max(1, config.push_threads), thread_name_prefix="squall-push")
        self._queued = 0  # pushes waiting, backing off or in flight
        self._per_user: Dict[int, int] = {}  # user id -> that user's share of _queued
        self._ready: "OrderedDict[int, Deque[QueuedPush]]" = OrderedDict()  # user id -> pushes, in turn
        self._sending = 0  # pushes on a thread (at most push_threads: the pool's own queue stays empty)
        self._tasks: Set[asyncio.Task] = set()
        self._closed = False
        self.backoff_first = 1.0
        for name in CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)

    # Keys -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the VAPID key: the configured one, or the one every process shares in the database."""
        private = self.config.vapid_private_key
        if not private:
            private = await self.dbx.write(self._stored_key)
        try:
            self.vapid = Vapid02.from_string(private)
        except Exception:
            raise SystemExit("VAPID_PRIVATE_KEY is not a base64url P-256 private key") from None
        self.public_key = public_key_of(self.vapid)

    @staticmethod
    def _stored_key() -> str:
        # The first process to start generates it; the others read the same row.
        Setting.insert(key=VAPID_SETTING, value=new_private_key()).on_conflict_ignore().execute()
        return Setting.get(Setting.key == VAPID_SETTING).value

    async def close(self) -> None:
        """Cancel waiting retries and stop the threads (requests in flight finish)."""
        self._closed = True  # a cancelled push must not start the next one
        for task in list(self._tasks):
            task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # Subscriptions API -----------------------------------------------------------------------

    def validate(self, body) -> dict:
        """``{endpoint, p256dh, auth}`` from ``PushSubscription.toJSON()``. Raises ValidationError."""
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object")
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str) or not 0 < len(endpoint) <= MAX_ENDPOINT:
            raise ValidationError(f"'endpoint' must be a URL of at most {MAX_ENDPOINT} characters",
                                  "invalid_subscription")
        self.target(endpoint)
        p256dh, auth = browser_keys(body.get("keys"))
        return {"endpoint": endpoint, "p256dh": p256dh, "auth": auth}

    def target(self, endpoint: str) -> PushTarget:
        """The endpoint as the sending client reads it, checked. Raises ValidationError."""
        return parse_endpoint(endpoint, self.config.push_allow_http, self.config.push_hosts)

    async def subscribe(self, user_id: int, body, user_agent: str = "") -> dict:
        """Store (or move to ``user_id``) a subscription; past the limit the oldest is replaced."""
        sub = self.validate(body)
        digest = hashlib.sha256(sub["endpoint"].encode()).hexdigest()
        limit = self.config.max_push_subscriptions

        def apply():
            PushSubscription.delete().where(PushSubscription.endpoint_hash == digest).execute()
            PushSubscription.create(user=user_id, endpoint=sub["endpoint"], endpoint_hash=digest,
                                    p256dh=sub["p256dh"], auth=sub["auth"], user_agent=user_agent[:256],
                                    created_at=utcnow())
            ids = [i for (i,) in PushSubscription.select(PushSubscription.id).where(
                PushSubscription.user == user_id).order_by(PushSubscription.id.desc()).tuples()]
            if len(ids) > limit:
                PushSubscription.delete().where(PushSubscription.id.in_(ids[limit:])).execute()
            return min(len(ids), limit)

        count = await self.dbx.write(apply)
        await self._subscriptions_changed(user_id, count)
        return {"endpoint": sub["endpoint"]}

    async def unsubscribe(self, user_id: int, endpoint) -> None:
        """Delete the caller's subscription with ``endpoint``. Raises ValidationError, NotFound."""
        if not isinstance(endpoint, str) or not 0 < len(endpoint) <= MAX_ENDPOINT:
            raise ValidationError("'endpoint' must be the subscription's endpoint URL", "invalid_subscription")
        digest = hashlib.sha256(endpoint.encode()).hexdigest()

        def apply():
            gone = PushSubscription.delete().where((PushSubscription.endpoint_hash == digest)
                                                   & (PushSubscription.user == user_id)).execute()
            return gone, PushSubscription.select().where(PushSubscription.user == user_id).count()

        gone, count = await self.dbx.write(apply)
        if not gone:
            raise NotFound("No such push subscription", "subscription_not_found")
        await self._subscriptions_changed(user_id, count)

    async def listing(self, user_id: int) -> List[dict]:
        """The caller's subscriptions (endpoint, browser, created_at), newest first."""
        from ..delivery.events import iso

        def load():
            return list(PushSubscription.select().where(PushSubscription.user == user_id)
                        .order_by(PushSubscription.id.desc()))
        return [{"endpoint": s.endpoint, "user_agent": s.user_agent, "created_at": iso(s.created_at)}
                for s in await self.dbx.read(load)]

    async def _subscriptions_changed(self, user_id: int, count: int) -> None:
        self.preferences.subscriptions_changed(user_id, count)
        await self.hub.control(SubscriptionsChanged(user_id))

    # Pushing ---------------------------------------------------------------------------------

    def offer(self, user_id: int, frame: dict, silent: bool = False) -> None:
        """A notification ``frame`` was delivered to ``user_id``: push it if they are nowhere online.

        Memory only on the caller's path: a user with no cached preferences is looked up in
        the background (one query, then cached), like one without subscriptions is skipped.
        """
        if silent:
            return
        prefs = self.preferences.cached(user_id)
        if prefs is not None and (not prefs.subscriptions or not prefs.push or prefs.dnd()):
            return
        self._spawn(self._consider(user_id, frame))

    def _spawn(self, coro) -> None:
        task = spawn(coro, name="push.consider")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consider(self, user_id: int, frame: dict) -> None:
        try:
            prefs = await self.preferences.get(user_id)
            if not prefs.subscriptions or not prefs.push or prefs.dnd() or frame.get("type") in prefs.muted_types:
                return
            if await self.hub.online_users([user_id]):
                self.metrics.push_skipped_online += 1
                return
            subs = await self.dbx.read(lambda: list(
                PushSubscription.select().where(PushSubscription.user == user_id)))
        except Exception:
            log.exception("deciding on a push failed")
            return
        data = _shrink(push_payload(frame))
        topic = push_payload(frame)["tag"].replace("_", "-")[:32]
        urgency = "high" if frame.get("type") in ("new_message", "mention", "notification_withdrawn") else "normal"
        for sub in subs:
            if (self._queued >= self.config.push_queue
                    or self._per_user.get(user_id, 0) >= self.config.push_queue_per_user):
                self.metrics.pushes["dropped"] += 1
                continue
            self._queued += 1
            self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
            self._enqueue(QueuedPush(sub, data, topic, urgency))
        self.metrics.push_queue = self._queued
        self._pump()

    def _enqueue(self, push: QueuedPush) -> None:
        self._ready.setdefault(push.sub.user_id, deque()).append(push)

    def _pump(self) -> None:
        """Start pushes while a thread is free, taking one from each user's queue in turn."""
        while not self._closed and self._sending < self.config.push_threads and self._ready:
            user_id, pushes = next(iter(self._ready.items()))
            push = pushes.popleft()
            if pushes:
                self._ready.move_to_end(user_id)
            else:
                del self._ready[user_id]
            self._sending += 1
            self._spawn(self._attempt(push))

    async def _attempt(self, push: QueuedPush) -> None:
        """One try of ``push``; then it is done, or waits for its retry."""
        sub = push.sub
        loop = asyncio.get_running_loop()
        try:
            try:
                status, retry_after = await loop.run_in_executor(self._pool, self._post, push)
            finally:
                self._sending -= 1
                self._pump()
            if status is not None and status < 300:
                self._done(push, "sent")
            elif status in (404, 410):  # the push service forgot it: so do we
                await self.dbx.write(lambda: PushSubscription.delete().where(
                    PushSubscription.id == sub.id).execute())
                count = await self.dbx.read(lambda: PushSubscription.select().where(
                    PushSubscription.user == sub.user_id).count())
                await self._subscriptions_changed(sub.user_id, count)
                self._done(push, "gone")
            elif (status is None or status == 429 or status >= 500) and push.attempt < self.config.push_retries:
                self.metrics.push_retries += 1
                delay = self.backoff_first * (2 ** push.attempt)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), RETRY_AFTER_MAX)
                push.attempt += 1
                self._spawn(self._retry(push, delay))
            else:  # 3xx (never followed), other 4xx, or out of retries
                self._done(push, "failed")
                log.warning("a push to %s failed (status %s)", self.target(sub.endpoint).host, status)
        except (asyncio.CancelledError, RuntimeError):
            raise
        except PushRefused as exc:
            self._done(push, "failed")
            log.warning("a push was refused: %s", exc)
        except Exception as exc:  # no traceback: it may quote the endpoint (a capability URL)
            self._done(push, "failed")
            log.warning("a push failed: %s", type(exc).__name__)

    async def _retry(self, push: QueuedPush, delay: float) -> None:
        await asyncio.sleep(delay)
        self._enqueue(push)  # at the back of its user's queue
        self._pump()

    def _done(self, push: QueuedPush, outcome: str) -> None:
        self.metrics.pushes[outcome] += 1
        user_id = push.sub.user_id
        self._queued -= 1
        self._per_user[user_id] -= 1
        if not self._per_user[user_id]:
            del self._per_user[user_id]
        self.metrics.push_queue = self._queued

    def _post(self, push: QueuedPush):
        """One push request (on a pool thread): ``(status or None, Retry-After seconds or None)``.

        Raises PushRefused when the endpoint no longer validates (a row older than the rules)
        or its host resolves to a non-public address.
        """
        sub = push.sub
        try:
            target = self.target(sub.endpoint)
        except ValidationError as exc:
            raise PushRefused(exc.message) from None
        addresses = resolve(target, allow_private=self.config.push_allow_http)
        pusher = WebPusher({"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}})
        body = pusher.encode(push.data, "aes128gcm")["body"]
        claims = {"sub": self.config.vapid_subject, "aud": target.origin, "exp": int(time.time()) + VAPID_LIFETIME}
        vapid = self.vapid
        if vapid is None:  # start() loads the key before any push can be queued
            raise RuntimeError("PushService used before start")
        headers = {**vapid.sign(claims), "TTL": str(self.config.push_ttl), "Content-Encoding": "aes128gcm",
                   "Topic": push.topic, "Urgency": push.urgency}
        try:
            status, retry_after = post(target, addresses, body, headers, self.config.push_timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, timeout, TLS: retried like a 5xx
            log.warning("push request failed: %s", type(exc).__name__)
            return None, None
        try:
            return status, float(retry_after) if retry_after is not None else None
        except ValueError:
            return status, None
