// Messages: the chat list (live unread counts and last messages) and the conversation
// (history with "load earlier", composer, typing indicator, read receipts), new private and
// group chats by username search, message search, attachments (button, drop, paste; upload
// progress; image thumbnails). /chat/<id> opens a chat; switching chats keeps the page.

import { api, ApiError } from "./api.js";
import { avatar, el, icon, linkify, shortTime, untilTime } from "./dom.js";
import { startApp, trapTab } from "./layout.js";
import { ChatConnection, squallClient } from "./realtime.js";

const PAGE = 30;
const TYPING_SHOW_MS = 4000;
const TYPING_SEND_MS = 2500;
const SEARCH_DELAY_MS = 250;  // after the last keystroke
const SEARCH_MIN_CHARS = 2;
const MAX_ATTACHMENTS = 10;  // the server's limit per message
const LINK_MARGIN_MS = 30_000;  // ask for a new file link this long before the old one expires
const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🎉"];

const state = {
  me: null,
  client: null,
  conn: null,
  chats: new Map(),        // id -> chat summary (as GET /api/chats returns it)
  current: null,           // open chat id
  messages: [],            // of the open chat, oldest first
  messageIds: new Set(),
  readBy: new Map(),       // user id -> read position in the open chat
  typing: new Map(),       // user id -> {name, until}
  lastTypingSent: 0,
  fetching: new Set(),
  markedRead: new Map(),   // chat id -> highest message id this tab marked read
  search: { q: "", cursor: null, timer: 0, seq: 0, results: [] },
  found: null,             // message id to show once its chat is open (a search result)
  pending: [],             // files of the composer: {key, name, sent, total, upload, error, abort}
  links: new Map(),        // upload id -> promise of {url, thumbnail_url, expires_at}
  mentions: {},            // chat id (string) -> unread mentions of me (the unread state's "mentions")
  presence: new Map(),     // user id -> {online, last_seen} of the co-members who share it
  completion: { open: false, items: [], active: 0, start: 0 },  // @name completion in the composer
  replyTo: null,           // the message the composer answers
  editing: null,           // the message the composer edits
};

const ui = {};

function chatIdFromPath() {
  const m = location.pathname.match(/^\/chat\/(\d+)$/);
  return m ? Number(m[1]) : null;
}

/** A group I left or was removed from: listed, its history up to then readable, nothing more. */
function isFormer(chat) {
  return !!chat && chat.member === false;
}

function lastActivity(chat) {
  return chat.last_message ? chat.last_message.created_at : chat.created_at;
}

// Chat list ------------------------------------------------------------------------------

function renderList() {
  const chats = [...state.chats.values()].sort((a, b) => {
    const ta = lastActivity(a) || "", tb = lastActivity(b) || "";
    return ta === tb ? b.id - a.id : (ta < tb ? 1 : -1);
  });
  if (!chats.length) {
    ui.list.replaceChildren(el("li", { class: "empty" }, el("p", { text: "No conversations yet." }),
      el("p", { class: "small", text: "Start one with “New chat”." })));
    return;
  }
  ui.list.replaceChildren(...chats.map((c) => {
    const lm = c.last_message;
    const mine = lm && lm.sender_id === state.me.id;
    const files = lm && lm.attachments ? lm.attachments.length : 0;
    const text = lm && (lm.content || (files ? `Sent ${files === 1 ? "a file" : `${files} files`}` : ""));
    const preview = lm ? `${mine ? "You: " : c.kind === "group" ? `${lm.sender_name}: ` : ""}${text}` : "No messages yet";
    const unread = c.unread_count || 0;
    const muted = isMuted(c);
    const partner = c.kind === "private" ? c.members.find((u) => u.id !== state.me.id) : null;
    const online = partner && (state.presence.get(partner.id) || {}).online;
    return el("li", {}, el("a", {
      class: `chat-item${c.id === state.current ? " active" : ""}${unread ? " has-unread" : ""}${muted ? " is-muted" : ""}${isFormer(c) ? " is-former" : ""}`,
      href: `/chat/${c.id}`, dataset: { chatId: c.id, muted: String(muted), member: String(!isFormer(c)) },
    }, el("span", { class: "avatar-wrap" }, avatar(c.title),
      online ? el("span", { class: "presence-dot", "aria-hidden": "true" }) : null),
    el("span", { class: "chat-item-main" },
      el("span", { class: "chat-item-top" },
        el("span", { class: "chat-title", text: c.title || "Chat" }),
        online ? el("span", { class: "sr-only", text: ", online" }) : null,
        muted ? el("span", { class: "muted-icon", title: "Muted" }, icon("bellOff", 14), el("span", { class: "sr-only", text: ", muted" })) : null,
        isFormer(c) ? el("span", { class: "former-mark", text: "Left" }, el("span", { class: "sr-only", text: ": you are no longer a member" })) : null,
        el("span", { class: "chat-time", text: shortTime(lastActivity(c)) })),
      el("span", { class: "chat-item-bottom" },
        el("span", { class: "chat-last", text: preview }),
        // a muted chat's count is grey and does not light the red dot
        unread ? el("span", { class: `unread-count${muted ? " muted-count" : ""}`, "aria-hidden": "true", text: String(unread) }) : null,
        unread ? el("span", { class: "sr-only", text: `, ${unread} unread` }) : null,
        state.mentions[String(c.id)] ? el("span", { class: "mention-mark", "aria-hidden": "true", text: "@" }) : null,
        state.mentions[String(c.id)] ? el("span", { class: "sr-only", text: ", you were mentioned" }) : null))));
  }));
}

/** Remember a chat summary (and the presence of its members that it shows). */
function keepChat(chat) {
  state.chats.set(chat.id, chat);
  for (const u of chat.members || []) if (u.presence) state.presence.set(u.id, u.presence);
}

async function loadChats() {
  const { chats } = await api("GET", "/api/chats");
  for (const c of chats) keepChat(c);
  if (state.client.unreadKnown) applyUnread(state.client.unread, false);
  renderList();
}

/** Fetch a chat we have not listed yet (a notification or message for a new chat). */
async function ensureChat(chatId) {
  if (state.chats.has(chatId) || state.fetching.has(chatId)) return state.chats.get(chatId);
  state.fetching.add(chatId);
  try {
    const { chat } = await api("GET", `/api/chats/${chatId}`);
    const unread = state.client.unread.chats[String(chatId)];
    if (unread !== undefined) chat.unread_count = unread;
    keepChat(chat);
    renderList();
    if (chat.id === state.current) renderHead();
    return chat;
  } finally {
    state.fetching.delete(chatId);
  }
}

function applyUnread(unread, render = true) {
  for (const c of state.chats.values()) c.unread_count = unread.chats[String(c.id)] || 0;
  state.mentions = unread.mentions || {};
  for (const id of Object.keys(unread.chats)) {
    if (!state.chats.has(Number(id))) ensureChat(Number(id)).catch(() => {});
  }
  if (render) renderList();
  const current = state.chats.get(state.current);
  if (current && current.unread_count > 0) markRead();
}

function noteMessage(m) {
  const chat = state.chats.get(m.chat_id);
  if (!chat) { ensureChat(m.chat_id).catch(() => {}); return; }
  if (!chat.last_message || chat.last_message.id <= m.id) chat.last_message = m;
  renderList();
}

/** True while ``chat`` is muted for me (a mute with an end expires by itself). */
function isMuted(chat) {
  if (!chat.muted) return false;
  return !chat.muted_until || Date.parse(chat.muted_until) > Date.now();
}

function applyMute(ev) {
  const chat = state.chats.get(ev.chat_id);
  if (!chat) return;
  chat.muted = ev.muted;
  chat.muted_until = ev.muted_until;
  renderList();
  if (chat.id === state.current) renderHead();
}

const MUTE_CHOICES = [["1 hour", 3600e3], ["8 hours", 8 * 3600e3], ["1 week", 7 * 24 * 3600e3], ["Until I unmute", null]];

async function setMute(choice) {
  const chatId = state.current;
  closeMuteMenu(true);
  try {
    const ev = choice === "off"
      ? await api("DELETE", `/api/chats/${chatId}/mute`)
      : await api("PUT", `/api/chats/${chatId}/mute`, { until: choice === null ? null : new Date(Date.now() + choice).toISOString() });
    applyMute(ev);
  } catch (err) {
    ui.composerError.textContent = err.message;
  }
}

