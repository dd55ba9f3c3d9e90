"""Webhooks to the product's backend (issue 23), signed as the Standard Webhooks specification says.

Flow: what causes an event (a message stored, a read position moved, a presence transition,
an unseen claim) writes a ``WebhookEvent`` row in its own transaction (the outbox) → the
sender of each process claims due rows with a lease (a conditional UPDATE) → signs the body
(``standardwebhooks``) and POSTs it with Tornado's AsyncHTTPClient → records the outcome.

- At least once: a row stays pending until a 2xx answer; a process that dies mid-attempt
  loses its lease after ``--webhook-timeout`` + ``LEASE_MARGIN`` seconds and another (or
  its restart) sends the row again, with the same ``webhook-id``.
- Retries: timeouts, network errors, 5xx and 429 wait a random delay in
  ``[0, min(RETRY_CAP, RETRY_BASE * 2**(attempt-1))]`` (exponential backoff, full jitter),
  or the receiver's ``Retry-After`` seconds (at most ``RETRY_AFTER_MAX``); a retry that
  would start past ``--webhook-retry-window`` seconds after the event was queued marks it
  failed instead. Any other answer (3xx: redirects are never followed, 4xx) fails it at once.
- Order: a row is claimed only when no older row of its ``ordering_key`` (``chat:<id>``
  for messages and reads, ``user:<id>`` for presence and unseen) is still pending, so a
  chat's events arrive in order while other chats proceed.
- Nothing here runs on a sender's path: a send only inserts rows in the transaction it
  already has (and with ``--webhook-url`` empty, not even that).

Presence: ``user.online`` when a user's first notification stream (WebSocket, SSE or
long-poll: what Web Push asks, ``Hub.online_users``) opens anywhere in the cluster,
``user.offline`` when none has been open anywhere for ``--presence-grace`` seconds. The
last-told state is one ``WebhookPresence`` row per user, flipped by conditional updates,
so however many processes notice a transition one event leaves.

``notification.unseen``: every process scans for users with unread messages in chats they
have not muted, older than ``--unseen-delay`` seconds and older than their last transition
to offline, who are connected nowhere and not in Do Not Disturb; the conditional update of
``WebhookPresence.unseen_sent`` lets one process send it once; reading or reconnecting
clears it.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import logging
import random
import secrets
import time
import urllib.parse
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import peewee
from standardwebhooks import Webhook
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from models import Chat, ChatMember, Message, User, WebhookEvent, WebhookPresence, utcnow
from models.webhook import DELIVERED, FAILED, PENDING
from ...errors import Conflict, NotFound, ValidationError
from ...tasks import Batcher, spawn
from ..delivery.events import iso
from . import webhook_store
from ..delivery.hub import ONLINE, Hub
from ..delivery.notifications import content_preview
from ..delivery.preferences import PreferenceService
from ..operations.metrics import Metrics
from ..storage.db import DatabaseExecutor

log = logging.getLogger("squall.webhooks")

EVENT_TYPES = ("message.created", "chat.read", "user.online", "user.offline", "notification.unseen")
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
MAX_URL = 2048
RETRY_BASE = 1.0  # seconds: the first retry waits up to this, doubling with each attempt (full jitter)
RETRY_CAP = 3600.0  # seconds: no backoff delay is longer
RETRY_AFTER_MAX = 600.0  # seconds: a longer Retry-After is cut to this
POLL_INTERVAL = 1.0  # seconds between looks for due rows (other processes' rows, retries)
LEASE_MARGIN = 5.0  # seconds a claim outlives the request timeout
CLAIM_BATCH = 64  # rows claimed per look, at most (and at most the free attempt slots)
RETENTION = 7 * 86400.0  # seconds delivered and failed rows are kept for the admin console
PREVIEWS = 3  # newest unread messages in notification.unseen
PREVIEW_CHARS = 200
UNSEEN_BATCH = 500  # users considered per unseen scan
PRESENCE_SWEEP = 30.0  # seconds between checks of users told online (a process that died told no offline)
ADMIN_LIST_MAX = 200
USER_AGENT = "Squall-Webhooks/1"


# Configuration ---------------------------------------------------------------------------------

def parse_webhook_url(url: str) -> urllib.parse.SplitResult:
    """``url`` split as Tornado's HTTP client splits it (``urllib.parse.urlsplit``), checked.

    Refused (ValueError): other schemes than http and https, no host, a ``user:password@``
    (it would travel as Basic auth in every request and show wherever the URL is shown: the
    signature authenticates Squall instead), a fragment, over ``MAX_URL`` characters, spaces
    control characters, backslashes or non-ASCII (percent-encode them). The URL is the
    operator's: any host, port and address is allowed.
    """
    if (not isinstance(url, str) or len(url) > MAX_URL or "\\" in url
            or any(c.isspace() or ord(c) < 32 or ord(c) > 126 for c in url)):
        raise ValueError(f"--webhook-url must be an http:// or https:// URL of at most {MAX_URL} printable ASCII "
                         "characters (no spaces or backslashes; percent-encode the others)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("--webhook-url must start with http:// or https://")
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise ValueError("--webhook-url has an invalid port") from None
    if not host:
        raise ValueError("--webhook-url has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("--webhook-url must not carry user:password@ (the signature authenticates Squall)")
    if parts.fragment or url.endswith("#"):
        raise ValueError("--webhook-url must not have a #fragment")
    return parts


def secret_bytes(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret (24 to 64 bytes). Raises ValueError."""
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ValueError("--webhook-secret must be whsec_ followed by base64 (Standard Webhooks)")
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("--webhook-secret is not whsec_ followed by valid base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"--webhook-secret must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes "
                         f"(it has {len(key)}); make one with: python -c \"import base64, secrets; "
                         f"print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\"")
    return key


