// Compiled by `tsc --noEmit` (never run): the declarations as a product uses them.
import { StrictMode, useEffect } from "react";
import {
  WebSocketProvider, SquallProvider, useWebSocket, useChatNotifications, useUnread, useChat, NotificationToast,
  type Message, type NewMessageNotification, type Notification, type Squall,
} from "@squall/react";
import { createSquall } from "@squall/client";

function Bell() {
  // The notification system's documented usage, unchanged:
  const { hasUnreadMessages, notifications, clearNotifications } = useChatNotifications({
    onNewMessage: (notification) => console.log('New message received:', notification),
  });
  const first: NewMessageNotification | undefined = notifications[0];
  const preview: string | undefined = first?.content_preview;
  return <button onClick={() => void clearNotifications()} data-dot={hasUnreadMessages}>{preview}</button>;
}

function Connection() {
  const { socket, notifications, setOnNewMessage } = useWebSocket();
  useEffect(() => setOnNewMessage((n) => void n.chat_id), [setOnNewMessage]);
  const client: Squall = socket;
  const list: Notification[] = notifications;
  return <span>{client.getState().status.state} {list.length}</span>;
}

function Tabs() {
  const { total, chats, muted, known } = useUnread();
  const count: number | undefined = chats["3"];
  return <nav>{known && total > 0 ? "•" : ""}{count}{Object.keys(muted).length}</nav>;
}

function Conversation({ chatId }: { chatId: number }) {
  const chat = useChat(chatId);
  const last: Message | undefined = chat.messages[chat.messages.length - 1];
  const names: string[] = chat.typing.map((t) => t.user_name);
  const readUpTo: number | undefined = chat.receipts["7"];
  const send = async () => { const m: Message = await chat.send("Hi"); await chat.markRead(m.id); };
  // @ts-expect-error: content is a string
  void chat.send(42);
  return (
    <section>
      {chat.hasOlder && <button onClick={() => void chat.loadOlder()}>Older</button>}
      {last?.content} {names.join(", ")} {readUpTo} {chat.status.state} {chat.pending.length}
      <button onClick={() => void send()}>Send</button>
      <input onInput={() => void chat.sendTyping()} />
    </section>
  );
}

export function App() {
  return (
    <StrictMode>
      <WebSocketProvider url="https://chat.example.com" getToken={async ({ reason }) => (await fetch(`/token?${reason}`)).text()}>
        <Bell /><Connection /><Tabs /><Conversation chatId={3} />
        <NotificationToast onOpen={(n) => void n.chat_id} durationMs={4000} />
      </WebSocketProvider>
      <SquallProvider client={createSquall({ getToken: () => null })}><Bell /></SquallProvider>
      {/* @ts-expect-error: a provider needs getToken or a client */}
      <WebSocketProvider url="https://chat.example.com"><Bell /></WebSocketProvider>
    </StrictMode>
  );
}
