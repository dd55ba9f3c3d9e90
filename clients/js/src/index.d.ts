// Type declarations of @squall/client. The frames and state are those of docs/protocol.md.

// ---- Protocol: notifications and state events (docs/protocol.md, section 4) --------------

/** A stored notification: its `id` is the event id on every transport. */
export interface Notification {
  id: number;
  /** `new_message`, `announcement`, `test`, or a type a backend chose. */
  type: string;
  message: string;
  timestamp: string;
  chat_id?: number;
  sender_id?: number;
  sender_name?: string;
  content_preview?: string;
  message_type?: string;
  /** Present (true) only when the recipient was in Do Not Disturb. */
  silent?: boolean;
  /** A published notification's data, passed through. */
  data?: Record<string, unknown>;
  /** In `GET /api/notifications` answers. */
  read?: boolean;
}

export interface NewMessageNotification extends Notification {
  type: "new_message";
  chat_id: number;
  sender_id: number;
  sender_name: string;
  content_preview: string;
  message_type: string;
}

/** Unread counts keyed by chat id (as a string). */
export type UnreadCounts = Record<string, number>;

export interface Unread {
  /** Unread messages outside muted chats: the red dot. */
  total: number;
  chats: UnreadCounts;
  /** Counts of muted chats (grey; not in `total`). */
  muted: UnreadCounts;
  /** Unread mentions of the user and replies to them, per chat (only chats that have some). */
  mentions: UnreadCounts;
}

export interface UnreadEvent {
  type: "unread"; total: number; chats: UnreadCounts; muted?: UnreadCounts; mentions?: UnreadCounts;
}
export interface ResyncEvent { type: "resync" }

export interface Preferences {
  sound: boolean;
  toasts: boolean;
  push: boolean;
  dnd_until: string | null;
  muted_types: string[];
}

export interface PreferencesEvent extends Preferences { type: "preferences" }
export interface MuteEvent { type: "mute"; chat_id: number; muted: boolean; muted_until: string | null }
export interface AuthExpiredEvent { type: "auth_expired"; reason: "logged_out" | "token_expired" }
export interface TokenExpiringEvent { type: "token_expiring"; expires_at: number }
export interface RefreshedEvent { type: "refreshed"; expires_at: number }
export interface PongFrame { type: "pong" }

/** Any frame of the notification stream. */
export type NotificationStreamFrame =
  | Notification | UnreadEvent | ResyncEvent | PreferencesEvent | MuteEvent
  | AuthExpiredEvent | TokenExpiringEvent | RefreshedEvent | PongFrame | ErrorFrame;

// ---- Protocol: chats (sections 2, 3, 5) -------------------------------------------------

/** A file sent with a message (docs/protocol.md, "Attachments"); dimensions for images only. */
export interface Attachment {
  id: string;
  content_type: string;
  size: number;
  filename: string;
  width: number | null;
  height: number | null;
}

/** ``POST /api/uploads``'s answer: an upload a send may list in ``attachments``. */
export type Upload = Attachment;

/** Short-lived URLs of an attachment (``GET /api/uploads/{id}/link``); ``thumbnail_url`` for images. */
export interface AttachmentLink { url: string; thumbnail_url: string | null; expires_at: number }

export interface UploadOptions {
  /** The file's name (defaults to a File's ``name``). */
  filename?: string;
  /** Bytes sent so far and the total (0 when unknown); called as the upload goes in a browser. */
  onProgress?: ((sent: number, total: number) => void) | null;
  signal?: AbortSignal | null;
}

export interface Message {
  id: number;
  chat_id: number;
  sender_id: number;
  sender_name: string;
  content: string;
  message_type: string;
  client_id: string | null;
  created_at: string;
  /** Present only on messages with files. */
  attachments?: Attachment[];
  /** When the content was last edited. */
  edited_at?: string;
  /** A message deleted for everyone: no content, attachments, reactions or reply. */
  deleted?: boolean;
  reactions?: Reaction[];
  /** The message this one answers: a preview, or ``{id, deleted: true}``. */
  reply_to?: ReplyPreview;
  /** Ids of the members ``@``-mentioned. */
  mentions?: number[];
}

export interface Reaction { emoji: string; count: number; user_ids: number[] }
export interface ReplyPreview {
  id: number; sender_id?: number; sender_name?: string; content_preview?: string; deleted?: boolean;
}

export interface MessageFrame { type: "message"; message: Message }
export interface MessageAckFrame { type: "message_ack"; client_id: string; message: Message }
export interface TypingFrame { type: "typing"; chat_id: number; user_id: number; user_name: string }
export interface ReadFrame { type: "read"; chat_id: number; user_id: number; message_id: number }
export interface JoinedFrame { type: "joined"; chat_id: number }
export interface LeftFrame { type: "left"; chat_id: number }

