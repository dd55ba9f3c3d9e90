"""Chats, their members and their messages."""
import peewee

from .base import BaseModel, utcnow
from .user import User

PRIVATE = "private"
GROUP = "group"

# Roles of group members (issue 25): the rights of each are in services/chat/groups.py and docs/protocol.md.
OWNER = "owner"
ADMIN = "admin"
MEMBER = "member"
# message_type of the messages a group change stores in the chat ("Alice added Bob"); users cannot send it.
SYSTEM_MESSAGE = "system"


class Chat(BaseModel):
    """A private (two users) or group conversation."""

    id = peewee.AutoField()  # what peewee adds when none is named; named for the type checker
    kind = peewee.CharField(max_length=16, default=GROUP)
    title = peewee.CharField(max_length=128, default="")
    # "<low user id>:<high user id>" for private chats, so find-or-create is unique
    private_key = peewee.CharField(max_length=64, null=True, unique=True)
    created_at = peewee.DateTimeField(default=utcnow)
    last_message_id = peewee.BigIntegerField(null=True)
    last_activity_at = peewee.DateTimeField(default=utcnow, index=True)
    # The idempotency key of a chat created through the service API (same key, same chat).
    external_key = peewee.CharField(max_length=255, null=True, unique=True)


class ChatMember(BaseModel):
    """Membership of a user in a chat, with that user's read position."""

    id = peewee.AutoField()  # what peewee adds when none is named; named for the type checker
    chat = peewee.ForeignKeyField(Chat, backref="members", on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    chat_id: int  # the ids behind the foreign keys (peewee reads them without a join)
    user_id: int
    last_read_message_id = peewee.BigIntegerField(default=0)
    # messages from others after last_read_message_id, kept up to date on send and read
    unread_count = peewee.IntegerField(default=0)
    joined_at = peewee.DateTimeField(default=utcnow)
    # muted until then (no new_message notification, not in the unread total); far future = until unmuted
    muted_until = peewee.DateTimeField(null=True)
    # unread notifications of type "mention" (a mention of the user, or a reply to them) in this chat
    mention_count = peewee.IntegerField(default=0)
    # owner | admin | member; in private chats and service-API groups everyone is a member
    role = peewee.CharField(max_length=16, default=MEMBER)

    class Meta:
        indexes = ((("chat", "user"), True), (("user", "chat"), False))


class ChatDeparture(BaseModel):
    """A former member of a group (removed or left): their history stays readable up to ``last_message_id``.

    Their ``chat_member`` row is gone (sends, live events, unread and notifications stop with
    it); this row lets history and search show them the messages up to and including the
    system message of their removal. Re-adding the user deletes it.
    """

    chat = peewee.ForeignKeyField(Chat, on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    last_message_id = peewee.BigIntegerField(default=0)
    left_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "chat_departure"
        indexes = ((("user", "chat"), True),)


class Message(BaseModel):
    """A stored chat message; its id is its event id."""

    id = peewee.BigAutoField()
    # indexed by (chat, id) and (sender, client_id) below, which serve lookups by either alone (version 12)
    chat = peewee.ForeignKeyField(Chat, backref="messages", on_delete="CASCADE", index=False)
    sender = peewee.ForeignKeyField(User, on_delete="CASCADE", index=False)
    # The ids behind the foreign keys, which peewee reads without a join (declared for the type checker)
    chat_id: int
    sender_id: int
    content = peewee.TextField()
    message_type = peewee.CharField(max_length=32, default="text_message")
    client_id = peewee.CharField(max_length=64, null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    edited_at = peewee.DateTimeField(null=True)   # last edit by the sender (issue 25)
    deleted_at = peewee.DateTimeField(null=True)  # deleted for everyone: content erased, a tombstone
    reply_to_id = peewee.BigIntegerField(null=True)  # the message of the same chat this one answers
    mentions = peewee.TextField(null=True)  # JSON list of the user ids mentioned with @username
    # Not NULL: this row is not a message but a change of one (edit, delete, reaction) stored so
    # that it takes the next id of the chat stream and is replayed in order on resume. Its JSON is
    # ``{"type", "chat_id", "message_id", ...}`` without any content. Such rows are skipped by
    # history, unread counts and quotas (docs/architecture.md, "Message changes are events").
    event = peewee.TextField(null=True)
    # JSON of a system message (message_type "system"): {"action", "actor_id", "user_ids"?, "title"?, "role"?}
    system = peewee.TextField(null=True)

    class Meta:
        indexes = (
            (("chat", "id"), False),             # history of a chat by id
            (("sender", "client_id"), True),     # idempotent sends (NULLs never collide)
        )


class Reaction(BaseModel):
    """One emoji of one user on one message (at most one of each)."""

    message = peewee.ForeignKeyField(Message, on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    emoji = peewee.CharField(max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("message", "emoji", "user"), True),)
