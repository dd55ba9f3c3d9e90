// Settings: sound, toasts and push (with the browser's permission), Do Not Disturb, muted
// notification types, muted chats, and how long toasts stay. Every change is saved on the
// server at once and reaches the user's other tabs and devices as a ``preferences`` event.

import { api, ApiError } from "./api.js";
import { el, icon, untilTime } from "./dom.js";
import { startApp, toastMs } from "./layout.js";
import { applyPreferences, inDnd, prefs, registerServiceWorker } from "./notify.js";

const TOAST_CHOICES = [[4000, "4 seconds"], [6000, "6 seconds"], [10000, "10 seconds"], [20000, "20 seconds"], [60000, "1 minute"]];
const ui = {};

function switchRow(id, label, hint) {
  const input = el("input", { type: "checkbox", role: "switch", id, class: "switch" });
  const row = el("div", { class: "setting-row" },
    el("div", { class: "setting-text" }, el("label", { for: id, text: label }),
      el("p", { class: "muted small", id: `${id}-hint`, text: hint })),
    input);
  input.setAttribute("aria-describedby", `${id}-hint`);
  return { row, input, hint: row.querySelector(`#${id}-hint`) };
}

async function save(patch) {
  ui.error.textContent = "";
  try {
    applyPreferences(await api("PATCH", "/api/me/preferences", patch));
  } catch (err) {
    ui.error.textContent = err instanceof ApiError ? err.message : "Could not save; try again.";
    render();
  }
}

function untilTomorrow() {
  const t = new Date();
  t.setDate(t.getDate() + 1);
  t.setHours(8, 0, 0, 0);
  return t;
}

function render() {
  ui.sound.input.checked = prefs.sound;
  ui.toasts.input.checked = prefs.toasts;
  ui.push.input.checked = prefs.push && pushAllowed() === "granted" && ui.subscribed;
  renderPushHint();
  ui.dndState.textContent = inDnd()
    ? `On until ${untilTime(prefs.dnd_until)}`
    : "Off";
  ui.dndState.dataset.on = String(inDnd());
  ui.types.replaceChildren(...prefs.muted_types.map((t) => el("li", { class: "chip" }, el("span", { text: t }),
    el("button", { class: "chip-remove", type: "button", "aria-label": `Unmute ${t}`,
      onclick: () => save({ muted_types: prefs.muted_types.filter((x) => x !== t) }) }, icon("close", 12)))));
  ui.typesEmpty.hidden = prefs.muted_types.length > 0;
}

function pushAllowed() {
  if (!("Notification" in window) || !("serviceWorker" in navigator) || !("PushManager" in window)) return "unsupported";
  return Notification.permission;
}

function renderPushHint() {
  const allowed = pushAllowed();
  ui.push.input.disabled = allowed === "unsupported";
  ui.push.hint.dataset.state = allowed;
  ui.push.hint.textContent = allowed === "denied" ? "Blocked in this browser: allow notifications for this site in the browser's settings."
    : allowed === "unsupported" ? "This browser cannot receive push notifications."
      : ui.pushError || "Notifications on this device while Squall is closed.";
}

async function currentSubscription() {
  if (pushAllowed() === "unsupported") return null;
  const reg = await navigator.serviceWorker.getRegistration("/");
  return reg ? reg.pushManager.getSubscription() : null;
}

async function pushOn() {
  ui.pushError = "";
  // The browser asks only now, when the user switched push on.
  const permission = Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
  if (permission !== "granted") { render(); return; }
  try {
    const reg = (await registerServiceWorker()) || (await navigator.serviceWorker.ready);
    const { public_key: key } = await api("GET", "/api/push/key");
    const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    await api("POST", "/api/push/subscriptions", sub.toJSON());
    ui.subscribed = true;
    await save({ push: true });
  } catch (err) {
    ui.pushError = `Push could not be set up here (${err.message || err.name}).`;
    ui.subscribed = false;
  }
  render();
}

async function pushOff() {
  ui.pushError = "";
  try {
    const sub = await currentSubscription();
    if (sub) {
      await api("DELETE", `/api/push/subscriptions?endpoint=${encodeURIComponent(sub.endpoint)}`).catch(() => {});
      await sub.unsubscribe();
    }
  } finally {
    ui.subscribed = false;
    await save({ push: false });
  }
}

async function renderMutedChats() {
  const { chats } = await api("GET", "/api/chats?limit=500");
  const muted = chats.filter((c) => c.muted);
  ui.chats.replaceChildren(...muted.map((c) => el("li", { class: "setting-row", dataset: { chatId: c.id } },
    el("span", { class: "muted-chat" }, icon("bellOff", 16), el("span", { text: c.title || "Chat" }),
      el("span", { class: "muted small", text: c.muted_until ? ` until ${untilTime(c.muted_until)}` : " until you unmute" })),
    el("button", { class: "btn btn-secondary", type: "button", "aria-label": `Unmute ${c.title || "chat"}`,
      onclick: async () => { await api("DELETE", `/api/chats/${c.id}/mute`); renderMutedChats(); } }, "Unmute"))));
  ui.chatsEmpty.hidden = muted.length > 0;
}

