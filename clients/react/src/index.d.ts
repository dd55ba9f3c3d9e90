// Type declarations of @squall/react.
import type { ReactNode, ReactElement } from "react";
import type {
  Squall, SquallOptions, SquallState, ConnectionState, ConnectionStatus, Transport, Notification,
  NewMessageNotification, Unread, Message, GetToken, ChatConnection, ChatStatus, SendOptions, Preferences,
  TypingFrame, ReadFrame,
} from "@squall/client";

export type * from "@squall/client";

// ---- Provider ---------------------------------------------------------------------------

export type WebSocketProviderProps =
  | { url?: string; getToken: GetToken; client?: undefined; options?: Omit<SquallOptions, "url" | "getToken">; children?: ReactNode }
  | { client: Squall; url?: undefined; getToken?: undefined; options?: undefined; children?: ReactNode };

/** Holds one client for its children; starts it on mount (once under StrictMode), stops it on unmount. */
export declare function WebSocketProvider(props: WebSocketProviderProps): ReactElement;
/** The same component as WebSocketProvider. */
export declare const SquallProvider: typeof WebSocketProvider;

// ---- Hooks ------------------------------------------------------------------------------

export declare function useSquall(): Squall;
export declare function useSquallState(): SquallState;

export interface UseWebSocketResult {
  /** The client (the provider's one stream, shared by the tabs). */
  socket: Squall;
  status: ConnectionState;
  transport: Transport | null;
  connection: ConnectionStatus;
  notifications: Notification[];
  /** One callback per provider, called once for each new message (null to remove). */
  setOnNewMessage: (fn: ((notification: NewMessageNotification) => void) | null) => void;
}
export declare function useWebSocket(): UseWebSocketResult;

export interface UseChatNotificationsOptions {
  onNewMessage?: (notification: NewMessageNotification) => void;
}
export interface UseChatNotificationsResult {
  /** Unread messages outside muted chats: the red dot. */
  hasUnreadMessages: boolean;
  unreadCount: number;
  /** Recent `new_message` notifications, newest first. */
  notifications: NewMessageNotification[];
  /** Clear the notifications (of `type`; all when omitted) on the server and in every tab. */
  clearNotifications: (type?: string | null) => Promise<void>;
}
export declare function useChatNotifications(options?: UseChatNotificationsOptions): UseChatNotificationsResult;

export interface UnreadState extends Unread {
  /** True once the server's unread state arrived. */
  known: boolean;
}
export declare function useUnread(): UnreadState;

export interface PendingSend { client_id: string; content: string; error: unknown }
export interface TypingUser { user_id: number; user_name: string; until: number }

export interface ChatState {
  chatId: number | null;
  /** Oldest first, each id once. */
  messages: Message[];
  loading: boolean;
  loaded: boolean;
  hasOlder: boolean;
  /** Sends not acknowledged yet (or refused: `error` set). */
  pending: PendingSend[];
  typing: TypingUser[];
  /** User id → the last message id that user read. */
  receipts: Record<string, number>;
  error: unknown;
}

export interface UseChatResult extends ChatState {
  status: ChatStatus;
  send(content: string, options?: SendOptions): Promise<Message>;
  /** Resolves with how many older messages were added. */
  loadOlder(): Promise<number>;
  /** Mark read up to `messageId` (default: the newest message held). */
  markRead(messageId?: number): Promise<void>;
  sendTyping(): Promise<void>;
  /** Forget a refused send. */
  discard(clientId: string): void;
}
export declare function useChat(chatId: number | string | null | undefined): UseChatResult;

// ---- Toasts -----------------------------------------------------------------------------

export interface NotificationToastProps {
  /** Called when a toast is clicked (e.g. navigate to its chat). */
  onOpen?: (notification: Notification) => void;
  /** How long a toast stays (paused while hovered or focused). Default 6000. */
  durationMs?: number;
  /** Toasts shown at once. Default 3. */
  max?: number;
  /** Which notifications show (default: new messages, not silent, unless toasts are off). */
  filter?: (notification: Notification, preferences: Preferences | null) => boolean;
  /** A toast's content (default "Sender: preview"). */
  render?: (notification: Notification) => ReactNode;
  /** The region's accessible name. Default "Notifications". */
  label?: string;
  className?: string;
}
export declare function NotificationToast(props: NotificationToastProps): ReactElement;

// ---- Building blocks (React-free) -------------------------------------------------------

export declare const TYPING_MS: number;
export declare const PAGE_SIZE: number;

export interface Startable { start(): unknown; stop(): void }
export declare function retain(client: Startable, holds?: WeakMap<object, unknown>): () => void;
export declare function mergeMessages(list: Message[], more: Message[]): Message[];

export type ChatConnectionLike = Pick<ChatConnection, "on" | "history" | "send" | "markRead" | "typing">;

export declare class ChatStore {
  constructor(conn: ChatConnectionLike, chatId: number | null, options?: { pageSize?: number; typingMs?: number; now?: () => number });
  readonly subscribe: (fn: () => void) => () => void;
  readonly getSnapshot: () => ChatState;
  open(): Promise<void>;
  close(): void;
  load(): Promise<void>;
  loadOlder(): Promise<number>;
  send(content: string, options?: SendOptions): Promise<Message>;
  discard(clientId: string): void;
  markRead(messageId?: number): Promise<void>;
  typing(): Promise<void>;
  onMessage(message: Message): void;
  onTyping(frame: TypingFrame): void;
  onRead(frame: ReadFrame): void;
  expireTyping(): void;
}

export declare class ToastQueue {
  constructor(options?: { durationMs?: number; max?: number });
  readonly toasts: Notification[];
  readonly paused: boolean;
  readonly subscribe: (fn: () => void) => () => void;
  readonly getSnapshot: () => Notification[];
  push(notification: Notification): boolean;
  dismiss(id: number): void;
  pause(): void;
  resume(): void;
  clear(): void;
}
