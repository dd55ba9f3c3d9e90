/* Squall's service worker (scope /): shows Web Push notifications and opens their chat.
 * A classic script without imports (workers do not get the pages' import map).
 * A push carries {type, id, title, body, chat_id, url, tag} (docs/protocol.md "Web Push");
 * type "notification_withdrawn" closes the notification ``id`` instead of showing one. */
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (err) {
    data = { body: event.data ? event.data.text() : "" };
  }
  if (data.type === "notification_withdrawn") {
    // Its message was deleted: close the notification it showed, if still shown (a later
    // message of the chat may have replaced it under the same tag: that one stays).
    event.waitUntil(self.registration.getNotifications({ tag: data.tag || undefined }).then((shown) => {
      for (const n of shown) if (n.data && n.data.id === data.id) n.close();
    }));
    return;
  }
  const title = data.title || "Squall";
  const options = {
    body: data.body || "",
    tag: data.tag || (data.chat_id ? `chat-${data.chat_id}` : "squall"),  // one per chat: a newer one replaces it
    renotify: true,
    icon: "/static/img/icon-192.png",
    badge: "/static/img/icon-192.png",
    data: { url: safeUrl(data.url), chat_id: data.chat_id || null, id: data.id || null },
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = safeUrl(event.notification.data && event.notification.data.url);
  event.waitUntil((async () => {
    const target = new URL(url, self.location.origin).href;
    const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of open) {
      if (client.url === target && "focus" in client) return client.focus().catch(() => client);
    }
    const tab = open.find((client) => "navigate" in client);
    if (tab) {
      const moved = await tab.navigate(target).catch(() => null);
      if (moved) return moved.focus().catch(() => moved);  // focus needs the click's activation
    }
    return self.clients.openWindow(target);
  })());
});

/** Only paths of this site (a push payload never sends the user elsewhere). */
function safeUrl(url) {
  return typeof url === "string" && /^\/(?!\/)/.test(url) ? url : "/";
}