def check_webhook_config(config) -> None:
    """Raise ValueError for webhook settings a server must not start with (run.py: one line, exit)."""
    if config.webhook_url:
        parse_webhook_url(config.webhook_url)
        if not config.webhook_secret:
            raise ValueError("--webhook-url needs --webhook-secret (whsec_ + base64 of 24 to 64 random bytes)")
    if config.webhook_secret:
        secret_bytes(config.webhook_secret)
    checks = [
        ("webhook-timeout", config.webhook_timeout, 0.5, 60.0),
        ("webhook-retry-window", config.webhook_retry_window, 1.0, 7 * 86400.0),
        ("webhook-concurrency", config.webhook_concurrency, 1, 256),
        ("presence-grace", config.presence_grace, 0.0, 3600.0),
        ("unseen-delay", config.unseen_delay, 1.0, 7 * 86400.0),
    ]
    for name, value, low, high in checks:
        if not low <= value <= high:
            raise ValueError(f"--{name} must be from {low:g} to {high:g}")


def new_event_id() -> str:
    """A unique event id (``evt_`` + time-ordered hex + random): the body's ``id`` and ``webhook-id``."""
    return f"evt_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


# Rows (on the writer thread, inside the transaction of what caused them) ------------------------

def _all(query: Any) -> List[Any]:
    """A query's rows (model instances or tuples), typed as Any: Peewee's attributes are dynamic."""
    return list(query)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _row(kind: str, key: str, data: dict, now: float,
         stamp: Optional[Tuple[datetime.datetime, Optional[str]]] = None) -> dict:
    """An outbox row; ``stamp`` is ``(created_at, its ISO text)`` of ``now`` when the caller has it."""
    event_id = new_event_id()
    if stamp is None:
        at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None)
        stamp = (at, iso(at))
    at = stamp[0]
    body = {"id": event_id, "type": kind, "timestamp": stamp[1], "data": data}
    return {"event_id": event_id, "type": kind, "ordering_key": key, "body": _dumps(body), "status": PENDING,
            "attempts": 0, "next_attempt_at": 0.0, "window_start": now, "lease_until": 0.0, "leased_by": "",
            "last_error": "", "created_at": at}


def _person(user: Any, user_id: int) -> dict:
    if user is None:
        return {"id": user_id, "username": None, "external_id": None}
    return {"id": user.id, "username": user.username, "external_id": user.external_id}


def _people(user_ids: Iterable[int]) -> Dict[int, Any]:
    ids = list(set(user_ids))
    if not ids:
        return {}
    user_id: Any = User._meta.primary_key  # Peewee's implicit id
    return {u.id: u for u in _all(User.select(user_id, User.username, User.external_id).where(user_id.in_(ids)))}


