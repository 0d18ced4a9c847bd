/** React bindings for the tokenrelay client. */
export { useStreamingChat } from "./useStreamingChat";
export type { UseStreamingChatOptions, UseStreamingChatResult } from "./useStreamingChat";
export { ChatMessageView, MessageList, StreamingCursor, StreamingMessage } from "./StreamingMessage";
export type { ChatMessageViewProps, MessageListProps, StreamingMessageProps } from "./StreamingMessage";
export { Markdown } from "../markdown/render";
