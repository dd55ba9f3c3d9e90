// DOM helpers: every piece of user data goes in as text (textContent), never as markup.

/** ``el("div", {class: "x", dataset: {id: 1}, onclick: fn}, child, "text")`` → Element. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// A candidate link: http(s):// and what follows up to a space; closing punctuation is trimmed.
const LINK_CANDIDATE = /\bhttps?:\/\/[^\s<>"]+/gi;
const TRAILING = /[.,;:!?'")\]}]+$/;

/**
 * ``text`` as nodes: http and https URLs become links (new tab, ``rel="noopener noreferrer
 * nofollow"``), everything else, other schemes included, stays text. Built with DOM calls
 * only; each URL is checked by the browser's own parser, the one that will follow it.
 */
export function linkify(text) {
  const nodes = [];
  let at = 0;
  for (const match of String(text).matchAll(LINK_CANDIDATE)) {
    const raw = match[0].replace(TRAILING, "");
    let url = null;
    try { url = new URL(raw); } catch { url = null; }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || !url.hostname) continue;
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    const a = document.createElement("a");
    a.href = url.href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    a.textContent = raw;
    nodes.push(a);
    at = match.index + raw.length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

/** An inline SVG icon from the sprite-free set below (paths are constants, not user data). */
export function icon(name, size = 20) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", size);
  svg.setAttribute("height", size);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  for (const d of ICONS[name] || []) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

const ICONS = {
  home: ["M3 10.5 12 3l9 7.5", "M5 9.5V21h5v-6h4v6h5V9.5"],
  chat: ["M4 5h16v11H8l-4 4z"],
  pulse: ["M3 12h4l3-7 4 14 3-7h4"],
  menu: ["M4 6h16", "M4 12h16", "M4 18h16"],
  close: ["M6 6l12 12", "M18 6 6 18"],
  logout: ["M15 4h4v16h-4", "M10 8l-4 4 4 4", "M6 12h10"],
  plus: ["M12 5v14", "M5 12h14"],
  gear: ["M12 9a3 3 0 1 0 0 6 3 3 0 0 0 0-6z", "M12 2v3", "M12 19v3", "M2 12h3", "M19 12h3", "M4.9 4.9l2.1 2.1", "M17 17l2.1 2.1", "M4.9 19.1 7 17", "M17 7l2.1-2.1"],
  bellOff: ["M6 16V11a6 6 0 0 1 9-5.2", "M18 11v5l2 2H8", "M10 20a2 2 0 0 0 4 0", "M3 3l18 18"],
  bell: ["M6 16V11a6 6 0 0 1 12 0v5l2 2H4z", "M10 20a2 2 0 0 0 4 0"],
  back: ["M15 5l-7 7 7 7"],
  send: ["M4 12 20 4l-6 16-3-7z"],
  paperclip: ["M20 11.5 12.2 19.3a5 5 0 0 1-7.1-7.1l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7L9.8 16.9a1.7 1.7 0 0 1-2.4-2.4L15 7"],
  file: ["M6 3h8l4 4v14H6z", "M14 3v4h4"],
  more: ["M5 12h.01", "M12 12h.01", "M19 12h.01"],
  bell: ["M6 16V11a6 6 0 0 1 12 0v5l2 2H4z", "M10 20a2 2 0 0 0 4 0"],
  users: ["M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8z", "M2 21a7 7 0 0 1 14 0", "M17 11a3 3 0 1 0 0-6", "M22 21a6 6 0 0 0-4-5.6"],
};

/**
 * The user's languages, most preferred first (``navigator.languages``, what the user picked
 * in the browser's settings). ``[]`` would mean the browser's own UI locale instead, which
 * may differ: an English browser of a German reader.
 */
export function userLocales() {
  return navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
}

/** ``d`` formatted with ``options`` in the user's locale (its own 12/24-hour clock). */
export function formatTime(d, options) {
  return new Intl.DateTimeFormat(userLocales(), options).format(d);
}

/** A time to come ("until …"): "Mon 14:05" within a week, else "12 Mar, 14:05". */
export function untilTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const soon = d - Date.now() < 6 * 86400000;
  return formatTime(d, soon ? { weekday: "short", hour: "numeric", minute: "2-digit" }
    : { day: "numeric", month: "short", hour: "numeric", minute: "2-digit" });
}

/** "14:05" today, "Mon 14:05" this week, else "12 Mar" (in the user's locale). */
export function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return formatTime(d, { hour: "numeric", minute: "2-digit" });
  if (now - d < 6 * 86400000) return formatTime(d, { weekday: "short", hour: "numeric", minute: "2-digit" });
  return formatTime(d, { day: "numeric", month: "short" });
}

/** Two-letter initials for an avatar. */
export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  return ((parts[0] || "?")[0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
}

/** A stable hue for a name (avatars). */
export function hue(name) {
  let h = 0;
  for (const ch of String(name || "")) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

/** A round avatar with initials. */
export function avatar(name, extraClass = "") {
  const node = el("span", { class: `avatar ${extraClass}`.trim(), "aria-hidden": "true", text: initials(name) });
  node.dataset.hue = String(hue(name) % 8);
  return node;
}
