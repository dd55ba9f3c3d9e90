"""``Connection`` against a fake transport: replay then live, dedup, resync, backpressure, expiry
and every end reason (issue 21, item 1). No socket: the registry, the hub and the memory broker
are the real ones; the stored history is a stand-in whose reads the test holds open, so that live
events arrive exactly when a replay is under way."""
import asyncio
import dataclasses
import json
import time
from types import SimpleNamespace
from typing import List, Optional

import pytest

from tornado_app.services.delivery.broker import create_broker
from tornado_app.services.delivery.connection import ENDED, RESYNC, Connection, EndReason
from tornado_app.services.delivery.events import CHAT, NOTIFY, Event, dumps
from tornado_app.services.delivery.control import ControlDispatch, ControlHandlers
from tornado_app.services.delivery.hub import ONLINE, Hub, HubListeners
from tornado_app.services.delivery.registry import ConnectionRegistry
from tornado_app.services.identity.sessions import SessionService

UNREAD = dumps({"type": "unread", "total": 0, "chats": {}})
LIMIT = 1000  # max_pending_bytes of these tests


class FakeTransport:
    """Records what the connection writes and how it is told to close."""

    def __init__(self, notify_baseline: bool = True, latest: Optional[int] = None) -> None:
        self.notify_baseline = notify_baseline
        self.latest = latest  # what send_initial_state returns (the newest notification id)
        self.sent: List[Event] = []
        self.closes: List[EndReason] = []
        self.beats = 0
        self.pings = 0
        self.warned: List[int] = []
        self.connection: Optional[Connection] = None
        self.on_close = None  # called inside close_for: a transport that reports its own close

    def send_event(self, event: Event) -> None:
        self.sent.append(event)

    async def send_initial_state(self, last_notification_id: Optional[int]) -> Optional[int]:
        self.send_event(Event(NOTIFY, UNREAD))
        return self.latest

    def close_for(self, reason: EndReason) -> None:
        self.closes.append(reason)
        if self.on_close is not None:
            self.on_close()

    def closed_with(self) -> Optional[int]:
        return self.closes[0].close_code if self.closes else None

    def heartbeat(self) -> None:
        self.beats += 1

    def send_ping(self) -> bool:
        self.pings += 1
        return True

    def check_pong(self, pinged_at: float) -> None:
        return None

    def token_expiring(self, expires_at: int) -> None:
        self.warned.append(expires_at)

    def ids(self, kind: str = NOTIFY) -> List[int]:
        return [e.id for e in self.sent if e.kind == kind and e.id is not None]

    def texts(self) -> List[str]:
        return [e.data for e in self.sent]


class History:
    """Stored messages and notifications; a read waits while ``hold`` is set (the test releases it)."""

    def __init__(self) -> None:
        self.messages: List[int] = []
        self.notifications: List[int] = []
        self.hold: Optional[asyncio.Event] = None
        self.reading = asyncio.Event()  # set when a replay read has begun
        self.fail = False
        self.reads = 0  # replay reads begun

    async def _wait(self) -> None:
        self.reads += 1
        self.reading.set()
        if self.fail:
            raise ConnectionError("the database went away")
        if self.hold is not None:
            await self.hold.wait()

    async def latest_message_id(self) -> int:
        return max(self.messages, default=0)

    async def replay_messages(self, user_id: int, after_id: int, limit: int):
        await self._wait()
        rows = [(i, dumps({"type": "message", "id": i})) for i in self.messages if i > after_id]
        return None if len(rows) > limit else rows

    async def latest_id(self, user_id: int) -> int:
        return max(self.notifications, default=0)

    async def replay(self, user_id: int, after_id: int):
        await self._wait()
        rows = [(i, dumps({"type": "notification", "id": i})) for i in self.notifications if i > after_id]
        return None if len(rows) > 3 else rows  # this store keeps 3 past a resume


def notification(event_id: int, size: int = 0) -> Event:
    return Event(NOTIFY, dumps({"type": "notification", "id": event_id, "pad": "x" * size}), event_id)


