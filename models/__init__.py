"""Peewee models: the only place that knows tables."""
from .base import BaseModel, database_proxy, init_db, is_postgres, open_database, tuples, utcnow
from .chat import GROUP, PRIVATE, Chat, ChatMember, Message, Reaction
from .notification import Notification, NotificationState, Setting
from .preferences import PushSubscription, UserPreference
from .session import RefreshToken
from .upload import Upload
from .user import User, new_token_version, username_key
from .webhook import WebhookEvent, WebhookPresence

ALL_MODELS = [User, Chat, ChatMember, Message, Notification, NotificationState, Setting, RefreshToken,
              UserPreference, PushSubscription, Upload, WebhookEvent, WebhookPresence, Reaction]

__all__ = [
    "BaseModel", "database_proxy", "init_db", "is_postgres", "open_database", "tuples", "utcnow",
    "GROUP", "PRIVATE", "Chat", "ChatMember", "Message", "Notification", "NotificationState",
    "Setting", "User", "RefreshToken", "UserPreference", "PushSubscription", "Upload", "new_token_version", "username_key",
    "WebhookEvent", "WebhookPresence",
    "Reaction", "ALL_MODELS",
]
