/** React bindings for the tokenrelay client. */
export { useStreamingChat } from "./useStreamingChat.js";
export type { UseStreamingChatOptions, UseStreamingChatResult } from "./useStreamingChat.js";
export { ChatMessageView, endingNote, MessageList, StreamingCursor, StreamingMessage } from "./StreamingMessage.js";
export type { ChatMessageViewProps, MessageListProps, StreamingMessageProps } from "./StreamingMessage.js";
export { MessageParts, ReasoningView, ToolCallView } from "./MessageParts.js";
export type { MessagePartsProps, ReasoningViewProps, ToolCallViewProps } from "./MessageParts.js";
export { ApprovalControls, decisionText } from "./ApprovalControls.js";
export type { ApprovalControlsProps, ApproveHandler, DenyHandler } from "./ApprovalControls.js";
export * from "./markdown/index.js";
