"""Peewee models: the only place that knows tables."""
from .base import BaseModel, database_proxy, init_db, is_postgres, open_database, utcnow
from .chat import GROUP, PRIVATE, Chat, ChatMember, Message
from .notification import Notification, NotificationState, Setting
from .user import User

ALL_MODELS = [User, Chat, ChatMember, Message, Notification, NotificationState, Setting]

__all__ = [
    "BaseModel", "database_proxy", "init_db", "is_postgres", "open_database", "utcnow",
    "GROUP", "PRIVATE", "Chat", "ChatMember", "Message", "Notification", "NotificationState",
    "Setting", "User", "ALL_MODELS",
]
