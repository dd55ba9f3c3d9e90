"""Handlers: the edges (HTTP API, WebSocket, SSE, pages). Each module ends with its ROUTES."""
from . import (admin, auth, chat_ws, chats, health, metrics, notifications, notifications_ws, pages, poll,
               preferences, service, sse, stats, uploads)


def all_routes(web_dir: str) -> list:
    """Every route of the application, API first."""
    return (auth.ROUTES + chats.ROUTES + notifications.ROUTES + chat_ws.ROUTES + notifications_ws.ROUTES
            + preferences.ROUTES + sse.ROUTES + poll.ROUTES + stats.ROUTES + health.ROUTES + metrics.ROUTES
            + admin.ROUTES + service.ROUTES + uploads.ROUTES
            + pages.routes(web_dir))
