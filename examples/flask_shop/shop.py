"""A small shop that uses Squall for its chat: its own users and login, Squall tokens minted for them.

What it shows (README.md, "Embed Squall in your app"):

- its own ``users`` table (SQLite) and login, passwords hashed with Werkzeug's scrypt; Squall
  never sees a password and has no accounts of its own (``--auth-mode external``);
- ``POST /squall-token``: a short-lived Squall token for the signed-in user
  (``squall_client.mint_token``), which the page's ``@squall/client`` asks for;
- pages on the shop's own origin that embed Squall's chat and notification stream (the JS
  client, served from the shop's ``/static/squall-client/``; Squall lists the shop's origin in
  ``--allowed-origin``), with toasts;
- a support chat per order (``POST /api/service/chats`` with ``key=order-<id>``), between the
  customer and every staff member, opened with a system message;
- ``POST /squall/webhooks``: Squall's webhooks verified with ``squall_client.verify_webhook``,
  deduplicated by event id; ``notification.unseen`` "emails" the user through SMTP.
"""
from __future__ import annotations

import os
import smtplib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from functools import wraps
from typing import Any

from flask import (Flask, Response, abort, flash, g, jsonify, redirect, render_template, request,
                   send_from_directory, session, url_for)
from werkzeug.security import check_password_hash, generate_password_hash

from squall_client import ApiError, SquallClient, TokenMinter, WebhookVerificationError, verify_webhook

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(os.path.dirname(HERE))
MAX_NAME = 64
MAX_ITEM = 100
MIN_PASSWORD = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_staff INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    item TEXT NOT NULL,
    chat_id INTEGER
);
-- Webhooks come at least once: an event id seen before is acknowledged and not acted on again.
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ShopConfig:
    """Everything the shop needs to know; ``from_env()`` reads it from ``SHOP_*``/``SQUALL_*`` variables."""

    database: str  # the shop's SQLite file
    secret_key: str  # signs the shop's session cookie
    squall_url: str  # Squall as the browser reaches it (and the backend, here the same)
    service_token: str  # Squall's SERVICE_TOKEN: backend only, never sent to a page
    jwt_secret: str  # Squall's --external-jwt-secret
    jwt_issuer: str  # Squall's --external-jwt-issuer
    jwt_audience: str  # Squall's --external-jwt-audience
    webhook_secret: str  # Squall's --webhook-secret (whsec_...)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    mail_from: str = "shop@localhost"
    client_dir: str = os.path.join(REPOSITORY, "clients", "js", "src")  # @squall/client's ES modules
    token_ttl: int = 300

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ShopConfig:
        """Read the configuration; a missing required variable raises ``KeyError`` naming it."""
        env = dict(os.environ if env is None else env)
        return cls(database=env.get("SHOP_DATABASE", os.path.join(HERE, "shop.db")),
                   secret_key=env["SHOP_SECRET_KEY"], squall_url=env.get("SQUALL_URL", "http://127.0.0.1:8000"),
                   service_token=env["SQUALL_SERVICE_TOKEN"], jwt_secret=env["SQUALL_JWT_SECRET"],
                   jwt_issuer=env.get("SQUALL_JWT_ISSUER", "http://127.0.0.1:5000"),
                   jwt_audience=env.get("SQUALL_JWT_AUDIENCE", "squall"),
                   webhook_secret=env["SQUALL_WEBHOOK_SECRET"],
                   smtp_host=env.get("SHOP_SMTP_HOST", "127.0.0.1"), smtp_port=int(env.get("SHOP_SMTP_PORT", "8025")),
                   mail_from=env.get("SHOP_MAIL_FROM", "shop@localhost"))


def squall_id(user_id: int) -> str:
    """The shop user's id in Squall (the ``sub`` of their tokens, the external id of the service API)."""
    return f"shop-{user_id}"


def shop_id(external_id: Any) -> int | None:
    """The shop user id of a Squall external id, or None when it is not one of ours."""
    if isinstance(external_id, str) and external_id.startswith("shop-") and external_id[5:].isdigit():
        return int(external_id[5:])
    return None