function buildMuteMenu() {
  ui.muteBtn = el("button", { class: "icon-btn mute-btn", type: "button", id: "mute-button", "aria-haspopup": "menu",
    "aria-expanded": "false", "aria-controls": "mute-menu", "aria-label": "Mute notifications", onclick: () => toggleMuteMenu() }, icon("bell"));
  ui.muteMenu = el("div", { class: "menu", id: "mute-menu", role: "menu", "aria-label": "Mute this chat", hidden: true });
  ui.muteMenu.addEventListener("keydown", (e) => {
    const items = [...ui.muteMenu.querySelectorAll("[role=menuitem]")];
    const at = items.indexOf(document.activeElement);
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); closeMuteMenu(true); }
    else if (e.key === "ArrowDown") { e.preventDefault(); items[(at + 1) % items.length].focus(); }
    else if (e.key === "ArrowUp") { e.preventDefault(); items[(at - 1 + items.length) % items.length].focus(); }
    else if (e.key === "Tab") closeMuteMenu(false);
  });
  document.addEventListener("click", (e) => {
    if (!ui.muteMenu.hidden && !ui.muteMenu.contains(e.target) && !ui.muteBtn.contains(e.target)) closeMuteMenu(false);
  });
  ui.muteWrap = el("div", { class: "menu-wrap" }, ui.muteBtn, ui.muteMenu);
  return ui.muteWrap;
}

function toggleMuteMenu() {
  if (!ui.muteMenu.hidden) { closeMuteMenu(true); return; }
  const chat = state.chats.get(state.current);
  const item = (label, choice) => el("button", { class: "menu-item", type: "button", role: "menuitem", tabindex: -1,
    onclick: () => setMute(choice) }, label);
  const items = MUTE_CHOICES.map(([label, ms]) => item(label, ms));
  if (chat && isMuted(chat)) items.push(item("Unmute", "off"));
  ui.muteMenu.replaceChildren(...items);
  ui.muteMenu.hidden = false;
  ui.muteBtn.setAttribute("aria-expanded", "true");
  ui.muteMenu.querySelector("[role=menuitem]").focus();
}

function closeMuteMenu(focusButton) {
  if (ui.muteMenu.hidden) return;
  ui.muteMenu.hidden = true;
  ui.muteBtn.setAttribute("aria-expanded", "false");
  if (focusButton) ui.muteBtn.focus();
}

// Conversation ---------------------------------------------------------------------------

function renderHead() {
  const chat = state.chats.get(state.current);
  if (!chat) { ui.headTitle.textContent = "Loading…"; ui.headSub.textContent = ""; return; }
  ui.headAvatar.replaceWith(ui.headAvatar = avatar(chat.title));
  ui.headTitle.textContent = chat.title || "Chat";
  const muted = isMuted(chat);
  ui.muteBtn.replaceChildren(icon(muted ? "bellOff" : "bell"));
  ui.muteBtn.dataset.muted = String(muted);
  ui.muteBtn.setAttribute("aria-label", muted
    ? `Muted${chat.muted_until ? ` until ${untilTime(chat.muted_until)}` : ""}: change` : "Mute notifications");
  const others = chat.members.filter((u) => u.id !== state.me.id);
  const seen = others.length ? state.presence.get(others[0].id) : null;
  const presence = !seen ? "" : seen.online ? " · Online" : seen.last_seen ? ` · Last seen ${shortTime(seen.last_seen)}` : "";
  ui.headSub.textContent = isFormer(chat) ? "You are no longer a member"
    : chat.kind === "group" ? `${chat.members.length} members · ${chat.members.map((u) => u.display_name).join(", ")}`
      : others.length ? `@${others[0].username}${presence}` : "";
  ui.settingsBtn.hidden = chat.kind !== "group" || isFormer(chat);
  ui.muteWrap.hidden = isFormer(chat);
  renderAccess();
}

/**
 * The open chat read-only when I am no longer a member of it: the composer (and what goes
 * with it) gives way to a notice, announced (a status region that is always in the page),
 * and the messages lose their actions. Follows a removal (or my leaving, or my being added
 * back) live.
 */
function renderAccess() {
  const chat = state.chats.get(state.current);
  const former = isFormer(chat);
  if (ui.active.dataset.former === String(former) && ui.active.dataset.accessOf === String(state.current)) return;
  const was = ui.active.dataset.former === "true" && ui.active.dataset.accessOf === String(state.current);
  ui.active.dataset.former = String(former);
  ui.active.dataset.accessOf = String(state.current);
  state.conn.setChat(former ? null : state.current);  // a former member may not join it
  if (former) {
    if (state.replyTo || state.editing) {
      if (state.editing) ui.input.value = "";
      state.replyTo = state.editing = null;
      renderComposerMode();
    }
    for (const p of state.pending) if (!p.upload) p.abort.abort();
    state.pending = [];
    renderPending();
    closeCompletion();
    closeMessageMenu(false);
    closeMuteMenu(false);
    const focused = ui.composer.contains(document.activeElement) || ui.groupDialog.open;
    if (ui.groupDialog.open) ui.groupDialog.close();
    state.typing = new Map();
    renderTyping();
    ui.composer.hidden = true;
    ui.composerError.textContent = "";
    ui.formerNotice.textContent = "You are no longer a member of this group";
    if (focused) ui.messages.focus();  // the focus does not fall to the page's start
  } else {
    ui.composer.hidden = false;
    ui.formerNotice.textContent = "";
  }
  // the actions of the messages shown follow (none for a former member)
  if (former || was) renderMessages({ keepScroll: true });
}

function applyPresence(ev) {
  state.presence.set(ev.user_id, { online: ev.online, last_seen: ev.last_seen });
  renderList();
  if (state.current) renderHead();
}

// Group settings: title, members and roles, add, remove, leave -------------------------------

const ROLE_NAMES = { owner: "Owner", admin: "Admin", member: "Member" };

function myRole(chat) {
  const me = chat.members.find((u) => u.id === state.me.id);
  return me ? me.role || "member" : null;
}

/** Re-read a chat (after a change of its members or title); one the user left stays, read-only (``member: false``). */
async function refreshChat(chatId) {
  try {
    const { chat } = await api("GET", `/api/chats/${chatId}`);
    const old = state.chats.get(chatId);
    if (old) chat.unread_count = old.unread_count;
    keepChat(chat);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 403) throw err;
    state.chats.delete(chatId);  // never a member (or no longer a former one)
  }
  renderList();
  if (state.current === chatId) renderHead();
  if (ui.groupDialog.open && ui.groupDialog.dataset.chatId === String(chatId)) renderGroupDialog();
}

function renderGroupDialog() {
  const dialog = ui.groupDialog;
  const chat = state.chats.get(Number(dialog.dataset.chatId));
  if (!chat || isFormer(chat)) { dialog.close(); return; }
  const role = myRole(chat);
  const canEdit = role === "owner" || role === "admin";
  dialog.querySelector("#group-title-input").disabled = !canEdit;
  dialog.querySelector("#save-title").hidden = !canEdit;
  dialog.querySelector("#add-member-field").hidden = !canEdit;
  const list = dialog.querySelector("#group-members");
  list.replaceChildren(...chat.members.map((u) => {
    const theirs = u.role || "member";
    const me = u.id === state.me.id;
    const canRemove = !me && (role === "owner" ? theirs !== "owner" : role === "admin" && theirs === "member");
    const canPromote = !me && role === "owner" && theirs !== "owner";
    const name = u.display_name || u.username;
    return el("li", { class: "group-member", dataset: { userId: u.id } },
      avatar(name, "sm"),
      el("span", { class: "group-member-name" }, el("strong", { text: me ? `${name} (you)` : name }), " ",
        el("span", { class: "muted small", text: ROLE_NAMES[theirs] || theirs })),
      canPromote ? el("button", { class: "btn btn-ghost btn-sm", type: "button",
        text: theirs === "admin" ? "Make member" : "Make admin", "aria-label": `${theirs === "admin" ? "Make member" : "Make admin"}: ${name}`,
        onclick: () => groupCall("PATCH", `/api/chats/${chat.id}/members/${u.id}`, { role: theirs === "admin" ? "member" : "admin" }) }) : null,
      canRemove ? el("button", { class: "btn btn-ghost btn-sm danger", type: "button", text: "Remove",
        "aria-label": `Remove ${name}`, onclick: () => groupCall("DELETE", `/api/chats/${chat.id}/members/${u.id}`) }) : null);
  }));
}

