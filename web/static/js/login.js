// Sign in / create account. On success the server sets the session cookies; go to ``next``.

import { api, ApiError, noteSession } from "./api.js";
import { el } from "./dom.js";

const NEW_ACCOUNT_KEY = "squall.newAccount";  // read (once) by home.js

/**
 * Where to go after signing in: ``next`` only when it stays on this origin (no open
 * redirect). The browser's own URL parser decides, the one ``location.assign`` uses: it
 * reads ``/\evil.example`` as ``//evil.example`` and drops tabs and newlines, so a string
 * test cannot be trusted.
 */
function nextPath(search = location.search) {
  const next = new URLSearchParams(search).get("next");
  if (!next) return "/";
  let url;
  try { url = new URL(next, location.origin); } catch { return "/"; }
  return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
}

/** The fields an error is about: named in the message ('password' …), or both for a failed login. */
function invalidFields(err) {
  if (!(err instanceof ApiError)) return [];
  if (err.status === 401) return ["username", "password"];
  if (err.status === 409) return ["username"];
  return ["username", "password", "display_name"].filter((name) => err.message.includes(`'${name}'`));
}

function render() {
  let mode = "login";
  const error = el("p", { class: "form-error", role: "alert", id: "form-error" });
  const username = el("input", { type: "text", id: "username", name: "username", autocomplete: "username", required: true, minlength: 3 });
  const password = el("input", { type: "password", id: "password", name: "password", autocomplete: "current-password", required: true, minlength: 8 });
  const displayName = el("input", { type: "text", id: "display_name", name: "display_name", autocomplete: "name" });
  const nameField = el("div", { hidden: true }, el("label", { for: "display_name", text: "Display name" }), displayName);
  const submit = el("button", { class: "btn", type: "submit", id: "submit", text: "Sign in" });
  // Real tabs (one Tab stop; Left/Right/Home/End switch) controlling the one form panel.
  const tab = (id, text, on) => el("button", { class: "tab", type: "button", role: "tab", "aria-selected": String(on),
    "aria-controls": "auth-panel", tabindex: on ? 0 : -1, text, id });
  const tabLogin = tab("tab-login", "Sign in", true);
  const tabRegister = tab("tab-register", "Create account", false);
  const fields = { username, password, display_name: displayName };
  const markInvalid = (names) => {
    for (const [name, input] of Object.entries(fields)) {
      if (names.includes(name)) { input.setAttribute("aria-invalid", "true"); input.setAttribute("aria-describedby", "form-error"); }
      else { input.removeAttribute("aria-invalid"); input.removeAttribute("aria-describedby"); }
    }
  };
  const setMode = (m) => {
    mode = m;
    tabLogin.setAttribute("aria-selected", String(m === "login"));
    tabRegister.setAttribute("aria-selected", String(m === "register"));
    tabLogin.tabIndex = m === "login" ? 0 : -1;
    tabRegister.tabIndex = m === "register" ? 0 : -1;
    form.setAttribute("aria-labelledby", m === "login" ? "tab-login" : "tab-register");
    nameField.hidden = m === "login";
    submit.textContent = m === "login" ? "Sign in" : "Create account";
    password.autocomplete = m === "login" ? "current-password" : "new-password";
    error.textContent = "";
    markInvalid([]);
  };
  tabLogin.addEventListener("click", () => setMode("login"));
  tabRegister.addEventListener("click", () => setMode("register"));
  const onTabKey = (e) => {
    const next = { ArrowLeft: tabLogin, ArrowRight: tabRegister, Home: tabLogin, End: tabRegister }[e.key];
    if (!next) return;
    e.preventDefault();
    setMode(next === tabLogin ? "login" : "register");
    next.focus();
  };
  tabLogin.addEventListener("keydown", onTabKey);
  tabRegister.addEventListener("keydown", onTabKey);
  const form = el("form", { class: "form", novalidate: true, id: "auth-panel", role: "tabpanel", "aria-labelledby": "tab-login" },
    el("div", {}, el("label", { for: "username", text: "Username" }), username),
    nameField,
    el("div", {}, el("label", { for: "password", text: "Password" }), password),
    error, submit);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    const body = { username: username.value.trim(), password: password.value };
    if (mode === "register" && displayName.value.trim()) body.display_name = displayName.value.trim();
    try {
      const session = await api("POST", mode === "login" ? "/api/auth/login" : "/api/auth/register", body);
      noteSession(session);
      // A new account is greeted with "Welcome" (not "Welcome back") on its first Home; signing
      // in again is coming back.
      try {
        if (mode === "register") localStorage.setItem(NEW_ACCOUNT_KEY, String(session.user.id));
        else localStorage.removeItem(NEW_ACCOUNT_KEY);
      } catch { /* storage disabled */ }
      location.assign(nextPath());
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.message : "Something went wrong";
      markInvalid(invalidFields(err));
      submit.disabled = false;
    }
  });
  document.getElementById("main").append(el("div", { class: "auth-page" },
    el("div", { class: "card auth-card" },
      el("div", { class: "brand" }, el("span", { class: "brand-mark", text: "S" }), "Squall"),
      el("p", { class: "muted auth-tagline", text: "Real-time chat and notifications." }),
      el("div", { class: "tabs", role: "tablist" }, tabLogin, tabRegister),
      form)));
  username.focus();
}

render();