/** Error codes a frame or an HTTP answer can carry. */
export type ErrorCode =
  | "unknown_type" | "bad_json" | "invalid_text" | "invalid_content" | "empty_content" | "content_too_long"
  | "invalid_message_type" | "invalid_client_id" | "validation_error" | "not_a_member" | "chat_not_found"
  | "user_not_found" | "message_not_found" | "rate_limited" | "quota_exceeded" | "shutting_down" | "store_failed"
  | "database_unavailable" | "internal_error" | "invalid_token" | "token_expired" | "token_revoked" | "wrong_user"
  | (string & {});

export interface ErrorFrame {
  type: "error";
  code: ErrorCode;
  message: string;
  client_id?: string | null;
  /** Seconds until the quota resets (`quota_exceeded`). */
  retry_after?: number;
}

/** A message's content changed (section 2, "Changing a message"); ``deleted`` on a replay of one deleted since. */
export interface MessageEditedFrame {
  type: "message_edited"; chat_id: number; message_id: number; event_id?: number;
  content?: string; edited_at?: string; deleted?: boolean;
}
/** A message deleted for everyone (its content erased); no ``event_id`` when it already was. */
export interface MessageDeletedFrame { type: "message_deleted"; chat_id: number; message_id: number; event_id?: number }
/** A reaction added (``added``) or removed; ``count`` is the emoji's count on the message after it. */
export interface ReactionFrame {
  type: "reaction"; chat_id: number; message_id: number; user_id: number; emoji: string; added: boolean;
  count: number; changed?: boolean; event_id?: number;
}

export type ChatFrame =
  | MessageFrame | MessageAckFrame | TypingFrame | ReadFrame | JoinedFrame | LeftFrame | ErrorFrame
  | MessageEditedFrame | MessageDeletedFrame | ReactionFrame | PongFrame | NotificationStreamFrame;

/** A long-poll answer (section 7). */
export interface PollAnswer<F = NotificationStreamFrame> { events: F[]; last_event_id: string; unread_tag?: string }

// ---- Client state -----------------------------------------------------------------------

export type Transport = "websocket" | "sse" | "poll";
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "unauthorized" | "stopped";

export interface ConnectionStatus {
  state: ConnectionState;
  transport: Transport | null;
  /** "leader": this instance holds the stream; "follower": another tab does. */
  role: "leader" | "follower";
  /** The WebSocket failed and a fallback is in use. */
  wsBlocked: boolean;
  /** SSE is held back by a proxy: long-polling. */
  sseHeldBack: boolean;
  /** The first poll's round trip (long-polling only). */
  pollRttMs: number | null;
  /** The wait before the next attempt, while reconnecting. */
  retryInMs: number | null;
  /** The last notification id handled. */
  lastEventId: number | null;
}

export interface SquallState {
  status: ConnectionStatus;
  unread: Unread;
  /** True once a server `unread` state arrived. */
  unreadKnown: boolean;
  /** Recent notifications, newest first, at most MAX_NOTIFICATIONS. */
  notifications: Notification[];
  preferences: Preferences | null;
}

export interface SquallEvents {
  change: SquallState;
  status: ConnectionStatus;
  notification: Notification;
  new_message: NewMessageNotification;
  unread: Unread;
  history: Notification[];
  cleared: string | null;
  resync: null;
  preferences: PreferencesEvent;
  mute: MuteEvent;
  /** A co-member came online or went offline (only people who share a chat and their presence). */
  presence: PresenceEvent;
  /** The message behind a notification was deleted: it left `notifications` (an `unread` follows). */
  withdrawn: NotificationWithdrawnEvent;
  /** The message behind a notification was edited: its `content_preview` in `notifications` is the new one. */
  updated: NotificationUpdatedEvent;
  unauthorized: UnauthorizedError;
  error: unknown;
}

export interface NotificationWithdrawnEvent { type: "notification_withdrawn"; notification_id: number; chat_id: number; message_id: number }
export interface NotificationUpdatedEvent {
  type: "notification_updated"; notification_id: number; chat_id: number; message_id: number; content_preview: string;
}
export interface PresenceEvent { type: "presence"; user_id: number; online: boolean; last_seen: string | null }

// ---- Options ----------------------------------------------------------------------------

export type TokenReason = "start" | "token_expiring" | "token_expired" | "auth_expired" | "unauthorized";

/** Returns a fresh access token, or null to authenticate with the browser's cookies. */
export type GetToken = (context: { reason: TokenReason }) => string | null | Promise<string | null>;

