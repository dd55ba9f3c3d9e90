"""Notification preferences and Web Push subscriptions of users."""
import peewee

from .base import BaseModel, utcnow
from .user import User


class UserPreference(BaseModel):
    """A user's notification preferences: a JSON object (validated by services/delivery/preferences.py).

    No row means every default. One row per user, replaced whole on each change.
    """

    user = peewee.ForeignKeyField(User, primary_key=True, on_delete="CASCADE")
    data = peewee.TextField()  # {"sound","toasts","push","dnd_until","muted_types"}
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "user_preference"


class PushSubscription(BaseModel):
    """One browser's Web Push subscription (``PushSubscription.toJSON()``) for a user."""

    id = peewee.AutoField()  # what peewee adds when none is named; named for the type checker
    user = peewee.ForeignKeyField(User, on_delete="CASCADE", index=True)
    user_id: int  # the id behind the foreign key (peewee reads it without a join)
    endpoint = peewee.TextField()
    endpoint_hash = peewee.CharField(max_length=64, unique=True)  # sha256 hex: endpoints are long
    p256dh = peewee.CharField(max_length=128)
    auth = peewee.CharField(max_length=64)
    user_agent = peewee.CharField(max_length=256, default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "push_subscription"
