// Notification preferences in the browser, the notification sound, and the service worker.
//
// Preferences live on the server (GET/PATCH /api/me/preferences) and follow the user to
// every device; a change anywhere arrives as a ``preferences`` event on the notification
// stream and every tab updates at once.
//
// Sound: one per browser, however many tabs: only the tab that holds the shared
// notification stream (the leader, whatever its transport) plays it, at most once per
// SOUND_GAP_MS. Browsers allow audio only after a user gesture on the page: until the
// leader tab has had one, it stays silent (no error shown).

import { api } from "./api.js";

const SOUND_URL = "/static/sound/chime.wav";
const SOUND_GAP_MS = 2000;

/** The user's preferences as last known (defaults until loaded). */
export const prefs = { sound: true, toasts: true, push: true, dnd_until: null, muted_types: [] };

let audio = null;
let lastSound = 0;

/** Load the preferences and follow their changes on ``client``'s stream. */
export async function loadPreferences(client) {
  client.on("preferences", (p) => applyPreferences(p));
  try {
    applyPreferences(await api("GET", "/api/me/preferences"));
  } catch (err) {
    console.error("preferences", err);
  }
}

/** Replace the known preferences (from the server) and tell the page. */
export function applyPreferences(p) {
  for (const key of Object.keys(prefs)) if (p && key in p) prefs[key] = p[key];
  window.dispatchEvent(new CustomEvent("squall:preferences", { detail: { ...prefs } }));
}

/** True while Do Not Disturb is on. */
export function inDnd() {
  return Boolean(prefs.dnd_until) && Date.parse(prefs.dnd_until) > Date.now();
}

/**
 * What a notification (a new message, an announcement) does in this tab: ``{toast, sound}``.
 * Silent ones (Do Not Disturb), muted types and those for the chat in view do neither; the
 * sound is the leader's.
 */
export function reaction(n, { leader, inView }) {
  // A muted type never reaches a user from the server; a cached preference may be newer.
  if (n.silent || inDnd() || inView || prefs.muted_types.includes(n.type)) return { toast: false, sound: false };
  return { toast: prefs.toasts, sound: prefs.sound && leader };
}

/** Play the chime unless one played in the last SOUND_GAP_MS or the page has had no gesture yet. */
export function playSound() {
  const now = Date.now();
  if (now - lastSound < SOUND_GAP_MS) return false;
  if (navigator.userActivation && !navigator.userActivation.hasBeenActive) return false;
  lastSound = now;
  if (!audio) audio = new Audio(SOUND_URL);
  audio.currentTime = 0;
  const played = audio.play();
  if (played && played.catch) played.catch(() => {});  // blocked or interrupted: stay silent
  return true;
}

/** Register the service worker (Web Push, installable app); a browser without one just skips it. */
export function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return Promise.resolve(null);
  return navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((err) => {
    console.warn("service worker", err);
    return null;
  });
}
