"""Accounts: registration, login and lookup (search: services/identity/directory.py)."""
from __future__ import annotations

import functools
import hashlib
import re
import secrets
import unicodedata
from typing import Dict, List, NamedTuple, Optional, Tuple, Union
from urllib.parse import urlsplit

import peewee

from models import User, tuples, username_key
from models.user import BUILTIN, DELETED, EXTERNAL
from ...errors import Conflict, NotFound, RateLimited, Unauthorized, ValidationError
from ...tasks import Batcher
from .auth import AuthService
from ..delivery.control import UserChanged
from ..delivery.hub import Hub
from ..storage.db import DatabaseExecutor
from ..storage.sql import quote, select_in
from ..operations.ratelimit import RateLimiter, address_key

# Used with fullmatch: "$" alone also matches before a final newline ("alice\n").
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MAX_DISPLAY_NAME = 64  # the column's length: checked here so that no database sees a longer one
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# Unicode categories a display name may not hold: controls (newlines, tabs, escapes), format
# characters (bidirectional overrides that reverse the text around them, invisible marks),
# surrogates, and the line and paragraph separators. The zero-width (non-)joiners are format
# characters that emoji sequences and Persian script need, so they stay.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})


MAX_EXTERNAL_ID = 255   # the column's length; the ``sub`` claim and the service API's ids
MAX_AVATAR_URL = 2048   # the column's length
EXTERNAL_PREFIX = "~"   # usernames of external users: "~" + 24 hex digits, never a valid builtin name


# The external id a deleted user's row keeps: a tombstone no product id can equal (check_external_id
# refuses control characters), so the id is free for a new user yet its deletion is remembered.
# U+0001, not NUL: PostgreSQL refuses NUL in text.
TOMBSTONE_PREFIX = "\x01deleted:"


def tombstone(external_id: str) -> str:
    """The tombstone of a deleted ``external_id``: ``"\\x01deleted:"`` + its SHA-256 in hex (73 characters)."""
    return TOMBSTONE_PREFIX + hashlib.sha256(external_id.encode("utf-8", "surrogatepass")).hexdigest()


def check_external_id(value) -> str:
    """``value`` if it is a product's user id: a string of 1-255 characters, no control characters.

    Raises ValidationError ``invalid_external_id``.
    """
    if (isinstance(value, str) and 1 <= len(value) <= MAX_EXTERNAL_ID
            and not any(unicodedata.category(c) in _REFUSED_CATEGORIES and c not in _ALLOWED_FORMAT
                        for c in value)):
        return value
    raise ValidationError(f"An external id must be a string of 1 to {MAX_EXTERNAL_ID} characters "
                          "without control characters", "invalid_external_id")


def check_avatar_url(value) -> Optional[str]:
    """``value`` if it is an absolute ``https://`` (or ``http://``) URL of at most 2048 characters; None stays None.

    Parsed with ``urlsplit``, as the browsers that load it will: no credentials, no spaces or
    control characters, a host. Raises ValidationError ``invalid_avatar_url``.
    """
    if value is None:
        return None
    bad = ValidationError(f"An avatar URL must be an absolute http(s) URL of at most {MAX_AVATAR_URL} characters",
                          "invalid_avatar_url")
    if not isinstance(value, str) or not value or len(value) > MAX_AVATAR_URL:
        raise bad
    if any(c.isspace() or unicodedata.category(c) in _REFUSED_CATEGORIES for c in value):
        raise bad
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise bad from None
    if parts.scheme not in ("https", "http") or not host or "@" in parts.netloc:
        raise bad
    return value


def external_display_name(display_name: Optional[str], external_id: str) -> str:
    """The display name of an external user: the one given (checked), else the id cut to 64 characters."""
    return check_display_name(display_name, external_id[:MAX_DISPLAY_NAME])


def user_dict(user: Union[User, "CachedUser"]) -> dict:
    """The public shape of a user: ``{id, username, display_name}``, and ``avatar_url`` when the user has one.

    Only external users have avatars (the ``picture`` claim, the service API): builtin users
    keep the shape they always had.
    """
    data = {"id": user.id, "username": user.username, "display_name": user.display_name}
    if user.avatar_url:
        data["avatar_url"] = user.avatar_url
    return data


