"""Accounts and sessions over HTTP: register, login, refresh, logout, logout-all, stream tickets, me."""
from typing import TYPE_CHECKING

from tornado_app.errors import Forbidden, Unauthorized
from tornado_app.services.identity.external_auth import SESSION_PREFIX as EXTERNAL_SID

from .base import REFRESH_COOKIE, REFRESH_COOKIE_PATH, TOKEN_COOKIE, BaseHandler, authenticated, public

# Not a credential: "1" while the browser holds a refresh cookie, readable by the pages'
# scripts (not HttpOnly) so that a signed-out page goes to /login without probing /api/me
# (a 401 per visit). It lives as long as the refresh cookie and is cleared with it.
SESSION_MARKER_COOKIE = "squall_session"


if TYPE_CHECKING:  # mixed into BaseHandlers (see HandlerMixinBase in handlers/base.py)
    TokenResponseBase = BaseHandler
else:
    TokenResponseBase = object


class TokenResponseMixin(TokenResponseBase):
    """Answer with a user and a token pair, and set the browser's two cookies.

    ``squall_token`` (access, Path=/, lives as long as the access token) lets the pages'
    same-origin requests authenticate; ``squall_refresh`` (Path=/api/auth) is sent only to
    the refresh and logout routes. Both are HttpOnly and SameSite=Strict. ``squall_session``
    (Path=/, not HttpOnly, no secret) only tells the pages that a session exists.
    """

    def send_tokens(self, user: dict, tokens: dict, status: int) -> None:
        config = self.services.config
        self.set_cookie(TOKEN_COOKIE, tokens["access_token"], httponly=True, samesite="Strict", path="/",
                        secure=config.cookie_secure, expires_days=config.token_ttl / 86400)
        self.set_cookie(REFRESH_COOKIE, tokens["refresh_token"], httponly=True, samesite="Strict",
                        path=REFRESH_COOKIE_PATH, secure=config.cookie_secure,
                        expires_days=config.refresh_ttl / 86400)
        self.set_cookie(SESSION_MARKER_COOKIE, "1", samesite="Strict", path="/", secure=config.cookie_secure,
                        expires_days=config.refresh_ttl / 86400)
        self.send_json({"user": user, **tokens}, status)

    def clear_auth_cookies(self) -> None:
        self.clear_cookie(TOKEN_COOKIE, path="/")
        self.clear_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH)
        self.clear_cookie(SESSION_MARKER_COOKIE, path="/")


def require_builtin_auth(handler) -> None:
    """``--auth-mode external``: Squall's own accounts are off. Raises Forbidden ``builtin_auth_disabled``."""
    if handler.services.config.auth_mode == "external":
        raise Forbidden("Sign in through the product: this server accepts only its tokens "
                        "(--auth-mode external)", "builtin_auth_disabled")


class RegisterHandler(TokenResponseMixin, BaseHandler):
    """POST /api/auth/register."""

    @public
    async def post(self):
        """Create an account; 201 with tokens. 400 validation, 409 username_taken, 429 per address;
        403 builtin_auth_disabled in external mode."""
        require_builtin_auth(self)
        user = await self.services.users.register(self.json_body(), self.request.remote_ip)
        self.send_tokens(user, await self.services.sessions.create(user), 201)


class LoginHandler(TokenResponseMixin, BaseHandler):
    """POST /api/auth/login."""

    @public
    async def post(self):
        """200 with tokens; 401 invalid_credentials; 429 rate_limited; 503 server_busy (hashing full);
        403 builtin_auth_disabled in external mode."""
        require_builtin_auth(self)
        user = await self.services.users.login(self.json_body(), self.request.remote_ip)
        self.send_tokens(user, await self.services.sessions.create(user), 200)


class RefreshHandler(TokenResponseMixin, BaseHandler):
    """POST /api/auth/refresh: rotate a refresh token (cookie or ``{"refresh_token"}``)."""

    @public
    async def post(self):
        """200 with a new pair; 401 invalid_refresh_token, or refresh_reused (the session is revoked); 429;
        403 builtin_auth_disabled in external mode."""
        require_builtin_auth(self)
        token = self.json_body().get("refresh_token") or self.get_cookie(REFRESH_COOKIE)
        try:
            user, tokens = await self.services.sessions.refresh(token, self.request.remote_ip)
        except Unauthorized:
            self.clear_auth_cookies()
            raise
        self.send_tokens(user, tokens, 200)


class LogoutHandler(TokenResponseMixin, BaseHandler):
    """POST /api/auth/logout: revoke this session everywhere and clear the cookies."""

    @public
    async def post(self):
        """Revoke the session of the access token (or of a ``refresh_token``); 200 even without one."""
        self.json_body()
        sid = None
        try:
            self.authenticate()
            if self.user_id is None:  # an external token not settled in memory: verify and provision it
                await self.require_known_user()
            sid = self.sid
        except Unauthorized:
            pass  # an expired access token: the refresh token still names the session
        if sid is None:
            sid = await self.services.sessions.session_of_refresh(
                self.json_body().get("refresh_token") or self.get_cookie(REFRESH_COOKIE))
            if sid is not None:
                await self.services.sessions.revoke_session(sid)
        elif sid.startswith(EXTERNAL_SID):  # the product's token: refused until its own exp
            await self.services.sessions.revoke_session(sid, user_id=self.user_id,
                                                        until=self.token_exp + self.services.external.leeway)
        else:
            await self.services.sessions.revoke_session(sid)
        self.clear_auth_cookies()
        self.send_json({"ok": True})


class LogoutAllHandler(TokenResponseMixin, BaseHandler):
    """POST /api/auth/logout-all: every session of the user, on every device."""

    @authenticated
    async def post(self):
        """Bump the user's token version, revoke every refresh token, close every stream."""
        # an external user's older tokens are refused too (iat at or before now: token_revoked)
        external = self.sid is not None and self.sid.startswith(EXTERNAL_SID)
        await self.services.sessions.revoke_user(self.user_id, revoke_tokens=external)
        self.clear_auth_cookies()
        self.send_json({"ok": True})


class StreamTicketHandler(BaseHandler):
    """POST /api/stream-ticket."""

    @authenticated
    def post(self):
        """``{"ticket", "expires_in"}``: a single-use ticket for ``?ticket=`` on /ws/* and /sse/*."""
        if self.auth_source == "ticket":
            raise Unauthorized("A ticket cannot buy another ticket", "invalid_token")
        self.send_json(self.services.sessions.issue_ticket(self.claims))


class MeHandler(BaseHandler):
    """GET /api/me."""

    @authenticated
    async def get(self):
        """The authenticated user, with ``is_admin``."""
        users = self.services.users
        self.send_json({**await users.get(self.user_id), "is_admin": await users.is_admin(self.user_id)})


class UsersHandler(BaseHandler):
    """GET /api/users?q=: the user directory (``--user-search``)."""

    @authenticated
    async def get(self):
        """Users matching ``q`` by the server's mode (not the caller); 400 query_too_short, 403 off, 429."""
        limit = self.int_argument("limit", 20, 1, 100)
        users = await self.services.directory.search(self.user_id, self.get_query_argument("q", ""), limit)
        self.send_json({"users": users})


ROUTES = [
    (r"/api/auth/register", RegisterHandler),
    (r"/api/auth/login", LoginHandler),
    (r"/api/auth/refresh", RefreshHandler),
    (r"/api/auth/logout", LogoutHandler),
    (r"/api/auth/logout-all", LogoutAllHandler),
    (r"/api/stream-ticket", StreamTicketHandler),
    (r"/api/me", MeHandler),
    (r"/api/users", UsersHandler),
]
