"""Control messages between processes (issue 21, item 3): every kind round-trips through the one
encoder and decoder, keeps the wire format, and anything else from the broker is refused with
ControlError; ControlDispatch gives each kind to its one handler."""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from tornado_app.services.delivery.broker.memory import MemoryBroker
from tornado_app.services.delivery.control import (KINDS, MAX_ITEMS, MAX_STRING, MAX_TEXT, ChatMuteChanged,
                                                   ControlDispatch, ControlError, ControlHandlers, MembersChanged,
                                                   PreferencesChanged, SessionsRevoked, SubscriptionsChanged,
                                                   TicketUsed, TokenVersionChanged, UserChanged, decode, encode)
from tornado_app.services.delivery.hub import CONTROL, Hub, HubListeners
from tornado_app.services.delivery.registry import ConnectionRegistry

# One message of every kind, with the wire text this version has always sent for it.
EXAMPLES = [
    (SessionsRevoked(("s1", "s2"), 1700000000.5, "logged_out"),
     {"t": "revoke", "s": ["s1", "s2"], "e": 1700000000.5, "r": "logged_out"}),
    (TokenVersionChanged(7, 42, "refresh_reused"), {"t": "version", "u": 7, "v": 42, "r": "refresh_reused"}),
    (TokenVersionChanged(7, 43, "logged_out", revoked_at=1700000000),
     {"t": "version", "u": 7, "v": 43, "r": "logged_out", "ra": 1700000000}),
    (UserChanged(3), {"t": "user", "u": 3}),
    (TicketUsed("jti-1", 1700000001.0), {"t": "ticket", "j": "jti-1", "e": 1700000001.0}),
    (PreferencesChanged(4), {"t": "prefs", "u": 4}),
    (ChatMuteChanged(9, 4, 0.0), {"t": "mute", "c": 9, "u": 4, "e": 0.0}),
    (SubscriptionsChanged(5), {"t": "subs", "u": 5}),
    (MembersChanged(11, (1, 2), (3,)), {"t": "members", "c": 11, "a": [1, 2], "r": [3]}),
]


@pytest.mark.parametrize("message, wire", EXAMPLES, ids=lambda v: type(v).__name__)
def test_every_kind_round_trips_in_the_wire_format(message, wire):
    text = encode(message)
    assert json.loads(text) == wire
    assert decode(text) == message
    assert decode(text.encode()) == message  # bytes from a broker driver too
    assert decode(json.dumps(wire)) == message


def test_the_examples_cover_every_kind_and_messages_are_frozen_with_slots():
    assert {type(m) for m, _ in EXAMPLES} == set(KINDS.values())
    for message, _ in EXAMPLES:
        assert not hasattr(message, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, dataclasses.fields(message)[0].name, None)


BAD = [
    b"\xff\xfe",  # not UTF-8
    "not json",
    "[1, 2]",
    "null",
    '"revoke"',
    "{}",
    '{"t": "nope", "u": 1}',
    '{"t": 5, "u": 1}',
    '{"t": ["user"], "u": 1}',
    '{"t": "user"}',  # missing field
    '{"t": "user", "u": "1"}',  # a string for an int
    '{"t": "user", "u": 1.5}',
    '{"t": "user", "u": true}',  # a bool is not an id
    '{"t": "user", "u": null}',
    '{"t": "ticket", "j": 5, "e": 1}',
    '{"t": "ticket", "j": "a", "e": "soon"}',
    '{"t": "ticket", "j": "a", "e": NaN}',
    '{"t": "ticket", "j": "a", "e": Infinity}',
    '{"t": "ticket", "j": "a", "e": false}',
    '{"t": "revoke", "s": "s1", "e": 1, "r": "x"}',  # a string for a list
    '{"t": "revoke", "s": [1], "e": 1, "r": "x"}',
    '{"t": "revoke", "s": ["s1"], "e": 1, "r": null}',
    '{"t": "version", "u": 1, "v": 2, "r": "x", "ra": "later"}',
    '{"t": "members", "c": 1, "a": [1, "2"], "r": []}',
    '{"t": "members", "c": 1, "a": {"1": 1}, "r": []}',
    '{"t": "mute", "c": 1, "u": 2}',
]