async function groupCall(method, path, body) {
  const dialog = ui.groupDialog;
  const chatId = Number(dialog.dataset.chatId);
  const error = dialog.querySelector("#group-error");
  error.textContent = "";
  try {
    await api(method, path, body);
    await refreshChat(chatId);
    return true;
  } catch (err) {
    error.textContent = err.message;
    return false;
  }
}

function buildGroupDialog() {
  const titleInput = el("input", { type: "text", id: "group-title-input", maxlength: 128 });
  const save = el("button", { class: "btn btn-secondary", type: "button", id: "save-title", text: "Rename" });
  const addInput = el("input", { type: "search", id: "add-member", autocomplete: "off", placeholder: "Username or name",
    "aria-describedby": "add-member-status" });
  const addStatus = el("p", { class: "muted small", id: "add-member-status", role: "status" });
  const found = el("ul", { class: "add-member-results", id: "add-member-results", "aria-label": "People to add" });
  const leave = el("button", { class: "btn btn-ghost danger", type: "button", id: "leave-group", text: "Leave group" });
  const close = el("button", { class: "btn", type: "button", id: "close-group", text: "Close" });
  const dialog = el("dialog", { id: "group-dialog", "aria-labelledby": "group-dialog-title" },
    el("div", { class: "dialog-body" },
      el("h2", { id: "group-dialog-title", text: "Group settings" }),
      el("label", { for: "group-title-input", text: "Group name" }),
      el("div", { class: "group-title-row" }, titleInput, save),
      el("h3", { class: "small-heading", text: "Members" }),
      el("ul", { class: "group-members", id: "group-members", "aria-label": "Members" }),
      el("div", { id: "add-member-field" }, el("label", { for: "add-member", text: "Add someone" }), addInput, addStatus, found),
      el("p", { class: "form-error", id: "group-error", role: "alert" }),
      el("div", { class: "dialog-actions" }, leave, close)));
  save.addEventListener("click", () => groupCall("PATCH", `/api/chats/${dialog.dataset.chatId}`, { title: titleInput.value }));
  titleInput.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); save.click(); } });
  let timer = null;
  addInput.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = addInput.value.trim();
      if (q.length < 2) { found.replaceChildren(); addStatus.textContent = q ? "Type at least 2 characters." : ""; return; }
      try {
        const chat = state.chats.get(Number(dialog.dataset.chatId));
        const { users } = await api("GET", `/api/users?q=${encodeURIComponent(q)}&limit=8`);
        const fresh = users.filter((u) => !chat.members.some((m) => m.id === u.id));
        found.replaceChildren(...fresh.map((u) => el("li", {}, el("button", { class: "btn btn-ghost add-member-option", type: "button",
          dataset: { userId: u.id }, "aria-label": `Add ${u.display_name} (@${u.username})`,
          onclick: async () => {
            if (await groupCall("POST", `/api/chats/${chat.id}/members`, { user_id: u.id })) {
              addInput.value = ""; found.replaceChildren(); addStatus.textContent = `${u.display_name} was added.`;
            }
          } }, avatar(u.display_name, "sm"), el("span", { text: `${u.display_name} @${u.username}` })))));
        addStatus.textContent = fresh.length ? `${fresh.length} found.` : "No one to add.";
      } catch (err) { addStatus.textContent = err.message; }
    }, 200);
  });
  leave.addEventListener("click", async () => {
    if (!window.confirm("Leave this group? You keep its history up to now.")) return;
    const chatId = Number(dialog.dataset.chatId);
    try {
      await api("DELETE", `/api/chats/${chatId}/members/${state.me.id}`);
      await refreshChat(chatId);  // stays open, read-only (renderAccess closes this dialog)
      if (dialog.open) dialog.close();
      if (state.current === chatId) ui.messages.focus();
    } catch (err) { dialog.querySelector("#group-error").textContent = err.message; }
  });
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("keydown", trapTab);
  dialog.addEventListener("close", () => { if (ui.settingsBtn.isConnected && !ui.settingsBtn.hidden) ui.settingsBtn.focus(); });
  dialog.openFor = (chatId) => {
    const chat = state.chats.get(chatId);
    dialog.dataset.chatId = String(chatId);
    titleInput.value = chat ? chat.title : "";
    addInput.value = "";
    found.replaceChildren();
    addStatus.textContent = "";
    dialog.querySelector("#group-error").textContent = "";
    renderGroupDialog();
    dialog.showModal();
    (titleInput.disabled ? close : titleInput).focus();
  };
  return dialog;
}

function messageNode(m, prev) {
  const mine = m.sender_id === state.me.id;
  const chat = state.chats.get(state.current);
  const showSender = !mine && chat && chat.kind === "group" && (!prev || prev.sender_id !== m.sender_id);
  const files = m.deleted ? [] : m.attachments || [];
  const reply = m.reply_to && !m.deleted ? el("div", { class: "msg-quote" },
    m.reply_to.deleted ? el("em", { text: "Deleted message" })
      : [el("strong", { text: m.reply_to.sender_name || "" }), " ", el("span", { text: m.reply_to.content_preview || "" })]) : null;
  const body = m.deleted ? el("div", { class: "bubble deleted" }, el("em", { text: "This message was deleted" }))
    : m.content ? el("div", { class: "bubble" }, linkify(m.content)) : null;
  const readOnly = isFormer(chat);
  const reactions = !m.deleted && m.reactions && m.reactions.length ? el("div", { class: "msg-reactions" },
    m.reactions.map((r) => {
      const me = r.user_ids.includes(state.me.id);
      if (readOnly) {
        return el("span", { class: `reaction${me ? " mine" : ""}` }, el("span", { "aria-hidden": "true", text: `${r.emoji} ${r.count}` }),
          el("span", { class: "sr-only", text: `${r.emoji} ${r.count} ${r.count === 1 ? "reaction" : "reactions"}${me ? ", including yours" : ""}` }));
      }
      return el("button", { class: `reaction${me ? " mine" : ""}`, type: "button", "aria-pressed": String(me), dataset: { emoji: r.emoji },
        "aria-label": `${r.emoji} ${r.count} ${r.count === 1 ? "reaction" : "reactions"}${me ? ", including yours" : ""}`,
        onclick: () => react(m, r.emoji, !me) }, `${r.emoji} ${r.count}`);
    })) : null;
  const actions = m.deleted || readOnly ? null : el("button", { class: "icon-btn msg-actions", type: "button", "aria-haspopup": "menu",
    "aria-expanded": "false", "aria-label": `Actions for the message of ${mine ? "you" : m.sender_name}, ${shortTime(m.created_at)}`,
    onclick: (e) => openMessageMenu(m, e.currentTarget) }, icon("more", 16));
  if (m.message_type === "system") {
    return el("div", { class: "msg system", dataset: { messageId: m.id } },
      el("p", { class: "system-text", text: m.content }), el("span", { class: "msg-meta", text: shortTime(m.created_at) }));
  }
  return el("div", { class: `msg${mine ? " mine" : ""}${m.deleted ? " is-deleted" : ""}`, dataset: { messageId: m.id } },
    showSender ? el("span", { class: "msg-sender", text: m.sender_name }) : null,
    reply,
    files.length ? el("div", { class: "msg-files" }, files.map(attachmentNode)) : null,
    el("div", { class: "msg-row" }, body, actions),
    reactions,
    el("span", { class: "msg-meta", text: shortTime(m.created_at) + (m.edited_at && !m.deleted ? " · edited" : "") }));
}

// @name completion ----------------------------------------------------------------------------

const MENTION_AT_CARET = /(^|[^\p{L}\p{N}_.@-])@([\p{L}\p{N}_.-]{0,32})$/u;
const MAX_COMPLETIONS = 6;

/** The members of the open group whose username or name starts with what follows the "@" at the caret. */
function updateCompletion() {
  const chat = state.chats.get(state.current);
  const before = ui.input.value.slice(0, ui.input.selectionStart);
  const match = chat && chat.kind === "group" && ui.input.selectionStart === ui.input.selectionEnd
    ? before.match(MENTION_AT_CARET) : null;
  if (!match) { closeCompletion(); return; }
  const q = match[2].toLowerCase();
  const items = chat.members.filter((u) => u.id !== state.me.id && (u.username.toLowerCase().startsWith(q)
    || (u.display_name || "").toLowerCase().startsWith(q))).slice(0, MAX_COMPLETIONS);
  if (!items.length) { closeCompletion(); return; }
  state.completion = { open: true, items, active: 0, start: before.length - match[2].length - 1 };
  renderCompletion();
}

