// Home: a greeting, the unread summary and the recent notifications, all live.

import { el, icon } from "./dom.js";
import { startApp } from "./layout.js";
import { bindNotificationList } from "./notifications-view.js";

const NEW_ACCOUNT_KEY = "squall.newAccount";  // set by login.js when this browser created the account

/** True once, on the first Home of an account this browser just registered. */
function firstVisit(me) {
  try {
    if (localStorage.getItem(NEW_ACCOUNT_KEY) !== String(me.id)) return false;
    localStorage.removeItem(NEW_ACCOUNT_KEY);
    return true;
  } catch { return false; }
}

async function main() {
  const { me, client } = await startApp("home");
  const unreadValue = el("span", { class: "stat-value", id: "unread-total", text: "0" });
  const chatsValue = el("span", { class: "stat-value", id: "unread-chats", text: "0" });
  const connValue = el("span", { class: "stat-value", id: "home-connection", text: "Connecting…" });
  const list = el("ul", { class: "notif-list", id: "recent-notifications" });
  document.getElementById("main").append(el("div", { class: "page" },
    el("div", { class: "page-head" },
      el("div", {}, el("h1", { text: `${firstVisit(me) ? "Welcome" : "Welcome back"}, ${me.display_name}` }),
        el("p", { class: "muted", text: "New messages and notifications arrive here as they happen." })),
      el("a", { class: "btn", href: "/chat" }, icon("chat", 16), "Open messages")),
    el("div", { class: "stat-row" },
      el("div", { class: "card stat" }, el("span", { class: "stat-label", text: "Unread messages" }), unreadValue),
      el("div", { class: "card stat" }, el("span", { class: "stat-label", text: "Chats with unread" }), chatsValue),
      el("div", { class: "card stat" }, el("span", { class: "stat-label", text: "Connection" }), connValue)),
    el("section", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: "Recent notifications" }),
        el("a", { href: "/test-notifications", class: "small", text: "Connection test" })),
      list)));
  const showUnread = (u) => {
    unreadValue.textContent = String(u.total);
    unreadValue.classList.toggle("alert", u.total > 0);
    chatsValue.textContent = String(Object.keys(u.chats || {}).length);
  };
  showUnread(client.unread);
  client.on("unread", showUnread);
  const showStatus = (s) => {
    const t = s.transport === "websocket" ? "WebSocket" : s.transport === "sse" ? "SSE" : "";
    connValue.textContent = s.state === "open" ? `Live${t ? ` · ${t}` : ""}` : s.state === "reconnecting" ? "Reconnecting…" : "Connecting…";
  };
  showStatus(client.status);
  client.on("status", showStatus);
  bindNotificationList(list, client, {
    limit: 20, empty: "Nothing yet. Messages from others show up here.",
    filter: (n) => n.type !== "test",  // the connection test's probes belong on that page only
  });
}

main();
