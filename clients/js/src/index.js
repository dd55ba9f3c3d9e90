// @squall/client: Squall's real-time client (plain ES modules, no dependencies).
export { createSquall, Squall, MAX_NOTIFICATIONS } from "./client.js";
export { ChatConnection } from "./chat.js";
export { backoffDelay, retryAfterMs, reconnectDelay, BACKOFF_BASE_MS, BACKOFF_CAP_MS } from "./backoff.js";
export { SseParser, readEventStream } from "./sse.js";
export { NotificationCursor, ChatCursor, parseChatEventId } from "./resume.js";
export { TokenSource, UnauthorizedError } from "./tokens.js";
export { PendingSends, SendError, newClientId, RETRYABLE_CODES } from "./acks.js";
export { Http, SquallError } from "./http.js";
export { openStream, Reconnector, DEFAULTS } from "./stream.js";
