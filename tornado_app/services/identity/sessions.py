"""Sessions: refresh-token rotation, revocation (logout, theft), stream tickets, live-connection expiry.

A session is a refresh-token family; its id (``sid``) is in every access token and ticket
of that login. Lifecycle (docs/security.md has the sequence diagram):

    login/register -> session row + access token (token_ttl) + refresh token (refresh_ttl)
    refresh        -> the presented refresh token is spent (``replaced_by``), a new pair issued;
                      a spent token presented again revokes the whole family (theft detection)
    logout         -> the family is revoked; its sid joins the in-memory revocation list of
                      every process (a control message over the broker) until its access
                      tokens would have expired anyway; its live connections are closed
    logout-all     -> the user's token version is bumped (in the database, announced over
                      the broker): every older token of the user stops working everywhere

Refreshes are limited per client address (``address_key``) and per session, so that neither
one address nor one stolen token keeps the writer busy. Once an hour ``prune`` deletes the rows
no answer needs any more: expired ones, spent ones past ``refresh_reuse_window`` and those of
sessions revoked longer ago than an access token lives.

Checks on every request stay in memory: the revocation list (``sid -> until``), the used
tickets (``jti -> until``) and the users' token versions (UserService's cache).

Control messages (``Hub.control``; the classes and their wire format are in
services/delivery/control.py): ``SessionsRevoked`` (logout), ``TokenVersionChanged`` (log out
everywhere, the service API's revoke), ``UserChanged`` (UserService.announce_changed: the
streams of a user now disabled or deleted close), ``TicketUsed``.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from models import utcnow
from ...errors import NotFound, RateLimited, Unauthorized
from ...tasks import spawn
from .auth import AuthService, Claims
from ..storage.db import DatabaseExecutor
from ..delivery.control import SessionsRevoked, TicketUsed, TokenVersionChanged, UserChanged
from ..delivery.connection import Connection, EndReason
from ..delivery.hub import Hub
from ..operations.ratelimit import RateLimiter, address_key
from ..delivery.registry import ConnectionRegistry
from . import session_store as store
from .external_auth import SESSION_PREFIX as EXTERNAL_SID
from .users import ACCOUNT_DELETED, UserService

log = logging.getLogger("squall.sessions")

LOGGED_OUT = "logged_out"
TOKEN_EXPIRED = "token_expired"
REFRESH_REUSED = "refresh_reused"
_PRUNE_EVERY = 60.0
_PRUNE_BATCH = 5000  # refresh rows deleted per write transaction (the writer is shared)


@dataclass(frozen=True)
class RefreshLimits:
    """Refresh-token limits (see Config): per address and per session a minute, the reuse window in seconds."""

    per_address_per_minute: int = 120
    per_session_per_minute: int = 30
    reuse_window: int = 7 * 24 * 3600


def _epoch(moment: datetime.datetime) -> float:
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


class SessionService:
    """Issues, rotates and revokes sessions; answers "is this token still good?" from memory."""

    def __init__(self, dbx: DatabaseExecutor, auth: AuthService, users: UserService, hub: Hub,
                 registry: ConnectionRegistry, refresh_ttl: int, token_expiring_notice: float,
                 limits: RefreshLimits = RefreshLimits()):
        self.dbx = dbx
        self.auth = auth
        self.users = users
        self.hub = hub
        self.registry = registry
        self.refresh_ttl = refresh_ttl
        self.notice = token_expiring_notice
        self._installation: Optional[str] = None  # read by start()
        self._revoked: Dict[str, float] = {}  # sid -> epoch until which its tokens are refused
        self._used_tickets: Dict[str, float] = {}  # jti -> epoch after which it expired anyway
        self._pruned_at = 0.0
        self.limits = limits
        self._address_refreshes = RateLimiter(limits.per_address_per_minute / 60.0, limits.per_address_per_minute)
        # touched only on the writer thread (inside ``rotate``), where the session is known
        self._session_refreshes = RateLimiter(limits.per_session_per_minute / 60.0, limits.per_session_per_minute)

    # Start -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read (or create) the installation id; load sessions revoked while tokens may still live."""
        self._installation = await self.dbx.write(store.installation_id)
        self.auth.issuer = f"squall:{self.installation_id}"
        now = utcnow()
        since = now - datetime.timedelta(seconds=self.auth.token_ttl + 1)
        for sid, revoked_at, expires_at in await self.dbx.read(store.revoked_families, since, now):
            if isinstance(revoked_at, str):  # SQLite aggregates come back as text
                revoked_at = datetime.datetime.fromisoformat(revoked_at)
            if isinstance(expires_at, str):
                expires_at = datetime.datetime.fromisoformat(expires_at)
            if sid.startswith(EXTERNAL_SID):  # a logged-out external token: refused until its own exp
                self._revoked[sid] = _epoch(expires_at)
            else:
                self._revoked[sid] = _epoch(revoked_at) + self.auth.token_ttl + 1

    @property
    def installation_id(self) -> str:
        """This database's installation id (``iss`` of every token, broker scope). Raises RuntimeError before start."""
        if self._installation is None:
            raise RuntimeError("SessionService.installation_id before start")
        return self._installation

    # Issuing and rotating ---------------------------------------------------------------------

    def _hash(self, refresh_token: str) -> str:
        # Keyed by the installation: a refresh token means nothing to another database.
        return hmac.new(self.installation_id.encode(), refresh_token.encode(), hashlib.sha256).hexdigest()

    def _pair(self, user_id: int, sid: str, refresh_token: str) -> dict:
        version = self.users.token_version(user_id)
        if version is None:  # callers load the user first (login, register, refresh)
            raise Unauthorized("The account of this token no longer exists", "unknown_user")
        access, exp = self.auth.issue_access(user_id, sid, version)
        return {"access_token": access, "token_type": "bearer", "expires_in": self.auth.token_ttl,
                "expires_at": exp, "refresh_token": refresh_token, "refresh_expires_in": self.refresh_ttl}

    async def create(self, user: dict) -> dict:
        """A new session of ``user`` (just registered or logged in): its token answer."""
        sid = secrets.token_hex(16)
        refresh = secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + datetime.timedelta(seconds=self.refresh_ttl)
        await self.dbx.write(store.create_session, self._hash(refresh), user["id"], sid, now, expires)
        return self._pair(user["id"], sid, refresh)

    async def refresh(self, refresh_token, address: Optional[str] = None) -> Tuple[dict, dict]:
        """Rotate ``refresh_token`` (sent from ``address``): ``(user, token answer)``; the presented token is spent.

        Raises Unauthorized: ``invalid_refresh_token`` (unknown, expired, revoked) or
        ``refresh_reused`` (already spent: the whole family is revoked); RateLimited past the
        address's or the session's refreshes a minute (the token is not spent then).
        """
        address = address_key(address)
        if not self._address_refreshes.allow(address):
            raise RateLimited("Too many refreshes from this address; try again later",
                              retry_after=self._address_refreshes.retry_after(address))
        if not isinstance(refresh_token, str) or not refresh_token or len(refresh_token) > 256:
            raise Unauthorized("A refresh token is required", "invalid_refresh_token")
        token_hash = self._hash(refresh_token)
        fresh = secrets.token_urlsafe(32)
        fresh_hash = self._hash(fresh)
        ttl = self.refresh_ttl

        # the session's limiter is asked on the writer thread, once the token's session is known
        outcome, user, sid = await self.dbx.write(store.rotate, token_hash, fresh_hash, ttl,
                                                  self._session_refreshes.allow)
        if outcome == "reused":
            log.warning("a spent refresh token was presented again: revoking its session (user %s)", user)
            await self.revoke_session(sid, REFRESH_REUSED)
            raise Unauthorized("This refresh token was already used; the session is revoked", REFRESH_REUSED)
        if outcome == "limited":
            raise RateLimited("Too many refreshes of this session; try again later",
                              retry_after=self._session_refreshes.retry_after(sid))
        if outcome != "ok":
            raise Unauthorized("The refresh token is invalid or expired", "invalid_refresh_token")
        data = self.users.remember(user)
        return data, self._pair(user.id, sid, fresh)

    async def session_of_refresh(self, refresh_token) -> Optional[str]:
        """The session id of a refresh token (spent or not), or None."""
        if not isinstance(refresh_token, str) or not refresh_token or len(refresh_token) > 256:
            return None
        token_hash = self._hash(refresh_token)
        return await self.dbx.read(store.family_of, token_hash)

    async def prune(self, now: Optional[datetime.datetime] = None) -> int:
        """Delete the refresh rows no answer needs any more; how many (run hourly with the services).

        Gone: expired rows (the answer is the same 401 for an unknown token); spent rows spent
        more than ``reuse_window`` ago (presented again they would revoke their session: that is
        the detection this window keeps); rows revoked longer ago than an access token lives
        (``start`` reloads only the newer ones). Deleted in batches, each its own transaction.
        """
        now = now or utcnow()
        spent_before = now - datetime.timedelta(seconds=self.limits.reuse_window)
        revoked_before = now - datetime.timedelta(seconds=self.auth.token_ttl + 60)
        deleted = 0
        while True:
            count = await self.dbx.write(store.delete_stale, now, spent_before, revoked_before, _PRUNE_BATCH)
            deleted += count
            if count < _PRUNE_BATCH:
                break
        if deleted:
            log.info("pruned %d spent, expired or revoked refresh tokens", deleted)
        return deleted

    # Revoking ------------------------------------------------------------------------------

    async def revoke_session(self, sid: str, reason: str = LOGGED_OUT, user_id: Optional[int] = None,
                             until: Optional[float] = None) -> None:
        """Revoke session ``sid`` everywhere: refresh family, access tokens, live connections.

        An external token's session (sid ``ext:…``; pass its ``user_id`` and ``until``, the token's
        ``exp`` plus the leeway) is refused until then, however long the product's token lives,
        and across restarts: it is kept as a revoked ``refresh_token`` row (family = the sid,
        ``expires_at`` = ``until``, a hash no refresh token has) that ``start`` reloads and
        ``prune`` deletes once it has expired.
        """
        now = utcnow()
        if sid.startswith(EXTERNAL_SID) and user_id is not None and until is not None:
            expires = datetime.datetime.fromtimestamp(until, datetime.timezone.utc).replace(tzinfo=None)
            marker = hashlib.sha256(("revoked-external-token:" + sid).encode()).hexdigest()
            await self.dbx.write(store.keep_external_logout, marker, user_id, sid, now, expires)
        else:
            await self.dbx.write(store.revoke_family, sid, now)
            until = time.time() + self.auth.token_ttl + 1
        await self.hub.control(SessionsRevoked((sid,), float(until), LOGGED_OUT))

    async def revoke_user(self, user_id: int, reason: str = LOGGED_OUT, revoke_tokens: bool = False) -> None:
        """"Log out everywhere": bump the token version, revoke every refresh family of the user.

        Every stream of the user closes on every process (4001 ``reason``, SSE ``auth_expired``).
        With ``revoke_tokens`` (the service API's revoke) the user's ``revoked_at`` becomes now
        (unix seconds) as well: every external token of the user with an ``iat`` at or before
        it (or without ``iat``) is refused with 401 ``token_revoked``, on every process.
        """
        now = utcnow()
        revoked_at = None
        if revoke_tokens:
            revoked_at = int(time.time())
            await self.dbx.write(store.set_tokens_revoked_at, user_id, revoked_at)
            self.users.set_revoked_at(user_id, revoked_at)
        version = await self.users.bump_token_version(user_id)
        await self.dbx.write(store.revoke_user_families, user_id, now)
        await self.hub.control(TokenVersionChanged(user_id, version, reason, revoked_at))

    # Control messages (from this process or another one, through the broker; ControlDispatch) ----

    def on_sessions_revoked(self, message: SessionsRevoked) -> None:
        """Refuse the sessions' tokens until ``message.until``; end their streams here."""
        for sid in message.sids:
            self._revoked[sid] = max(message.until, self._revoked.get(sid, 0.0))
            for conn in list(self.registry.session_connections(sid)):
                self._end(conn, message.reason or LOGGED_OUT)

    def on_token_version_changed(self, message: TokenVersionChanged) -> None:
        """Remember the user's new token version (and revocation time); end older streams here."""
        user_id, version = message.user_id, message.version
        if message.revoked_at is not None:
            self.users.set_revoked_at(user_id, message.revoked_at)
        self.users.set_token_version(user_id, version)
        for conn in list(self.registry.user_connections(user_id)):
            if conn.token_version is not None and conn.token_version < version:
                self._end(conn, message.reason or LOGGED_OUT)

    def on_ticket_used(self, message: TicketUsed) -> None:
        """The ticket was spent on some process: refuse it here too."""
        self._used_tickets[message.jti] = message.until

    def on_user_changed(self, message: UserChanged) -> None:
        """Forget the cached user; end its streams here if it is now disabled or deleted."""
        self.users.forget(message.user_id)
        if self.registry.user_connections(message.user_id):
            spawn(self._end_refused(message.user_id), name="sessions.end_refused")

    async def _end_refused(self, user_id: int) -> None:
        """After a change of ``user_id``: end its streams here if it is now disabled or deleted."""
        reason: Optional[str]
        try:
            await self.users.get(user_id)
        except NotFound:
            reason = ACCOUNT_DELETED
        else:
            reason = self.users.refusal(user_id)
        if reason is not None:
            for conn in list(self.registry.user_connections(user_id)):
                self._end(conn, reason)

    @staticmethod
    def _end(conn: Connection, reason: str) -> None:
        try:
            conn.end(EndReason.for_auth(reason))
        except Exception:
            log.exception("closing a connection of a revoked session")

    # Checks (memory only) -------------------------------------------------------------------

    def check(self, claims: Claims) -> Claims:
        """Refuse the token of a revoked session. Raises Unauthorized ``token_revoked``."""
        until = self._revoked.get(claims.sid)
        if until is not None and until > time.time():
            raise Unauthorized("This session has been logged out", "token_revoked")
        return claims

    def issue_ticket(self, claims: Claims) -> dict:
        """``{"ticket", "expires_in"}`` for the session of ``claims``."""
        return {"ticket": self.auth.issue_ticket(claims), "expires_in": self.auth.ticket_ttl}

    def use_ticket(self, ticket: str) -> Claims:
        """Spend a ticket; its claims (``exp`` is the access token's). Raises Unauthorized ``invalid_ticket``."""
        if len(ticket) > 2048:
            raise Unauthorized("The stream ticket is invalid", "invalid_ticket")
        claims = self.auth.verify_ticket(ticket)
        if claims.jti in self._used_tickets:
            raise Unauthorized("The stream ticket was already used", "invalid_ticket")
        until = time.time() + self.auth.ticket_ttl + 1
        self._used_tickets[claims.jti] = until
        # Other processes learn of the use over the broker (a ticket is single use everywhere,
        # but the same ticket presented to two processes within the broker's latency is the
        # window this leaves; see docs/security.md).
        spawn(self.hub.control(TicketUsed(claims.jti, until)), name="sessions.ticket_used")
        return self.check(claims)

    # Live connections: one sweep per second for all of them ----------------------------------

    def warn_at(self, issued: float, exp: int) -> int:
        """When a WebSocket of a token expiring at ``exp`` gets ``token_expiring``."""
        return int(exp - min(self.notice, max(1.0, (exp - issued) / 2)))

    def sweep(self, now: Optional[float] = None) -> None:
        """Warn connections whose token expires soon; end those whose token expired; prune lists."""
        now = time.time() if now is None else now
        warn, expired = self.registry.due(int(now))
        for conn in warn:
            try:
                conn.token_expiring()
            except Exception:
                log.exception("token_expiring")
        for conn in expired:
            self._end(conn, TOKEN_EXPIRED)
        if now - self._pruned_at >= _PRUNE_EVERY:
            self._pruned_at = now
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._used_tickets = {k: v for k, v in self._used_tickets.items() if v > now}
