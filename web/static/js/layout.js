// The app shell shared by every signed-in page: navigation (desktop bar and mobile side
// navigation), the red unread dot, the connection indicator, and new-message toasts.

import { api, ApiError } from "./api.js";
import { el, icon } from "./dom.js";
import { goToLogin, notificationClient, transportLabel } from "./realtime.js";

const TOAST_MS = 6000;
// How long toasts stay: localStorage "squall.toastMs" overrides it (slower readers; tests).
function toastMs() {
  const raw = Number(localStorage.getItem("squall.toastMs"));
  return Number.isFinite(raw) && raw > 0 ? raw : TOAST_MS;
}
const MAX_TOASTS = 4;

const NAV = [
  { key: "home", href: "/", label: "Home", icon: "home" },
  { key: "messages", href: "/chat", label: "Messages", icon: "chat" },
  { key: "test", href: "/test-notifications", label: "Test", icon: "pulse" },
  { key: "admin", href: "/admin", label: "Admin", icon: "users", adminOnly: true },
];

const STATE_LABELS = {
  connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…", unauthorized: "Signed out",
};

/**
 * Build the shell around ``<main>`` for page ``active``; returns ``{me, client}`` once the
 * user is known (redirects to /login on 401). ``options.suppressToast(n)`` may veto a toast.
 */
export async function startApp(active, options = {}) {
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { goToLogin(); return new Promise(() => {}); }
    throw err;
  }
  const client = notificationClient();
  renderShell(active, me, client);
  client.setOnNewMessage((n) => {
    if (options.suppressToast && options.suppressToast(n)) return;
    showToast(n);
  });
  client.on("unread", (u) => setBadge(u.total));
  client.on("status", renderConnection);
  client.start();
  return { me, client };
}

function navLinks(active, where, me) {
  return NAV.filter((item) => !item.adminOnly || me.is_admin).map((item) => el("a", {
    href: item.href, class: `nav-link${item.key === active ? " active" : ""}`,
    "aria-current": item.key === active ? "page" : null, dataset: { nav: item.key, where },
  }, icon(item.icon, 18), el("span", { text: item.label }),
  item.key === "messages" ? el("span", { class: "badge-dot", hidden: true, "aria-label": "unread messages", dataset: { badge: where } }) : null));
}

function renderShell(active, me, client) {
  const drawer = el("nav", { class: "side-nav", id: "side-nav", "aria-label": "Main", "aria-hidden": "true" },
    el("div", { class: "side-nav-head" },
      el("span", { class: "brand" }, el("span", { class: "brand-mark", text: "S" }), "Squall"),
      el("button", { class: "icon-btn", type: "button", "aria-label": "Close menu", onclick: () => toggleDrawer(false) }, icon("close"))),
    el("div", { class: "side-nav-user" }, el("strong", { text: me.display_name }), el("span", { class: "muted", text: `@${me.username}` })),
    ...navLinks(active, "mobile", me),
    el("button", { class: "nav-link logout", type: "button", onclick: logout }, icon("logout", 18), el("span", { text: "Log out" })));
  const scrim = el("div", { class: "scrim", hidden: true, onclick: () => toggleDrawer(false) });
  const header = el("header", { class: "topbar" },
    el("button", { class: "icon-btn menu-btn", type: "button", "aria-label": "Open menu", "aria-controls": "side-nav",
      onclick: () => toggleDrawer(true) }, icon("menu"), el("span", { class: "badge-dot", hidden: true, dataset: { badge: "menu" } })),
    el("a", { class: "brand", href: "/" }, el("span", { class: "brand-mark", text: "S" }), "Squall"),
    el("nav", { class: "top-nav", "aria-label": "Main" }, ...navLinks(active, "desktop", me)),
    el("div", { class: "topbar-right" },
      el("span", { class: "conn-pill", id: "conn-pill", dataset: { state: "connecting" } },
        el("span", { class: "conn-dot" }), el("span", { class: "conn-text", text: "Connecting…" })),
      el("span", { class: "user-name", text: me.display_name }),
      el("button", { class: "btn btn-ghost logout-btn", type: "button", onclick: logout }, icon("logout", 16), el("span", { text: "Log out" }))));
  document.body.prepend(header, scrim, drawer);
  document.body.append(el("div", { class: "toasts", id: "toasts", role: "status", "aria-live": "polite" }));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") toggleDrawer(false); });
  setBadge(client.unread.total);
}

function toggleDrawer(open) {
  const drawer = document.getElementById("side-nav");
  drawer.classList.toggle("open", open);
  drawer.setAttribute("aria-hidden", String(!open));
  document.querySelector(".scrim").hidden = !open;
}

async function logout() {
  try { await api("POST", "/api/auth/logout", {}); } finally { location.assign("/login"); }
}

/** Show or hide the red dot on every Messages entry (desktop, mobile, menu button). */
export function setBadge(total) {
  const on = total > 0;
  document.body.dataset.unread = String(total);
  for (const dot of document.querySelectorAll(".badge-dot")) dot.hidden = !on;
}

function renderConnection(status) {
  const pill = document.getElementById("conn-pill");
  if (!pill) return;
  pill.dataset.state = status.state;
  const transport = transportLabel(status.transport);
  const label = STATE_LABELS[status.state] || status.state;
  pill.querySelector(".conn-text").textContent = status.state === "open" && transport ? `${label} · ${transport}` : label;
  pill.title = `Notification stream: ${label}${transport ? ` over ${transport}` : ""}`;
}

/** A toast for a new-message notification: sender and preview; click opens the chat. */
export function showToast(n) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const toast = el("button", { class: "toast", type: "button", dataset: { chatId: n.chat_id, notificationId: n.id } },
    el("span", { class: "toast-icon" }, icon("chat", 18)),
    el("span", { class: "toast-body" },
      el("strong", { class: "toast-title", text: n.sender_name || "New message" }),
      el("span", { class: "toast-text", text: n.content_preview || n.message || "" })),
    el("span", { class: "toast-close", "aria-hidden": "true" }, icon("close", 14)));
  const dismiss = () => { toast.classList.add("leaving"); setTimeout(() => toast.remove(), 200); };
  toast.addEventListener("click", (e) => {
    if (e.target.closest(".toast-close")) { dismiss(); return; }
    dismiss();
    if (n.chat_id) openChat(n.chat_id);
  });
  box.append(toast);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  setTimeout(dismiss, toastMs());
}

/** Open a chat: in place on the Messages page, else by navigating there. */
export function openChat(chatId) {
  const event = new CustomEvent("squall:open-chat", { detail: { chatId }, cancelable: true });
  if (window.dispatchEvent(event)) location.assign(`/chat/${chatId}`);
}