def _chats(chat_ids: Iterable[int]) -> Dict[int, dict]:
    ids = list(set(chat_ids))
    chat_id: Any = Chat._meta.primary_key  # Peewee's implicit id
    return {c.id: {"id": c.id, "key": c.external_key, "kind": c.kind}
            for c in _all(Chat.select(chat_id, Chat.kind, Chat.external_key).where(chat_id.in_(ids)))} if ids else {}


def message_rows(created: List[Tuple[int, int, dict]]) -> int:
    """Queue ``message.created`` for each ``(chat_id, sender_id, message)`` just stored. Writer thread.

    Three reads for the whole batch (chats, members, people) and one insert per 300 rows.
    """
    if not created:
        return 0
    chats, members, people = webhook_store.message_context({chat_id for chat_id, _, _ in created},
                                                           {s for _, s, _ in created})
    now = time.time()
    at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None)
    stamp = (at, iso(at))
    rows = []
    for chat_id, sender_id, message in created:
        data = {
            "chat": chats.get(chat_id, {"id": chat_id, "key": None, "kind": None}),
            "message": {"id": message["id"], "client_id": message.get("client_id"), "content": message["content"],
                        "message_type": message.get("message_type"), "created_at": message["created_at"],
                        # a reply (issue 25): the id of the message it answers
                        **({"reply_to": message["reply_to"]["id"]} if message.get("reply_to") else {})},
            "sender": people.get(sender_id) or {"id": sender_id, "username": None, "external_id": None},
            "members": [{"id": uid, "external_id": people[uid]["external_id"] if uid in people else None}
                        for uid in members.get(chat_id, [])],
        }
        rows.append(_row("message.created", f"chat:{chat_id}", data, now, stamp))
    webhook_store.insert_events(rows)
    return len(rows)


def read_row(user_id: int, chat_id: int, position: int) -> None:
    """Queue ``chat.read`` (``user_id``'s read position in ``chat_id`` moved to ``position``). Writer thread.

    Reading also ends the user's current ``notification.unseen`` claim.
    """
    user = _people([user_id]).get(user_id)
    data = {"chat": _chats([chat_id]).get(chat_id, {"id": chat_id, "key": None, "kind": None}),
            "user": _person(user, user_id), "last_read_message_id": position}
    WebhookEvent.insert(_row("chat.read", f"chat:{chat_id}", data, time.time())).execute()
    WebhookPresence.update(unseen_sent=False).where(
        (WebhookPresence.user_id == user_id) & (WebhookPresence.unseen_sent == True)).execute()  # noqa: E712


def presence_row(user_id: int, online: bool, now: float) -> bool:
    """Flip ``user_id``'s told presence to ``online`` and queue the event; False when it already was. Writer thread.

    Coming online also ends the current ``notification.unseen`` claim (a reconnect).
    """
    WebhookPresence.insert(user_id=user_id, online=False, changed_at=0.0).on_conflict_ignore().execute()
    if online:
        WebhookPresence.update(unseen_sent=False).where(
            (WebhookPresence.user_id == user_id) & (WebhookPresence.unseen_sent == True)).execute()  # noqa: E712
    flipped = WebhookPresence.update(online=online, changed_at=now).where(
        (WebhookPresence.user_id == user_id) & (WebhookPresence.online == (not online))).execute()
    if not flipped:
        return False
    user = _people([user_id]).get(user_id)
    at = iso(datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None))
    kind = "user.online" if online else "user.offline"
    WebhookEvent.insert(_row(kind, f"user:{user_id}", {"user": _person(user, user_id), "at": at}, now)).execute()
    return True


def presence_rows(changes: List[Tuple[int, bool, float]]) -> List[bool]:
    """``presence_row`` for each ``(user_id, online, now)``, in one transaction (a reconnect storm
    after a restart is a few transactions, not one per user). Writer thread."""
    return [presence_row(user_id, online, now) for user_id, online, now in changes]


def _not_muted(now_dt: datetime.datetime):
    return ChatMember.muted_until.is_null() | (ChatMember.muted_until <= now_dt)


