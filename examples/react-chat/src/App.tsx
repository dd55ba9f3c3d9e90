// The example: sign in (a token typed in, or a token endpoint of your backend), then the
// seed's features with @squall/react's hooks: toasts, a red dot on the Messages tab, a chat
// list with unread counts, a conversation.
import { FormEvent, useCallback, useEffect, useMemo, useState } from "react";
import {
  WebSocketProvider, NotificationToast, useChat, useChatNotifications, useSquall, useUnread, useWebSocket,
  type GetToken, type Notification,
} from "@squall/react";

interface Session { server: string; token: string; tokenUrl: string }

const params = new URLSearchParams(location.search);

/** getToken: the typed-in token, or a fresh one from the backend's token endpoint ({"token": "…"}). */
function tokenSource(session: Session): GetToken {
  if (!session.tokenUrl) return () => session.token;
  return async () => {
    const resp = await fetch(session.tokenUrl, { cache: "no-store" });
    if (!resp.ok) throw new Error(`the token endpoint answered ${resp.status}`);
    return ((await resp.json()) as { token: string }).token;
  };
}

export function App() {
  const [session, setSession] = useState<Session | null>(() => (
    params.get("tokenUrl") ? { server: params.get("server") || "", token: "", tokenUrl: params.get("tokenUrl")! } : null
  ));
  const getToken = useMemo(() => (session ? tokenSource(session) : null), [session]);
  if (!session || !getToken) return <SignIn onSignIn={setSession} />;
  return (
    <WebSocketProvider url={session.server} getToken={getToken}>
      <Shell onSignOut={() => setSession(null)} />
    </WebSocketProvider>
  );
}

function SignIn({ onSignIn }: { onSignIn: (s: Session) => void }) {
  const [server, setServer] = useState(params.get("server") || "http://127.0.0.1:8888");
  const [token, setToken] = useState("");
  const [tokenUrl, setTokenUrl] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (token.trim() || tokenUrl.trim()) onSignIn({ server: server.trim(), token: token.trim(), tokenUrl: tokenUrl.trim() });
  };
  return (
    <form className="signin" onSubmit={submit} aria-labelledby="signin-title">
      <h1 id="signin-title">Sign in to Squall</h1>
      <label>Squall server <input id="server" value={server} onChange={(e) => setServer(e.target.value)} /></label>
      <label>Access token <textarea id="token" value={token} onChange={(e) => setToken(e.target.value)} /></label>
      <label>or your backend's token endpoint <input id="token-url" value={tokenUrl} onChange={(e) => setTokenUrl(e.target.value)} /></label>
      <button type="submit">Sign in</button>
    </form>
  );
}

/** The notification system's documented usage, unchanged (README). */
function useMessageLog() {
  const { hasUnreadMessages, notifications, clearNotifications } = useChatNotifications({
    onNewMessage: (notification) => console.log('New message received:', notification),
  });
  return { hasUnreadMessages, notifications, clearNotifications };
}

/** The other documented call (README): the connection and its notifications. */
function ConnectionStatus() {
  const { socket, notifications, setOnNewMessage } = useWebSocket();
  const { status, transport } = useWebSocket();
  useEffect(() => {
    setOnNewMessage((n) => { document.title = `${n.sender_name}: new message`; });
    return () => setOnNewMessage(null);
  }, [setOnNewMessage]);
  return (
    <p id="status" data-state={status} data-transport={transport ?? ""} data-role={socket.getState().status.role}
       data-notifications={notifications.length}>
      {status === "open" ? `Live (${transport})` : status}
    </p>
  );
}

type Tab = "messages" | "notifications";

function Shell({ onSignOut }: { onSignOut: () => void }) {
  const [tab, setTab] = useState<Tab>("messages");
  const [chatId, setChatId] = useState<number | null>(null);
  const { hasUnreadMessages } = useMessageLog();
  const openFromToast = useCallback((n: Notification) => {
    if (n.chat_id) { setTab("messages"); setChatId(n.chat_id); }
  }, []);
  return (
    <>
      <header>
        <nav role="tablist" aria-label="Sections">
          <button id="tab-messages" role="tab" aria-selected={tab === "messages"} onClick={() => setTab("messages")}
                  data-unread={hasUnreadMessages ? "1" : "0"}>
            Messages{hasUnreadMessages && <span className="dot" aria-label="unread messages" role="img" />}
          </button>
          <button id="tab-notifications" role="tab" aria-selected={tab === "notifications"}
                  onClick={() => setTab("notifications")}>Notifications</button>
        </nav>
        <ConnectionStatus />
        <button type="button" onClick={onSignOut}>Sign out</button>
      </header>
      {tab === "messages"
        ? <Messages chatId={chatId} onOpen={setChatId} />
        : <NotificationList />}
      <NotificationToast onOpen={openFromToast} durationMs={Number(params.get("toastMs") || 6000)} />
    </>
  );
}

