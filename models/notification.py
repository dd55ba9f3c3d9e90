"""Stored notifications: their id is the event id on every stream."""
import peewee

from .base import BaseModel, utcnow
from .user import User


class EventIdField(peewee.BigAutoField):
    """An id that is never handed out twice (it is a stream's event id, and clients resume from it).

    SQLite reuses the highest rowid once its row is deleted (pruning can delete them all),
    unless the column is AUTOINCREMENT; PostgreSQL sequences never go back.
    """

    def ddl(self, ctx):
        node = super().ddl(ctx)
        db = self.model._meta.database
        if isinstance(getattr(db, "obj", db), peewee.SqliteDatabase):
            return peewee.NodeList((node, peewee.SQL("AUTOINCREMENT")))
        return node


class Notification(BaseModel):
    """One notification; ``recipient`` NULL means a broadcast to every user (one row for all)."""

    id = EventIdField()
    # indexed by (recipient, id) below, which serves lookups by recipient alone (version 12)
    recipient = peewee.ForeignKeyField(User, null=True, on_delete="CASCADE", index=False)
    type = peewee.CharField(max_length=64)
    payload = peewee.TextField()  # JSON object: the event without its id
    chat_id = peewee.IntegerField(null=True)      # new_message notifications: for mark-read
    message_id = peewee.BigIntegerField(null=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    read_at = peewee.DateTimeField(null=True)
    cleared_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = ((("recipient", "id"), False),)


class NotificationState(BaseModel):
    """A user's read/cleared state of a broadcast notification (personal ones keep it in their row)."""

    id = peewee.AutoField()  # what peewee adds when none is named; named for the type checker
    user = peewee.ForeignKeyField(User, on_delete="CASCADE", index=False)  # (user, notification) below
    notification = peewee.ForeignKeyField(Notification, on_delete="CASCADE")
    read_at = peewee.DateTimeField(null=True)
    cleared_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = ((("user", "notification"), True),)


class Setting(BaseModel):
    """Small key/value facts about the database: schema version, retention watermark."""

    key = peewee.CharField(max_length=64, primary_key=True)
    value = peewee.TextField()
