// Compiled by `tsc --noEmit` (never run): the declarations as a product uses them.
import {
  createSquall, type Squall, type SquallState, type Notification, type Unread, type ConnectionStatus,
  type Message, type TypingFrame, type ReadFrame, type Preferences, type MuteEvent, type UnauthorizedError,
  type Transport, type ChatFrame, type NotificationStreamFrame, type PollAnswer, SseParser, backoffDelay, retryAfterMs,
} from "@squall/client";

const squall: Squall = createSquall({
  url: "https://chat.example.com",
  getToken: async ({ reason }) => {
    const resp = await fetch(`/my-backend/squall-token?reason=${reason}`);
    return ((await resp.json()) as { token: string }).token;
  },
  WebSocket: globalThis.WebSocket ?? null,
  stallMs: 45_000,
});

const off: () => void = squall.subscribe((state: SquallState) => {
  const total: number = state.unread.total;
  const perChat: number | undefined = state.unread.chats["1"];
  const muted: Record<string, number> = state.unread.muted;
  const transport: Transport | null = state.status.transport;
  const first: Notification | undefined = state.notifications[0];
  const prefs: Preferences | null = state.preferences;
  void [total, perChat, muted, transport, first, prefs];
});
off();

squall.on("new_message", (n) => { const chat: number = n.chat_id; const preview: string = n.content_preview; void [chat, preview]; });
squall.on("notification", (n: Notification) => { if (n.silent) return; void n.data; });
squall.on("unread", (u: Unread) => void u.total);
squall.on("status", (s: ConnectionStatus) => { if (s.state === "unauthorized") void s.role; });
squall.on("mute", (m: MuteEvent) => void m.muted_until);
squall.on("preferences", (p) => void p.muted_types.length);
squall.on("unauthorized", (e: UnauthorizedError) => void e.code);
// @ts-expect-error: not an event of the client
squall.on("nope", () => {});

async function chat(): Promise<void> {
  await squall.start();
  const conn = squall.chat({ chatId: 1 });
  await conn.start(1);
  const page: Message[] = await conn.history(1, { beforeId: 40, limit: 20 });
  const sent: Message = await conn.send(1, "Hi", { clientId: "c-1" });
  conn.on("typing", (t: TypingFrame) => void t.user_name);
  conn.on("read", (r: ReadFrame) => void r.message_id);
  conn.on("message", (m) => void m.message.content);
  await conn.typing(1);
  await conn.markRead(1, sent.id);
  void page;
  // @ts-expect-error: content is a string
  await conn.send(1, 42);
}
void chat;

function describe(frame: ChatFrame | NotificationStreamFrame): string {
  if ("id" in frame) return `notification ${frame.id} ${frame.message}`;
  switch (frame.type) {
    case "message_ack": return frame.client_id;
    case "unread": return String(frame.total);
    case "auth_expired": return frame.reason;
    case "error": return frame.code;
    default: return frame.type;
  }
}
void describe;

const poll: PollAnswer = { events: [{ type: "unread", total: 0, chats: {} }], last_event_id: "3", unread_tag: "x" };
void poll;
const events = new SseParser().feed("data: {}\n\n");
const delay: number = backoffDelay(3) + retryAfterMs(events[0]?.id ?? null);
void delay;
