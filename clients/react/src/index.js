// @squall/react: React bindings of @squall/client. Plain ES modules (createElement, no
// JSX) so that a product imports them without a build step of ours.
//
// One provider holds one client (created from ``url``/``getToken``, or given). Every hook
// reads the client's state through useSyncExternalStore, so a render never sees a state
// torn between two updates. StrictMode's double effects (mount, unmount, mount) start the
// client once: ``retain`` defers the stop by one macrotask and the second mount cancels it.

import * as React from "react";
import { createSquall } from "@squall/client";
import { ChatStore, ToastQueue, retain } from "./store.js";

export { ChatStore, ToastQueue, retain, mergeMessages, TYPING_MS, PAGE_SIZE } from "./store.js";

const { createElement: h, createContext, useCallback, useContext, useEffect, useMemo, useRef, useState,
        useSyncExternalStore } = React;

const SquallContext = createContext(null);
SquallContext.displayName = "SquallContext";

/**
 * Provides a Squall client to its children. Props: ``url`` and ``getToken`` (a client is
 * created once, on the first render; ``getToken`` may change between renders, the newest
 * is called), or ``client`` (an existing one), plus ``options`` (other createSquall
 * options). The client starts on mount and stops on unmount.
 */
export function WebSocketProvider({ url, getToken, client: given, options, children }) {
  const getTokenRef = useRef(getToken);
  getTokenRef.current = getToken;
  // No side effect in the initializer: StrictMode may call it twice and keep one.
  const [client] = useState(() => given || createSquall({
    ...(options || {}),
    url,
    getToken: (context) => {
      const fn = getTokenRef.current;
      if (typeof fn !== "function") throw new TypeError("WebSocketProvider needs getToken (or a client)");
      return fn(context);
    },
  }));
  const onNewMessageRef = useRef(null);
  const chatRef = useRef(null);

  useEffect(() => retain(client), [client]);
  useEffect(() => client.on("new_message", (n) => {
    if (typeof onNewMessageRef.current === "function") onNewMessageRef.current(n);
  }), [client]);

  const value = useMemo(() => ({
    client,
    onNewMessageRef,
    /** The one ChatConnection of this provider, created on first use. */
    chat() {
      if (!chatRef.current) chatRef.current = client.chat();
      return chatRef.current;
    },
  }), [client]);
  return h(SquallContext.Provider, { value }, children);
}

export const SquallProvider = WebSocketProvider;

function useSquallContext(hook) {
  const ctx = useContext(SquallContext);
  if (!ctx) throw new Error(`${hook} must be used inside <WebSocketProvider> (or <SquallProvider>)`);
  return ctx;
}

/** The provider's client. */
export function useSquall() {
  return useSquallContext("useSquall").client;
}

/** The client's whole state (SquallState), re-rendering on every change. */
export function useSquallState() {
  const { client } = useSquallContext("useSquallState");
  const subscribe = useCallback((fn) => client.on("change", fn), [client]);
  const get = useCallback(() => client.getState(), [client]);
  return useSyncExternalStore(subscribe, get, get);
}

/**
 * The connection, as the notification system's WebSocketContext named it: ``socket`` (the
 * client), ``status`` (its connection state), ``transport``, the recent ``notifications``
 * and ``setOnNewMessage(fn)`` (one callback per provider for each new message).
 */
export function useWebSocket() {
  const { client, onNewMessageRef } = useSquallContext("useWebSocket");
  const state = useSquallState();
  const setOnNewMessage = useCallback((fn) => { onNewMessageRef.current = fn || null; }, [onNewMessageRef]);
  return {
    socket: client,
    status: state.status.state,
    transport: state.status.transport,
    connection: state.status,
    notifications: state.notifications,
    setOnNewMessage,
  };
}

/**
 * Chat notifications: ``hasUnreadMessages`` (the red dot), ``unreadCount``, the recent
 * ``new_message`` notifications, ``clearNotifications(type?)`` (on the server and in every
 * tab; all types when omitted). ``onNewMessage`` is called once per new message.
 */
export function useChatNotifications({ onNewMessage } = {}) {
  const { client } = useSquallContext("useChatNotifications");
  const state = useSquallState();
  const ref = useRef(onNewMessage);
  ref.current = onNewMessage;
  useEffect(() => client.on("new_message", (n) => { if (typeof ref.current === "function") ref.current(n); }),
            [client]);
  const notifications = useMemo(() => state.notifications.filter((n) => n.type === "new_message"),
                                [state.notifications]);
  const clearNotifications = useCallback((type) => client.clearNotifications(type ?? null), [client]);
  return {
    hasUnreadMessages: state.unread.total > 0,
    unreadCount: state.unread.total,
    notifications,
    clearNotifications,
  };
}