ACCOUNT_DISABLED = "account_disabled"
ACCOUNT_DELETED = "account_deleted"
_REFUSALS = {ACCOUNT_DISABLED: "This account is disabled", ACCOUNT_DELETED: "This account has been deleted"}


def _string(body: dict, name: str) -> str:
    """The string ``body[name]``. Raises ValidationError when it is missing or not a string."""
    value = _optional_string(body, name)
    if value is None:
        raise ValidationError(f"'{name}' is required")
    return value


def _optional_string(body: dict, name: str) -> Optional[str]:
    """The string ``body[name]``, or None when it is missing or null. Raises ValidationError for another type."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"'{name}' must be a string")
    return value


def check_username(username: str) -> str:
    """``username`` NFKC-normalised, if 3-32 of ``A-Z a-z 0-9 _ . -``. Raises ValidationError ``invalid_username``."""
    if len(username) <= 256:  # bounded before NFKC, which may grow a string
        normal = unicodedata.normalize("NFKC", username)
        if USERNAME_RE.fullmatch(normal):
            return normal
    raise ValidationError("'username' must be 3-32 characters of letters, digits, '_', '.' or '-'",
                          "invalid_username")


def check_display_name(display_name: Optional[str], username: str) -> str:
    """The display name to store (stripped; the username if empty). Raises ValidationError ``invalid_display_name``."""
    if display_name and any(unicodedata.category(c) in _REFUSED_CATEGORIES and c not in _ALLOWED_FORMAT
                            for c in display_name):
        raise ValidationError("'display_name' must not contain control or formatting characters",
                              "invalid_display_name")
    display_name = (display_name or "").strip() or username
    if len(display_name) > MAX_DISPLAY_NAME:
        raise ValidationError(f"'display_name' must be at most {MAX_DISPLAY_NAME} characters",
                              "invalid_display_name")
    return display_name


class UserService:
    """Creates and authenticates users; caches the id → user mapping and each user's token version.

    Failed logins are limited per (username, client address) and per address, so that
    someone elsewhere cannot lock a user out; every login attempt per address (a success
    costs a hash too) and registrations per address. Addresses are keyed by ``address_key``.
    """

    def __init__(self, dbx: DatabaseExecutor, auth: AuthService, hub: Hub, login_failures_per_minute: int = 10,
                 login_failures_per_address_per_minute: int = 30, registrations_per_address_per_minute: int = 10,
                 logins_per_address_per_minute: int = 60):
        self.dbx = dbx
        self.auth = auth
        self._cache: Dict[int, dict] = {}
        self._versions: Dict[int, int] = {}  # user id -> token version (every token carries it)
        # Only the cached users that are refused (disabled or deleted): user id -> 401 code; and
        # those with a token revocation time (unix seconds). Empty for builtin deployments, so the
        # check on every request is one falsy test.
        self._refused: Dict[int, str] = {}
        self._revoked_at: Dict[int, int] = {}
        self.hub = hub  # control messages (announce_changed)
        self._login_failures = RateLimiter(login_failures_per_minute / 60.0, login_failures_per_minute)
        self._address_failures = RateLimiter(login_failures_per_address_per_minute / 60.0,
                                             login_failures_per_address_per_minute)
        self._registrations = RateLimiter(registrations_per_address_per_minute / 60.0,
                                          registrations_per_address_per_minute)
        self._logins = RateLimiter(logins_per_address_per_minute / 60.0, logins_per_address_per_minute)
        # Batched cache misses (see _load): the lookups of the moment share one read.
        self._loads: Batcher[List[int], None] = Batcher(self._read, name="users.load")
        self.loads = 0  # reads of uncached users so far (tests check that lookups share them)

    async def register(self, body: dict, address: Optional[str] = None) -> dict:
        """Create a user from ``{username, password, display_name?}``.

        The username is stored NFKC-normalised and must be unique case-insensitively.
        Raises ValidationError (``invalid_username``, ``invalid_display_name``, ``validation_error``),
        Conflict, RateLimited (per address), ServerBusy (hashing).
        """
        username = _string(body, "username")
        password = _string(body, "password")
        display_name = _optional_string(body, "display_name")
        username = check_username(username)
        if not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
            raise ValidationError(f"'password' must be at least {MIN_PASSWORD} characters")
        display_name = check_display_name(display_name, username)
        address = address_key(address)
        if not self._registrations.allow(address):
            raise RateLimited("Too many registrations from this address; try again later",
                              retry_after=self._registrations.retry_after(address))
        key = username_key(username)
        password_hash = await self.auth.hash_password(password, address)

        def create():
            if User.select().where(User.username_key == key).exists():
                raise Conflict(f"The username '{username}' is taken", "username_taken")
            try:
                return User.create(username=username, username_key=key, display_name=display_name,
                                   password_hash=password_hash)
            except peewee.IntegrityError:
                raise Conflict(f"The username '{username}' is taken", "username_taken") from None

        user = await self.dbx.write(create)
        return self._remember(user)

    async def login(self, body: dict, address: Optional[str] = None) -> dict:
        """Check ``{username, password}`` (username in any case); the same 401 for an unknown user.

        Every attempt takes a token from the address's login bucket, whatever its outcome
        (each one costs a hash). Each also takes one from the (username, address) and the address
        failure buckets before the hash is checked (so concurrent attempts count too); a success
        gives those back. Raises Unauthorized, RateLimited, ServerBusy (hashing pool full).
        """
        username = _string(body, "username")
        password = _string(body, "password")
        address = address_key(address)
        if not self._logins.allow(address):
            raise RateLimited("Too many logins from this address; try again later",
                              retry_after=self._logins.retry_after(address))
        key = username_key(username)[:64]
        pair = (key, address)
        for limiter, bucket, what in ((self._address_failures, address, "from this address"),
                                      (self._login_failures, pair, "for this account from this address")):
            if not limiter.has_tokens(bucket):
                raise RateLimited(f"Too many failed logins {what}; try again later",
                                  retry_after=limiter.retry_after(bucket))
        self._address_failures.allow(address)
        self._login_failures.allow(pair)
        try:
            user = await self.dbx.read(lambda: User.get_or_none(User.username_key == key))
            ok = await self.auth.verify_password(user.password_hash if user else None, password[:MAX_PASSWORD],
                                                 address)
        except Exception:
            self._address_failures.refund(address)  # not checked: not a failure
            self._login_failures.refund(pair)
            raise
        if not ok or user is None or user.kind != BUILTIN:  # external users have no password here
            raise Unauthorized("Wrong username or password", "invalid_credentials")
        self._login_failures.reset(pair)
        self._address_failures.refund(address)
        return self._remember(user)

    async def upsert_external(self, external_id: str, display_name: Optional[str] = None,
                              avatar_url: Optional[str] = None, disabled: Optional[bool] = None,
                              clear_avatar: bool = False, issued_at=None) -> Tuple[dict, bool]:
        """Create or update the external user ``external_id``; ``(user, changed)``.

        Shared by just-in-time provisioning (a valid external token) and the service API.
        None leaves a field as it is (``clear_avatar`` removes the avatar); a new user gets the
        display name given, else the external id cut to 64 characters. ``changed`` is True when
        the user was created or a field changed (callers tell the other processes). Two
        concurrent first requests create one user (the unique external id decides). A deleted
        user is not revived: its row keeps a tombstone of the id (``tombstone``) and the time
        of its deletion (``revoked_at``). ``issued_at`` is given by just-in-time provisioning
        only: the token's ``iat`` (0 when it has none). Such a token of a deleted id issued at
        or before the deletion is refused (NotFound ``user_deleted``); a later one creates a
        new user, whose ``revoked_at`` is the deletion time (older tokens stay refused). The
        service API (``issued_at`` None) creates a new user at once. Raises ValidationError
        (``invalid_external_id``, ``invalid_display_name``, ``invalid_avatar_url``), NotFound
        ``user_deleted``.
        """
        external_id = check_external_id(external_id)
        if display_name is not None:
            display_name = external_display_name(display_name, external_id)
        avatar_url = check_avatar_url(avatar_url)

        def upsert() -> Tuple[User, bool]:
            for _ in range(2):
                user = User.get_or_none(User.external_id == external_id)
                if user is None:
                    dead = User.get_or_none(User.external_id == tombstone(external_id))
                    deleted_at = dead.revoked_at if dead is not None else None
                    if issued_at is not None and deleted_at is not None and issued_at <= deleted_at:
                        raise NotFound("This user has been deleted", "user_deleted")
                    name = EXTERNAL_PREFIX + secrets.token_hex(12)
                    try:
                        with User._meta.database.atomic():
                            return User.create(
                                username=name, username_key=username_key(name), password_hash="",
                                display_name=display_name or external_display_name(None, external_id),
                                external_id=external_id, kind=EXTERNAL, avatar_url=avatar_url,
                                disabled=bool(disabled), revoked_at=deleted_at), True
                    except peewee.IntegrityError:
                        continue  # created by a concurrent request (or another process): read it
                if user.kind != EXTERNAL:
                    raise NotFound("This user has been deleted", "user_deleted")
                fields: Dict[str, object] = {}
                if display_name is not None and display_name != user.display_name:
                    fields["display_name"] = display_name
                if clear_avatar and user.avatar_url is not None:
                    fields["avatar_url"] = None
                elif avatar_url is not None and avatar_url != user.avatar_url:
                    fields["avatar_url"] = avatar_url
                if disabled is not None and bool(disabled) != user.disabled:
                    fields["disabled"] = bool(disabled)
                if fields:
                    User.update(**fields).where(User.id == user.id).execute()
                    for name, value in fields.items():
                        setattr(user, name, value)
                return user, bool(fields)
            raise RuntimeError("external user neither found nor created")  # a unique index misbehaving

        user, changed = await self.dbx.write(upsert)
        return self._remember(user), changed

    def remember(self, user: User) -> dict:
        """Cache ``user`` (just read or written) with its token version; its public shape."""
        return self._remember(user)

    def _remember(self, user: Union[User, "CachedUser"]) -> dict:
        data = user_dict(user)
        self._cache[user.id] = data
        self._versions[user.id] = user.token_version
        if user.kind == DELETED:
            self._refused[user.id] = ACCOUNT_DELETED
        elif user.disabled:
            self._refused[user.id] = ACCOUNT_DISABLED
        elif self._refused:
            self._refused.pop(user.id, None)
        if user.revoked_at is not None:
            self._revoked_at[user.id] = max(int(user.revoked_at), self._revoked_at.get(user.id, 0))
        return data

    def cached(self, user_id: int) -> Optional[dict]:
        """The cached public shape of ``user_id``, or None (memory only)."""
        return self._cache.get(user_id)

    def refusal(self, user_id: int) -> Optional[str]:
        """``account_disabled`` / ``account_deleted`` for a cached user refused, else None (memory only)."""
        return self._refused.get(user_id) if self._refused else None

    def revoked_at(self, user_id: int) -> Optional[int]:
        """The cached token revocation time of ``user_id`` (unix seconds), or None."""
        return self._revoked_at.get(user_id) if self._revoked_at else None

    def set_revoked_at(self, user_id: int, revoked_at: int) -> None:
        """Tokens of ``user_id`` issued at or before ``revoked_at`` are refused from now on (this process)."""
        self._revoked_at[user_id] = max(int(revoked_at), self._revoked_at.get(user_id, 0))

    async def announce_changed(self, user_id: int) -> None:
        """Tell every process (this one first) to forget its cached copy of ``user_id``.

        Profile, disabled, deleted and revocation time are read again on next use; the live
        streams of a user now disabled or deleted are closed (4001 ``account_disabled`` /
        ``account_deleted``, SSE ``auth_expired``). Control message ``UserChanged``.
        """
        await self.hub.control(UserChanged(int(user_id)))

    async def check_version(self, user_id: int, version: int) -> None:
        """Refuse a token whose user is gone (``unknown_user``) or whose version is not the user's.

        In memory once the user is cached. Raises Unauthorized.
        """
        current = self._versions.get(user_id)
        if current is None:
            try:
                await self.get(user_id)
            except NotFound:
                raise Unauthorized("The account of this token no longer exists", "unknown_user") from None
            current = self._versions.get(user_id)
        if current != version:
            raise Unauthorized("The access token is invalid", "invalid_token")
        if self._refused:
            refused = self._refused.get(user_id)
            if refused is not None:
                raise Unauthorized(_REFUSALS[refused], refused)

    def token_version(self, user_id: int) -> Optional[int]:
        """The cached token version of ``user_id`` (None when not cached)."""
        return self._versions.get(user_id)

    def set_token_version(self, user_id: int, version: int) -> None:
        """Another process (or this one) bumped ``user_id``'s version: older tokens stop here."""
        if user_id in self._versions or user_id in self._cache:
            self._versions[user_id] = max(version, self._versions.get(user_id, version))

    async def bump_token_version(self, user_id: int) -> int:
        """Increment ``user_id``'s token version in the database; returns the new one."""
        def bump():
            User.update(token_version=User.token_version + 1).where(User.id == user_id).execute()
            return User.select(User.token_version).where(User.id == user_id).scalar()
        version = await self.dbx.write(bump)
        self._versions[user_id] = version
        return version

    def forget(self, user_id: int) -> None:
        """Drop ``user_id`` from the cache (it is read again on next use)."""
        self._cache.pop(user_id, None)
        self._versions.pop(user_id, None)
        self._refused.pop(user_id, None)
        self._revoked_at.pop(user_id, None)

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
            await self._load(missing)
        return {uid: self._cache[uid] for uid in user_ids if uid in self._cache}

    async def _load(self, user_ids: List[int]) -> None:
        """Read ``user_ids`` into the cache, together with every other lookup of the moment.

        After a restart every client reconnects at once and each open checks its user's
        token version: the lookups that arrive while a read runs are served by the next
        one, a single query for all of them (like the chat's group commit).
        """
        await self._loads.submit(user_ids)

    async def _read(self, batch: List[List[int]]) -> list:
        """One query for every id of ``batch`` into the cache. Raises the database's error."""
        rows = await self.dbx.read(_read_users, list({uid for ids in batch for uid in ids}))
        self.loads += 1
        for row in rows:
            self._remember(row)
        return [None] * len(batch)

    async def is_admin(self, user_id: int) -> bool:
        """True when ``user_id`` is an admin (read from the database: grants apply at once)."""
        return bool(await self.dbx.read(
            lambda: User.select(User.is_admin).where(User.id == user_id).scalar()))

    async def ids_of(self, usernames: List[str]) -> Dict[str, int]:
        """``{username: id}`` for ``usernames`` (matched like logins, ignoring case). Raises NotFound naming the unknown ones."""
        wanted = list(dict.fromkeys(usernames))
        keys = {name: username_key(name) for name in wanted}
        rows = await self.dbx.read(lambda: list(User.select(User.id, User.username_key)
                                                .where(User.username_key.in_(list(keys.values()))).tuples()))
        by_key = {key: uid for uid, key in rows}
        found = {name: by_key[key] for name, key in keys.items() if key in by_key}
        unknown = [name for name in wanted if name not in found]
        if unknown:
            raise NotFound(f"Unknown usernames: {', '.join(unknown[:20])}", "user_not_found")
        return found


