// The connection test page: state, transport, role, last event id, a diagnosis of the path
// (WebSocket OK / WebSocket blocked, using SSE / SSE delayed by a buffering proxy / event
// stream held back by a proxy: using long-polling, with the poll's round trip), the
// current notifications with a Clear button, and instructions for the two-window test.

import { api } from "./api.js";
import { el, icon } from "./dom.js";
import { startApp } from "./layout.js";
import { bindNotificationList } from "./notifications-view.js";
import { transportLabel } from "./realtime.js";

// An event that takes longer than this from the server's clock to the page is buffered.
const BUFFERED_MS = 1500;

async function main() {
  const { client } = await startApp("test");
  const field = (id) => el("dd", { id, text: "—" });
  const state = field("conn-state");
  const transport = field("conn-transport");
  const role = field("conn-role");
  const lastId = field("conn-last-id");
  const latency = field("conn-latency");
  const pollRtt = field("conn-poll-rtt");
  const diagnosis = el("div", { class: "diagnosis", id: "diagnosis", role: "status", dataset: { verdict: "pending" } },
    icon("pulse"), el("span", { id: "diagnosis-text", text: "Checking the connection…" }));
  const probeBtn = el("button", { class: "btn btn-secondary", type: "button", id: "probe" }, icon("pulse", 16), "Send test event");
  const clearBtn = el("button", { class: "btn btn-danger", type: "button", id: "clear" }, "Clear test events");
  const list = el("ul", { class: "notif-list", id: "test-notifications" });
  document.getElementById("main").append(el("div", { class: "page" },
    el("div", { class: "page-head" },
      el("div", {}, el("h1", { text: "Connection test" }),
        el("p", { class: "muted", text: "How this browser receives notifications, and whether anything in between slows them down." }))),
    el("div", { class: "grid-2" },
      el("section", { class: "card" },
        el("div", { class: "card-head" }, el("h2", { text: "Connection" }), probeBtn),
        el("div", { class: "card-body" },
          el("dl", { class: "kv" },
            el("dt", { text: "State" }), state,
            el("dt", { text: "Transport" }), transport,
            el("dt", { text: "This tab" }), role,
            el("dt", { text: "Last event id" }), lastId,
            el("dt", { text: "Test event delay" }), latency,
            el("dt", { text: "Poll round trip" }), pollRtt),
          diagnosis)),
      el("section", { class: "card" },
        el("div", { class: "card-head" }, el("h2", { text: "Try it with two windows" })),
        el("div", { class: "card-body" },
          el("ol", { class: "steps" },
            el("li", { text: "Keep this page open, signed in as user B." }),
            el("li", { text: "In a private window (or another browser), sign in as user A." }),
            el("li", { text: "As A, open Messages, start a chat with B and send a message." }),
            el("li", { text: "Here, B sees a toast, the red dot on Messages, and the notification below." }),
            el("li", { text: "Click the toast to open the chat; the dot goes away once it is read." }))))),
    el("section", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: "Notifications" }), clearBtn),
      list)));

  let probe = null;            // {t0, tResp, id, sentAt}
  let measuredDelay = null;
  const arrivals = new Map();  // notification id -> arrival time (ms, this clock)

  const verdict = () => {
    const s = client.status;
    if (s.state !== "open") return ["pending", s.state === "unauthorized" ? "Signed out" : "Connecting…"];
    if (s.transport === "sse" && measuredDelay !== null && measuredDelay > BUFFERED_MS) {
      return ["buffered", "SSE delayed by a buffering proxy"];
    }
    if (s.transport === "poll") return ["poll", "Event stream held back by a proxy: using long-polling"];
    if (s.transport === "websocket") return ["ws-ok", "WebSocket OK"];
    return ["sse", "WebSocket blocked, using SSE"];
  };
  const render = () => {
    const s = client.status;
    state.textContent = { open: "Connected", connecting: "Connecting", reconnecting: "Reconnecting", unauthorized: "Signed out" }[s.state] || s.state;
    transport.textContent = transportLabel(s.transport) || "—";
    // A poll answered at once (the first of a stream): the path's round trip, proxy included.
    pollRtt.textContent = s.transport === "poll" && s.pollRttMs != null ? `${s.pollRttMs} ms` : "—";
    role.textContent = s.role === "leader" ? "Leader (holds the stream)" : "Follower (events via the leader tab)";
    lastId.textContent = client.lastEventId ? String(client.lastEventId) : "—";
    latency.textContent = measuredDelay === null ? "—" : `${Math.max(0, Math.round(measuredDelay))} ms`;
    const [code, text] = verdict();
    diagnosis.dataset.verdict = code;
    diagnosis.querySelector("#diagnosis-text").textContent = text;
  };

  const finishProbe = () => {
    if (!probe || probe.id == null || !arrivals.has(probe.id)) return;
    // The server stamped sent_at_ms with its clock; correct for clock skew with the
    // midpoint of the request, then the delay is how long the event was in transit.
    const skew = probe.sentAt - (probe.t0 + probe.tResp) / 2;
    measuredDelay = arrivals.get(probe.id) - (probe.sentAt - skew);
    probe = null;
    probeBtn.disabled = false;
    render();
  };
  const runProbe = async () => {
    probeBtn.disabled = true;
    const t0 = Date.now();
    try {
      const { notification } = await api("POST", "/api/notifications/test", {});
      probe = { t0, tResp: Date.now(), id: notification.id, sentAt: notification.data.sent_at_ms };
      finishProbe();
    } catch (err) {
      probeBtn.disabled = false;
    }
  };
  client.on("notification", (n) => {
    if (n.type === "test") { arrivals.set(n.id, Date.now()); finishProbe(); }
  });
  probeBtn.addEventListener("click", runProbe);
  // Clears this page's test events only: messages and announcements stay on Home.
  clearBtn.addEventListener("click", () => client.clearNotifications("test").catch(() => {}));
  let probedOnce = false;
  client.on("status", (s) => {
    render();
    if (s.state === "open" && !probedOnce) { probedOnce = true; runProbe(); }
  });
  render();
  if (client.status.state === "open" && !probedOnce) { probedOnce = true; runProbe(); }
  bindNotificationList(list, client, { limit: 100, empty: "No notifications. Send a test event, or a message from another window." });
}

main();
