"""Control messages between processes: named, typed, with one encoder, one decoder and one dispatcher.

A control message tells every process of a deployment to change what it keeps in memory
(revoked sessions, used tickets, cached users, preferences, mutes, member lists). It rides
the broker like an event (envelope kind ``ctl``, see ``broker/base.py``) but reaches no
connection: ``Hub.control`` applies it in this process at once and publishes it, and every
process (this one included, again: every handler is idempotent) hands what it receives to
``ControlDispatch``.

Wire format (the envelope's ``d``): a compact JSON object, ``"t"`` naming the kind and one
letter per field, as before these classes existed; every process of a deployment runs the
same version. ``decode`` treats the text as hostile (it comes from the broker): anything but
a known kind with every field of the right type raises ``ControlError``.

    kind       class                 fields (wire key)
    revoke     SessionsRevoked       sids (s), until (e), reason (r)
    version    TokenVersionChanged   user_id (u), version (v), reason (r), revoked_at (ra, optional)
    user       UserChanged           user_id (u)
    ticket     TicketUsed            jti (j), until (e)
    prefs      PreferencesChanged    user_id (u)
    mute       ChatMuteChanged       chat_id (c), user_id (u), until (e)
    subs       SubscriptionsChanged  user_id (u)
    members    MembersChanged        chat_id (c), added (a), removed (r)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple, Type, Union

# Bounds of what ``decode`` accepts: far above what this version sends (one sid per revoke,
# a group's members per change), low enough that a forged message cannot make a process work hard.
MAX_TEXT = 1_000_000  # characters of one message's JSON text
MAX_ITEMS = 100_000  # items of one list field
MAX_STRING = 1024  # characters of one string field (sids, ticket ids, reasons)


class ControlError(ValueError):
    """The text is not a control message of this version (from the broker: hostile until decoded)."""


# Field kinds: how one field is written and checked.
INT, FLOAT, STR, INTS, STRS, OPT_INT = "int", "float", "str", "ints", "strs", "opt_int"


@dataclass(frozen=True, slots=True)
class SessionsRevoked:
    """Sessions logged out: refuse their tokens until ``until`` (epoch s), end their streams with ``reason``."""

    TAG: ClassVar[str] = "revoke"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("s", "sids", STRS), ("e", "until", FLOAT),
                                                        ("r", "reason", STR))
    sids: Tuple[str, ...]
    until: float
    reason: str


@dataclass(frozen=True, slots=True)
class TokenVersionChanged:
    """A user's token version is now ``version`` (log out everywhere); older tokens and streams end.

    ``revoked_at`` (unix seconds, the service API's revoke): external tokens issued at or before it are refused.
    """

    TAG: ClassVar[str] = "version"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("u", "user_id", INT), ("v", "version", INT),
                                                        ("r", "reason", STR), ("ra", "revoked_at", OPT_INT))
    user_id: int
    version: int
    reason: str
    revoked_at: Optional[int] = None


@dataclass(frozen=True, slots=True)
class UserChanged:
    """A user's profile, status or revocation time changed: forget the cached copy (streams of a refused user end)."""

    TAG: ClassVar[str] = "user"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("u", "user_id", INT),)
    user_id: int


@dataclass(frozen=True, slots=True)
class TicketUsed:
    """A stream ticket was spent: refuse it again until ``until`` (epoch s)."""

    TAG: ClassVar[str] = "ticket"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("j", "jti", STR), ("e", "until", FLOAT))
    jti: str
    until: float


@dataclass(frozen=True, slots=True)
class PreferencesChanged:
    """A user's notification preferences changed: forget the cached copy."""

    TAG: ClassVar[str] = "prefs"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("u", "user_id", INT),)
    user_id: int


@dataclass(frozen=True, slots=True)
class ChatMuteChanged:
    """``user_id`` muted ``chat_id`` until ``until`` (epoch s; a past time or 0: unmuted)."""

    TAG: ClassVar[str] = "mute"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("c", "chat_id", INT), ("u", "user_id", INT),
                                                        ("e", "until", FLOAT))
    chat_id: int
    user_id: int
    until: float


@dataclass(frozen=True, slots=True)
class SubscriptionsChanged:
    """A user's Web Push subscriptions changed: forget the cached preferences (they count them)."""

    TAG: ClassVar[str] = "subs"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("u", "user_id", INT),)
    user_id: int


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """Members were ``added`` to and ``removed`` from ``chat_id``: forget its member list, gate the removed."""

    TAG: ClassVar[str] = "members"
    WIRE: ClassVar[Tuple[Tuple[str, str, str], ...]] = (("c", "chat_id", INT), ("a", "added", INTS),
                                                        ("r", "removed", INTS))
    chat_id: int
    added: Tuple[int, ...]
    removed: Tuple[int, ...]


ControlMessage = Union[SessionsRevoked, TokenVersionChanged, UserChanged, TicketUsed, PreferencesChanged,
                       ChatMuteChanged, SubscriptionsChanged, MembersChanged]