def unseen_candidates(now: float, delay: float, limit: int, after_user: int = 0) -> List[int]:
    """Users (ids above ``after_user``, ascending) with an unread message (not muted) older than
    ``delay`` and older than their last going offline, whose told presence is offline and whose
    unseen claim is free. Reader thread."""
    now_dt = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None)
    cutoff = now_dt - datetime.timedelta(seconds=delay)
    excluded = WebhookPresence.select(WebhookPresence.user_id).where(
        (WebhookPresence.online == True) | (WebhookPresence.unseen_sent == True)  # noqa: E712
        | (WebhookPresence.changed_at > now - delay))
    oldest = peewee.fn.MIN(Message.created_at)
    query = (ChatMember.select(ChatMember.user)
             .join(Message, on=((Message.chat == ChatMember.chat) & (Message.id > ChatMember.last_read_message_id)
                                & (Message.sender != ChatMember.user) & Message.event.is_null()
                                & Message.deleted_at.is_null()))
             .where((ChatMember.unread_count > 0) & _not_muted(now_dt) & ChatMember.user.not_in(excluded)
                    & (ChatMember.user > after_user))
             .group_by(ChatMember.user)
             .having(oldest <= cutoff)
             .order_by(ChatMember.user)
             .limit(limit))
    return [uid for (uid,) in _all(query.tuples())]


def unseen_row(user_id: int, now: float, delay: float) -> bool:
    """Claim ``user_id``'s one ``notification.unseen`` and queue it; False when another process has
    (or there is nothing unread any more, or the user came back). Writer thread."""
    now_dt = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None)
    unread = _all(ChatMember.select(ChatMember.chat, ChatMember.unread_count, ChatMember.last_read_message_id)
                  .where((ChatMember.user == user_id) & (ChatMember.unread_count > 0) & _not_muted(now_dt))
                  .order_by(ChatMember.chat).tuples())
    if not unread:
        return False
    WebhookPresence.insert(user_id=user_id, online=False, changed_at=0.0).on_conflict_ignore().execute()
    claimed = WebhookPresence.update(unseen_sent=True).where(
        (WebhookPresence.user_id == user_id) & (WebhookPresence.unseen_sent == False)  # noqa: E712
        & (WebhookPresence.online == False) & (WebhookPresence.changed_at <= now - delay)).execute()  # noqa: E712
    if not claimed:
        return False
    chats = _chats(cid for cid, _, _ in unread)
    previews = _all(Message.select(Message.id, Message.chat, Message.sender, Message.content, Message.created_at)
                    .join(ChatMember, on=((ChatMember.chat == Message.chat) & (ChatMember.user == user_id)))
                    .where((Message.id > ChatMember.last_read_message_id) & (Message.sender != user_id)
                           & (ChatMember.unread_count > 0) & _not_muted(now_dt) & Message.event.is_null()
                           & Message.deleted_at.is_null())
                    .order_by(Message.id.desc()).limit(PREVIEWS))
    people = _people([user_id, *(m.sender_id for m in previews)])
    data = {
        "user": _person(people.get(user_id), user_id),
        "unread": {"total": sum(n for _, n, _ in unread),
                   "chats": [{"chat_id": cid, "key": chats.get(cid, {}).get("key"), "count": n}
                             for cid, n, _ in unread]},
        "previews": [{"chat_id": m.chat_id, "message_id": m.id, "sender": _person(people.get(m.sender_id), m.sender_id),
                      "content": content_preview(m.content, PREVIEW_CHARS), "created_at": iso(m.created_at)}
                     for m in previews],
    }
    WebhookEvent.insert(_row("notification.unseen", f"user:{user_id}", data, now)).execute()
    return True


def told_online(after_user: int, limit: int, before: float) -> List[int]:
    """Users told online before ``before`` (Unix seconds), by id after ``after_user``. Reader thread."""
    return [uid for (uid,) in _all(WebhookPresence.select(WebhookPresence.user_id).where(
        (WebhookPresence.online == True) & (WebhookPresence.user_id > after_user)  # noqa: E712
        & (WebhookPresence.changed_at < before)).order_by(WebhookPresence.user_id).limit(limit).tuples())]


# Claims and outcomes ---------------------------------------------------------------------------

def _ready(now: float):
    """Pending rows due now, unleased, with no older pending row of their ordering key."""
    older = WebhookEvent.alias("older")
    blocked = older.select(peewee.SQL("1")).where(
        (older.ordering_key == WebhookEvent.ordering_key) & (older.status == PENDING) & (older.id < WebhookEvent.id))
    return ((WebhookEvent.status == PENDING) & (WebhookEvent.next_attempt_at <= now)
            & (WebhookEvent.lease_until <= now) & ~peewee.fn.EXISTS(blocked))