export interface WebSocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface Flag { get(): boolean; set(): void }

export interface StreamOptions {
  openTimeoutMs: number;
  sseFirstEventMs: number;
  stallMs: number;
  pingIntervalMs: number;
  wsRetryAfterMs: number;
  sseProvenMs: number;
  pollTimeoutS: number | null;
  backoffBaseMs: number;
  backoffCapMs: number;
}

export interface SquallOptions extends Partial<StreamOptions> {
  /** The server's base URL (http(s)://host[:port]); "" or omitted: this page's origin. */
  url?: string;
  getToken: GetToken;
  /** A WebSocket constructor (default: the platform's); null skips the WebSocket rung. */
  WebSocket?: WebSocketConstructor | null;
  fetch?: typeof fetch;
  /** fetch credentials: "same-origin" (default), "include" for cookies on another origin. */
  credentials?: RequestCredentials;
  /** One stream per browser (Web Locks + BroadcastChannel) when available. Default true. */
  shareAcrossTabs?: boolean;
  /** Names the lock and channel (default derived from url). */
  name?: string;
  /** Where "SSE is held back here" is remembered (default: sessionStorage, else memory). */
  heldBack?: Flag;
  /** Resume from this notification id (default: the newest of the loaded history). */
  lastEventId?: number | null;
  historyLimit?: number;
  loadPreferences?: boolean;
  locks?: { request(name: string, cb: () => Promise<unknown>): Promise<unknown> } | null;
  BroadcastChannel?: (new (name: string) => BroadcastChannel) | null;
}

// ---- The client -------------------------------------------------------------------------

export declare const MAX_NOTIFICATIONS: number;

export declare class Squall {
  constructor(options: SquallOptions);
  readonly tokens: TokenSource;
  readonly http: Http;
  /** The notification cursor (the last notification id handled). */
  readonly cursor: NotificationCursor;
  /** Resolves once the first history load ended (loaded, failed or unauthorized). */
  readonly historyLoaded: Promise<void>;
  on<K extends keyof SquallEvents>(type: K, fn: (detail: SquallEvents[K]) => void): () => void;
  subscribe(fn: (state: SquallState) => void): () => void;
  getState(): SquallState;
  hasUnreadMessages(): boolean;
  /** Idempotent while started; after stop() it starts afresh (StrictMode-safe: one stream). */
  start(): Promise<void>;
  stop(): void;
  retryNow(): void;
  request<T = any>(method: string, path: string, body?: unknown): Promise<T>;
  clearNotifications(type?: string | null): Promise<void>;
  markNotificationsRead(ids?: number[]): Promise<{ read: number }>;
  updatePreferences(changes: Partial<Preferences>): Promise<Preferences>;
  /** Upload a file for a later send's ``attachments``. */
  upload(file: Blob | ArrayBuffer | ArrayBufferView, options?: UploadOptions): Promise<Upload>;
  /** Short-lived URLs of an attachment, for members of its chat (absolute when ``url`` was given). */
  attachmentLink(uploadId: string): Promise<AttachmentLink>;
  chat(options?: ChatOptions): ChatConnection;
  handleFrame(frame: NotificationStreamFrame): void;
}

export declare function createSquall(options: SquallOptions): Squall;

export interface ChatOptions { chatId?: number | null; lastMessageId?: number | null; ackTimeoutMs?: number }

export interface ChatStatus { state: ConnectionState; transport: Transport | null; retryInMs?: number | null }

export interface ChatEvents {
  frame: ChatFrame;
  message: MessageFrame;
  typing: TypingFrame;
  read: ReadFrame;
  message_edited: MessageEditedFrame;
  message_deleted: MessageDeletedFrame;
  reaction: ReactionFrame;
  joined: number | null;
  left: LeftFrame;
  error: ErrorFrame;
  status: ChatStatus;
}

export interface SendOptions {
  clientId?: string;
  messageType?: string;
  /** Ids of the sender's own uploads (``Squall.upload``), at most 10; the content may then be empty. */
  attachments?: string[];
  /** The id of a message of the same chat this one answers (quoted in history and events). */
  replyTo?: number | null;
}

export declare class ChatConnection {
  constructor(squall: Squall, options?: ChatOptions);
  readonly chatId: number | null;
  readonly transport: Transport | null;
  readonly joined: number | null;
  on<K extends keyof ChatEvents>(type: K, fn: (detail: ChatEvents[K]) => void): () => void;
  start(chatId?: number | null): Promise<void>;
  stop(): void;
  setChat(chatId: number | null): void;
  history(chatId: number, options?: { beforeId?: number | null; limit?: number }): Promise<Message[]>;
  send(chatId: number, content: string, options?: SendOptions): Promise<Message>;
  typing(chatId: number): Promise<void>;
  markRead(chatId: number, messageId: number): Promise<void>;
}