/** Unread counts: ``total`` (outside muted chats), per chat, muted, and ``known`` (the server's state arrived). */
export function useUnread() {
  const state = useSquallState();
  return useMemo(() => ({ ...state.unread, known: state.unreadKnown }), [state.unread, state.unreadKnown]);
}

/**
 * One conversation (the provider's chat connection, present in ``chatId``): ``messages``
 * (oldest first), ``pending`` sends, ``send(content)``, ``loadOlder()``, ``hasOlder``,
 * ``typing`` (who is typing now), ``sendTyping()``, ``markRead(messageId?)``, ``receipts``
 * (user id → the last message id they read), ``status`` of the chat connection.
 */
export function useChat(chatId) {
  const ctx = useSquallContext("useChat");
  const conn = ctx.chat();
  const id = chatId === undefined || chatId === null ? null : Number(chatId);
  const store = useMemo(() => new ChatStore(conn, id), [conn, id]);
  const [status, setStatus] = useState(() => conn.status);

  useEffect(() => {
    const offStatus = conn.on("status", setStatus);
    const release = retain(conn, chatHolds);
    return () => { offStatus(); release(); };
  }, [conn]);
  useEffect(() => {
    conn.setChat(id);
    store.open();
    return () => { store.close(); };
  }, [conn, store, id]);

  const state = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const send = useCallback((content, options) => store.send(content, options), [store]);
  const loadOlder = useCallback(() => store.loadOlder(), [store]);
  const markRead = useCallback((messageId) => store.markRead(messageId), [store]);
  const sendTyping = useCallback(() => store.typing(), [store]);
  const discard = useCallback((clientId) => store.discard(clientId), [store]);
  return { ...state, status, send, loadOlder, markRead, sendTyping, discard };
}

const chatHolds = new WeakMap();

function defaultToastFilter(n, preferences) {
  if (preferences && preferences.toasts === false) return false;
  return n.type === "new_message" && !n.silent;
}

function defaultToastText(n) {
  if (n.type === "new_message") return `${n.sender_name}: ${n.content_preview}`;
  return n.message;
}

/**
 * Toasts of new notifications: a polite live region, each toast a button (``onOpen(n)``,
 * e.g. navigate to its chat) and a dismiss button; Escape dismisses the focused toast;
 * hovering or focusing the toasts pauses their timers. ``filter(n, preferences)`` picks
 * what shows (default: new messages, not silent ones, unless toasts are off).
 */
export function NotificationToast({
  onOpen, durationMs = 6000, max = 3, filter = defaultToastFilter, render = defaultToastText,
  label = "Notifications", className = "squall-toasts",
}) {
  const { client } = useSquallContext("NotificationToast");
  const [queue] = useState(() => new ToastQueue({ durationMs, max }));
  const filterRef = useRef(filter);
  filterRef.current = filter;
  useEffect(() => {
    queue.resume();
    const off = client.on("notification", (n) => {
      if (filterRef.current(n, client.getState().preferences)) queue.push(n);
    });
    return () => { off(); queue.pause(); };
  }, [client, queue]);
  useEffect(() => () => queue.clear(), [queue]);
  const toasts = useSyncExternalStore(queue.subscribe, queue.getSnapshot, queue.getSnapshot);

  const onKeyDown = (e) => {
    if (e.key !== "Escape") return;
    const el = e.target && e.target.closest ? e.target.closest("[data-notification-id]") : null;
    const id = el ? Number(el.getAttribute("data-notification-id")) : toasts[toasts.length - 1]?.id;
    if (id !== undefined) {
      e.preventDefault();
      queue.dismiss(id);
    }
  };
  const onBlur = (e) => {
    if (!e.currentTarget.contains(e.relatedTarget)) queue.resume();
  };
  return h("section", {
    className, "aria-label": label, onKeyDown, onMouseEnter: () => queue.pause(), onMouseLeave: () => queue.resume(),
    onFocus: () => queue.pause(), onBlur,
  }, h("div", { role: "status", "aria-live": "polite", "aria-relevant": "additions text" },
    toasts.map((n) => h("div", { key: n.id, className: "squall-toast", "data-notification-id": n.id },
      h("button", { type: "button", className: "squall-toast-open",
                    onClick: () => { queue.dismiss(n.id); if (onOpen) onOpen(n); } }, render(n)),
      h("button", { type: "button", className: "squall-toast-dismiss", "aria-label": "Dismiss notification",
                    onClick: () => queue.dismiss(n.id) }, "\u00d7")))));
}
