// The shop's page: Squall's notification stream and chat, embedded with @squall/client.
// The module comes from the shop's own origin (/static/squall-client/); Squall is another
// origin, listed in its --allowed-origin. The token comes from the shop's backend, which
// minted it for the signed-in user (POST /squall-token): the page never sees a password or
// the service token.
import { createSquall } from "/static/squall-client/index.js";

const config = JSON.parse(document.getElementById("shop-config").textContent);
const $ = (id) => document.getElementById(id);
let currentChat = null;
const shown = new Set();  // message ids on screen: a send's answer and its frame are one message

async function getToken() {
  const answer = await fetch("/squall-token", { method: "POST", headers: { "Content-Type": "application/json" },
                                                body: "{}", credentials: "same-origin" });
  if (answer.status === 401) { window.location.assign("/login"); return null; }
  if (!answer.ok) throw new Error(`the shop did not give a token (${answer.status})`);
  return (await answer.json()).token;
}

const squall = createSquall({ url: config.squallUrl, getToken });
const chat = squall.chat();

function toast(text) {
  const item = document.createElement("div");
  item.className = "toast";
  item.setAttribute("role", "status");
  item.textContent = text;
  $("toasts").append(item);
  setTimeout(() => item.remove(), 8000);
}

function showMessage(message) {
  if (message.chat_id !== currentChat || shown.has(message.id)) return;
  shown.add(message.id);
  const li = document.createElement("li");
  li.className = "message";
  const who = document.createElement("strong");
  who.textContent = message.sender_name + ": ";
  li.append(who, document.createTextNode(message.content));
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

async function loadChats() {
  const { chats } = await squall.request("GET", "/api/chats?limit=50");
  const list = $("chats");
  list.replaceChildren();
  for (const c of chats) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link chat-link";
    button.dataset.chatId = String(c.id);
    button.textContent = c.title + (c.unread_count ? ` (${c.unread_count} new)` : "");
    button.addEventListener("click", () => openChat(c.id, c.title));
    li.append(button);
    list.append(li);
  }
}

async function openChat(chatId, title) {
  currentChat = chatId;
  shown.clear();
  $("messages").replaceChildren();
  $("chat-title").textContent = title;
  $("chat-hint").hidden = true;
  $("composer").hidden = false;
  chat.setChat(chatId);  // presence: while open, this chat's messages come here, not as notifications
  const history = await chat.history(chatId, { limit: 50 });
  history.forEach(showMessage);
  if (history.length) await chat.markRead(chatId, history[history.length - 1].id);
  loadChats();
}

chat.on("message", async ({ message }) => {
  if (message.chat_id === currentChat) {
    showMessage(message);
    await chat.markRead(message.chat_id, message.id);
  }
});

squall.on("new_message", (n) => {
  toast(`New message from ${n.sender_name}: ${n.content_preview}`);
  loadChats();
});
squall.on("notification", (n) => { if (n.type !== "new_message" && n.message) toast(n.message); });
squall.on("unread", (u) => {
  $("unread").textContent = String(u.total);
  $("unread").hidden = u.total === 0;
});
squall.on("status", (s) => { $("status").textContent = s.state === "open" ? "online" : s.state; });

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || currentChat === null) return;
  input.value = "";
  showMessage(await chat.send(currentChat, text));
});

await squall.start();
await chat.start();
await loadChats();
document.body.dataset.squall = "ready";
