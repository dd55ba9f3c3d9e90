"""The webhook outbox (issue 23): events for the product's backend, queued with what caused them."""
import peewee

from .base import BaseModel, utcnow

PENDING = "pending"      # waiting for its first attempt or a retry
DELIVERED = "delivered"  # the receiver answered 2xx
FAILED = "failed"        # refused (3xx, 4xx but 429) or out of its retry window; an admin may retry it


class WebhookEvent(BaseModel):
    """One event to POST to ``--webhook-url``; written in the transaction of what caused it.

    ``body`` is the exact JSON that is signed and sent (it carries message text: never logged).
    ``ordering_key`` (``chat:<id>`` or ``user:<id>``) orders delivery: a row is sent only once
    every older row of its key is delivered or failed. ``lease_until``/``leased_by`` are a
    sender's claim (Unix seconds; a sender that dies loses it when it expires).
    """

    id = peewee.BigAutoField()  # orders the rows of one ordering_key (event_id is the identity)
    event_id = peewee.CharField(max_length=40, unique=True)  # the body's "id" and the webhook-id header
    type = peewee.CharField(max_length=32)
    ordering_key = peewee.CharField(max_length=40)
    body = peewee.TextField()
    status = peewee.CharField(max_length=16, default=PENDING)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DoubleField(default=0.0)  # Unix seconds
    window_start = peewee.DoubleField(default=0.0)  # Unix seconds: the retry window runs from here
    lease_until = peewee.DoubleField(default=0.0)
    leased_by = peewee.CharField(max_length=64, default="")
    last_status = peewee.IntegerField(null=True)  # the receiver's last HTTP status (None: no answer)
    last_error = peewee.CharField(max_length=200, default="")  # a short reason, never the URL or the body
    created_at = peewee.DateTimeField(default=utcnow)
    delivered_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "webhook_event"
        indexes = ((("status", "next_attempt_at", "id"), False), (("ordering_key", "status", "id"), False))


class WebhookPresence(BaseModel):
    """A user's presence as the webhooks last told it, for every process at once.

    ``online`` flips only through conditional updates, so one ``user.online``/``user.offline``
    leaves per real transition however many processes notice it; ``changed_at`` (Unix seconds)
    is when it last flipped. ``unseen_sent`` claims the one ``notification.unseen`` of the
    current absence; reading or reconnecting clears it.
    """

    user_id = peewee.IntegerField(primary_key=True)
    online = peewee.BooleanField(default=False)
    changed_at = peewee.DoubleField(default=0.0)
    unseen_sent = peewee.BooleanField(default=False)

    class Meta:
        table_name = "webhook_presence"
