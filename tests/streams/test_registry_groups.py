"""The registry's per-user, per-session and per-connection groups: tuples while small, sets past
``SMALL_GROUP``; every add and remove is seen the same either way (issue 13, idle memory)."""
from tornado_app.services.delivery.events import CHAT, NOTIFY, Event
from tornado_app.services.delivery.registry import SMALL_GROUP, ConnectionRegistry, added, removed


class Conn:
    """What the registry needs of a connection."""

    def __init__(self, user_id, sid):
        self.user_id, self.sid, self.transport = user_id, sid, "ws_chat"
        self.streams = (CHAT, NOTIFY)
        self.joined_chats = ()
        self.token_exp = self.token_warn_at = None
        self.got = []

    def deliver(self, event):
        self.got.append(event)


def test_added_and_removed_at_and_past_the_small_size():
    group = ()
    for i in range(SMALL_GROUP):
        group = added(group, i)
    assert type(group) is tuple and sorted(group) == list(range(SMALL_GROUP))
    group = added(group, SMALL_GROUP)  # one past: a set
    assert type(group) is set and group == set(range(SMALL_GROUP + 1))
    for i in range(SMALL_GROUP + 1):
        group = removed(group, i)
    assert not group
    assert removed((1, 2, 3), 2) == (1, 3) and removed((1,), 5) == (1,)


def test_connections_of_one_user_and_session_past_the_small_size():
    registry = ConnectionRegistry()
    n = 2 * SMALL_GROUP + 1
    conns = [Conn(7, "s1") for _ in range(n)]
    other = Conn(8, "s2")
    for conn in conns + [other]:
        registry.add(conn)
    assert registry.user_connections(7) == set(conns)
    assert set(registry.session_connections("s1")) == set(conns)
    assert registry.deliver(Event(NOTIFY, b"{}"), [7]) == n
    for conn in conns[:-1]:
        registry.remove(conn)
        assert conn not in registry.user_connections(7)
        assert conn not in set(registry.session_connections("s1"))
    assert registry.deliver(Event(NOTIFY, b"{}"), [7, 8]) == 2
    assert [len(c.got) for c in conns] == [1] * (n - 1) + [2]
    registry.remove(conns[-1])
    assert not registry.has_user(NOTIFY, 7) and not registry.session_connections("s1")
    assert registry.has_user(NOTIFY, 8) and list(registry.session_connections("s2")) == [other]
    # a connection moved to another session (a refreshed token) leaves the old one
    registry.reauthenticate(other, "s3", None, None, 1)
    assert not registry.session_connections("s2") and list(registry.session_connections("s3")) == [other]


def test_one_socket_joined_to_many_chats_then_closed():
    registry = ConnectionRegistry()
    conn, peer = Conn(7, "s1"), Conn(7, "s2")
    registry.add(conn)
    registry.add(peer)
    chats = list(range(100, 100 + 3 * SMALL_GROUP))
    assert all(registry.join(conn, chat_id) for chat_id in chats)  # first of this user in each
    assert not registry.join(conn, chats[0])  # already joined: nothing changes
    assert not registry.join(peer, chats[1])  # the user is active there already
    assert registry.leave(conn, chats[2]) and not registry.leave(conn, chats[2])
    assert not registry.leave(conn, chats[1])  # the peer is still active there
    assert sorted(registry.remove(conn)) == sorted(set(chats) - {chats[1], chats[2]})
    assert registry.leave(peer, chats[1])  # the last one: the user is no longer active