def due_ids(now: float, limit: int) -> List[int]:
    """Ids of the rows a sender may claim now, those due longest first. Reader thread."""
    # In the order of the (status, next_attempt_at) index, whose entries end with the id: the scan
    # stops after ``limit`` heads instead of sorting every pending row (a backlog of a day's events).
    return [i for (i,) in _all(WebhookEvent.select(WebhookEvent.id).where(_ready(now))
                               .order_by(WebhookEvent.status, WebhookEvent.next_attempt_at, WebhookEvent.id)
                               .limit(limit).tuples())]


def claim(ids: List[int], token: str, now: float, lease: float) -> List[WebhookEvent]:
    """Lease those of ``ids`` that are still claimable (one conditional UPDATE); the rows won. Writer thread."""
    WebhookEvent.update(lease_until=now + lease, leased_by=token).where(
        WebhookEvent.id.in_(ids) & _ready(now)).execute()
    return list(WebhookEvent.select().where(WebhookEvent.id.in_(ids) & (WebhookEvent.leased_by == token)))


def record(outcomes: List[Tuple[int, str, str, str, dict]], now: float, lease: float) -> List[Optional[WebhookEvent]]:
    """Store attempt outcomes ``(row id, ordering key, lease token, status, fields)``; per outcome,
    the next row of its ordering key, claimed with the same token, or None. Writer thread.

    A delivery is recorded whoever holds the lease now (the receiver has it); a retry or a
    failure only by the lease's holder (an expired lease may have passed to another sender).
    When a row leaves the pending state, the next pending row of its key is claimed here, in
    the same transaction, if it is due and unleased: a busy chat's events follow one another
    without a separate claim each (and the order holds: only the oldest pending row is taken).
    """
    following: List[Optional[WebhookEvent]] = []
    for row_id, key, token, status, fields in outcomes:
        where = (WebhookEvent.id == row_id) & (WebhookEvent.status == PENDING)
        if status != DELIVERED:
            where &= WebhookEvent.leased_by == token
        done = WebhookEvent.update(status=status, attempts=WebhookEvent.attempts + 1, lease_until=0.0,
                                   leased_by="", **fields).where(where).execute()
        nxt = None
        if done and status != PENDING:
            head = (WebhookEvent.select(WebhookEvent.id).where(
                (WebhookEvent.ordering_key == key) & (WebhookEvent.status == PENDING))
                .order_by(WebhookEvent.id).limit(1).tuples().first())
            if head is not None and WebhookEvent.update(lease_until=now + lease, leased_by=token).where(
                    (WebhookEvent.id == head[0]) & (WebhookEvent.status == PENDING)
                    & (WebhookEvent.next_attempt_at <= now) & (WebhookEvent.lease_until <= now)).execute():
                nxt = WebhookEvent.get_or_none(WebhookEvent.id == head[0])
        following.append(nxt)
    return following


def release(leases: List[Tuple[int, str]]) -> None:
    """Give back the leases of attempts abandoned at a graceful stop: the rows are sent again at once
    (by another process, or this one after its restart), not after their lease expires. Writer thread."""
    for row_id, token in leases:
        WebhookEvent.update(lease_until=0.0, leased_by="").where(
            (WebhookEvent.id == row_id) & (WebhookEvent.leased_by == token)
            & (WebhookEvent.status == PENDING)).execute()