@pytest.fixture
def world():
    """A registry and hub on the memory broker, the history, and a maker of connections."""
    registry = ConnectionRegistry()
    hub = Hub(registry, create_broker("memory", "test"))
    history = History()
    services = SimpleNamespace(hub=hub, chat=history, notifications=history,
                               config=SimpleNamespace(max_pending_bytes=LIMIT, replay_limit=3),
                               admission=SimpleNamespace(opening_slots=asyncio.Semaphore(2)),
                               ids_in_commit_order=True)

    def make(streams=(NOTIFY,), user_id: int = 7, **kwargs):
        transport = FakeTransport(**{k: kwargs.pop(k) for k in ("notify_baseline", "latest") if k in kwargs})
        conn = Connection(services, transport, user_id, streams, "ws_notifications", origin="here", **kwargs)
        transport.connection = conn
        return conn, transport
    return SimpleNamespace(registry=registry, hub=hub, history=history, make=make, metrics=hub.metrics,
                           slots=services.admission.opening_slots, services=services)


def publish(world, event: Event, user_id: int = 7) -> int:
    return world.registry.deliver(event, [user_id])


# Replay then live --------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_replay_then_live_with_live_events_during_the_replay_has_no_gap_and_no_duplicate(world):
    world.history.notifications = [1, 2, 3, 4, 5]
    world.history.hold = asyncio.Event()
    conn, wire = world.make()
    started = asyncio.ensure_future(conn.start(None, 2))
    await world.history.reading.wait()
    # Committed meanwhile: 6 is new; 4 and 5 are also in the store the replay reads.
    for event_id in (4, 6, 5):
        assert publish(world, notification(event_id)) == 1
    assert wire.ids() == []  # held back while the replay runs
    world.history.hold.set()
    await started
    assert wire.texts()[0] == UNREAD
    assert wire.ids() == [3, 4, 5, 6]
    assert conn.cursor(NOTIFY) == 6
    publish(world, notification(5))  # a late copy of a replayed event: still not sent twice
    publish(world, notification(7))
    assert wire.ids() == [3, 4, 5, 6, 7]


@pytest.mark.gen_test(timeout=10)
async def test_a_live_event_older_than_the_cursor_is_still_delivered(world):
    conn, wire = world.make()
    await conn.start(None, None)
    publish(world, notification(9))
    publish(world, notification(8))  # committed earlier, published later (another process)
    assert wire.ids() == [9, 8] and conn.cursor(NOTIFY) == 9


@pytest.mark.gen_test(timeout=10)
async def test_a_fresh_stream_starts_from_now_on_both_kinds(world):
    world.history.messages = [10, 11]
    world.history.notifications = [4]
    conn, wire = world.make(streams=(CHAT, NOTIFY))
    await conn.start(None, None)
    assert (conn.cursor(CHAT), conn.cursor(NOTIFY)) == (11, 4)
    assert wire.texts() == [UNREAD]
    # The baseline the initial state returns is used as it is (no second read).
    conn2, _ = world.make(latest=40)
    await conn2.start(None, None)
    assert conn2.cursor(NOTIFY) == 40


@pytest.mark.gen_test(timeout=10)
async def test_past_the_limit_the_stream_gets_resync_and_runs_from_now(world):
    world.history.messages = [1, 2, 3, 4, 5, 6]
    conn, wire = world.make(streams=(CHAT,))
    await conn.start(1, None)  # 5 missed, the limit is 3
    assert wire.texts() == [RESYNC]
    assert json.loads(RESYNC) == {"type": "resync"}
    assert conn.cursor(CHAT) == 6 and world.metrics.resyncs == 1
    publish(world, Event(CHAT, dumps({"type": "message", "id": 7}), 7))
    assert wire.ids(CHAT) == [7]


@pytest.mark.gen_test(timeout=10)
async def test_at_the_limit_everything_is_replayed(world):
    world.history.messages = [1, 2, 3, 4]
    conn, wire = world.make(streams=(CHAT,))
    await conn.start(1, None)  # exactly 3 missed
    assert wire.ids(CHAT) == [2, 3, 4] and RESYNC not in wire.texts()
    assert world.metrics.replayed[CHAT] == 3