async function main() {
  const { client } = await startApp("settings");
  ui.sound = switchRow("pref-sound", "Sound", "A short chime for a new message (one per browser, not for the chat you are reading).");
  ui.toasts = switchRow("pref-toasts", "Pop-up notifications", "Show a toast with the sender and the message.");
  ui.push = switchRow("pref-push", "Push notifications", "Notifications on this device while Squall is closed.");
  ui.error = el("p", { class: "form-error small", id: "settings-error", role: "alert" });
  ui.dndState = el("strong", { id: "dnd-state", text: "Off" });
  const dndButton = (id, label, until) => el("button", { class: "btn btn-secondary", type: "button", id,
    onclick: () => save({ dnd_until: until ? until().toISOString() : null }) }, label);
  ui.types = el("ul", { class: "chips", id: "muted-types", "aria-label": "Muted notification types" });
  ui.typesEmpty = el("p", { class: "muted small", text: "No muted types." });
  const typeInput = el("input", { id: "muted-type-input", type: "text", maxlength: 64, placeholder: "announcement", autocomplete: "off" });
  const typeForm = el("form", { class: "inline-form", id: "muted-type-form" },
    el("label", { for: "muted-type-input", text: "Mute a type" }), typeInput,
    el("button", { class: "btn btn-secondary", type: "submit", text: "Mute" }));
  typeForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const t = typeInput.value.trim();
    if (!t) return;
    typeInput.value = "";
    save({ muted_types: [...new Set([...prefs.muted_types, t])] });
  });
  ui.chats = el("ul", { class: "plain-list", id: "muted-chats", "aria-label": "Muted chats" });
  ui.chatsEmpty = el("p", { class: "muted small", text: "No muted chats. Mute one from its menu in Messages." });
  const toastSelect = el("select", { id: "toast-ms" }, ...TOAST_CHOICES.map(([ms, label]) => el("option", { value: ms, text: label })));
  toastSelect.value = String(TOAST_CHOICES.some(([ms]) => ms === toastMs()) ? toastMs() : 6000);
  toastSelect.addEventListener("change", () => localStorage.setItem("squall.toastMs", toastSelect.value));

  document.getElementById("main").append(el("div", { class: "page settings" },
    el("div", { class: "page-head" }, el("div", {}, el("h1", { text: "Settings" }),
      el("p", { class: "muted", text: "Saved on the server: they follow you to every device." }))),
    ui.error,
    el("section", { class: "card", "aria-labelledby": "h-notify" },
      el("h2", { id: "h-notify", text: "Notifications" }), ui.sound.row, ui.toasts.row, ui.push.row,
      el("div", { class: "setting-row" }, el("div", { class: "setting-text" }, el("label", { for: "toast-ms", text: "Toasts stay for" }),
        el("p", { class: "muted small", text: "In this browser (not counting the time you hover them)." })), toastSelect)),
    el("section", { class: "card", "aria-labelledby": "h-dnd" },
      el("h2", { id: "h-dnd", text: "Do Not Disturb" }),
      el("p", { class: "muted small", text: "No toasts, sounds or push; badges and lists stay up to date." }),
      el("p", { role: "status" }, "Do Not Disturb: ", ui.dndState),
      el("div", { class: "button-row" }, dndButton("dnd-1h", "1 hour", () => new Date(Date.now() + 3600e3)),
        dndButton("dnd-8h", "8 hours", () => new Date(Date.now() + 8 * 3600e3)),
        dndButton("dnd-tomorrow", "Until tomorrow", untilTomorrow), dndButton("dnd-off", "Off", null))),
    el("section", { class: "card", "aria-labelledby": "h-types" },
      el("h2", { id: "h-types", text: "Muted notification types" }),
      el("p", { class: "muted small", text: "Notifications of these types from other services are not delivered to you." }),
      ui.types, ui.typesEmpty, typeForm),
    el("section", { class: "card", "aria-labelledby": "h-chats" },
      el("h2", { id: "h-chats", text: "Muted chats" }), ui.chats, ui.chatsEmpty)));

  ui.sound.input.addEventListener("change", () => save({ sound: ui.sound.input.checked }));
  ui.toasts.input.addEventListener("change", () => save({ toasts: ui.toasts.input.checked }));
  ui.push.input.addEventListener("change", () => (ui.push.input.checked ? pushOn() : pushOff()));
  ui.subscribed = Boolean(await currentSubscription().catch(() => null));
  window.addEventListener("squall:preferences", render);
  client.on("mute", () => renderMutedChats());
  render();
  await renderMutedChats();
  document.body.dataset.ready = "true";
}

main();