// ---- Building blocks --------------------------------------------------------------------

export declare const BACKOFF_BASE_MS: number;
export declare const BACKOFF_CAP_MS: number;
export interface BackoffOptions { baseMs?: number; capMs?: number; random?: () => number }
export declare function backoffDelay(attempt: number, options?: BackoffOptions): number;
export declare function retryAfterMs(value: string | null | undefined, now?: number): number;
export declare function reconnectDelay(attempt: number, retryAfter?: number, options?: BackoffOptions): number;

export interface SseEvent { type: string; data: string; id: string | null }
export declare class SseParser {
  lastEventId: string | null;
  retry: number | null;
  feed(text: string): SseEvent[];
}
export declare function readEventStream(response: Response, handlers?: {
  onEvent?: (event: SseEvent) => void; onActivity?: () => void; signal?: AbortSignal;
}): Promise<void>;

export declare class NotificationCursor {
  constructor(lastEventId?: number | string | null);
  lastEventId: number | null;
  accept(id: number | string): boolean;
  advance(id: number | string): void;
  reset(): void;
  query(): string;
}
export declare function parseChatEventId(value: string | null | undefined): { messageId: number; notificationId: number } | null;
export declare class ChatCursor {
  constructor(messageId?: number | null, notificationId?: number | null);
  messageId: number | null;
  notificationId: number | null;
  acceptMessage(id: number | string): boolean;
  advance(eventId: string): void;
  wsLastEventId(): number | null;
  streamLastEventId(notificationId?: number | null): string | null;
}

export declare class UnauthorizedError extends Error {
  constructor(message?: string, cause?: unknown);
  readonly code: "unauthorized";
}
export declare class TokenSource {
  constructor(getToken: GetToken);
  readonly token: string | null;
  readonly generation: number;
  readonly calls: number;
  refresh(reason: TokenReason, since?: number | null): Promise<string | null>;
}

export interface SendRequest { chat_id: number; content: string; client_id: string; message_type?: string }
export declare const RETRYABLE_CODES: ReadonlySet<string>;
export declare class SendError extends Error {
  constructor(code: string, message?: string, status?: number);
  readonly code: string;
  readonly status: number;
}
export declare function newClientId(): string;
export declare class PendingSends {
  readonly size: number;
  add(request: SendRequest): Promise<Message>;
  waiting(): SendRequest[];
  has(clientId: string): boolean;
  match(frame: ChatFrame, selfId?: number | null): boolean;
  resolve(clientId: string, message: Message): void;
  reject(clientId: string, error: unknown): void;
  rejectAll(error: unknown): void;
}

export declare class SquallError extends Error {
  constructor(status: number, code: string, message?: string, retryAfter?: number);
  readonly status: number;
  readonly code: ErrorCode;
  readonly retryAfterMs: number;
}
export declare class Http {
  constructor(options: { url?: string; fetch?: typeof fetch; credentials?: RequestCredentials; tokens: TokenSource });
  url(path: string): string;
  wsUrl(path: string): string;
  authHeaders(): Record<string, string>;
  /** One request, no refresh and no retry (Squall's pages: the cookie is the credential). */
  once<T = any>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T>;
  request<T = any>(method: string, path: string, body?: unknown): Promise<T>;
  ticket(): Promise<string>;
  upload(body: Blob | ArrayBuffer | ArrayBufferView, options?: UploadOptions): Promise<Upload>;
}

export declare const DEFAULTS: Readonly<StreamOptions>;
export interface StreamPaths {
  ws: (() => string) | null;
  sse: () => string;
  poll: ((position: string | null) => string) | null;
}
export interface StreamHandlers {
  status(status: Partial<ConnectionStatus>): void;
  frame(frame: any, eventId: string | null): void;
  open?(transport: Transport, info: { wsFailed: boolean; pollRttMs?: number }): void;
  position?(eventId: string): void;
  unauthorized?(error: UnauthorizedError): void;
}
export interface StreamContext {
  http: Http; tokens: TokenSource; WebSocket: WebSocketConstructor | null; options: StreamOptions; heldBack: Flag;
}
export declare function openStream(paths: StreamPaths & { preferSse?: boolean }, handlers: any, ctx: StreamContext): {
  close(): void; send(frame: object): void;
};
export declare class Reconnector {
  constructor(paths: StreamPaths, handlers: StreamHandlers, ctx: StreamContext);
  start(): void;
  retryNow(): void;
  restart(): void;
  send(frame: object): void;
  stop(): void;
}