function renderCompletion() {
  const c = state.completion;
  ui.mentionList.hidden = !c.open;
  ui.input.setAttribute("aria-expanded", String(c.open));
  if (!c.open) { ui.input.removeAttribute("aria-activedescendant"); ui.mentionList.replaceChildren(); return; }
  ui.mentionList.replaceChildren(...c.items.map((u, i) => el("li", { id: `mention-option-${u.id}`, role: "option",
    class: "mention-option", "aria-selected": String(i === c.active),
    onmousedown: (e) => { e.preventDefault(); c.active = i; completeMention(); } },
  avatar(u.display_name || u.username), el("span", { text: u.display_name || u.username }),
  el("span", { class: "muted small", text: ` @${u.username}` }))));
  ui.input.setAttribute("aria-activedescendant", `mention-option-${c.items[c.active].id}`);
}

function closeCompletion() {
  if (!state.completion.open) return;
  state.completion = { open: false, items: [], active: 0, start: 0 };
  renderCompletion();
}

/** Put "@username " in place of the "@" and what was typed after it. */
function completeMention() {
  const c = state.completion;
  const user = c.items[c.active];
  const value = ui.input.value;
  const insert = `@${user.username} `;
  ui.input.value = value.slice(0, c.start) + insert + value.slice(ui.input.selectionStart);
  const caret = c.start + insert.length;
  ui.input.setSelectionRange(caret, caret);
  closeCompletion();
  ui.input.focus();
}

function onCompletionKey(e) {
  const c = state.completion;
  if (!c.open) return;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    c.active = (c.active + (e.key === "ArrowDown" ? 1 : c.items.length - 1)) % c.items.length;
    renderCompletion();
  } else if (e.key === "Enter" || e.key === "Tab") {
    completeMention();
  } else if (e.key === "Escape") {
    closeCompletion();
  } else {
    return;
  }
  e.preventDefault();
  e.stopImmediatePropagation();  // not a send, not a focus move, not the end of a reply
}

// Message actions: reply, react, edit, delete ------------------------------------------------

function closeMessageMenu(focusButton) {
  const menu = ui.msgMenu;
  if (menu.hidden) return;
  menu.hidden = true;
  if (menu.owner) {
    menu.owner.setAttribute("aria-expanded", "false");
    if (focusButton && menu.owner.isConnected) menu.owner.focus();
  }
  menu.owner = null;
}

function openMessageMenu(m, button) {
  const menu = ui.msgMenu;
  if (!menu.hidden && menu.owner === button) { closeMessageMenu(true); return; }
  closeMessageMenu(false);
  const mine = m.sender_id === state.me.id;
  // back to the message's actions button after a reaction or a delete (applyChange keeps it there);
  // reply and edit take the focus to the composer
  const item = (label, fn, extra = {}, back = true) => el("button", { class: "menu-item", type: "button", role: "menuitem", tabindex: -1,
    onclick: () => { closeMessageMenu(back); fn(); }, ...extra }, label);
  const items = [item("Reply", () => startReply(m), {}, false)];
  for (const emoji of QUICK_REACTIONS) {
    const had = (m.reactions || []).some((r) => r.emoji === emoji && r.user_ids.includes(state.me.id));
    items.push(item(`${had ? "Remove" : "React"} ${emoji}`, () => react(m, emoji, !had), { dataset: { emoji } }));
  }
  if (mine) {
    items.push(item("Edit", () => startEdit(m), {}, false));
    items.push(item("Delete", () => deleteMessage(m), { class: "menu-item danger" }));
  }
  menu.replaceChildren(...items);
  menu.owner = button;
  button.setAttribute("aria-expanded", "true");
  button.after(menu);
  menu.hidden = false;
  menu.querySelector("[role=menuitem]").focus();
}

function buildMessageMenu() {
  const menu = el("div", { class: "menu msg-menu", id: "message-menu", role: "menu", "aria-label": "Message actions", hidden: true });
  menu.owner = null;
  menu.addEventListener("keydown", (e) => {
    const items = [...menu.querySelectorAll("[role=menuitem]")];
    const at = items.indexOf(document.activeElement);
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); closeMessageMenu(true); }
    else if (e.key === "ArrowDown") { e.preventDefault(); items[(at + 1) % items.length].focus(); }
    else if (e.key === "ArrowUp") { e.preventDefault(); items[(at - 1 + items.length) % items.length].focus(); }
    else if (e.key === "Tab") closeMessageMenu(false);
  });
  document.addEventListener("click", (e) => {
    if (!menu.hidden && !menu.contains(e.target) && !(menu.owner && menu.owner.contains(e.target))) closeMessageMenu(false);
  });
  return menu;
}

function messagePath(m) { return `/api/chats/${m.chat_id}/messages/${m.id}`; }

async function react(m, emoji, add) {
  try {
    const ev = await api(add ? "PUT" : "DELETE", `${messagePath(m)}/reactions/${encodeURIComponent(emoji)}`);
    applyChange(ev);
  } catch (err) {
    ui.composerError.textContent = `Reaction not saved: ${err.message}`;
  }
}

async function deleteMessage(m) {
  if (!window.confirm("Delete this message for everyone?")) return;
  try {
    applyChange(await api("DELETE", messagePath(m)));
  } catch (err) {
    ui.composerError.textContent = `Not deleted: ${err.message}`;
  }
}

function renderComposerMode() {
  const target = state.editing || state.replyTo;
  ui.mode.hidden = !target;
  if (!target) { ui.mode.replaceChildren(); return; }
  const what = state.editing ? "Editing your message"
    : `Replying to ${target.sender_id === state.me.id ? "yourself" : target.sender_name}`;
  ui.mode.replaceChildren(el("span", { class: "mode-text" }, el("strong", { text: what }), " ",
    el("span", { class: "mode-preview", text: target.content || "" })),
  el("button", { class: "icon-btn", type: "button", id: "cancel-mode", "aria-label": state.editing ? "Cancel editing" : "Cancel reply",
    onclick: () => cancelMode() }, icon("close", 14)));
}

function startReply(m) {
  state.editing = null;
  state.replyTo = m;
  renderComposerMode();
  ui.input.focus();
}

function startEdit(m) {
  state.replyTo = null;
  state.editing = m;
  ui.input.value = m.content;
  renderComposerMode();
  ui.input.focus();
}

function cancelMode() {
  if (state.editing) ui.input.value = "";
  state.editing = null;
  state.replyTo = null;
  renderComposerMode();
  ui.input.focus();
}

async function saveEdit() {
  const m = state.editing;
  const content = ui.input.value;
  if (!content.trim()) { ui.composerError.textContent = "A message cannot be empty: delete it instead."; return; }
  try {
    applyChange(await api("PATCH", messagePath(m), { content }));
    state.editing = null;
    ui.input.value = "";
    renderComposerMode();
  } catch (err) {
    ui.composerError.textContent = `Not saved: ${err.message}`;
  }
}

/** Where the focus is among the messages (a message's actions button or reaction), to keep it across a rebuild. */
function messageFocus() {
  const active = document.activeElement;
  if (!active || active === ui.messages || !ui.messages.contains(active)) return null;
  const node = active.closest(".msg");
  return node ? { id: node.dataset.messageId, emoji: active.classList.contains("reaction") ? active.dataset.emoji : null } : null;
}

/** Focus the same control of the rebuilt message: its reaction, else its actions button, else the log. */
function restoreMessageFocus(at) {
  if (!at) return;
  const node = ui.messages.querySelector(`.msg[data-message-id="${at.id}"]`);
  const chip = node && at.emoji ? [...node.querySelectorAll("button.reaction")].find((b) => b.dataset.emoji === at.emoji) : null;
  (chip || (node && node.querySelector(".msg-actions")) || ui.messages).focus();
}

