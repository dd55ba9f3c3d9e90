"""CORS in Chromium (issue 22, acceptance 6): a page served on a second port, listed in
--allowed-origin, sends a message with fetch (a bearer token) and receives it over an
EventSource and a WebSocket opened with stream tickets; a page on a third, unlisted port can
read nothing (fetch fails, the EventSource errors, the WebSocket is refused) and writes nothing.

The two pages are a real HTTP server on 127.0.0.1 (another origin than Squall's port, same
host). The preflight answers themselves are checked header by header in tests/server/test_cors.py."""
from __future__ import annotations

import http.server
import threading

from tests.support.browser import TIMEOUT_MS, browser, http_json, open_chat, register  # noqa: F401

PAGE = b"<!doctype html><html lang='en'><title>The product</title><h1>Our product</h1></html>"

# Runs in the product's page: everything a page on another origin does with Squall.
LISTED_PAGE_SCRIPT = """async ({api, ws, token, chatId}) => {
  const auth = {"Authorization": "Bearer " + token};
  const ticket = async () => {
    const r = await fetch(api + "/api/stream-ticket", {method: "POST",
                                                       headers: {...auth, "Content-Type": "application/json"}});
    return (await r.json()).ticket;
  };
  const got = {sse: null, ws: null};
  const es = new EventSource(api + "/sse/chat?ticket=" + encodeURIComponent(await ticket()));
  const sseOpen = new Promise((resolve, reject) => { es.onopen = resolve; es.onerror = () => reject(new Error("EventSource failed")); });
  const sseMessage = new Promise((resolve) => es.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    if (frame.type === "message") resolve(frame.message.content);
  });
  const sock = new WebSocket(ws + "/ws/chat?ticket=" + encodeURIComponent(await ticket()));
  const wsOpen = new Promise((resolve, reject) => { sock.onopen = resolve; sock.onerror = () => reject(new Error("WebSocket failed")); });
  const wsMessage = new Promise((resolve) => sock.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    if (frame.type === "message") resolve(frame.message.content);
  });
  await Promise.all([sseOpen, wsOpen]);
  const sent = await fetch(api + "/api/chats/" + chatId + "/messages", {
    method: "POST", headers: {...auth, "Content-Type": "application/json"},
    body: JSON.stringify({content: "sent from the product's page"})});
  const answer = await sent.json();
  const history = await fetch(api + "/api/chats/" + chatId + "/messages", {headers: auth});
  const missing = await fetch(api + "/api/chats/999999999", {headers: auth});  // an error a page can read
  got.sse = await sseMessage;
  got.ws = await wsMessage;
  es.close(); sock.close();
  return {status: sent.status, content: answer.message.content, history: (await history.json()).messages.length,
          missing: [missing.status, (await missing.json()).error.code], ...got};
}"""

UNLISTED_PAGE_SCRIPT = """async ({api, ws, token, chatId, sseTicket, wsTicket}) => {
  const outcome = (promise) => promise.then((r) => "read " + r.status, (e) => e.name);
  const auth = {"Authorization": "Bearer " + token};
  const read = await outcome(fetch(api + "/api/chats/" + chatId + "/messages", {headers: auth}));
  // a simple GET (no preflight): the server answers, the browser withholds the answer
  const simple = await outcome(fetch(api + "/api/chats?access_token=" + encodeURIComponent(token)));
  const write = await outcome(fetch(api + "/api/chats/" + chatId + "/messages", {
    method: "POST", headers: {...auth, "Content-Type": "application/json"},
    body: JSON.stringify({content: "sent from an unlisted page"})}));
  const sse = await new Promise((resolve) => {
    const es = new EventSource(api + "/sse/chat?ticket=" + encodeURIComponent(sseTicket));
    es.onmessage = () => { es.close(); resolve("message"); };
    es.onopen = () => { es.close(); resolve("open"); };
    es.onerror = () => { const state = es.readyState; es.close(); resolve("error, readyState " + state); };
  });
  const socket = await new Promise((resolve) => {
    const sock = new WebSocket(ws + "/ws/chat?ticket=" + encodeURIComponent(wsTicket));
    sock.onopen = () => { sock.close(); resolve("open"); };
    sock.onclose = (e) => resolve("closed " + e.code);
  });
  return {read, simple, write, sse, socket};
}"""


class PageSite:
    """A real HTTP server on 127.0.0.1 serving ``PAGE`` (the product's origin); ``origin``; ``close()``."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(PAGE)))
                self.end_headers()
                self.wfile.write(PAGE)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ticket(server, user) -> str:
    status, data = http_json(server, "POST", "/api/stream-ticket", token=user["token"])
    assert status == 200, data
    return data["ticket"]


def test_listed_page_sends_and_receives_unlisted_page_reads_nothing(browser, server_factory, database_url):  # noqa: F811
    listed, unlisted = PageSite(), PageSite()
    try:
        server = server_factory("--database-url", database_url, "--allowed-origin", listed.origin)
        alice, bob = register(server, "alice"), register(server, "bob")
        chat_id = open_chat(server, alice, bob)
        args = {"api": server.url, "ws": server.url.replace("http://", "ws://"), "token": bob["token"],
                "chatId": chat_id}
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()

        page.goto(listed.origin + "/")
        result = page.evaluate(LISTED_PAGE_SCRIPT, args)
        assert result == {"status": 201, "content": "sent from the product's page", "history": 1,
                          "missing": [404, "chat_not_found"],
                          "sse": "sent from the product's page", "ws": "sent from the product's page"}

        page.goto(unlisted.origin + "/")
        result = page.evaluate(UNLISTED_PAGE_SCRIPT, {**args, "sseTicket": ticket(server, bob),
                                                      "wsTicket": ticket(server, bob)})
        assert result == {"read": "TypeError", "simple": "TypeError", "write": "TypeError",
                          "sse": "error, readyState 2", "socket": "closed 1006"}
        # the unlisted page's write never reached the server (its preflight failed)
        status, data = http_json(server, "GET", f"/api/chats/{chat_id}/messages", token=alice["token"])
        assert status == 200 and [m["content"] for m in data["messages"]] == ["sent from the product's page"]
        context.close()
    finally:
        listed.close()
        unlisted.close()