def connect(path: str) -> sqlite3.Connection:
    """A connection to the shop's database (created on first use)."""
    db = sqlite3.connect(path, timeout=10)
    db.row_factory = sqlite3.Row
    db.executescript(SCHEMA)
    return db


def add_user(db: sqlite3.Connection, email: str, name: str, password: str, is_staff: bool = False) -> int:
    """Insert a user with a hashed password; raises ``ValueError`` for a bad field or a taken email."""
    email, name = email.strip().lower(), name.strip()
    if "@" not in email or len(email) > 254:
        raise ValueError("Enter an email address")
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise ValueError(f"A name is 1 to {MAX_NAME} printable characters")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"A password has at least {MIN_PASSWORD} characters")
    try:
        with db:
            cursor = db.execute("INSERT INTO users (email, name, password_hash, is_staff) VALUES (?, ?, ?, ?)",
                                (email, name, generate_password_hash(password), int(is_staff)))
    except sqlite3.IntegrityError:
        raise ValueError("This email has an account") from None
    return int(cursor.lastrowid or 0)


def send_unseen_email(config: ShopConfig, to: str, name: str, data: dict[str, Any],
                      names: Callable[[Any], str | None]) -> None:
    """Email ``to`` about their unread messages (``notification.unseen`` data) through SMTP.

    ``names(external_id)`` is the shop's name of a sender (the webhook names people by ids).
    """
    unread = data.get("unread") or {}
    total = int(unread.get("total") or 0)
    message = EmailMessage()
    message["From"] = config.mail_from
    message["To"] = to
    message["Subject"] = f"You have {total} unread message{'s' if total != 1 else ''} at the shop"
    lines = [f"Hello {name},", "", f"{total} message(s) are waiting for you in your order chats:", ""]
    for preview in (data.get("previews") or [])[:5]:
        sender = preview.get("sender")
        who = (names(sender.get("external_id")) if isinstance(sender, dict) else None) or "Someone"
        lines.append(f"- {who}: {str(preview.get('content', ''))[:200]}")
    lines += ["", "Sign in to the shop to answer."]
    message.set_content("\n".join(lines))
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=10) as smtp:
        smtp.send_message(message)


