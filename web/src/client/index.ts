/** Framework-free tokenrelay browser client. */
export { createParser } from "./parser";
export type { EventSourceMessage, EventSourceParser, ParserCallbacks } from "./parser";
export { createEventSourceStream } from "./stream";
export type { EventSourceStreamOptions } from "./stream";
export { readChatEvents, resumeChat, runStreamUrl, streamChat } from "./streamChat";
export type { ChatStream, ChatStreamInfo, FetchLike, ResumeChatOptions, StreamChatOptions } from "./streamChat";
export { createHttpTransport } from "./transport";
export type {
  ChatCancelRequest,
  ChatReconnectRequest,
  ChatSendRequest,
  ChatTransport,
  HttpTransportOptions,
} from "./transport";
export type { ReconnectOptions } from "./reconnect";
export { streamChatEventSource, chatStreamUrl } from "./eventSource";
export type { EventSourceConstructor, EventSourceLike, StreamChatEventSourceOptions } from "./eventSource";
export { toChatEvent } from "./protocol";
export type {
  ChatDeltaEvent,
  ChatDoneEvent,
  ChatErrorEvent,
  ChatEvent,
  ChatMetadataEvent,
  ChatPartEvent,
  ChatReasoningEvent,
  ChatRequest,
  ChatToolCallDeltaEvent,
  ChatToolCallEvent,
  ChatToolResultEvent,
  ChatUsage,
  FinishReason,
} from "./protocol";
export { ChatStreamError, errorFromResponse, extractErrorMessage, isAbortError } from "./errors";
export type { ChatStreamErrorKind } from "./errors";
// The store, its options and its state's types.
export * from "./chatStore";
export { createId } from "./ids";
export { deleteConversation, listConversations, loadConversation } from "./conversations";
export type { ConversationsOptions, ConversationSummary, LoadedConversation } from "./conversations";
export { DEFAULT_RECONNECT } from "./reconnect";