# What UserService._remember keeps of a user: the public shape, the token version and the refusals.
class CachedUser(NamedTuple):
    """A user row as the cache reads it (the columns named as the model's fields)."""

    id: int
    username: str
    display_name: str
    avatar_url: Optional[str]
    token_version: int
    kind: str
    disabled: bool
    revoked_at: Optional[int]


@functools.lru_cache(maxsize=None)
def _users_sql() -> str:
    """The cached columns of a list of users (``IN ({})``), written out once: Peewee took longer to
    build the statement (and a named-tuple class per query) than SQLite takes to run it."""
    columns = ", ".join(quote(getattr(User, f).column_name) for f in CachedUser._fields)
    return f"SELECT {columns} FROM {quote(User._meta.table_name)} WHERE {quote(User.id.column_name)} IN ({{}})"


def _read_users(user_ids: List[int]) -> List[CachedUser]:
    """The users among ``user_ids``, as ``CachedUser`` tuples: no model built per row (every stream
    open after a restart reads its user here). Database thread."""
    return [CachedUser._make(row) for row in select_in(User, _users_sql(), user_ids, 1000)]


def set_admin(username: str, admin: bool) -> Optional[str]:
    """Grant or revoke the admin console for ``username`` (any case; call with the database open).

    Returns the username as the user spelled it at registration, None if unknown.
    """
    user = User.get_or_none(User.username_key == username_key(username))
    if user is None:
        return None
    User.update(is_admin=admin).where(User.id == user.id).execute()
    return user.username


def list_admins() -> List[str]:
    """The usernames (as registered) of every admin, sorted by identity (call with the database open)."""
    return [name for (name,) in tuples(User.select(User.username).where(User.is_admin == True)  # noqa: E712
                                       .order_by(User.username_key))]
