// The app shell shared by every signed-in page: navigation (desktop bar and mobile side
// navigation), the red unread dot, the connection indicator, and new-message toasts.
// Keyboard: the phone drawer takes focus, keeps Tab inside and gives focus back on Escape;
// Escape otherwise dismisses the newest toast; toasts pause while hovered or focused.

import { api, ApiError, hasSession } from "./api.js";
import { el, icon } from "./dom.js";
import { loadPreferences, playSound, reaction, registerServiceWorker } from "./notify.js";
import { goToLogin, notificationClient, signingOutHere, transportLabel } from "./realtime.js";

const TOAST_MS = 6000;
// How long toasts stay: localStorage "squall.toastMs" overrides it (the settings page; tests).
export function toastMs() {
  const raw = Number(localStorage.getItem("squall.toastMs"));
  return Number.isFinite(raw) && raw > 0 ? raw : TOAST_MS;
}
const MAX_TOASTS = 4;

const NAV = [
  { key: "home", href: "/", label: "Home", icon: "home" },
  { key: "messages", href: "/chat", label: "Messages", icon: "chat" },
  { key: "test", href: "/test-notifications", label: "Test", icon: "pulse" },
  { key: "settings", href: "/settings", label: "Settings", icon: "gear" },
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
  if (!hasSession()) { goToLogin(); return new Promise(() => {}); }
  try {
    me = await api("GET", "/api/me");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { goToLogin(); return new Promise(() => {}); }
    throw err;
  }
  const client = notificationClient();
  renderShell(active, me, client);
  const preferencesLoaded = loadPreferences(client);
  client.setOnAlert((n) => {
    // ``suppressToast``: the page shows this chat right now (no toast, no sound for it)
    const inView = Boolean(options.suppressToast && options.suppressToast(n));
    const act = reaction(n, { leader: client.status.role === "leader", inView });
    if (act.toast) showToast(n);
    if (act.sound) playSound();
  });
  registerServiceWorker();
  await preferencesLoaded;
  client.on("unread", (u) => setBadge(u.total));
  // a deleted message's toast goes; an edited one's shows the new text
  client.on("withdrawn", (w) => { for (const t of toastsOf(w.notification_id)) t.dismiss(); });
  client.on("updated", (u) => {
    for (const t of toastsOf(u.notification_id)) {
      const text = t.querySelector(".toast-text");
      if (text && t.dataset.type === "new_message") text.textContent = u.content_preview || "";
    }
  });
  client.on("status", renderConnection);
  client.start();
  return { me, client };
}

function navLinks(active, where, me) {
  return NAV.filter((item) => !item.adminOnly || me.is_admin).map((item) => el("a", {
    href: item.href, class: `nav-link${item.key === active ? " active" : ""}`,
    "aria-current": item.key === active ? "page" : null, dataset: { nav: item.key, where },
  }, icon(item.icon, 18), el("span", { text: item.label }),
  item.key === "messages" ? el("span", { class: "badge-dot", hidden: true, role: "img", "aria-label": "unread messages", dataset: { badge: where } }) : null));
}

function renderShell(active, me, client) {
  const drawer = el("nav", { class: "side-nav", id: "side-nav", "aria-label": "Menu" },
    el("div", { class: "side-nav-head" },
      el("span", { class: "brand" }, el("span", { class: "brand-mark", text: "S" }), "Squall"),
      el("button", { class: "icon-btn", type: "button", "aria-label": "Close menu", onclick: () => toggleDrawer(false) }, icon("close"))),
    el("div", { class: "side-nav-user" }, el("strong", { text: me.display_name }), el("span", { class: "muted", text: `@${me.username}` })),
    ...navLinks(active, "mobile", me),
    el("button", { class: "nav-link logout", type: "button", onclick: logout }, icon("logout", 18), el("span", { text: "Log out" })));
  const scrim = el("div", { class: "scrim", hidden: true, onclick: () => toggleDrawer(false) });
  const header = el("header", { class: "topbar" },
    el("button", { class: "icon-btn menu-btn", type: "button", "aria-label": "Open menu", "aria-controls": "side-nav",
      "aria-expanded": "false", onclick: () => toggleDrawer(true) },
    icon("menu"), el("span", { class: "badge-dot", hidden: true, role: "img", "aria-label": "unread messages", dataset: { badge: "menu" } })),
    el("a", { class: "brand", href: "/" }, el("span", { class: "brand-mark", text: "S" }), "Squall"),
    el("nav", { class: "top-nav", "aria-label": "Main" }, ...navLinks(active, "desktop", me)),
    el("div", { class: "topbar-right" },
      el("span", { class: "conn-pill", id: "conn-pill", role: "status", dataset: { state: "connecting" } },
        el("span", { class: "conn-dot" }), el("span", { class: "conn-text", text: "Connecting…" })),
      el("span", { class: "user-name", text: me.display_name }),
      el("button", { class: "btn btn-ghost logout-btn", type: "button", onclick: logout }, icon("logout", 16), el("span", { text: "Log out" }))));
  // Toasts come right after the bar in the Tab order (not last), each toast announced once.
  const toasts = el("section", { class: "toasts", id: "toasts", "aria-label": "Notifications", "aria-live": "polite" });
  document.body.prepend(header, toasts, scrim, drawer);
  document.getElementById("main").setAttribute("tabindex", "-1");  // focus lands here when its target goes
  drawer.addEventListener("keydown", trapTab);
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || e.defaultPrevented) return;
    if (drawer.classList.contains("open")) { e.preventDefault(); toggleDrawer(false); return; }
    if (document.querySelector("dialog[open]")) return;  // the dialog closes itself
    const newest = [...toasts.querySelectorAll(".toast:not(.leaving)")].pop();
    if (newest) { e.preventDefault(); newest.dismiss(); }
  });
  setBadge(client.unread.total);
}

const FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex='-1'])";

/** Keep Tab and Shift+Tab inside ``e.currentTarget`` (the open drawer, a modal dialog). */
export function trapTab(e) {
  if (e.key !== "Tab") return;
  const items = [...e.currentTarget.querySelectorAll(FOCUSABLE)].filter((n) => n.offsetParent !== null || n === document.activeElement);
  if (!items.length) return;
  const first = items[0], last = items[items.length - 1];
  if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
  else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
}

function toggleDrawer(open) {
  const drawer = document.getElementById("side-nav");
  const menuBtn = document.querySelector(".menu-btn");
  if (drawer.classList.contains("open") === open) return;
  drawer.classList.toggle("open", open);
  menuBtn.setAttribute("aria-expanded", String(open));
  document.querySelector(".scrim").hidden = !open;
  // The page behind the drawer is out of reach (and out of the accessibility tree) while it is open.
  for (const part of [document.querySelector(".topbar"), document.getElementById("toasts"), document.getElementById("main")]) {
    part.inert = open;
  }
  if (open) drawer.querySelector(FOCUSABLE).focus();
  else menuBtn.focus();
}

async function logout() {
  signingOutHere();
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

/** The toasts shown for notification ``id`` (not those already leaving). */
function toastsOf(id) {
  return [...document.querySelectorAll("#toasts .toast:not(.leaving)")].filter((t) => t.dataset.notificationId === String(id));
}

/**
 * A toast for a new-message notification: sender and preview. Its main button opens the
 * chat, its close button (or Escape, for the newest) dismisses it. It stays ``toastMs()``,
 * not counting the time it is hovered or holds the focus (``data-paused``).
 */
export function showToast(n) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const isMessage = n.type === "new_message";
  // An announcement (or another published type) shows its text under a title naming its type.
  const title = isMessage ? n.sender_name || "New message" : n.type === "announcement" ? "Announcement" : n.type;
  const open = el("button", { class: "toast-open", type: "button" },
    el("span", { class: "toast-icon" }, icon(isMessage ? "chat" : "bell", 18)),
    el("span", { class: "toast-body" },
      el("strong", { class: "toast-title", text: title }),
      el("span", { class: "toast-text", text: isMessage ? n.content_preview || "" : n.message || "" })));
  const close = el("button", { class: "toast-close", type: "button",
    "aria-label": isMessage ? `Dismiss the message from ${title}` : `Dismiss the ${title.toLowerCase()}` }, icon("close", 14));
  const toast = el("div", { class: "toast", dataset: { chatId: n.chat_id, notificationId: n.id, type: n.type } }, open, close);
  let timer = null;
  let left = toastMs();
  let since = 0;
  const hovered = new Set();
  const pause = (why) => {
    hovered.add(why);
    if (timer === null) return;
    clearTimeout(timer);
    timer = null;
    left -= Date.now() - since;
    toast.dataset.paused = "true";
  };
  const resume = (why) => {
    hovered.delete(why);
    if (hovered.size || timer !== null || toast.classList.contains("leaving")) return;
    delete toast.dataset.paused;
    since = Date.now();
    timer = setTimeout(dismiss, Math.max(left, 1000));  // a second at least to read it again
  };
  function dismiss() {
    if (toast.classList.contains("leaving")) return;
    clearTimeout(timer);
    const hadFocus = toast.contains(document.activeElement);
    toast.classList.add("leaving");
    setTimeout(() => toast.remove(), 200);
    if (hadFocus) {
      const next = [...box.querySelectorAll(".toast:not(.leaving) .toast-close")].pop();
      (next || document.getElementById("main")).focus();
    }
  }
  toast.dismiss = dismiss;
  open.addEventListener("click", () => { dismiss(); if (n.chat_id) openChat(n.chat_id); });
  close.addEventListener("click", dismiss);
  toast.addEventListener("mouseenter", () => pause("hover"));
  toast.addEventListener("mouseleave", () => resume("hover"));
  toast.addEventListener("focusin", () => pause("focus"));
  toast.addEventListener("focusout", (e) => { if (!toast.contains(e.relatedTarget)) resume("focus"); });
  box.append(toast);
  while (box.children.length > MAX_TOASTS) {
    const oldest = box.firstElementChild;
    if (oldest.contains(document.activeElement)) box.children[1].querySelector(".toast-close").focus();
    oldest.remove();
  }
  since = Date.now();
  timer = setTimeout(dismiss, left);
}

/** Open a chat: in place on the Messages page, else by navigating there. */
export function openChat(chatId) {
  const event = new CustomEvent("squall:open-chat", { detail: { chatId }, cancelable: true });
  if (window.dispatchEvent(event)) location.assign(`/chat/${chatId}`);
}
