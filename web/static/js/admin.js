// The admin console: live tiles and small SVG charts of the host's figures (from
// GET /api/admin/summary, the same counters as /metrics), the worker processes, a form
// that publishes an announcement through the publish path, and the recent webhook
// deliveries (GET /api/admin/webhooks) with a retry button for the failed ones.

import { api, ApiError } from "./api.js";
import { el } from "./dom.js";
import { startApp } from "./layout.js";

const TRANSPORT_LABELS = {
  ws_chat: "WebSocket chat", ws_notifications: "WebSocket notifications",
  sse_notifications: "SSE notifications", sse_chat: "SSE chat",
  poll_notifications: "Long-poll notifications (waiting)", poll_chat: "Long-poll chat (waiting)",
};

const CHARTS = [
  { key: "connections", label: "Connections", unit: "" },
  { key: "deliveries_per_s", label: "Deliveries/s", unit: "/s" },
  { key: "messages_per_s", label: "Messages/s", unit: "/s" },
  { key: "p99_ms", label: "p99 send→delivery", unit: " ms" },
];

function fmt(value, unit = "") {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  const text = Math.abs(n) >= 100 || Number.isInteger(n) ? String(Math.round(n)) : n.toFixed(1);
  return text + unit;
}

/** A small line chart of ``values`` as an SVG (no library, no build step). */
function sparkline(values, label) {
  const w = 240, h = 56, pad = 3;
  const nums = values.map((v) => (v === null || v === undefined ? null : Number(v)));
  const max = Math.max(1, ...nums.filter((v) => v !== null));
  const step = nums.length > 1 ? (w - 2 * pad) / (nums.length - 1) : 0;
  let d = "";
  nums.forEach((v, i) => {
    if (v === null) return;
    const x = pad + i * step, y = h - pad - (v / max) * (h - 2 * pad);
    d += `${d ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label}, last 15 minutes, peak ${fmt(max)}`);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", d || `M${pad},${h - pad}L${w - pad},${h - pad}`);
  svg.append(path);
  return svg;
}

function tile(label, value, id) {
  return el("div", { class: "card stat" }, el("span", { class: "stat-label", text: label }),
    el("span", { class: "stat-value", id, text: value }));
}

function render(root, s) {
  const last = s.series[s.series.length - 1] || {};
  const sum = (key) => s.series.reduce((a, p) => a + (p[key] || 0), 0);
  const tiles = el("div", { class: "stat-row admin-tiles" },
    tile("Connections", fmt(s.totals.connections), "admin-connections"),
    tile("Deliveries/s", fmt(last.deliveries_per_s), "admin-deliveries"),
    tile("Messages/s", fmt(last.messages_per_s), "admin-messages"),
    tile("p50 / p99 send→delivery", `${fmt(last.p50_ms, " ms")} / ${fmt(last.p99_ms, " ms")}`, "admin-latency"),
    tile("Slow-consumer cuts (15 min)", fmt(sum("slow_consumer_cuts")), "admin-slow"),
    tile("Errors, 5xx (15 min)", fmt(sum("errors")), "admin-errors"),
    tile("Client errors, 4xx (15 min)", fmt(sum("client_errors")), "admin-client-errors"));
  const byTransport = el("ul", { class: "admin-transports" },
    ...Object.entries(s.connections).map(([t, n]) => el("li", {},
      el("span", { text: TRANSPORT_LABELS[t] || t }), el("strong", { text: fmt(n) }))));
  const charts = el("div", { class: "admin-charts" }, ...CHARTS.map((c) => el("figure", { class: "card admin-chart" },
    el("figcaption", {}, el("span", { text: c.label }),
      el("strong", { text: fmt(last[c.key], c.unit) })),
    sparkline(s.series.map((p) => p[c.key]), c.label))));
  const rows = s.processes.map((p) => el("tr", {},
    el("td", { text: p.process }), el("td", { text: String(p.pid) }),
    el("td", {}, el("span", { class: `proc-state ${p.state}`, text: p.state })),
    el("td", { text: fmt(Object.values(p.connections).reduce((a, b) => a + b, 0)) }),
    el("td", { text: p.database_up ? "up" : "down" }), el("td", { text: p.broker_up ? "up" : "down" }),
    el("td", { text: `${Math.floor(p.uptime_s / 60)} min` })));
  const table = el("table", { class: "admin-procs" },
    el("caption", { text: "Processes" }),
    el("thead", {}, el("tr", {}, ...["Worker", "PID", "State", "Connections", "Database", "Broker", "Uptime"]
      .map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows));
  root.replaceChildren(tiles, el("section", { class: "card" },
    el("h2", { text: "Connections by transport" }), byTransport), charts,
  // On a phone the table scrolls inside its card (a focusable region, so a keyboard can scroll it).
  el("section", { class: "card" }, el("div", { class: "scroll-x", role: "region", "aria-label": "Processes", tabindex: 0 }, table)));
}

function announceForm() {
  const message = el("textarea", { id: "announce-message", rows: 2, maxlength: 1000, required: true });
  const everyone = el("input", { type: "radio", name: "announce-to", id: "announce-everyone", value: "everyone", checked: true });
  const chosen = el("input", { type: "radio", name: "announce-to", id: "announce-chosen", value: "chosen" });
  const names = el("input", { type: "text", id: "announce-usernames", placeholder: "alice, bob", autocomplete: "off" });
  const status = el("p", { class: "small", id: "announce-status", role: "status" });
  // The same error component as every other form (login, composer, settings).
  const error = el("p", { class: "form-error small", id: "announce-error", role: "alert" });
  const form = el("form", { class: "card admin-announce", id: "announce-form" },
    el("h2", { text: "Publish an announcement" }),
    el("label", { for: "announce-message", text: "Message" }), message,
    el("fieldset", {}, el("legend", { text: "To" }),
      el("label", {}, everyone, " everyone"),
      el("label", {}, chosen, " these users: "), names),
    error, el("button", { class: "btn", type: "submit", text: "Publish" }), status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { message: message.value };
    if (chosen.checked) body.usernames = names.value.split(",").map((n) => n.trim()).filter(Boolean);
    status.textContent = "Publishing…";
    error.textContent = "";
    message.removeAttribute("aria-invalid");
    try {
      const res = await api("POST", "/api/admin/announce", body);
      status.textContent = `Published to ${res.recipients === "everyone" ? "everyone" : `${res.recipients} user(s)`}.`;
      message.value = "";
    } catch (err) {
      status.textContent = "";
      error.textContent = `Not published: ${err.message}`;
      if (err instanceof ApiError && err.code === "validation_error") {
        message.setAttribute("aria-invalid", "true");
        message.setAttribute("aria-describedby", "announce-error");
      }
    }
  });
  return form;
}

/** The webhook deliveries card: status, attempts and last error of the newest ones (never a body). */
function webhooksCard() {
  const card = el("section", { class: "card admin-webhooks", id: "admin-webhooks" },
    el("h2", { text: "Webhook deliveries" }));
  const status = el("p", { class: "small", id: "webhooks-status", role: "status" });
  const holder = el("div", { class: "scroll-x", role: "region", "aria-label": "Webhook deliveries", tabindex: 0 });
  card.append(holder, status);
  const load = async () => {
    let res;
    try {
      res = await api("GET", "/api/admin/webhooks?limit=50");
    } catch (err) {
      status.textContent = `Could not load the deliveries: ${err.message}`;
      return;
    }
    if (!res.enabled && !res.deliveries.length) {
      holder.replaceChildren(el("p", { class: "muted", text: "Webhooks are off (no --webhook-url)." }));
      return;
    }
    const rows = res.deliveries.map((d) => {
      const action = el("td");
      if (d.status === "failed") {
        const button = el("button", { class: "btn btn-secondary", type: "button", text: "Retry",
          "aria-label": `Retry delivery ${d.id}`, "data-retry": String(d.id) });
        button.addEventListener("click", async () => {
          button.disabled = true;
          try {
            await api("POST", `/api/admin/webhooks/${d.id}/retry`);
            status.textContent = `Delivery ${d.id} queued again.`;
          } catch (err) {
            status.textContent = `Not retried: ${err.message}`;
          }
          load();
        });
        action.append(button);
      }
      return el("tr", { "data-delivery": String(d.id) },
        el("td", { text: String(d.id) }), el("td", { text: d.type }),
        el("td", {}, el("span", { class: `delivery-state ${d.status}`, text: d.status })),
        el("td", { text: String(d.attempts) }),
        el("td", { text: [d.last_status, d.last_error].filter((x) => x !== null && x !== "").join(" · ") || "–" }),
        el("td", { text: d.created_at }), action);
    });
    holder.replaceChildren(el("table", { class: "admin-procs admin-deliveries" },
      el("thead", {}, el("tr", {}, ...["#", "Event", "Status", "Attempts", "Last answer", "Queued", ""]
        .map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows)));
  };
  return { card, load };
}

async function main() {
  const { me } = await startApp("admin");
  const main = document.getElementById("main");
  if (!me.is_admin) {
    document.title = "Forbidden · Squall";
    main.append(el("div", { class: "page" }, el("h1", { text: "403 · Admins only" }),
      el("p", { class: "muted", text: "This console needs an admin account: python run.py admin grant USERNAME." })));
    return;
  }
  const live = el("div", { id: "admin-live" });
  const webhooks = webhooksCard();
  main.append(el("div", { class: "page" },
    el("div", { class: "page-head" }, el("div", {}, el("h1", { text: "Admin console" }),
      el("p", { class: "muted", text: "Every live worker of this host, sampled over the last 15 minutes." }))),
    live, announceForm(), webhooks.card));
  let delay = 5000;
  const refresh = async () => {
    try {
      const summary = await api("GET", "/api/admin/summary");
      delay = Math.max(1000, summary.sample_seconds * 1000);
      render(live, summary);
      webhooks.load();
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) { location.reload(); return; }
    }
    setTimeout(refresh, delay);
  };
  refresh();
}

main();