KINDS: Dict[str, Type[ControlMessage]] = {cls.TAG: cls for cls in (
    SessionsRevoked, TokenVersionChanged, UserChanged, TicketUsed, PreferencesChanged, ChatMuteChanged,
    SubscriptionsChanged, MembersChanged)}


def encode(message: ControlMessage) -> str:
    """The wire text of ``message`` (compact JSON; ``decode`` gives back an equal message)."""
    out: Dict[str, Any] = {"t": message.TAG}
    for key, attr, kind in message.WIRE:
        value = getattr(message, attr)
        if kind == OPT_INT and value is None:
            continue  # left out, as before
        out[key] = list(value) if kind in (INTS, STRS) else value
    return json.dumps(out, separators=(",", ":"))


def decode(text: Union[str, bytes]) -> ControlMessage:
    """The message that ``text`` encodes. Raises ControlError for anything else (wrong JSON, kind, field)."""
    if not isinstance(text, (str, bytes)) or len(text) > MAX_TEXT:
        raise ControlError("a control message must be JSON text of at most %d characters" % MAX_TEXT)
    try:
        raw = json.loads(text)
    except ValueError:
        raise ControlError("a control message must be JSON") from None
    if not isinstance(raw, dict):
        raise ControlError("a control message must be a JSON object")
    tag = raw.get("t")
    cls = KINDS.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ControlError("unknown control message kind")  # its text is not repeated into the logs
    values: Dict[str, Any] = {}
    for key, attr, kind in cls.WIRE:
        if key not in raw:
            if kind == OPT_INT:
                continue
            raise ControlError(f"control message {cls.TAG!r} lacks {key!r}")
        values[attr] = _field(cls.TAG, key, kind, raw[key])
    return cls(**values)


def _field(tag: str, key: str, kind: str, value: object) -> Any:
    """``value`` checked (and made immutable) as a field of ``kind``. Raises ControlError."""
    if kind == INT or (kind == OPT_INT and value is not None):
        if _is_int(value):
            return value
    elif kind == OPT_INT:
        return None
    elif kind == FLOAT:
        # bool is an int to Python, never a time here; NaN and infinities would defeat every comparison
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind == STR:
        if isinstance(value, str) and len(value) <= MAX_STRING:
            return value
    elif kind == INTS:
        if isinstance(value, list) and len(value) <= MAX_ITEMS and all(_is_int(v) for v in value):
            return tuple(value)
    elif kind == STRS:
        if isinstance(value, list) and len(value) <= MAX_ITEMS and all(
                isinstance(v, str) and len(v) <= MAX_STRING for v in value):
            return tuple(value)
    raise ControlError(f"control message {tag!r}: {key!r} must be {_EXPECTED[kind]}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_EXPECTED = {INT: "an integer", OPT_INT: "an integer or null", FLOAT: "a finite number",
             STR: f"a string of at most {MAX_STRING} characters",
             INTS: f"a list of at most {MAX_ITEMS} integers",
             STRS: f"a list of at most {MAX_ITEMS} strings of at most {MAX_STRING} characters"}


@dataclass(frozen=True, slots=True)
class ControlHandlers:
    """One handler per kind of control message (a missing one is a TypeError where the services are built)."""

    sessions_revoked: Callable[[SessionsRevoked], None]
    token_version_changed: Callable[[TokenVersionChanged], None]
    user_changed: Callable[[UserChanged], None]
    ticket_used: Callable[[TicketUsed], None]
    preferences_changed: Callable[[PreferencesChanged], None]
    chat_mute_changed: Callable[[ChatMuteChanged], None]
    subscriptions_changed: Callable[[SubscriptionsChanged], None]
    members_changed: Callable[[MembersChanged], None]


class ControlDispatch:
    """Hands each control message to the one handler of its kind (the table is fixed at construction)."""

    __slots__ = ("_table",)

    def __init__(self, handlers: ControlHandlers):
        # Explicit dict dispatch: class -> handler. The value type is widened to Any because a
        # dict cannot say "the handler of class C takes a C"; ControlHandlers' fields check that.
        self._table: Dict[type, Callable[[Any], None]] = {
            SessionsRevoked: handlers.sessions_revoked,
            TokenVersionChanged: handlers.token_version_changed,
            UserChanged: handlers.user_changed,
            TicketUsed: handlers.ticket_used,
            PreferencesChanged: handlers.preferences_changed,
            ChatMuteChanged: handlers.chat_mute_changed,
            SubscriptionsChanged: handlers.subscriptions_changed,
            MembersChanged: handlers.members_changed,
        }
        if set(self._table) != set(KINDS.values()):  # a kind added to KINDS but not here
            raise TypeError("every kind of control message needs its handler")

    def __call__(self, message: ControlMessage) -> None:
        """Apply ``message`` in this process (exceptions propagate to the caller)."""
        self._table[type(message)](message)