@pytest.mark.parametrize("text", BAD)
def test_anything_else_is_refused(text):
    with pytest.raises(ControlError):
        decode(text)


def test_non_text_is_refused():
    for value in (None, 5, {"t": "user", "u": 1}):
        with pytest.raises(ControlError):
            decode(value)  # type: ignore[arg-type]


def test_limits_at_and_just_past():
    sid = "s" * MAX_STRING
    assert decode(encode(SessionsRevoked((sid,), 1.0, "r"))).sids == (sid,)
    with pytest.raises(ControlError):
        decode(encode(SessionsRevoked((sid + "s",), 1.0, "r")))
    many = tuple(range(MAX_ITEMS))
    assert decode(encode(MembersChanged(1, many, ()))).added == many
    with pytest.raises(ControlError):
        decode(encode(MembersChanged(1, many + (MAX_ITEMS,), ())))
    padded = '{"t": "user", "u": 1}'
    assert decode(padded + " " * (MAX_TEXT - len(padded))) == UserChanged(1)
    with pytest.raises(ControlError):
        decode(padded + " " * (MAX_TEXT - len(padded) + 1))


def test_an_optional_field_may_be_absent_or_null():
    assert decode('{"t": "version", "u": 1, "v": 2, "r": "x"}').revoked_at is None
    assert decode('{"t": "version", "u": 1, "v": 2, "r": "x", "ra": null}').revoked_at is None
    assert "ra" not in json.loads(encode(TokenVersionChanged(1, 2, "x")))


class Seen:
    """Handlers that record what they were given."""

    def __init__(self):
        self.calls = []

    def handler(self, name):
        return lambda message: self.calls.append((name, message))

    def handlers(self) -> ControlHandlers:
        return ControlHandlers(**{f.name: self.handler(f.name) for f in dataclasses.fields(ControlHandlers)})


def test_dispatch_gives_each_kind_to_its_one_handler():
    seen = Seen()
    dispatch = ControlDispatch(seen.handlers())
    for message, _ in EXAMPLES:
        dispatch(message)
    names = [name for name, _ in seen.calls]
    assert names == ["sessions_revoked", "token_version_changed", "token_version_changed", "user_changed",
                     "ticket_used", "preferences_changed", "chat_mute_changed", "subscriptions_changed",
                     "members_changed"]
    assert [m for _, m in seen.calls] == [m for m, _ in EXAMPLES]


def test_a_missing_handler_is_an_error_where_the_services_are_built():
    fields = {f.name: (lambda m: None) for f in dataclasses.fields(ControlHandlers)}
    del fields["members_changed"]
    with pytest.raises(TypeError):
        ControlHandlers(**fields)


@pytest.mark.gen_test(timeout=10)
async def test_the_hub_applies_here_at_once_then_receives_its_own_and_drops_bad_ones(caplog):
    seen = Seen()
    hub = Hub(ConnectionRegistry(), MemoryBroker("here"))
    with pytest.raises(RuntimeError):
        await hub.control(UserChanged(1))  # nobody listens before start
    await hub.start(HubListeners(ControlDispatch(seen.handlers()), lambda chat_id, users: users, lambda: None))
    await hub.control(UserChanged(1))
    # applied here, then once more when the (memory) broker brings it back
    assert seen.calls == [("user_changed", UserChanged(1))] * 2
    seen.calls.clear()
    with caplog.at_level(logging.WARNING, logger="squall.hub"):
        await hub.broker.publish({"o": "there", "k": CONTROL, "u": None, "x": None, "i": None,
                                  "d": '{"t": "user", "u": "secret-ish"}'})
    assert seen.calls == []
    assert "dropped a control message" in caplog.text and "secret-ish" not in caplog.text
    await hub.stop()
