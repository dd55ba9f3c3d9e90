"""Uploaded files (issue 25, attachments): who owns them, what they are, the message they belong to."""
import peewee

from .base import BaseModel, utcnow
from .chat import Chat, Message
from .user import User


class Upload(BaseModel):
    """One stored file: its bytes live in the upload store under ``id`` (and ``thumbnail_key``).

    ``id`` is random and unguessable (``secrets.token_urlsafe``), yet it is no credential:
    the file is served only through a signed link issued to a member of the chat. An upload
    is an orphan until a send lists it (``message``/``chat`` set in the message's transaction).
    """

    id = peewee.CharField(max_length=32, primary_key=True)
    owner = peewee.ForeignKeyField(User, on_delete="CASCADE")
    size = peewee.BigIntegerField()
    content_type = peewee.CharField(max_length=64)
    filename = peewee.CharField(max_length=255)
    width = peewee.IntegerField(null=True)
    height = peewee.IntegerField(null=True)
    thumbnail_key = peewee.CharField(max_length=64, null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    message = peewee.ForeignKeyField(Message, null=True, on_delete="CASCADE")
    chat = peewee.ForeignKeyField(Chat, null=True, on_delete="CASCADE")

    class Meta:
        indexes = (
            (("owner", "created_at"), False),  # quota sums, a user's uploads
            (("message",), False),             # attachments of a page of history
            (("created_at",), False),          # orphan cleanup
        )