/** A message_edited, message_deleted or reaction event (live, or the answer to this page's own change). */
function applyChange(ev) {
  if (!ev || ev.chat_id !== state.current) return;
  const m = state.messages.find((x) => x.id === ev.message_id);
  if (!m) return;
  if (ev.type === "message_edited" && !ev.deleted) {
    m.content = ev.content;
    m.edited_at = ev.edited_at;
  } else if (ev.type === "message_deleted" || (ev.type === "message_edited" && ev.deleted)) {
    Object.assign(m, { deleted: true, content: "", attachments: [], reactions: [], reply_to: null });
    if (state.editing && state.editing.id === m.id) cancelMode();
    if (state.replyTo && state.replyTo.id === m.id) cancelMode();
  } else if (ev.type === "reaction" && ev.changed !== false) {
    const list = m.reactions = m.reactions || [];
    let r = list.find((x) => x.emoji === ev.emoji);
    if (!r) { r = { emoji: ev.emoji, count: 0, user_ids: [] }; list.push(r); }
    r.user_ids = r.user_ids.filter((u) => u !== ev.user_id);
    if (ev.added) r.user_ids.push(ev.user_id);
    r.count = ev.count;
    m.reactions = list.filter((x) => x.count > 0);
  } else {
    return;
  }
  const focus = messageFocus();
  closeMessageMenu(false);  // the rebuild below replaces the node it belongs to
  // Quotes of it in later messages follow the change.
  for (const other of state.messages) {
    if (other.reply_to && other.reply_to.id === m.id) {
      other.reply_to = m.deleted ? { id: m.id, deleted: true } : { ...other.reply_to, content_preview: m.content };
    }
  }
  renderMessages({ keepScroll: true });
  restoreMessageFocus(focus);
}

// Attachments -------------------------------------------------------------------------------

function fileSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10 * 1024 ? 1 : 0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** The file's short-lived links, asked for once and again shortly before they expire. */
function linkOf(uploadId) {
  const cached = state.links.get(uploadId);
  if (cached && cached.expiresMs - LINK_MARGIN_MS > Date.now()) return cached.promise;
  const promise = state.client.attachmentLink
    ? state.client.attachmentLink(uploadId) : squallClient().attachmentLink(uploadId);
  const entry = { promise, expiresMs: Infinity };
  promise.then((link) => { entry.expiresMs = link.expires_at * 1000; }, () => state.links.delete(uploadId));
  state.links.set(uploadId, entry);
  return promise;
}

