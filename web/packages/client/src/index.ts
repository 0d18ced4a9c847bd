/** Framework-free tokenrelay browser client. */
export { createParser } from "./parser.js";
export type { EventSourceMessage, EventSourceParser, ParserCallbacks } from "./parser.js";
export { createEventSourceStream } from "./stream.js";
export type { EventSourceStreamOptions } from "./stream.js";
export { readChatEvents, resumeChat, runStreamUrl, streamChat } from "./streamChat.js";
export type { ChatStream, ChatStreamInfo, FetchLike, ResumeChatOptions, StreamChatOptions } from "./streamChat.js";
export { createHttpTransport } from "./transport.js";
export type {
  ChatApproveRequest,
  ChatCancelRequest,
  ChatReconnectRequest,
  ChatSendRequest,
  ChatTransport,
  HttpTransportOptions,
} from "./transport.js";
export type { ReconnectOptions } from "./reconnect.js";
export { streamChatEventSource, chatStreamUrl } from "./eventSource.js";
export type { EventSourceConstructor, EventSourceLike, StreamChatEventSourceOptions } from "./eventSource.js";
export { toChatEvent } from "./protocol.js";
export type {
  ChatApprovalEvent,
  ChatApprovalRequestEvent,
  ChatPausedEvent,
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
} from "./protocol.js";
export { ChatStreamError, errorFromResponse, extractErrorMessage, isAbortError } from "./errors.js";
export type { ChatStreamErrorKind } from "./errors.js";
// The store, its options and its state's types.
export * from "./chatStore.js";
export { animationFrameScheduler, APPROVAL_EXPIRED, toChatError } from "./chatState.js";
export type {
  ChatError,
  ChatMessage,
  ChatRole,
  ChatState,
  ChatStatus,
  ChatStore,
  ChatStoreOptions,
  FinishDetails,
  FlushScheduler,
  MessageStatus,
} from "./chatState.js";
export type {
  ApprovalPart,
  ApprovalState,
  MessagePart,
  MetadataPart,
  ReasoningPart,
  TextPart,
  ToolPart,
  ToolState,
} from "./parts.js";
export { pendingApprovals } from "./approvals.js";
export type { PendingApproval } from "./approvals.js";
export { createId } from "./ids.js";
export { deleteConversation, listConversations, loadConversation } from "./conversations.js";
export type { ConversationsOptions, ConversationSummary, LoadedConversation } from "./conversations.js";
export { DEFAULT_RECONNECT } from "./reconnect.js";
export { tokenrelayStop } from "./stop.js";
export type { TokenrelayStop, TokenrelayStopOptions } from "./stop.js";
