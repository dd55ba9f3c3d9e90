"""Refresh tokens: one row per token, rows of one login share a family (the session id, ``sid``)."""
import peewee

from .base import BaseModel, utcnow
from .user import User


class RefreshToken(BaseModel):
    """A refresh token, stored only as its hash.

    ``replaced_by`` is set when the token was rotated (spent); presenting a spent token again
    revokes the whole family. ``revoked_at`` is set on every row of a family at logout (or
    theft detection): access tokens of that ``family`` are refused until they expire.
    """

    id = peewee.AutoField()  # what peewee adds when none is named; named for the type checker
    token_hash = peewee.CharField(max_length=64, unique=True)
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    user_id: int  # the id behind the foreign key (peewee reads it without a join)
    family = peewee.CharField(max_length=32, index=True)
    created_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True, index=True)
    replaced_by = peewee.CharField(max_length=64, null=True)

    class Meta:
        table_name = "refresh_token"
        indexes = ((("user", "family"), False),)
