"""Accounts: registration, login, lookup and search."""
from __future__ import annotations

import re
from typing import Dict, List, Optional

import peewee

from models import User
from ..errors import Conflict, NotFound, RateLimited, Unauthorized, ValidationError
from .auth import AuthService
from .db import DatabaseExecutor
from .ratelimit import RateLimiter

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def user_dict(user: User) -> dict:
    """The public shape of a user: ``{id, username, display_name}``."""
    return {"id": user.id, "username": user.username, "display_name": user.display_name}


def _string(body: dict, name: str, required: bool = True) -> Optional[str]:
    value = body.get(name)
    if value is None:
        if required:
            raise ValidationError(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"'{name}' must be a string")
    return value


class UserService:
    """Creates and authenticates users; caches the immutable id → user mapping."""

    def __init__(self, dbx: DatabaseExecutor, auth: AuthService, login_failures_per_minute: int = 10):
        self.dbx = dbx
        self.auth = auth
        self._cache: Dict[int, dict] = {}
        self._login_failures = RateLimiter(login_failures_per_minute / 60.0, login_failures_per_minute)

    async def register(self, body: dict) -> dict:
        """Create a user from ``{username, password, display_name?}``. Raises ValidationError, Conflict."""
        username = _string(body, "username")
        password = _string(body, "password")
        display_name = _string(body, "display_name", required=False)
        if not USERNAME_RE.match(username):
            raise ValidationError("'username' must be 3-32 characters of letters, digits, '_', '.' or '-'")
        if not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
            raise ValidationError(f"'password' must be at least {MIN_PASSWORD} characters")
        display_name = (display_name or "").strip() or username
        if len(display_name) > 64:
            raise ValidationError("'display_name' must be at most 64 characters")
        password_hash = await self.auth.hash_password(password)

        def create():
            if User.select().where(User.username == username).exists():
                raise Conflict(f"The username '{username}' is taken", "username_taken")
            try:
                return User.create(username=username, display_name=display_name, password_hash=password_hash)
            except peewee.IntegrityError:
                raise Conflict(f"The username '{username}' is taken", "username_taken") from None

        user = await self.dbx.write(create)
        return self._remember(user)

    async def login(self, body: dict) -> dict:
        """Check ``{username, password}``; the same 401 for an unknown user and a wrong password."""
        username = _string(body, "username")
        password = _string(body, "password")
        key = username.lower()
        if not self._login_failures.has_tokens(key):
            raise RateLimited("Too many failed logins for this user; try again in a minute",
                              retry_after=self._login_failures.retry_after(key))
        user = await self.dbx.read(lambda: User.get_or_none(User.username == username))
        ok = await self.auth.verify_password(user.password_hash if user else None, password[:MAX_PASSWORD])
        if not ok or user is None:
            self._login_failures.allow(key)
            raise Unauthorized("Wrong username or password", "invalid_credentials")
        self._login_failures.reset(key)
        return self._remember(user)

    def _remember(self, user: User) -> dict:
        data = user_dict(user)
        self._cache[user.id] = data
        return data

    async def get(self, user_id: int) -> dict:
        """The user ``user_id``. Raises NotFound."""
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        users = await self.get_many([user_id])
        if user_id not in users:
            raise NotFound(f"User {user_id} does not exist", "user_not_found")
        return users[user_id]

    async def get_many(self, user_ids) -> Dict[int, dict]:
        """The existing users among ``user_ids``, by id (one query for the uncached ones)."""
        missing = [uid for uid in set(user_ids) if uid not in self._cache]
        if missing:
            rows = await self.dbx.read(lambda: list(User.select().where(User.id.in_(missing))))
            for row in rows:
                self._remember(row)
        return {uid: self._cache[uid] for uid in user_ids if uid in self._cache}

    async def is_admin(self, user_id: int) -> bool:
        """True when ``user_id`` is an admin (read from the database: grants apply at once)."""
        return bool(await self.dbx.read(
            lambda: User.select(User.is_admin).where(User.id == user_id).scalar()))

    async def ids_of(self, usernames: List[str]) -> Dict[str, int]:
        """``{username: id}`` for ``usernames``. Raises NotFound naming the unknown ones."""
        wanted = list(dict.fromkeys(usernames))
        rows = await self.dbx.read(lambda: list(User.select(User.id, User.username)
                                                .where(User.username.in_(wanted)).tuples()))
        found = {name: uid for uid, name in rows}
        unknown = [name for name in wanted if name not in found]
        if unknown:
            raise NotFound(f"Unknown usernames: {', '.join(unknown[:20])}", "user_not_found")
        return found

    async def search(self, query: str, limit: int = 20, exclude: Optional[int] = None) -> List[dict]:
        """Users whose username or display name starts with ``query`` (case-insensitive)."""
        query = (query or "").strip()
        if len(query) > 64:
            raise ValidationError("'q' must be at most 64 characters")
        def find():
            q = User.select().order_by(User.username).limit(limit)
            if query:
                q = q.where(peewee.fn.LOWER(User.username).startswith(query.lower())
                            | peewee.fn.LOWER(User.display_name).startswith(query.lower()))
            if exclude is not None:
                q = q.where(User.id != exclude)
            return list(q)

        return [self._remember(u) for u in await self.dbx.read(find)]


def set_admin(username: str, admin: bool) -> bool:
    """Grant or revoke the admin console for ``username`` (call with the database open). False if unknown."""
    return User.update(is_admin=admin).where(User.username == username).execute() == 1
