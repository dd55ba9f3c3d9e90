"""Users: accounts that log in and own connections."""
import secrets
import unicodedata

import peewee

from .base import BaseModel, utcnow


def username_key(username: str) -> str:
    """The identity of a username: NFKC-normalised and case-folded (``ＡＬＩＣＥ`` is ``alice``)."""
    return unicodedata.normalize("NFKC", username).casefold()


def new_token_version() -> int:
    """A random starting token version: a re-created user id never matches an old token."""
    return secrets.randbelow(2 ** 31 - 1) + 1


class User(BaseModel):
    """An account: unique username (case-insensitively, after NFKC), shown by its display name."""

    username = peewee.CharField(max_length=32, unique=True)
    username_key = peewee.CharField(max_length=64, unique=True)
    display_name = peewee.CharField(max_length=64)
    password_hash = peewee.CharField(max_length=255)
    created_at = peewee.DateTimeField(default=utcnow)
    is_admin = peewee.BooleanField(default=False)  # python run.py admin grant|revoke USERNAME
    # Carried by every token; "log out everywhere" bumps it, so older tokens stop working.
    token_version = peewee.IntegerField(default=new_token_version)

    def save(self, *args, **kwargs):
        """Derive ``username_key`` from ``username`` when it is not given."""
        if not self.username_key and self.username:
            self.username_key = username_key(self.username)
        return super().save(*args, **kwargs)
