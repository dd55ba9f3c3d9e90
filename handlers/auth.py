"""Accounts over HTTP: register, login, logout, me."""
from .base import TOKEN_COOKIE, BaseHandler, authenticated, public


class TokenResponseMixin:
    """Answer with a user and a fresh token, and set the browser's login cookie."""

    def send_token(self, user: dict, status: int) -> None:
        services = self.services
        token = services.auth.issue_token(user["id"])
        self.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Lax", path="/",
                        secure=services.config.cookie_secure, expires_days=services.config.token_ttl / 86400)
        self.send_json({"user": user, "access_token": token, "token_type": "bearer",
                        "expires_in": services.config.token_ttl}, status)


class RegisterHandler(TokenResponseMixin, BaseHandler):
    """POST /api/auth/register."""

    @public
    async def post(self):
        """Create an account; 201 with a token. 400 validation, 409 username_taken."""
        user = await self.services.users.register(self.json_body())
        self.send_token(user, 201)


class LoginHandler(TokenResponseMixin, BaseHandler):
    """POST /api/auth/login."""

    @public
    async def post(self):
        """200 with a token; 401 invalid_credentials for a wrong password or unknown user."""
        user = await self.services.users.login(self.json_body())
        self.send_token(user, 200)


class LogoutHandler(BaseHandler):
    """POST /api/auth/logout: clears the browser's login cookie."""

    @public
    def post(self):
        """Forget the cookie (tokens are stateless: they expire on their own)."""
        self.clear_cookie(TOKEN_COOKIE, path="/")
        self.send_json({"ok": True})


class MeHandler(BaseHandler):
    """GET /api/me."""

    @authenticated
    async def get(self):
        """The authenticated user, with ``is_admin``."""
        users = self.services.users
        self.send_json({**await users.get(self.user_id), "is_admin": await users.is_admin(self.user_id)})


class UsersHandler(BaseHandler):
    """GET /api/users?q=prefix."""

    @authenticated
    async def get(self):
        """Users whose username or display name starts with ``q`` (not the caller)."""
        limit = self.int_argument("limit", 20, 1, 100)
        users = await self.services.users.search(self.get_query_argument("q", ""), limit, exclude=self.user_id)
        self.send_json({"users": users})


ROUTES = [
    (r"/api/auth/register", RegisterHandler),
    (r"/api/auth/login", LoginHandler),
    (r"/api/auth/logout", LogoutHandler),
    (r"/api/me", MeHandler),
    (r"/api/users", UsersHandler),
]
