// Renders a list of notifications (Home and the test page); text only, newest first.

import { avatar, el, icon, shortTime } from "./dom.js";

/** One notification as a list item; a new-message one links to its chat. */
export function notificationItem(n) {
  const isMessage = n.type === "new_message";
  const title = isMessage ? (n.sender_name || "New message") : (n.message || n.type);
  const text = isMessage ? (n.content_preview || "") : (n.type === "test" ? "Test event from the connection test page" : (n.data && n.data.text) || "");
  const attrs = { class: `notif${n.read === false ? " unread-item" : ""}`, dataset: { id: n.id, type: n.type } };
  const children = [
    isMessage ? avatar(n.sender_name) : el("span", { class: "notif-icon" }, icon(n.type === "test" ? "pulse" : "bell", 18)),
    el("span", { class: "notif-main" },
      el("span", { class: "notif-title", text: title }),
      text ? el("span", { class: "notif-text", text }) : null),
    el("span", { class: "notif-time", text: shortTime(n.timestamp) }),
  ];
  const item = el("li", {});
  item.append(isMessage && n.chat_id ? el("a", { ...attrs, href: `/chat/${n.chat_id}` }, ...children) : el("div", attrs, ...children));
  return item;
}

/** Keep ``list`` (an <ul>) in sync with ``client.notifications``; ``limit`` items at most. */
export function bindNotificationList(list, client, { limit = 50, empty = "No notifications yet.", filter = null } = {}) {
  const render = () => {
    const items = (filter ? client.notifications.filter(filter) : client.notifications).slice(0, limit);
    list.replaceChildren(...(items.length ? items.map(notificationItem)
      : [el("li", { class: "empty", text: empty })]));
  };
  render();
  client.on("history", render);
  client.on("notification", render);
  client.on("cleared", render);
  client.on("resync", render);
  client.on("withdrawn", render);
  client.on("updated", render);
  return render;
}