interface ChatSummary { id: number; title: string; unread_count: number }

function Messages({ chatId, onOpen }: { chatId: number | null; onOpen: (id: number) => void }) {
  const squall = useSquall();
  const unread = useUnread();
  const [chats, setChats] = useState<ChatSummary[]>([]);
  const { notifications } = useChatNotifications();
  const newest = notifications[0]?.chat_id;
  useEffect(() => {
    let live = true;
    squall.request<{ chats: ChatSummary[] }>("GET", "/api/chats")
      .then(({ chats }) => { if (live) setChats(chats); })
      .catch(() => { /* the status line shows why */ });
    return () => { live = false; };
  }, [squall, newest !== undefined && !chats.some((c) => c.id === newest)]);
  return (
    <main>
      <section aria-labelledby="chats-title">
        <h2 id="chats-title">Chats</h2>
        <ul className="chats">
          {chats.map((c) => {
            const count = unread.known ? (unread.chats[String(c.id)] ?? 0) : c.unread_count;
            return (
              <li key={c.id} className="chat" data-chat-id={c.id}>
                <button aria-current={c.id === chatId} onClick={() => onOpen(c.id)}>
                  <span>{c.title}</span>
                  {count > 0 && <span className="count" aria-label={`${count} unread`}>{count}</span>}
                </button>
              </li>
            );
          })}
        </ul>
      </section>
      {chatId !== null ? <Conversation key={chatId} chatId={chatId} /> : <p>Pick a chat.</p>}
    </main>
  );
}

function Conversation({ chatId }: { chatId: number }) {
  const chat = useChat(chatId);
  const [draft, setDraft] = useState("");
  const last = chat.messages[chat.messages.length - 1];
  useEffect(() => {
    if (last && document.visibilityState === "visible") chat.markRead(last.id).catch(() => {});
  }, [last?.id, chat.markRead]);
  const send = (e: FormEvent) => {
    e.preventDefault();
    const content = draft.trim();
    if (!content) return;
    setDraft("");
    chat.send(content).catch(() => { /* shown in pending with its error */ });
  };
  const seenBy = Object.entries(chat.receipts).filter(([, id]) => last && id >= last.id).length;
  return (
    <section id="conversation" data-chat-id={chatId} data-state={chat.status.state} aria-labelledby="conv-title">
      <h2 id="conv-title">Conversation</h2>
      {chat.hasOlder && <button type="button" onClick={() => void chat.loadOlder()} disabled={chat.loading}>Older messages</button>}
      <ol aria-live="polite">
        {chat.messages.map((m) => (
          <li key={m.id} className="message" data-id={m.id}><span className="from">{m.sender_name}</span>{m.content}</li>
        ))}
        {chat.pending.map((p) => (
          <li key={p.client_id} className="message pending">{p.content} {p.error ? "(not sent)" : "(sending)"}</li>
        ))}
      </ol>
      <p className="typing">{chat.typing.length > 0 && `${chat.typing.map((t) => t.user_name).join(", ")} typing…`}</p>
      <p className="receipt">{seenBy > 0 && "Seen"}</p>
      <form onSubmit={send}>
        <input id="compose" aria-label="Message" value={draft} autoComplete="off"
               onChange={(e) => { setDraft(e.target.value); void chat.sendTyping().catch(() => {}); }} />
        <button type="submit">Send</button>
      </form>
    </section>
  );
}

function NotificationList() {
  const { socket, notifications } = useWebSocket();
  return (
    <main>
      <section aria-labelledby="notes-title">
        <h2 id="notes-title">Notifications</h2>
        <button type="button" onClick={() => void socket.clearNotifications()}>Clear all</button>
        <ul>{notifications.map((n) => <li key={n.id} data-id={n.id}>{n.message}</li>)}</ul>
      </section>
    </main>
  );
}
