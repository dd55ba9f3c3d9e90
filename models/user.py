"""Users: accounts that log in and own connections."""
import peewee

from .base import BaseModel, utcnow


class User(BaseModel):
    """An account: unique username, shown by its display name."""

    username = peewee.CharField(max_length=32, unique=True)
    display_name = peewee.CharField(max_length=64)
    password_hash = peewee.CharField(max_length=255)
    created_at = peewee.DateTimeField(default=utcnow)
    is_admin = peewee.BooleanField(default=False)  # python run.py admin grant|revoke USERNAME