def create_app(config: ShopConfig) -> Flask:
    """The shop's Flask application."""
    app = Flask(__name__, template_folder=os.path.join(HERE, "templates"), static_folder=os.path.join(HERE, "static"))
    # SameSite=Lax: a page of another site cannot POST with the shop's session (orders, tokens).
    app.config.update(SECRET_KEY=config.secret_key, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    minter = TokenMinter(secret=config.jwt_secret, issuer=config.jwt_issuer, audience=config.jwt_audience,
                         ttl=config.token_ttl)
    connect(config.database).close()
    dummy_hash = generate_password_hash("not anyone's password")

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = connect(config.database)
        return g.db

    @app.teardown_appcontext
    def close_db(_exc: BaseException | None) -> None:
        connection = g.pop("db", None)
        if connection is not None:
            connection.close()

    def current_user() -> sqlite3.Row | None:
        user_id = session.get("user_id")
        if not isinstance(user_id, int):
            return None
        return db().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()

    def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                if request.method == "GET":
                    return redirect(url_for("login"))
                abort(401)
            g.user = user
            return view(*args, **kwargs)
        return wrapper

    def squall() -> SquallClient:
        return SquallClient(config.squall_url, config.service_token)

    @app.get("/")
    @signed_in
    def home() -> str:
        orders = db().execute("SELECT * FROM orders WHERE user_id = ? ORDER BY id DESC", (g.user["id"],)).fetchall()
        page_config = {"squallUrl": config.squall_url, "me": {"name": g.user["name"], "sub": squall_id(g.user["id"])}}
        return render_template("home.html", user=g.user, orders=orders, page_config=page_config)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            email = request.form.get("email", "").strip().lower()
            user = db().execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
            # An unknown email is checked against a dummy hash, so the answer takes as long either way.
            stored = user["password_hash"] if user else dummy_hash
            if check_password_hash(stored, request.form.get("password", "")) and user is not None:
                session.clear()
                session["user_id"] = user["id"]
                return redirect(url_for("home"))
            flash("Wrong email or password")
        return render_template("login.html")

    @app.post("/signup")
    def signup() -> Any:
        try:
            user_id = add_user(db(), request.form.get("email", ""), request.form.get("name", ""),
                               request.form.get("password", ""))
        except ValueError as exc:
            flash(str(exc))
            return redirect(url_for("login"))
        session.clear()
        session["user_id"] = user_id
        return redirect(url_for("home"))

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.post("/squall-token")
    @signed_in
    def squall_token() -> Response:
        """A Squall token for the signed-in user: what the page's ``getToken`` fetches."""
        token = minter.mint(squall_id(g.user["id"]), name=g.user["name"])
        response = jsonify({"token": token, "expires_in": config.token_ttl})
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/orders")
    @signed_in
    def place_order() -> Any:
        item = request.form.get("item", "").strip()
        if not 1 <= len(item) <= MAX_ITEM or not item.isprintable():
            flash(f"An item is 1 to {MAX_ITEM} printable characters")
            return redirect(url_for("home"))
        with db():
            order_id = int(db().execute("INSERT INTO orders (user_id, item) VALUES (?, ?)",
                                        (g.user["id"], item)).lastrowid or 0)
        staff = db().execute("SELECT id, name FROM users WHERE is_staff = 1 AND id != ?", (g.user["id"],)).fetchall()
        customer = squall_id(g.user["id"])
        try:
            with squall() as api:
                # Squall names users by the shop's ids; the upserts give them the shop's names.
                # Every call is idempotent (the same fields, the chat's key, the message's
                # client_id): repeating them after a failure reuses the same chat.
                for row in [g.user, *staff]:
                    api.upsert_user(squall_id(row["id"]), display_name=row["name"])
                chat = api.create_chat("group", [customer, *(squall_id(row["id"]) for row in staff)],
                                       title=f"Order #{order_id}: {item}", key=f"order-{order_id}").chat
                api.post_message(chat["id"], f"Order #{order_id} ({item}) is placed. Ask us anything here.",
                                 client_id=f"order-{order_id}-placed")
        except ApiError as exc:
            app.logger.warning("support chat of order %s not created: %s", order_id, exc.code)
            flash("Your order is placed; its support chat will open shortly")
            return redirect(url_for("home"))
        with db():
            db().execute("UPDATE orders SET chat_id = ? WHERE id = ?", (chat["id"], order_id))
        return redirect(url_for("home"))

    def shop_name(external_id: Any) -> str | None:
        user_id = shop_id(external_id)
        row = db().execute("SELECT name FROM users WHERE id = ?", (user_id,)).fetchone() if user_id else None
        return row["name"] if row else None

    @app.post("/squall/webhooks")
    def squall_webhook() -> Any:
        """Squall's webhooks: verified, deduplicated by id, then acted on; 400 when they do not verify."""
        try:
            event = verify_webhook(request.headers, request.get_data(), config.webhook_secret)
        except WebhookVerificationError:
            return jsonify({"error": {"code": "invalid_signature", "message": "The webhook does not verify"}}), 400
        try:
            with db():
                db().execute("INSERT INTO webhook_events (id, type) VALUES (?, ?)", (event.id, event.type))
        except sqlite3.IntegrityError:
            return "", 204  # seen before: a retry of a delivery we already handled
        if event.type == "notification.unseen":
            user_id = shop_id((event.data.get("user") or {}).get("external_id"))
            user = db().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone() if user_id else None
            if user is not None:
                try:
                    send_unseen_email(config, user["email"], user["name"], event.data, shop_name)
                except OSError:
                    # Forget the event, so that Squall's retry (we answer 503) sends the email then.
                    with db():
                        db().execute("DELETE FROM webhook_events WHERE id = ?", (event.id,))
                    return jsonify({"error": {"code": "smtp_unavailable", "message": "Try again later"}}), 503
        return "", 204

    @app.get("/static/squall-client/<path:name>")
    def squall_client_module(name: str) -> Response:
        """@squall/client's ES modules, served from the shop's own origin (the page imports them)."""
        if not name.endswith(".js"):
            abort(404)
        return send_from_directory(config.client_dir, name, mimetype="text/javascript")

    return app