/** One attachment of a message: an image's thumbnail (a link to the image), or a file link. */
function attachmentNode(file) {
  const label = `${file.filename || "file"} (${fileSize(file.size)})`;
  const isImage = !!(file.width && file.height);
  // A fresh link at each click (links live minutes): an image opens in a new tab, another
  // file downloads (the server sends it as an attachment).
  const open = async (e) => {
    e.preventDefault();
    try {
      const link = await linkOf(file.id);
      if (isImage) { window.open(link.url, "_blank", "noopener"); return; }
      const a = el("a", { href: link.url, download: file.filename || "file", hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    } catch { /* the file is gone or the link refused: nothing to open */ }
  };
  if (isImage) {
    const img = el("img", { alt: file.filename || "Image", width: Math.min(file.width, 240),
      height: Math.round(Math.min(file.width, 240) * file.height / file.width), loading: "lazy" });
    const a = el("a", { class: "msg-image", href: "#", "aria-label": `Open image ${label}`, onclick: open }, img);
    linkOf(file.id).then((link) => { img.src = link.thumbnail_url || link.url; a.href = link.url; }, () => img.remove());
    return a;
  }
  return el("a", { class: "msg-file", href: "#", onclick: open }, icon("file", 16), el("span", { text: label }));
}

function renderPending() {
  ui.pending.hidden = !state.pending.length;
  ui.pending.replaceChildren(...state.pending.map((p) => {
    const done = !!p.upload;
    const percent = p.total ? Math.round(100 * p.sent / p.total) : 0;
    return el("li", { class: `pending-file${p.error ? " has-error" : ""}`, dataset: { key: p.key } },
      el("span", { class: "pending-name", text: p.name }),
      p.error ? el("span", { class: "pending-error", text: p.error })
        : done ? el("span", { class: "pending-done", text: fileSize(p.upload.size) })
          : el("progress", { max: 100, value: percent, "aria-label": `Uploading ${p.name}` }),
      el("button", { class: "icon-btn pending-remove", type: "button", "aria-label": `Remove ${p.name}`,
        onclick: () => removePending(p.key) }, icon("close", 14)));
  }));
}

function removePending(key) {
  const p = state.pending.find((x) => x.key === key);
  if (p && p.abort && !p.upload) p.abort.abort();
  state.pending = state.pending.filter((x) => x.key !== key);
  renderPending();
  ui.input.focus();
}

/** Upload ``files`` (a FileList or array) at once, each with its own progress. */
function addFiles(files) {
  const list = [...files];
  if (!list.length || !state.current || isFormer(state.chats.get(state.current))) return;
  ui.composerError.textContent = "";
  for (const file of list) {
    if (state.pending.length >= MAX_ATTACHMENTS) {
      ui.composerError.textContent = `At most ${MAX_ATTACHMENTS} files per message.`;
      break;
    }
    const p = { key: `${Date.now()}-${Math.random()}`, name: file.name || "pasted image", sent: 0, total: file.size,
      upload: null, error: "", abort: new AbortController() };
    state.pending.push(p);
    squallClient().upload(file, { filename: p.name, signal: p.abort.signal, onProgress: (sent, total) => {
      p.sent = sent; p.total = total || p.total; renderPending();
    } }).then((upload) => { p.upload = upload; renderPending(); },
      (err) => { p.error = err instanceof ApiError ? err.message : "Upload failed"; renderPending(); });
  }
  renderPending();
}

/**
 * Rebuild the whole conversation (opening a chat, loading earlier messages). The log is
 * ``aria-busy`` meanwhile, so a screen reader does not read the history out again.
 */
function renderMessages({ keepScroll = false, toBottom = false } = {}) {
  const box = ui.messages;
  const fromBottom = box.scrollHeight - box.scrollTop;
  box.setAttribute("aria-busy", "true");
  const nodes = state.messages.map((m, i) => messageNode(m, state.messages[i - 1]));
  box.replaceChildren(ui.loadEarlier, ...nodes);
  if (!state.messages.length) box.append(el("p", { class: "conv-empty small", text: "No messages yet. Say hello!" }));
  renderReceipt();
  if (keepScroll) box.scrollTop = box.scrollHeight - fromBottom;
  else if (toBottom) box.scrollTop = box.scrollHeight;
  requestAnimationFrame(() => box.removeAttribute("aria-busy"));
}

/**
 * Add messages to the open chat. Newer than the last shown: appended one node each, so the
 * log (a polite live region) announces each new message once; anything else: a rebuild.
 */
function addMessages(list) {
  const last = state.messages.length ? state.messages[state.messages.length - 1].id : 0;
  const added = [];
  for (const m of list) {
    if (m.chat_id !== state.current || state.messageIds.has(m.id)) continue;
    state.messageIds.add(m.id);
    state.messages.push(m);
    added.push(m);
  }
  if (!added.length) return;
  const box = ui.messages;
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  const toBottom = nearBottom || list.some((m) => m.sender_id === state.me.id);
  const loaded = ui.conversation.dataset.loaded === String(state.current);
  const appendOnly = loaded && added.every((m, i) => m.id > (i ? added[i - 1].id : last));
  if (!appendOnly) {
    state.messages.sort((a, b) => a.id - b.id);
    renderMessages({ toBottom });
    return;
  }
  for (const placeholder of box.querySelectorAll(".conv-empty")) placeholder.remove();
  let prev = state.messages[state.messages.length - added.length - 1];
  for (const m of added) { box.append(messageNode(m, prev)); prev = m; }
  renderReceipt();
  if (toBottom) box.scrollTop = box.scrollHeight;
}

/** "Seen" under my latest message that the others have read (left alone if unchanged). */
function renderReceipt() {
  const chat = state.chats.get(state.current);
  const mine = [...state.messages].reverse().find((m) => m.sender_id === state.me.id);
  const readers = chat && mine ? chat.members.filter((u) => u.id !== state.me.id && (state.readBy.get(u.id) || 0) >= mine.id) : [];
  const text = !readers.length ? "" : chat.kind === "group" ? `Seen by ${readers.map((u) => u.display_name).join(", ")}` : "Seen";
  const node = text ? ui.messages.querySelector(`.msg[data-message-id="${mine.id}"] .msg-meta`) : null;
  const current = ui.messages.querySelector(".receipt");
  if (current && node && node.contains(current) && current.textContent === text) return;
  for (const old of ui.messages.querySelectorAll(".receipt-wrap")) old.remove();
  if (node) node.append(el("span", { class: "receipt-wrap" }, " · ", el("span", { class: "receipt", text })));
}

function renderTyping() {
  const now = Date.now();
  const names = [...state.typing.values()].filter((t) => t.until > now).map((t) => t.name);
  const text = !names.length ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  if (ui.typing.textContent !== text) ui.typing.textContent = text;
}

/** Mark the open chat read up to its last message (when this tab is visible and it helps). */
function markRead(force = false) {
  if (!state.current || document.visibilityState !== "visible") return;
  const last = state.messages[state.messages.length - 1];
  const chat = state.chats.get(state.current);
  if (!last || !chat || isFormer(chat) || last.id <= (state.markedRead.get(state.current) || 0) && !force) return;
  if (force || chat.unread_count > 0) {
    state.markedRead.set(state.current, last.id);
    state.conn.markRead(state.current, last.id);
  }
}

async function openChat(chatId, push = true) {
  if (push && location.pathname !== `/chat/${chatId || ""}`.replace(/\/$/, "")) {
    history.pushState({}, "", chatId ? `/chat/${chatId}` : "/chat");
  }
  if (chatId !== state.current && (state.replyTo || state.editing)) {
    if (state.editing) ui.input.value = "";
    state.replyTo = state.editing = null;
    renderComposerMode();
  }
  if (chatId !== state.current && state.pending.length) {  // files chosen for the chat being left
    for (const p of state.pending) if (!p.upload) p.abort.abort();
    state.pending = [];
    renderPending();
  }
  state.current = chatId;
  state.messages = [];
  state.messageIds = new Set();
  state.readBy = new Map();
  state.typing = new Map();
  ui.layout.classList.toggle("has-chat", !!chatId);
  ui.conversation.dataset.chatId = chatId || "";
  // presence in the chat (join_chat, or /sse/chat?chat_id=): not in a group I left (refused)
  state.conn.setChat(isFormer(state.chats.get(chatId)) ? null : chatId);
  renderList();
  renderTyping();
  ui.composerError.textContent = "";
  if (!chatId) {
    ui.empty.hidden = false;
    ui.active.hidden = true;
    document.title = "Messages · Squall";
    return;
  }
  ui.empty.hidden = true;
  ui.active.hidden = false;
  ui.loadEarlier.hidden = true;
  delete ui.conversation.dataset.loaded;
  ui.messages.replaceChildren();
  try {
    await ensureChat(chatId);
  } catch (err) {
    ui.messages.replaceChildren(el("p", { class: "conv-empty", text: err instanceof ApiError && err.status === 403
      ? "You are not a member of this chat." : "This chat does not exist." }));
    return;
  }
  renderHead();
  document.title = `${state.chats.get(chatId).title} · Squall`;
  const { messages } = await api("GET", `/api/chats/${chatId}/messages?limit=${PAGE}`);
  if (state.current !== chatId) return;
  ui.loadEarlier.hidden = messages.length < PAGE;
  addMessages(messages);
  renderMessages({ toBottom: true });
  ui.conversation.dataset.loaded = String(chatId);
  const lastMessage = state.messages[state.messages.length - 1];
  const opened = state.chats.get(chatId);
  if (lastMessage && (lastMessage.sender_id !== state.me.id || (opened && opened.unread_count > 0))) markRead(true);
  if (isFormer(opened)) ui.messages.focus();
  else ui.input.focus();
}

async function loadEarlier() {
  const chatId = state.current;
  const oldest = state.messages[0];
  if (!chatId || !oldest) return;
  ui.loadEarlier.disabled = true;
  try {
    const { messages } = await api("GET", `/api/chats/${chatId}/messages?before_id=${oldest.id}&limit=${PAGE}`);
    if (state.current !== chatId) return;
    for (const m of messages) if (!state.messageIds.has(m.id)) { state.messageIds.add(m.id); state.messages.push(m); }
    state.messages.sort((a, b) => a.id - b.id);
    ui.loadEarlier.hidden = messages.length < PAGE;
    renderMessages({ keepScroll: true });
  } finally {
    ui.loadEarlier.disabled = false;
  }
}

async function send() {
  if (state.editing) { await saveEdit(); return; }
  const content = ui.input.value;
  const chatId = state.current;
  const files = state.pending;
  if ((!content.trim() && !files.length) || !chatId || isFormer(state.chats.get(chatId))) return;
  if (files.some((p) => !p.upload && !p.error)) {
    ui.composerError.textContent = "Wait for the files to finish uploading.";
    return;
  }
  if (files.some((p) => p.error)) {
    ui.composerError.textContent = "Remove the files that could not be uploaded.";
    return;
  }
  ui.input.value = "";
  ui.composerError.textContent = "";
  state.pending = [];
  renderPending();
  const replyTo = state.replyTo;
  state.replyTo = null;
  renderComposerMode();
  try {
    const message = await state.conn.send(chatId, content, files.map((p) => p.upload.id), replyTo ? replyTo.id : null);
    noteMessage(message);
    if (state.current === chatId) addMessages([message]);
  } catch (err) {
    if (!ui.input.value) ui.input.value = content;
    if (!state.pending.length) { state.pending = files; renderPending(); }
    if (replyTo && !state.replyTo) { state.replyTo = replyTo; renderComposerMode(); }
    ui.composerError.textContent = `Not sent: ${err.message}`;
  }
}

// Real-time frames --------------------------------------------------------------------------

function onChatFrame(data) {
  if (data.type === "message") {
    const m = data.message;
    noteMessage(m);
    if (m.chat_id === state.current) {
      state.typing.delete(m.sender_id);
      renderTyping();
      addMessages([m]);
      if (m.sender_id !== state.me.id) {
        const chat = state.chats.get(m.chat_id);
        if (chat) chat.unread_count = Math.max(chat.unread_count || 0, 1);
        markRead();
      }
    }
  } else if (data.type === "typing" && data.chat_id === state.current && data.user_id !== state.me.id) {
    state.typing.set(data.user_id, { name: data.user_name, until: Date.now() + TYPING_SHOW_MS });
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOW_MS + 50);
  } else if (data.type === "members" || data.type === "chat_updated" || data.type === "chat_members") {
    refreshChat(data.chat_id).catch(() => {});  // removed (or left): the chat turns read-only (renderAccess)
  } else if (data.type === "message_edited" || data.type === "message_deleted" || data.type === "reaction") {
    applyChange(data);
  } else if (data.type === "read" && data.chat_id === state.current) {
    state.readBy.set(data.user_id, Math.max(state.readBy.get(data.user_id) || 0, data.message_id));
    renderReceipt();
  }
}

// New chat dialog -------------------------------------------------------------------------

/**
 * The "New chat" dialog. The search results are a listbox (one Tab stop; arrow keys, Home
 * and End move, Space or Enter select, ``aria-selected`` tells); the dialog keeps Tab
 * inside and gives the focus back to the button that opened it.
 */
function buildDialog() {
  const selected = new Map();   // user id -> user
  const search = el("input", { type: "search", id: "user-search", placeholder: "Username or name", autocomplete: "off",
    "aria-controls": "user-results", "aria-describedby": "search-status" });
  const results = el("div", { class: "user-results", id: "user-results", role: "listbox", hidden: true,
    "aria-label": "People found", "aria-multiselectable": "true" });
  const status = el("p", { class: "muted small", id: "search-status", role: "status" });
  const chips = el("div", { class: "chips", id: "selected-users", "aria-label": "Selected", role: "group" });
  const title = el("input", { type: "text", id: "group-title", placeholder: "Group name", maxlength: 128 });
  const titleField = el("div", { hidden: true }, el("label", { for: "group-title", text: "Group name" }), title);
  const error = el("p", { class: "form-error", role: "alert" });
  const start = el("button", { class: "btn", type: "button", id: "start-chat", disabled: true, text: "Start chat" });
  const cancel = el("button", { class: "btn btn-ghost", type: "button", text: "Cancel" });
  const dialog = el("dialog", { id: "new-chat-dialog", "aria-labelledby": "new-chat-title", "aria-describedby": "new-chat-help" },
    el("div", { class: "dialog-body" },
      el("h2", { id: "new-chat-title", text: "New chat" }),
      el("p", { class: "muted small", id: "new-chat-help", text: "Pick one person for a private chat, or several for a group." }),
      el("label", { for: "user-search", class: "search-label", text: "Find people" }),
      search, status, results, chips, titleField, error,
      el("div", { class: "dialog-actions" }, cancel, start)));
  const options = () => [...results.querySelectorAll("[role=option]")];
  const refresh = () => {
    chips.replaceChildren(...[...selected.values()].map((u) => el("span", { class: "chip", text: u.display_name })));
    titleField.hidden = selected.size < 2;
    start.disabled = selected.size === 0 || (selected.size > 1 && !title.value.trim());
    start.textContent = selected.size > 1 ? "Create group" : "Start chat";
    for (const option of options()) {
      const on = selected.has(Number(option.dataset.userId));
      option.setAttribute("aria-selected", String(on));
      option.classList.toggle("selected", on);
    }
  };
  const toggle = (option, u) => {
    if (selected.has(u.id)) selected.delete(u.id); else selected.set(u.id, u);
    refresh();
    moveTo(option);
  };
  // Roving tabindex: the listbox is one Tab stop, its current option holds it.
  const moveTo = (option) => {
    for (const o of options()) o.tabIndex = o === option ? 0 : -1;
    if (option) option.focus();
  };
  results.addEventListener("keydown", (e) => {
    const all = options();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    const go = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 }[e.key];
    if (go !== undefined) {
      e.preventDefault();
      if (go >= 0 && go < all.length) moveTo(all[go]);
      else if (go < 0) search.focus();
    } else if (e.key === " " || e.key === "Enter") {
      e.preventDefault();
      all[at].click();
    }
  });
  search.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" && options().length) { e.preventDefault(); moveTo(options()[0]); }
  });
  let timer = null;
  let seq = 0;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = search.value.trim();
      const mySeq = ++seq;
      if (!q) { results.replaceChildren(); results.hidden = true; status.textContent = ""; return; }
      if (q.length < 2) {  // the server answers prefixes of 2 characters or more (--user-search)
        results.replaceChildren(); results.hidden = true; status.textContent = "Type at least 2 characters.";
        return;
      }
      try {
        const { users } = await api("GET", `/api/users?q=${encodeURIComponent(q)}&limit=10`);
        if (mySeq !== seq) return;
        results.replaceChildren(...users.map((u, i) => {
          const option = el("div", {
            class: "user-result", id: `user-option-${u.id}`, role: "option", tabindex: i === 0 ? 0 : -1,
            "aria-selected": "false", dataset: { userId: u.id, username: u.username },
          }, avatar(u.display_name, "sm"), el("span", {}, el("strong", { text: u.display_name }), " ",
            el("span", { class: "muted small", text: `@${u.username}` })), el("span", { class: "check", "aria-hidden": "true", text: "✓" }));
          option.addEventListener("click", () => toggle(option, u));
          return option;
        }));
        results.hidden = !users.length;
        status.textContent = !users.length ? "No one found." : users.length === 1 ? "1 person found. Press Down to pick."
          : `${users.length} people found. Press Down to pick.`;
        refresh();
      } catch (err) { error.textContent = err.message; }
    }, 200);
  });
  title.addEventListener("input", refresh);
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("keydown", trapTab);
  let opener = null;
  dialog.addEventListener("close", () => {
    if (opener && !dialog.dataset.started) opener.focus();
    opener = null;
  });
  start.addEventListener("click", async () => {
    error.textContent = "";
    start.disabled = true;
    try {
      const ids = [...selected.keys()];
      const { chat } = ids.length === 1
        ? await api("POST", "/api/chats", { user_id: ids[0] })
        : await api("POST", "/api/chats", { member_ids: ids, title: title.value.trim() });
      state.chats.set(chat.id, chat);
      dialog.dataset.started = "true";  // the focus goes to the new chat's composer instead
      dialog.close();
      openChat(chat.id);
    } catch (err) {
      error.textContent = err.message;
      refresh();
    }
  });
  dialog.openFresh = () => {
    selected.clear();
    search.value = "";
    title.value = "";
    error.textContent = "";
    status.textContent = "";
    delete dialog.dataset.started;
    results.replaceChildren();
    results.hidden = true;
    refresh();
    opener = document.activeElement;
    dialog.showModal();
    search.focus();
  };
  return dialog;
}

