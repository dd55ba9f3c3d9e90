"""Real ``python run.py`` children: messages survive a restart; SIGTERM during traffic loses no acked message."""
import asyncio
import itertools
import json
import signal
import sqlite3

import pytest
import tornado.websocket

from tests.support.clients import ApiClient, WSClient


def stored_messages(database_url):
    """``{id: (chat_id, sender_id, content, client_id)}`` read straight from the database file or server."""
    query = "SELECT id, chat_id, sender_id, content, client_id FROM message"
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///"):])
        try:
            rows = conn.execute(query).fetchall()
        finally:
            conn.close()
    else:
        import psycopg2
        conn = psycopg2.connect(database_url)
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                rows = cur.fetchall()
        finally:
            conn.close()
    return {row[0]: tuple(row[1:]) for row in rows}


async def in_thread(fn, *args):
    """Run a blocking call (process start/stop) without stalling the clients on this loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def register(api, name):
    """Register ``name``; returns the user with its token."""
    return await api.register(name, display_name=name.title())


@pytest.mark.gen_test(timeout=120)
async def test_messages_survive_a_restart(server_factory, database_url):
    server = await in_thread(server_factory, "--database-url", database_url)
    api = ApiClient(server.url)
    alice, bob = await register(api, "alice"), await register(api, "bob")
    a = await WSClient.connect(server.ws_url, "/ws/chat", alice["token"])
    b = await WSClient.connect(server.ws_url, "/ws/chat", bob["token"])
    ack = await a.request({"type": "send_message", "recipient_id": bob["id"], "content": "before restart",
                           "client_id": "r-1"}, "message_ack")
    assert (await b.recv_type("message"))["message"] == ack["message"]

    assert await in_thread(server.stop, signal.SIGTERM) == 0
    assert await a.recv() is None and a.conn.close_code == 1001
    assert await b.recv() is None and b.conn.close_code == 1001
    assert ack["message"]["id"] in stored_messages(database_url)

    again = await in_thread(server_factory, "--database-url", database_url)
    api2 = ApiClient(again.url)
    chat_id = ack["message"]["chat_id"]
    # the old token still works (same secret), and the history is there
    status, page = await api2.call("GET", f"/api/chats/{chat_id}/messages", token=bob["token"])
    assert status == 200 and page["messages"] == [ack["message"]]
    status, login = await api2.call("POST", "/api/auth/login", {"username": alice["username"],
                                                                 "password": "password123"})
    assert status == 200
    # a retry of the same client_id after the restart is still recognised
    a2 = await WSClient.connect(again.ws_url, "/ws/chat", login["access_token"])
    retry = await a2.request({"type": "send_message", "chat_id": chat_id, "content": "before restart",
                              "client_id": "r-1"}, "message_ack")
    assert retry["message"] == ack["message"]
    status, unread = await api2.call("GET", "/api/unread", token=bob["token"])
    assert unread == {"total": 1, "chats": {str(chat_id): 1}}
    a2.close()
    assert await in_thread(again.stop, signal.SIGTERM) == 0


class Sender:
    """One WebSocket client that sends continuously and records every ack until the socket closes."""

    def __init__(self, client: WSClient, chat_id: int, name: str):
        self.client, self.chat_id, self.name = client, chat_id, name
        self.acked = {}  # client_id -> message
        self.sent = 0
        self.closed = asyncio.get_running_loop().create_future()

    async def write_loop(self, max_in_flight: int = 8):
        """Send messages, keeping a few unacknowledged at a time, until the socket closes."""
        for n in itertools.count():
            if self.closed.done():
                return
            if self.sent - len(self.acked) >= max_in_flight:
                await asyncio.sleep(0.002)
                continue
            try:
                await self.client.send({"type": "send_message", "chat_id": self.chat_id,
                                        "content": f"{self.name} #{n}", "client_id": f"{self.name}-{n}"})
            except tornado.websocket.WebSocketClosedError:
                return
            self.sent += 1
            await asyncio.sleep(0)

    async def read_loop(self):
        """Record acks; resolve ``closed`` with the close code."""
        while True:
            msg = await self.client.conn.read_message()
            if msg is None:
                self.closed.set_result(self.client.conn.close_code)
                return
            frame = json.loads(msg)
            if frame["type"] == "message_ack":
                self.acked[frame["client_id"]] = frame["message"]


async def http_sender(api, user, chat_id, acked, stop):
    """Send over HTTP until the server goes away; record every 201."""
    for n in itertools.count():
        if stop.is_set():
            return
        try:
            status, data = await api.call("POST", f"/api/chats/{chat_id}/messages",
                                          {"content": f"http #{n}", "client_id": f"http-{n}"}, token=user["token"])
        except Exception:  # connection refused or reset once the server stops
            return
        if status == 201:
            acked[f"http-{n}"] = data["message"]
        elif status >= 500 and status != 503:
            raise AssertionError(f"unexpected {status}: {data}")


@pytest.mark.gen_test(timeout=180)
async def test_sigterm_during_traffic_keeps_every_acked_message(server_factory, database_url):
    server = await in_thread(server_factory, "--database-url", database_url)
    api = ApiClient(server.url)
    people = [await register(api, f"user{i}") for i in range(6)]
    status, group = await api.call("POST", "/api/chats", {"member_ids": [p["id"] for p in people[1:]],
                                                          "title": "busy"}, token=people[0]["token"])
    assert status == 201
    gid = group["chat"]["id"]
    senders = []
    for i, person in enumerate(people[:4]):
        if i % 2:
            chat_id = gid
        else:
            status, chat = await api.call("POST", "/api/chats", {"user_id": people[5]["id"]}, token=person["token"])
            chat_id = chat["chat"]["id"]
        client = await WSClient.connect(server.ws_url, "/ws/chat", person["token"])
        senders.append(Sender(client, chat_id, f"s{i}"))
    listener = await WSClient.connect(server.ws_url, "/ws/chat", people[5]["token"])
    http_acked, http_stop = {}, asyncio.Event()
    tasks = [asyncio.ensure_future(t) for s in senders for t in (s.write_loop(), s.read_loop())]
    http_task = asyncio.ensure_future(http_sender(api, people[4], gid, http_acked, http_stop))

    # let traffic build up: at least 40 acks on every socket, then stop the server mid-stream
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not all(len(s.acked) >= 40 for s in senders) or len(http_acked) < 5:
        assert loop.time() < deadline, [len(s.acked) for s in senders]
        await asyncio.sleep(0.01)
    assert await in_thread(server.stop, signal.SIGTERM) == 0, server.log()
    http_stop.set()

    codes = await asyncio.wait_for(asyncio.gather(*(s.closed for s in senders)), 30)
    assert codes == [1001] * len(senders)
    assert await listener.recv_type("message") is not None
    while await listener.recv(timeout=10) is not None:
        pass
    assert listener.conn.close_code == 1001
    await asyncio.wait_for(asyncio.gather(*tasks, http_task), 30)

    stored = stored_messages(database_url)
    acked = {cid: m for s in senders for cid, m in s.acked.items()}
    acked.update(http_acked)
    assert len(acked) >= 4 * 40 + 5
    for cid, message in acked.items():
        row = stored.get(message["id"])
        assert row is not None, f"acked message {cid} (id {message['id']}) was lost"
        assert row == (message["chat_id"], message["sender_id"], message["content"], cid)
    assert "Traceback" not in server.log()