def backoff(attempts: int, retry_after: Optional[float], rng: random.Random) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (full jitter, or Retry-After)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_MAX)
    return rng.uniform(0.0, min(RETRY_CAP, RETRY_BASE * 2 ** max(attempts - 1, 0)))


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds (a delay in seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def delivery_dict(row: WebhookEvent) -> dict:
    """What the admin console shows of a delivery: no body (it may carry message text), no URL."""
    return {"id": row.id, "event_id": row.event_id, "type": row.type, "ordering_key": row.ordering_key,
            "status": row.status, "attempts": row.attempts, "last_status": row.last_status,
            "last_error": row.last_error, "created_at": iso(row.created_at), "delivered_at": iso(row.delivered_at),
            "next_attempt_at": (iso(datetime.datetime.fromtimestamp(row.next_attempt_at, datetime.timezone.utc)
                                    .replace(tzinfo=None)) if row.status == PENDING and row.next_attempt_at else None)}


class WebhookService:
    """The outbox's rows, its sender, the presence tracker and the unseen scanner of one process.

    With ``--webhook-url`` empty it is off: nothing is queued, nothing runs.
    """

    def __init__(self, config, dbx: DatabaseExecutor, hub: Hub, preferences: Optional[PreferenceService],
                 metrics: Metrics):
        check_webhook_config(config)
        self.config = config
        self.enabled = bool(config.webhook_url)
        self.dbx = dbx
        self.hub = hub
        self.preferences = preferences
        self.metrics = metrics
        self.url = config.webhook_url
        self._signer = Webhook(config.webhook_secret) if self.enabled else None
        self._client: Optional[AsyncHTTPClient] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._tasks: Set["asyncio.Task"] = set()
        self._inflight = 0
        self._leases: Dict[int, str] = {}  # row id -> lease token, of the attempts in flight
        self._closed = False
        self._rng = random.Random()
        self._results: Batcher[Tuple[int, str, str, str, dict], Optional[WebhookEvent]] = Batcher(
            self._record, name="webhooks.record")
        self._presence: Batcher[Tuple[int, bool, float], bool] = Batcher(self._write_presence, name="webhooks.presence",
                                                                         max_batch=500)
        self._offline_checks: Dict[int, asyncio.TimerHandle] = {}
        self.scans = 0  # unseen scans done
        # Scans page through the candidates by user id: users skipped for Do Not Disturb never
        # keep the ones after them waiting.
        self._unseen_after = 0

    # Hooks the other services call (set by build_services only when enabled) --------------------

    def message_rows(self, created: List[Tuple[int, int, dict]]) -> None:
        """``MessageWriter.outbox``: queue ``message.created`` in the batch's transaction (writer thread)."""
        if message_rows(created):
            self._wake_threadsafe()

    def read_row(self, user_id: int, chat_id: int, position: int) -> None:
        """``ChatService.on_read_stored``: queue ``chat.read`` in the read's transaction (writer thread)."""
        read_row(user_id, chat_id, position)
        self._wake_threadsafe()

    def presence_changed(self, user_id: int, online: bool) -> None:
        """``Hub.on_online``: this process's first notification stream of ``user_id`` opened, or its last closed."""
        if self._closed:
            return
        if online:
            pending = self._offline_checks.pop(user_id, None)
            if pending is not None:
                pending.cancel()
            self._spawn(self._tell(user_id, True), "webhooks.online")
            return
        loop = asyncio.get_running_loop()
        old = self._offline_checks.pop(user_id, None)
        if old is not None:
            old.cancel()
        self._offline_checks[user_id] = loop.call_later(
            self.config.presence_grace, lambda: self._spawn(self._offline_if_gone(user_id), "webhooks.offline"))

    # Life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender, the unseen scanner and the presence sweep (nothing when off)."""
        if not self.enabled:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = AsyncHTTPClient(force_instance=True, max_clients=self.config.webhook_concurrency)
        self._spawn(self._send_forever(), "webhooks.sender")
        self._spawn(self._scan_forever(), "webhooks.unseen")
        self._spawn(self._sweep_forever(), "webhooks.presence")

    async def close(self) -> None:
        """Stop sending: attempts in flight are abandoned and their leases given back (the rows are
        sent again, with the same id; after a crash instead, their leases expire)."""
        self._closed = True
        for handle in self._offline_checks.values():
            handle.cancel()
        self._offline_checks.clear()
        leases = list(self._leases.items())
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            self._client.close()
        if leases:
            try:
                await self.dbx.write(release, leases)
            except Exception as exc:
                log.warning("giving back %d webhook leases failed (%s)", len(leases), type(exc).__name__)

    def _spawn(self, coro, name: str) -> None:
        task = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake_threadsafe(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not self._closed:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is closing
                pass

    # Sending ----------------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        assert self._wake is not None
        while not self._closed:
            self._wake.clear()
            free = self.config.webhook_concurrency - self._inflight
            if free > 0:
                try:
                    for row, token in await self._claim(min(free, CLAIM_BATCH)):
                        self._inflight += 1
                        self._leases[row.id] = token
                        self._spawn(self._attempt(row, token), "webhooks.attempt")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("claiming webhook events failed (%s)", type(exc).__name__)
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            except asyncio.TimeoutError:
                pass

    async def _claim(self, limit: int) -> List[Tuple[WebhookEvent, str]]:
        now = time.time()
        # After the writes queued so far: a row inserted by this process's last commit is seen.
        ids = await self.dbx.read_after_writes(due_ids, now, limit)
        if not ids:
            return []
        token = secrets.token_hex(12)
        rows = await self.dbx.write(claim, ids, token, time.time(), self.config.webhook_timeout + LEASE_MARGIN)
        return [(row, token) for row in rows]

    async def _attempt(self, first: WebhookEvent, token: str) -> None:
        """Send ``first``; then, while recording an outcome hands over the next row of its chat
        (or user), that one, in the same slot."""
        row: Optional[WebhookEvent] = first
        try:
            while row is not None and not self._closed:
                outcome, fields = await self._try(row)
                nxt = await self._results.submit((row.id, row.ordering_key, token, outcome, fields))
                self._leases.pop(row.id, None)
                if nxt is not None:
                    self._leases[nxt.id] = token
                row = nxt
        finally:
            self._inflight -= 1
            if row is not None:
                self._leases.pop(row.id, None)
            if self._wake is not None:
                self._wake.set()

    async def _try(self, row: WebhookEvent) -> Tuple[str, dict]:
        """One attempt of ``row``: the status to record (pending again for a retry) and the fields."""
        status, retry_after, error = await self._post(row)
        now = time.time()
        attempts = row.attempts + 1
        if status is not None and 200 <= status < 300:
            self.metrics.webhooks["delivered"] += 1
            return DELIVERED, {"delivered_at": utcnow(), "last_status": status, "last_error": ""}
        log.info("webhook %s (%s) attempt %d: %s", row.event_id, row.type, attempts, error)
        if status is None or status == 429 or status >= 500:
            delay = backoff(attempts, retry_after, self._rng)
            if now + delay <= row.window_start + self.config.webhook_retry_window:
                self.metrics.webhooks["retried"] += 1
                return PENDING, {"next_attempt_at": now + delay, "last_status": status, "last_error": error[:200]}
            error = f"{error}; retry window ended"
        self.metrics.webhooks["failed"] += 1
        return FAILED, {"last_status": status, "last_error": error[:200]}

    async def _post(self, row: WebhookEvent) -> Tuple[Optional[int], Optional[float], str]:
        """One signed POST of ``row``: ``(status or None, Retry-After seconds or None, short reason)``."""
        assert self._signer is not None and self._client is not None
        body = row.body.encode()
        at = datetime.datetime.now(datetime.timezone.utc)
        headers = {"webhook-id": row.event_id, "webhook-timestamp": str(int(at.timestamp())),
                   "webhook-signature": self._signer.sign(row.event_id, at, body),
                   "content-type": "application/json", "user-agent": USER_AGENT}
        timeout = self.config.webhook_timeout
        request = HTTPRequest(self.url, method="POST", body=body, headers=headers, connect_timeout=timeout,
                              request_timeout=timeout, follow_redirects=False, decompress_response=False)
        try:
            response = await self._client.fetch(request, raise_error=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, DNS, TLS: the message may quote the URL, so only its type
            return None, None, f"network error ({type(exc).__name__})"
        if response.code == 599:
            error = response.error
            name = "timeout" if error is not None and "Timeout" in type(error).__name__ else \
                f"network error ({type(error).__name__ if error else 'unknown'})"
            return None, None, name
        return response.code, retry_after_seconds(response.headers.get("Retry-After")), f"HTTP {response.code}"

    async def _record(self, outcomes: List[Tuple[int, str, str, str, dict]]) -> List[Optional[WebhookEvent]]:
        return await self.dbx.write(record, outcomes, time.time(), self.config.webhook_timeout + LEASE_MARGIN)

    # Presence ---------------------------------------------------------------------------------

    async def _write_presence(self, changes: List[Tuple[int, bool, float]]) -> List[bool]:
        return await self.dbx.write(presence_rows, changes)

    async def _tell(self, user_id: int, online: bool) -> None:
        try:
            if await self._presence.submit((user_id, online, time.time())):
                self._wake_threadsafe()
        except Exception as exc:
            log.warning("storing the presence of user %s failed (%s)", user_id, type(exc).__name__)

    async def _offline_if_gone(self, user_id: int) -> None:
        self._offline_checks.pop(user_id, None)
        if self.hub.registry.is_active(user_id, ONLINE):  # back on this process meanwhile
            return
        if await self.hub.online_users([user_id]):
            return
        await self._tell(user_id, False)

    async def _sweep_forever(self) -> None:
        """Tell offline the users told online whom no process holds (a process that died told nothing);
        prune old delivered and failed rows."""
        pruned_at = 0.0
        while not self._closed:
            await asyncio.sleep(max(PRESENCE_SWEEP, self.config.presence_grace))
            try:
                await self.sweep_presence()
                if time.time() - pruned_at > 3600:
                    pruned_at = time.time()
                    await self.dbx.write(self._prune, time.time() - RETENTION)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the webhook presence sweep failed (%s)", type(exc).__name__)

    @staticmethod
    def _prune(before: float) -> int:
        cutoff = datetime.datetime.fromtimestamp(before, datetime.timezone.utc).replace(tzinfo=None)
        return WebhookEvent.delete().where(WebhookEvent.status.in_([DELIVERED, FAILED])
                                           & (WebhookEvent.created_at < cutoff)).execute()

    async def sweep_presence(self) -> None:
        """One pass over the users told online (1000 per broker question)."""
        after, before = 0, time.time() - self.config.presence_grace
        while True:
            ids = await self.dbx.read(told_online, after, 1000, before)
            if not ids:
                return
            after = ids[-1]
            online = await self.hub.online_users(ids)
            for uid in ids:
                if uid not in online:
                    await self._tell(uid, False)

    # notification.unseen -------------------------------------------------------------------

    async def _scan_forever(self) -> None:
        interval = min(max(self.config.unseen_delay / 4, 0.5), 30.0)
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                await self.scan_unseen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the unseen scan failed (%s)", type(exc).__name__)

    async def scan_unseen(self) -> int:
        """One scan: queue ``notification.unseen`` for the users it is due to; returns how many this process queued."""
        now, delay = time.time(), self.config.unseen_delay
        candidates = await self.dbx.read(unseen_candidates, now, delay, UNSEEN_BATCH, self._unseen_after)
        self._unseen_after = candidates[-1] if len(candidates) == UNSEEN_BATCH else 0
        sent = 0
        if candidates:
            online = await self.hub.online_users(candidates)
            for uid in candidates:
                if uid in online:
                    continue
                if self.preferences is not None and (await self.preferences.get(uid)).dnd(now):
                    continue  # not claimed: once Do Not Disturb ends, the next scan sends it
                if await self.dbx.write(unseen_row, uid, now, delay):
                    sent += 1
        if sent:
            self._wake_threadsafe()
        self.scans += 1
        return sent

    # Admin console -----------------------------------------------------------------------------

    async def recent(self, limit: int = 50, status: Optional[str] = None) -> dict:
        """The newest deliveries (``status`` filters), for the admin console."""
        if status is not None and status not in (PENDING, DELIVERED, FAILED):
            raise ValidationError("'status' must be pending, delivered or failed")
        if not 1 <= limit <= ADMIN_LIST_MAX:
            raise ValidationError(f"'limit' must be from 1 to {ADMIN_LIST_MAX}")

        def load():
            q = WebhookEvent.select(*[f for f in WebhookEvent._meta.sorted_fields if f.name != "body"])
            if status is not None:
                q = q.where(WebhookEvent.status == status)
            return list(q.order_by(WebhookEvent.id.desc()).limit(limit))
        rows = await self.dbx.read(load)
        return {"enabled": self.enabled, "retry_window": self.config.webhook_retry_window,
                "deliveries": [delivery_dict(r) for r in rows]}

    async def retry(self, row_id: int) -> dict:
        """Send a failed delivery again, with a fresh retry window. Raises NotFound, Conflict."""
        if not self.enabled:
            raise Conflict("Webhooks are off (no --webhook-url)", "webhooks_disabled")
        now = time.time()

        def apply():
            changed = WebhookEvent.update(status=PENDING, next_attempt_at=0.0, window_start=now, lease_until=0.0,
                                          leased_by="").where(
                (WebhookEvent.id == row_id) & (WebhookEvent.status == FAILED)).execute()
            row = WebhookEvent.get_or_none(WebhookEvent.id == row_id)
            return changed, row

        changed, row = await self.dbx.write(apply)
        if row is None:
            raise NotFound(f"No webhook delivery {row_id}", "delivery_not_found")
        if not changed:
            raise Conflict(f"Webhook delivery {row_id} is {row.status}, not failed", "not_failed")
        self._wake_threadsafe()
        return delivery_dict(row)
