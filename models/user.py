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


BUILTIN = "builtin"      # registered with a password on this server
EXTERNAL = "external"    # provisioned from the product's token (``sub`` = external_id); no password
SYSTEM = "system"        # the sender of system messages posted by the service API
DELETED = "deleted"      # erased by the service API; the row stays so that messages keep a sender
DELETED_NAME = "Deleted user"  # the display name of a deleted user (their messages' sender_name)


class User(BaseModel):
    """An account: unique username (case-insensitively, after NFKC), shown by its display name."""

    id = peewee.AutoField()  # what peewee adds when none is named; named for the type checker
    username = peewee.CharField(max_length=32, unique=True)
    username_key = peewee.CharField(max_length=64, unique=True)
    display_name = peewee.CharField(max_length=64)
    password_hash = peewee.CharField(max_length=255)
    created_at = peewee.DateTimeField(default=utcnow)
    is_admin = peewee.BooleanField(default=False)  # python run.py admin grant|revoke USERNAME
    # Carried by every token; "log out everywhere" bumps it, so older tokens stop working.
    token_version = peewee.IntegerField(default=new_token_version)
    # The product's id for this user (the ``sub`` of its tokens); NULL for builtin users.
    external_id = peewee.CharField(max_length=255, null=True, unique=True)
    kind = peewee.CharField(max_length=16, default=BUILTIN)
    avatar_url = peewee.CharField(max_length=2048, null=True)
    disabled = peewee.BooleanField(default=False)
    # Unix seconds: tokens issued at or before it are refused (service API "revoke").
    revoked_at = peewee.BigIntegerField(null=True)

    def save(self, *args, **kwargs):
        """Derive ``username_key`` from ``username`` when it is not given."""
        if not self.username_key and self.username:
            self.username_key = username_key(self.username)
        return super().save(*args, **kwargs)