# Backpressure ----------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_unsent_bytes_past_the_limit_end_a_slow_consumer(world):
    conn, wire = world.make()
    await conn.start(None, None)
    loop = asyncio.get_running_loop()
    first = loop.create_future()
    conn.track_write(first, LIMIT)  # at the limit: still open
    assert conn.ended is None and conn.pending == LIMIT
    first.set_result(None)
    await asyncio.sleep(0)
    assert conn.pending == 0
    conn.track_write(loop.create_future(), LIMIT)
    conn.track_write(loop.create_future(), 1)  # one byte past it
    assert conn.ended is EndReason.SLOW_CONSUMER and conn.overflowed
    assert wire.closes == [EndReason.SLOW_CONSUMER]
    assert world.metrics.slow_consumer["ws_notifications"] == 1
    assert conn not in world.registry.connections
    assert publish(world, notification(1)) == 0


@pytest.mark.gen_test(timeout=10)
async def test_a_write_done_at_once_is_not_counted(world):
    conn, _ = world.make()
    await conn.start(None, None)
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    conn.track_write(done, 10 * LIMIT)
    assert conn.pending == 0 and conn.ended is None


@pytest.mark.gen_test(timeout=10)
async def test_live_events_piling_up_during_a_replay_end_a_slow_consumer(world):
    world.history.notifications = [1, 2]
    world.history.hold = asyncio.Event()
    conn, wire = world.make()
    started = asyncio.ensure_future(conn.start(None, 1))
    await world.history.reading.wait()
    publish(world, notification(10, size=LIMIT // 2))
    assert conn.ended is None
    publish(world, notification(11, size=LIMIT // 2))  # the buffer passes the limit
    assert conn.ended is EndReason.SLOW_CONSUMER
    world.history.hold.set()
    await started
    assert wire.ids() == [] and wire.closes == [EndReason.SLOW_CONSUMER]


@pytest.mark.gen_test(timeout=10)
async def test_a_replay_paces_itself_to_half_the_limit(world):
    world.history.notifications = [1, 2, 3]
    conn, wire = world.make()
    loop = asyncio.get_running_loop()
    blocked = loop.create_future()
    conn.track_write(blocked, LIMIT // 2 + 1)  # more than half the limit unsent
    started = asyncio.ensure_future(conn.start(None, 0))
    for _ in range(5):
        await asyncio.sleep(0)
    assert wire.ids() == []  # waiting for the client to read
    blocked.set_result(None)
    await started
    assert wire.ids() == [1, 2, 3] and conn.ended is None


# Expiry and the heartbeat ----------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_an_expired_token_ends_the_connection_once_by_the_wheel(world):
    now = int(time.time())
    conn, wire = world.make(sid="s1", token_exp=now + 5, token_warn_at=now + 2)
    await conn.start(None, None)
    warn, expired = world.registry.due(now + 2)
    assert warn == [conn] and expired == []
    for c in warn:
        c.token_expiring()
    assert wire.warned == [now + 5]
    warn, expired = world.registry.due(now + 5)
    assert expired == [conn]
    for c in expired:
        SessionService._end(c, "token_expired")  # what SessionService.sweep does with each
    assert wire.closes == [EndReason.TOKEN_EXPIRED]
    assert (EndReason.TOKEN_EXPIRED.close_code, EndReason.TOKEN_EXPIRED.close_text) == (4001, "token_expired")
    assert conn not in world.registry.connections and world.registry.scheduled() == 0
    assert list(world.registry.session_connections("s1")) == []


@pytest.mark.gen_test(timeout=10)
async def test_the_heartbeat_skips_a_stream_that_is_replaying(world):
    world.history.notifications = [1]
    world.history.hold = asyncio.Event()
    conn, wire = world.make()
    started = asyncio.ensure_future(conn.start(None, 0))
    await world.history.reading.wait()
    conn.heartbeat()
    assert wire.beats == 0
    world.history.hold.set()
    await started
    conn.heartbeat()
    assert wire.beats == 1 and conn.ping() and wire.pings == 1


# The one end -------------------------------------------------------------------------------------

WIRE = {  # reason -> (WebSocket close code, close reason, SSE/poll auth_expired frame)
    EndReason.CLOSED: (None, "", False),
    EndReason.SHUTDOWN: (1001, "server shutting down", False),
    EndReason.BROKER_GAP: (1001, "server shutting down", False),
    EndReason.SLOW_CONSUMER: (4008, "slow consumer: reconnect and resume", False),
    EndReason.LOGGED_OUT: (4001, "logged_out", True),
    EndReason.TOKEN_EXPIRED: (4001, "token_expired", True),
    EndReason.REFRESH_REUSED: (4001, "refresh_reused", True),
    EndReason.ACCOUNT_DISABLED: (4001, "account_disabled", True),
    EndReason.ACCOUNT_DELETED: (4001, "account_deleted", True),
    EndReason.OPEN_FAILED: (None, "", False),
}


def test_every_reason_has_its_documented_close_code_and_frame():
    assert set(WIRE) == set(EndReason)
    for reason, (code, text, auth) in WIRE.items():
        assert (reason.close_code, reason.close_text, reason.auth) == (code, text, auth), reason
        if auth:
            assert json.loads(reason.auth_frame()) == {"type": "auth_expired", "reason": text}
            assert reason.auth_frame() == dumps({"type": "auth_expired", "reason": text})  # byte for byte
            assert EndReason.for_auth(text) is reason
    assert EndReason.for_auth("something else") is EndReason.LOGGED_OUT


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize("reason", list(EndReason))
async def test_each_reason_ends_once_closes_the_transport_and_unregisters(world, reason):
    world.history.messages = [1]
    online = []
    # the hub's listeners (built after it, so given to start): only the presence hook matters here
    ignore = ControlHandlers(**{field.name: (lambda message: None) for field in dataclasses.fields(ControlHandlers)})
    await world.hub.start(HubListeners(ControlDispatch(ignore), lambda chat_id, user_ids: user_ids, lambda: None,
                                       lambda user_id, is_online: online.append((user_id, is_online))))
    conn, wire = world.make(streams=(CHAT, NOTIFY), sid="s1", token_exp=int(time.time()) + 60)
    await conn.start(None, None)
    assert online == [(7, True)]
    await world.hub.join(conn, 1)
    assert world.registry.is_active(7, 1) and world.registry.is_active(7, ONLINE)
    # A transport that reports its own close from inside close_for (as a socket closing does).
    wire.on_close = lambda: conn.end(EndReason.CLOSED)
    conn.end(reason)
    conn.end(reason)
    conn.end(EndReason.SHUTDOWN)
    assert wire.closes == [reason] and conn.ended is reason
    assert conn not in world.registry.connections and world.registry.count() == 0
    assert not world.registry.is_active(7, 1) and not world.registry.is_active(7, ONLINE)
    assert online == [(7, True), (7, False)]  # the webhooks' presence: told once
    assert world.registry.scheduled() == 0 and list(world.registry.session_connections("s1")) == []
    await conn.finished()
    assert conn.wire is ENDED  # no reference to the transport (and no cycle) is left
    assert publish(world, notification(2)) == 0 and wire.ids() == []
    conn.heartbeat()
    assert not conn.ping() and wire.beats == 0


@pytest.mark.gen_test(timeout=10)
async def test_the_broker_gap_and_a_revocation_end_every_connection_of_theirs(world):
    a, wire_a = world.make(sid="s1")
    b, wire_b = world.make(sid="s2")
    await a.start(None, None)
    await b.start(None, None)
    for conn in list(world.registry.session_connections("s1")):
        SessionService._end(conn, "logged_out")  # what SessionService.on_control does on a revoke
    assert wire_a.closes == [EndReason.LOGGED_OUT] and wire_b.closes == []
    world.hub._gap()
    assert wire_b.closes == [EndReason.BROKER_GAP] and wire_a.closes == [EndReason.LOGGED_OUT]
    assert world.registry.count() == 0


@pytest.mark.gen_test(timeout=10)
async def test_a_failed_open_ends_with_open_failed_and_leaves_nothing_registered(world):
    world.history.fail = True
    conn, wire = world.make()
    with pytest.raises(ConnectionError):
        await conn.start(None, 3)
    assert conn.ended is EndReason.OPEN_FAILED and wire.closes == [EndReason.OPEN_FAILED]
    assert world.registry.count() == 0 and not world.registry.is_active(7, ONLINE)


@pytest.mark.gen_test(timeout=10)
async def test_an_end_during_the_replay_stops_it(world):
    world.history.notifications = [1, 2, 3]
    world.history.hold = asyncio.Event()
    conn, wire = world.make()
    started = asyncio.ensure_future(conn.start(None, 0))
    await world.history.reading.wait()
    publish(world, notification(4))
    conn.end(EndReason.CLOSED)  # the client went away while its replay was read
    world.history.hold.set()
    await started
    assert wire.ids() == [] and world.registry.count() == 0


@pytest.mark.gen_test(timeout=10)
async def test_a_late_live_copy_of_what_a_resumed_client_had_is_not_sent_again(world):
    # A long-poll's answer replayed 5 from the database; the publish that delivers 5 live
    # comes after it, when the client's next poll (resuming after 5) is already open.
    world.history.notifications = [4, 5]
    conn, wire = world.make()
    await conn.start(None, 5)
    publish(world, notification(5))
    publish(world, notification(3))
    publish(world, notification(6))
    assert wire.ids() == [6]


@pytest.mark.gen_test(timeout=10)
async def test_without_ids_in_commit_order_a_late_live_event_below_the_resume_point_is_delivered(world):
    # PostgreSQL with several processes: a lower id may commit after a higher one was read
    world.services.ids_in_commit_order = False
    conn, wire = world.make()
    await conn.start(None, 5)
    publish(world, notification(4))
    publish(world, notification(6))
    assert wire.ids() == [4, 6]


@pytest.mark.gen_test(timeout=10)
async def test_opens_past_the_slots_wait_their_turn_and_lose_nothing(world):
    # 2 opening slots (StreamAdmission.opening_slots): a third stream waits, registered, with
    # live events buffered, until one of the first two has replayed.
    world.history.notifications = [1, 2]
    world.history.hold = asyncio.Event()
    opened = [world.make(user_id=u) for u in (1, 2, 3)]
    starts = [asyncio.ensure_future(conn.start(None, 0)) for conn, _ in opened]
    await world.history.reading.wait()
    await asyncio.sleep(0.05)
    assert world.slots.locked() and world.registry.count() == 3
    third_conn, third = opened[2]
    publish(world, notification(3), user_id=3)  # live while the third waits for a slot
    assert third.sent == []
    world.history.hold.set()
    await asyncio.gather(*starts)
    assert third.ids() == [1, 2, 3]
    assert all(wire.ids() == [1, 2] for _, wire in opened[:2])
    assert not world.slots.locked()


@pytest.mark.gen_test(timeout=10)
async def test_a_stream_that_ends_while_waiting_for_a_slot_reads_nothing(world):
    world.history.notifications = [1]
    world.history.hold = asyncio.Event()
    first = [world.make(user_id=u) for u in (1, 2)]
    starts = [asyncio.ensure_future(conn.start(None, 0)) for conn, _ in first]
    await world.history.reading.wait()
    waiting, wire = world.make(user_id=3)
    started = asyncio.ensure_future(waiting.start(None, 0))
    await asyncio.sleep(0.05)
    waiting.end(EndReason.CLOSED)  # the client left before its turn
    world.history.hold.set()
    await asyncio.gather(*starts, started)
    assert wire.ids() == [] and world.history.reads == 2  # the first two only: no replay read for it
    assert world.registry.count() == 2 and not world.slots.locked()


def test_a_connection_has_slots_only():
    assert not hasattr(Connection, "__dict__") or "__dict__" not in Connection.__dict__
    conn = Connection(SimpleNamespace(config=SimpleNamespace(max_pending_bytes=1)), FakeTransport(), 1,
                      (NOTIFY,), "sse_notifications")
    with pytest.raises(AttributeError):
        conn.anything = 1
