"""The one shape of a message: what history, live delivery, acks, replay, search and the service API send.

docs/protocol.md ("Shapes used below", "Changing a message", "Replies and mentions",
"System messages"): ``{"id", "chat_id", "sender_id", "sender_name", "content",
"message_type", "client_id", "created_at"}``, then, each only when set, ``edited_at``,
``reply_to`` (the quoted preview), ``mentions``, ``attachments``, ``reactions`` and
``system``. A deleted message is a tombstone: ``deleted: true``, no ``content`` nor anything
after it.

``message_shape`` builds it from values (a send just stored, a system message);
``message_dict`` from a stored row; ``render`` turns a page of rows and their ``Extras``
(``history_store.load_extras``, on a database thread) into shapes with their attachments,
reactions, quoted previews and names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from models import Message
from ..delivery.events import iso
from ..delivery.notifications import content_preview
from ..identity.users import UserService


def quote(target: Optional[Message], target_id: int, sender_name: str) -> dict:
    """The quoted preview of the message replied to (``deleted`` once it is, or if it is gone)."""
    if target is None or target.deleted_at is not None:
        return {"id": target_id, "deleted": True}
    return {"id": target.id, "sender_id": getattr(target, "sender_id"), "sender_name": sender_name,
            "content_preview": content_preview(target.content)}


def mentions_of(m: Message) -> Optional[list]:
    """The stored ``mentions`` of a message (None when it has none)."""
    return json.loads(m.mentions) if m.mentions else None


def message_shape(mid: int, chat_id: int, sender_id: int, sender_name: str, content: str, message_type: str,
                  client_id: Optional[str], created_at: str, *, deleted: bool = False,
                  edited_at: Optional[str] = None, reply_to: Optional[dict] = None,
                  mentions: Optional[List[int]] = None, attachments: Optional[List[dict]] = None,
                  reactions: Optional[List[dict]] = None, system: Optional[dict] = None) -> dict:
    """The public shape of a message from its values (``created_at``, ``edited_at``: ISO text)."""
    out = {"id": mid, "chat_id": chat_id, "sender_id": sender_id, "sender_name": sender_name,
           "content": content, "message_type": message_type, "client_id": client_id, "created_at": created_at}
    if deleted:
        del out["content"]
        out["deleted"] = True
        return out
    if edited_at is not None:
        out["edited_at"] = edited_at
    if reply_to is not None:
        out["reply_to"] = reply_to
    if mentions:
        out["mentions"] = mentions
    if attachments:
        out["attachments"] = attachments
    if reactions:
        out["reactions"] = reactions
    if system is not None:  # a group change's system message (issue 25): its structured fields
        out["system"] = system
    return out


def message_dict(m: Message, sender_name: str, attachments: Optional[List[dict]] = None,
                 reactions: Optional[List[dict]] = None, reply: Optional[dict] = None) -> dict:
    """The public shape of a stored message (not a change row); ``reply`` is the quoted preview of
    ``m.reply_to_id`` (``{id, deleted: true}`` when not given: the quoted message is gone).
    """
    return message_shape(
        m.id, m.chat_id, m.sender_id, sender_name, m.content, m.message_type, m.client_id, iso(m.created_at) or "",
        deleted=m.deleted_at is not None,
        edited_at=iso(m.edited_at) if m.edited_at is not None else None,
        reply_to=(reply or {"id": m.reply_to_id, "deleted": True}) if m.reply_to_id is not None else None,
        mentions=mentions_of(m), attachments=attachments, reactions=reactions,
        system=json.loads(m.system) if m.system else None)


@dataclass
class Extras:
    """What the shapes of a page of messages need besides the rows: read in the same database call."""

    files: Dict[int, List[dict]] = field(default_factory=dict)  # message id -> attachments
    reactions: Dict[int, List[dict]] = field(default_factory=dict)  # message id -> reactions
    targets: Dict[int, Message] = field(default_factory=dict)  # id -> a message replied to


async def render(users: UserService, rows: Sequence[Message], extras: Extras) -> List[dict]:
    """``message_dict`` of each of ``rows`` (messages, not change rows) with the names of their senders."""
    targets = extras.targets
    people = await users.get_many({m.sender_id for m in rows} | {t.sender_id for t in targets.values()})

    def name(uid: int) -> str:
        return people.get(uid, {}).get("display_name", "")

    out = []
    for m in rows:
        reply = None
        if m.reply_to_id is not None:
            target = targets.get(m.reply_to_id)
            reply = quote(target, m.reply_to_id, name(target.sender_id) if target is not None else "")
        out.append(message_dict(m, name(m.sender_id), extras.files.get(m.id), extras.reactions.get(m.id), reply))
    return out