// Message search ---------------------------------------------------------------------------

/** A search result's content: the server's segments, the words found in <mark> (text only). */
function highlighted(segments) {
  return segments.map((s) => (s.match ? el("mark", { text: s.text }) : document.createTextNode(s.text)));
}

function renderSearch(status) {
  const searching = state.search.q.length >= SEARCH_MIN_CHARS;
  ui.list.hidden = searching;
  ui.searchResults.hidden = !searching;
  ui.searchStatus.textContent = status || "";
  ui.searchMore.hidden = !searching || !state.search.cursor;
  if (!searching) return;
  ui.searchResults.replaceChildren(...state.search.results.map((r) => {
    const chat = state.chats.get(r.chat_id);
    const where = chat ? chat.title : "Chat";
    return el("li", {}, el("a", { class: "search-result", href: `/chat/${r.chat_id}`, dataset: { chatId: r.chat_id, messageId: r.id } },
      el("span", { class: "chat-item-top" },
        el("span", { class: "chat-title", text: where }),
        el("span", { class: "chat-time", text: shortTime(r.created_at) })),
      el("span", { class: "search-sender", text: r.sender_id === state.me.id ? "You" : r.sender_name }),
      el("span", { class: "search-snippet" }, highlighted(r.highlight))));
  }));
}

async function runSearch(more = false) {
  const q = state.search.q;
  const seq = ++state.search.seq;  // a newer query makes older answers stale
  if (q.length < SEARCH_MIN_CHARS) { state.search.results = []; state.search.cursor = null; renderSearch(""); return; }
  const params = new URLSearchParams({ q });
  if (more && state.search.cursor) params.set("cursor", state.search.cursor);
  renderSearch("Searching…");
  try {
    const page = await api("GET", `/api/search?${params}`);
    if (seq !== state.search.seq) return;
    state.search.results = more ? state.search.results.concat(page.results) : page.results;
    state.search.cursor = page.next_cursor;
    const n = state.search.results.length;
    renderSearch(n ? `${n}${page.next_cursor ? "+" : ""} message${n === 1 ? "" : "s"} found` : "No messages found");
  } catch (err) {
    if (seq !== state.search.seq) return;
    const code = err instanceof ApiError ? err.code : "";
    state.search.results = [];
    state.search.cursor = null;
    renderSearch(code === "rate_limited" ? "Too many searches: wait a moment."
      : code === "invalid_query" ? "Type letters or digits to search for."
        : err instanceof ApiError ? err.message : "Search failed: check your connection.");
  }
}

function onSearchInput() {
  state.search.q = ui.searchInput.value.trim();
  clearTimeout(state.search.timer);
  if (state.search.q.length < SEARCH_MIN_CHARS) { runSearch(); return; }
  state.search.timer = setTimeout(() => runSearch(), SEARCH_DELAY_MS);
}

function clearSearch() {
  ui.searchInput.value = "";
  onSearchInput();
}

/** Once a chat is open, bring the message a search found into view (if it is in the loaded history). */
function showFound() {
  if (!state.found) return;
  const node = ui.messages.querySelector(`.msg[data-message-id="${state.found}"]`);
  state.found = null;
  if (!node) return;
  node.classList.add("found");
  node.scrollIntoView({ block: "center" });
}

function buildSearch() {
  ui.searchInput = el("input", { type: "search", id: "message-search", placeholder: "Search messages", autocomplete: "off",
    maxlength: 200, "aria-describedby": "message-search-status", "aria-controls": "message-search-results", oninput: onSearchInput });
  ui.searchInput.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ui.searchInput.value) { e.preventDefault(); clearSearch(); }
  });
  ui.searchStatus = el("p", { class: "search-status small muted", id: "message-search-status", role: "status" });
  ui.searchResults = el("ul", { class: "chat-list search-results", id: "message-search-results", "aria-label": "Search results", hidden: true });
  ui.searchMore = el("button", { class: "btn btn-ghost search-more", type: "button", id: "message-search-more", hidden: true,
    text: "More results", onclick: () => runSearch(true) });
  ui.searchResults.addEventListener("click", (e) => {
    const a = e.target.closest("a.search-result");
    if (!a || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    state.found = Number(a.dataset.messageId);
    openChat(Number(a.dataset.chatId)).then(showFound);
  });
  const form = el("form", { class: "chat-search", role: "search", onsubmit: (e) => { e.preventDefault(); clearTimeout(state.search.timer); runSearch(); } },
    el("label", { for: "message-search", class: "sr-only", text: "Search messages" }), ui.searchInput);
  return [form, ui.searchStatus, ui.searchResults, ui.searchMore];
}

