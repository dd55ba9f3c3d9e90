"""The sessions aggregate's storage: refresh-token families, the installation id, revocations.

Every statement ``SessionService`` (``sessions.py``) runs lives here, called on a database
thread (the writes inside the transaction ``DatabaseExecutor.write`` opens). A session is a
family of ``refresh_token`` rows (``family`` = the session id); a row is spent when
``replaced_by`` is set, revoked when ``revoked_at`` is. An external token's logout is kept as
a revoked row of its own (family ``ext:…``, a hash no refresh token has).
"""
from __future__ import annotations

import datetime
import uuid
from typing import Any, Callable, List, Optional, Tuple

import peewee

from models import RefreshToken, Setting, User, tuples, utcnow
from .external_auth import SESSION_PREFIX as EXTERNAL_SID

INSTALLATION_KEY = "installation_id"


def installation_id() -> str:
    """This database's installation id, generated on first use (writer thread)."""
    Setting.insert(key=INSTALLATION_KEY, value=uuid.uuid4().hex).on_conflict_ignore().execute()
    return Setting.get(Setting.key == INSTALLATION_KEY).value


def revoked_families(since: datetime.datetime, now: datetime.datetime) -> List[Tuple[str, Any, Any]]:
    """``(family, revoked at, expires at)`` of the sessions revoked since ``since``, and of the
    external tokens logged out that have not expired at ``now`` (SQLite returns the times as text).
    """
    return list(tuples(RefreshToken.select(RefreshToken.family, peewee.fn.MAX(RefreshToken.revoked_at),
                                           peewee.fn.MAX(RefreshToken.expires_at))
                       .where((RefreshToken.revoked_at >= since)
                              | (RefreshToken.family.startswith(EXTERNAL_SID) & RefreshToken.revoked_at.is_null(False)
                                 & (RefreshToken.expires_at > now)))
                       .group_by(RefreshToken.family)))


def create_session(token_hash: str, user_id: int, sid: str, now: datetime.datetime,
                   expires: datetime.datetime) -> None:
    """The first refresh token of a new session ``sid`` (writer thread)."""
    RefreshToken.create(token_hash=token_hash, user=user_id, family=sid, created_at=now, last_used_at=now,
                        expires_at=expires)


def rotate(token_hash: str, fresh_hash: str, ttl: int,
           allow: Callable[[str], bool]) -> Tuple[str, Optional[Any], Optional[str]]:
    """Spend the refresh token ``token_hash`` for a new one, ``fresh_hash`` (writer thread).

    Returns ``(outcome, user, family)``: ``"ok"`` (``user`` the User row), or ``"unknown"``,
    ``"reused"`` (already spent, or spent meanwhile by a concurrent rotation), ``"invalid"``
    (revoked or expired), ``"limited"`` (``allow(family)`` said no; nothing spent), each with
    the user id and the family when the token is known.
    """
    row = RefreshToken.get_or_none(RefreshToken.token_hash == token_hash)
    if row is None:
        return "unknown", None, None
    if row.replaced_by is not None:
        return "reused", row.user_id, row.family
    now = utcnow()
    if row.revoked_at is not None or row.expires_at <= now:
        return "invalid", row.user_id, row.family
    if not allow(row.family):
        return "limited", row.user_id, row.family
    spent = (RefreshToken.update(replaced_by=fresh_hash, last_used_at=now)
             .where((RefreshToken.id == row.id) & RefreshToken.replaced_by.is_null()
                    & RefreshToken.revoked_at.is_null()).execute())
    if spent != 1:  # a concurrent rotation of the same token won
        return "reused", row.user_id, row.family
    RefreshToken.create(token_hash=fresh_hash, user=row.user_id, family=row.family, created_at=now,
                        last_used_at=now, expires_at=now + datetime.timedelta(seconds=ttl))
    return "ok", User.get_by_id(row.user_id), row.family


def family_of(token_hash: str) -> Optional[str]:
    """The session id of a refresh token (spent or not), or None (reader thread)."""
    return RefreshToken.select(RefreshToken.family).where(RefreshToken.token_hash == token_hash).scalar()


def delete_stale(now: datetime.datetime, spent_before: datetime.datetime, revoked_before: datetime.datetime,
                 limit: int) -> int:
    """Delete at most ``limit`` refresh rows no answer needs any more; how many (writer thread).

    Expired rows; rows spent before ``spent_before``; rows revoked before ``revoked_before``
    (but an external token's logout, kept until it expires).
    """
    stale = ((RefreshToken.expires_at <= now)
             | (RefreshToken.replaced_by.is_null(False) & (RefreshToken.last_used_at < spent_before))
             | ((RefreshToken.revoked_at < revoked_before) & ~RefreshToken.family.startswith(EXTERNAL_SID)))
    batch = RefreshToken.select(RefreshToken.id).where(stale).limit(limit)
    return RefreshToken.delete().where(RefreshToken.id.in_(batch)).execute()


def keep_external_logout(marker: str, user_id: int, sid: str, now: datetime.datetime,
                         expires: datetime.datetime) -> None:
    """Remember that the external token's session ``sid`` is logged out until ``expires`` (writer thread)."""
    RefreshToken.insert(token_hash=marker, user=user_id, family=sid, created_at=now, last_used_at=now,
                        expires_at=expires, revoked_at=now).on_conflict_ignore().execute()


def revoke_family(sid: str, now: datetime.datetime) -> int:
    """Revoke every refresh token of session ``sid`` not revoked yet (writer thread)."""
    return RefreshToken.update(revoked_at=now).where(
        (RefreshToken.family == sid) & RefreshToken.revoked_at.is_null()).execute()


def revoke_user_families(user_id: int, now: datetime.datetime) -> int:
    """Revoke every refresh token of ``user_id`` not revoked yet (writer thread)."""
    return RefreshToken.update(revoked_at=now).where(
        (RefreshToken.user == user_id) & RefreshToken.revoked_at.is_null()).execute()


def set_tokens_revoked_at(user_id: int, revoked_at: int) -> int:
    """The user's ``revoked_at`` (unix seconds): external tokens issued at or before it are refused."""
    return User.update(revoked_at=revoked_at).where(User.id == user_id).execute()
