"""The broker contract: carries envelopes between the processes of one Squall deployment.

An envelope is a dict (JSON-safe):
    {"o": origin process id, "k": "chat" | "notify" | "ctl", "u": [user ids] or None (everyone),
     "x": connection id to skip or None, "i": event id or None, "d": event JSON text,
     "n": [user ids everyone leaves out] (optional: a broadcast's muted and DND users)}

Kind "ctl" is a control message for the services (session revocation, used stream tickets,
cached users, preferences, chat members: services/delivery/control.py), never delivered to a connection.

Routing (issue 26, broker/shards.py): with ``routing="sharded"`` (the Redis brokers' default) a
process receives only the envelopes of the users it holds (``hold``/``release``, from the hub)
plus broadcasts and control messages; with ``"broadcast"`` (the memory and PostgreSQL brokers,
and ``--routing broadcast``) every process receives every envelope and delivers to its own
connections.
Presence ("user U is active in chat C somewhere") is shared through the broker too,
with claims that expire when the process that made them stops refreshing them.

Names: every channel, key and table a broker uses starts with ``<prefix>`` (``squall``,
``--broker-prefix`` or the URL's ``?prefix=``) and, once ``scope()`` is called at start-up,
the deployment's installation id, so deployments sharing one Redis or one PostgreSQL
broker database never see each other's envelopes or presence.
"""
from __future__ import annotations

import abc
import re
from typing import Callable, Iterable, List, Optional, Set, Tuple

Receiver = Callable[[dict], None]
PresenceSource = Callable[[], List[Tuple[int, int]]]
GapHandler = Callable[[], None]

DEFAULT_PREFIX = "squall"
# --broker-prefix: also part of PostgreSQL identifiers (at most 63 bytes with the scope)
PREFIX_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
SCOPE_CHARS = 16  # characters of the installation id in every name (64 random bits)


def check_prefix(prefix: str) -> str:
    """``prefix`` when it is 1-32 letters, digits and underscores starting with a letter. Raises ValueError."""
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"broker prefix {str(prefix)[:40]!r} must be 1-32 letters, digits and underscores, "
                         "starting with a letter")
    return prefix


def scope_of(installation_id: str) -> str:
    """The part of an installation id that goes into broker names (lowercase hex)."""
    scope = "".join(c for c in str(installation_id).lower() if c in "0123456789abcdef")[:SCOPE_CHARS]
    if not scope:
        raise ValueError("an installation id must contain hex digits")
    return scope


class Broker(abc.ABC):
    """Base class of the memory, Redis and PostgreSQL brokers."""

    #: True when other processes may exist (presence must be asked of the broker)
    distributed = False
    #: "sharded" or "broadcast" (broker/shards.py)
    routing = "broadcast"

    def __init__(self, origin: str):
        self.origin = origin
        self._receiver: Optional[Receiver] = None  # until start
        self._presence_source: PresenceSource = lambda: []
        self._on_gap: Optional[GapHandler] = None

    async def start(self, receiver: Receiver, presence_source: Optional[PresenceSource] = None,
                    on_gap: Optional[GapHandler] = None) -> None:
        """Connect and begin calling ``receiver(envelope)`` for every envelope, ours included.

        ``on_gap()`` is called when envelopes may have been missed (the broker was unreachable
        and is back): local clients must resume from the database.
        """
        self._receiver = receiver
        if presence_source is not None:
            self._presence_source = presence_source
        self._on_gap = on_gap

    def _hand_over(self, envelope: dict) -> None:
        """Give ``envelope`` to the receiver (dropped before ``start``: nobody receives yet)."""
        if self._receiver is not None:
            self._receiver(envelope)

    def scope(self, installation_id: str) -> None:
        """Put this deployment's installation id into every name (call before ``start``).

        Processes of one deployment share a database and so the id; another deployment on
        the same Redis or broker database has another one. Without a call (the broker
        contract tests) the names carry the prefix only.
        """

    async def stop(self) -> None:
        """Disconnect; no envelope is received after this returns."""

    @abc.abstractmethod
    async def publish(self, envelope: dict) -> None:
        """Send ``envelope`` to every process (this one included)."""

    async def presence_changed(self, user_id: int, chat_id: int, active: bool) -> None:
        """This process's presence of ``user_id`` in ``chat_id`` started or ended."""

    async def active_users(self, chat_id: int, user_ids: Iterable[int]) -> Set[int]:
        """Which of ``user_ids`` are active in ``chat_id`` in other processes."""
        return set()

    def hold(self, user_id: int) -> None:
        """``user_id`` has its first connection in this process: its envelopes must reach us."""

    def release(self, user_id: int) -> None:
        """``user_id``'s last connection in this process closed."""

    async def ready(self, user_id: int) -> None:
        """Return once envelopes of ``user_id`` published from now on reach this process.

        Raises BrokerUnavailable when the subscription is not confirmed in time.
        """

    def subscribed_shards(self) -> int:
        """How many shard channels this process is subscribed to (0 with broadcast routing)."""
        return 0

    async def ping(self) -> None:
        """Raise if the broker is unreachable (for /readyz)."""


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached."""