// Page -------------------------------------------------------------------------------------

function build() {
  ui.list = el("ul", { class: "chat-list", id: "chat-list", "aria-label": "Chats" });
  ui.dialog = buildDialog();
  const newChat = el("button", { class: "btn btn-secondary", type: "button", id: "new-chat", onclick: () => ui.dialog.openFresh() },
    icon("plus", 16), "New chat");
  ui.headAvatar = el("span");
  ui.headTitle = el("strong", { id: "conv-title" });
  ui.headSub = el("span", { class: "conv-sub", id: "conv-sub" });
  ui.loadEarlier = el("button", { class: "btn btn-ghost load-earlier", type: "button", id: "load-earlier", hidden: true, text: "Load earlier messages", onclick: loadEarlier });
  // A log (polite live region): appended messages are announced, one each. Focusable so a
  // keyboard can scroll it.
  ui.messages = el("div", { class: "messages", id: "messages", role: "log", "aria-live": "polite", "aria-label": "Messages", tabindex: 0 });
  ui.typing = el("div", { class: "typing", id: "typing", role: "status" });
  ui.input = el("textarea", { id: "composer-input", placeholder: "Write a message…", rows: 1, maxlength: 4000, "aria-label": "Message" });
  ui.composerError = el("p", { class: "form-error small", id: "composer-error", role: "alert" });
  const sendBtn = el("button", { class: "btn", type: "submit", id: "send", "aria-label": "Send" }, icon("send", 16), el("span", { text: "Send" }));
  ui.fileInput = el("input", { type: "file", id: "file-input", multiple: true, hidden: true, tabindex: -1,
    "aria-hidden": "true", onchange: () => { addFiles(ui.fileInput.files); ui.fileInput.value = ""; } });
  const attachBtn = el("button", { class: "icon-btn attach-btn", type: "button", id: "attach", "aria-label": "Attach files",
    onclick: () => ui.fileInput.click() }, icon("paperclip", 18));
  ui.pending = el("ul", { class: "pending-files", id: "pending-files", "aria-label": "Files to send", hidden: true });
  ui.mode = el("div", { class: "composer-mode", id: "composer-mode", role: "status", hidden: true });
  ui.mentionList = el("ul", { class: "mention-list", id: "mention-list", role: "listbox", "aria-label": "Members to mention", hidden: true });
  ui.input.setAttribute("role", "combobox");
  ui.input.setAttribute("aria-autocomplete", "list");
  ui.input.setAttribute("aria-controls", "mention-list");
  ui.input.setAttribute("aria-expanded", "false");
  ui.input.addEventListener("keydown", onCompletionKey, { capture: true });
  ui.input.addEventListener("input", updateCompletion);
  ui.input.addEventListener("blur", () => setTimeout(closeCompletion, 150));
  ui.msgMenu = buildMessageMenu();
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && (state.editing || state.replyTo)) { e.preventDefault(); cancelMode(); }
  });
  const composer = ui.composer = el("form", { class: "composer", id: "composer" }, attachBtn, ui.fileInput, ui.input, sendBtn);
  // Always in the page (empty while I am a member), so that its text is announced when it comes.
  ui.formerNotice = el("p", { class: "former-notice", id: "former-notice", role: "status" });
  ui.input.addEventListener("paste", (e) => {
    const files = e.clipboardData ? [...e.clipboardData.files] : [];
    if (files.length) { e.preventDefault(); addFiles(files); }
  });
  composer.addEventListener("submit", (e) => { e.preventDefault(); send(); });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  ui.input.addEventListener("input", () => {
    if (state.current && ui.input.value && Date.now() - state.lastTypingSent > TYPING_SEND_MS) {
      state.lastTypingSent = Date.now();
      state.conn.typing(state.current);
    }
  });
  const back = el("button", { class: "icon-btn back-btn", type: "button", "aria-label": "Back to chats", onclick: () => openChat(null) }, icon("back"));
  ui.settingsBtn = el("button", { class: "icon-btn", type: "button", id: "group-settings", "aria-label": "Group settings", hidden: true,
    "aria-haspopup": "dialog", onclick: () => ui.groupDialog.openFor(state.current) }, icon("users"));
  ui.groupDialog = buildGroupDialog();
  ui.active = el("div", { class: "conv-active", hidden: true },
    el("div", { class: "conv-head" }, back, ui.headAvatar, el("div", { class: "conv-title" }, ui.headTitle, ui.headSub),
      ui.settingsBtn, buildMuteMenu()),
    ui.messages, ui.typing, ui.composerError, ui.pending, ui.mode, ui.mentionList, composer, ui.formerNotice);
  // Files dropped anywhere on the open conversation are attached.
  ui.active.addEventListener("dragover", (e) => {
    if (e.dataTransfer && [...e.dataTransfer.types].includes("Files")) { e.preventDefault(); ui.active.classList.add("dropping"); }
  });
  ui.active.addEventListener("dragleave", (e) => { if (e.target === ui.active) ui.active.classList.remove("dropping"); });
  ui.active.addEventListener("drop", (e) => {
    ui.active.classList.remove("dropping");
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    addFiles(e.dataTransfer.files);
  });
  ui.empty = el("div", { class: "conv-empty" }, el("div", {},
    el("div", { class: "big" }, icon("chat", 28)), el("h2", { text: "Your messages" }),
    el("p", { class: "muted", text: "Pick a conversation, or start a new one." })));
  ui.conversation = el("section", { class: "conversation", id: "conversation" }, ui.empty, ui.active);
  ui.layout = el("div", { class: "chat-layout" },
    el("aside", { class: "chat-sidebar" },
      el("div", { class: "sidebar-head" }, el("h1", { text: "Messages" }), newChat), buildSearch(), ui.list),
    ui.conversation);
  document.getElementById("main").append(ui.layout, ui.dialog, ui.groupDialog);
}

async function main() {
  const { me, client } = await startApp("messages", {
    // The server does not notify about the chat that is open here; never invent a toast for it.
    suppressToast: (n) => n.chat_id === state.current && document.visibilityState === "visible",
  });
  state.me = me;
  state.client = client;
  build();
  state.conn = new ChatConnection({
    onFrame: onChatFrame,
    onJoined: (chatId) => { ui.conversation.dataset.joined = chatId ? String(chatId) : ""; },
    onStatus: (s) => { ui.conversation.dataset.transport = s.transport || ""; },
    lastNotificationId: () => client.lastEventId || 0,
  });
  await Promise.all([loadChats(), client.historyLoaded]);
  const newest = [...state.chats.values()].reduce((mx, c) => Math.max(mx, c.last_message ? c.last_message.id : 0), 0);
  state.conn.start(chatIdFromPath(), newest || null);
  client.on("unread", (u) => applyUnread(u));
  client.on("mute", applyMute);
  client.on("presence", applyPresence);
  client.on("new_message", (n) => {
    const chat = state.chats.get(n.chat_id);
    if (!chat) { ensureChat(n.chat_id).catch(() => {}); return; }
    if (!chat.last_message || chat.last_message.created_at <= n.timestamp) {
      chat.last_message = { id: chat.last_message ? chat.last_message.id : 0, chat_id: n.chat_id, sender_id: n.sender_id,
        sender_name: n.sender_name, content: n.content_preview, created_at: n.timestamp };
    }
    renderList();
  });
  ui.list.addEventListener("click", (e) => {
    const a = e.target.closest("a.chat-item");
    if (!a || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    openChat(Number(a.dataset.chatId));
  });
  window.addEventListener("squall:open-chat", (e) => { e.preventDefault(); openChat(e.detail.chatId); });
  window.addEventListener("popstate", () => openChat(chatIdFromPath(), false));
  document.addEventListener("visibilitychange", () => markRead());
  await openChat(chatIdFromPath(), false);
}

main();
