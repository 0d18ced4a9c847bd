/**
 * Message views. `ChatMessageView` is memoized on the message object: the
 * chat store gives a new object only to the message being streamed, so
 * while an answer streams, finished messages do not re-render at all.
 */
import { memo } from "react";
import type { ChatMessage } from "@tokenrelay/client";
import { Markdown } from "./markdown/render.js";
import type { ApproveHandler, DenyHandler } from "./ApprovalControls.js";
import { MessageParts } from "./MessageParts.js";

/** The blinking cursor shown at the end of an answer while it streams. */
export function StreamingCursor() {
  return <span className="cursor" aria-hidden="true" />;
}

const cursor = <StreamingCursor />;

export interface StreamingMessageProps {
  /** The Markdown text received so far. */
  content: string;
  /** Show the cursor and render unfinished Markdown as finished. */
  isStreaming: boolean;
}

/** Markdown content with the blinking cursor while it streams. */
export const StreamingMessage = memo(function StreamingMessage({ content, isStreaming }: StreamingMessageProps) {
  return <Markdown text={content} streaming={isStreaming} cursor={isStreaming ? cursor : null} />;
});

const STATUS_NOTE: Partial<Record<ChatMessage["status"], string>> = {
  cancelled: "Stopped",
  error: "Interrupted",
};

/** The line under an answer that says how it ended, when that is worth saying. */
export function endingNote(message: ChatMessage): string | undefined {
  if (message.role !== "assistant") return undefined;
  const notes: string[] = [];
  const status = STATUS_NOTE[message.status];
  if (status !== undefined) notes.push(message.status === "error" && message.errorCode ? `${status} (${message.errorCode})` : status);
  if (message.finishReason === "length") notes.push("Cut off at the length limit");
  if (message.saved === false) notes.push("Not saved to the conversation's history");
  return notes.length > 0 ? notes.join(" · ") : undefined;
}

export interface ChatMessageViewProps {
  message: ChatMessage;
  /** Answer a tool call that waits for approval (e.g. `useStreamingChat`'s `approve` / `deny`). */
  onApprove?: ApproveHandler;
  onDeny?: DenyHandler;
}

function AnswerBody({ message, onApprove, onDeny }: ChatMessageViewProps) {
  const isStreaming = message.status === "streaming";
  return (
    <>
      {message.queuePosition !== undefined ? (
        <p className="message-queue" role="status">
          Waiting for the model: {message.queuePosition} {message.queuePosition === 1 ? "answer" : "answers"} ahead
        </p>
      ) : null}
      {message.parts !== undefined ? (
        <MessageParts parts={message.parts} streaming={isStreaming} onApprove={onApprove} onDeny={onDeny} />
      ) : (
        <StreamingMessage content={message.content} isStreaming={isStreaming} />
      )}
    </>
  );
}

export const ChatMessageView = memo(function ChatMessageView({ message, onApprove, onDeny }: ChatMessageViewProps) {
  const isStreaming = message.status === "streaming";
  const note = endingNote(message);
  return (
    <article
      className={`message message-${message.role}`}
      data-role={message.role}
      data-status={message.status}
      data-finish={message.finishReason}
      aria-busy={isStreaming || undefined}
    >
      <div className="message-author">{message.role === "user" ? "You" : "Assistant"}</div>
      <div className="message-body">
        {message.role === "user" ? (
          // The user's own text is shown as typed, not as Markdown.
          <p className="message-plain">{message.content}</p>
        ) : (
          <AnswerBody message={message} onApprove={onApprove} onDeny={onDeny} />
        )}
      </div>
      {note !== undefined ? <div className="message-note">{note}</div> : null}
    </article>
  );
});

export interface MessageListProps {
  messages: readonly ChatMessage[];
  /** Answer a tool call that waits for approval; pass stable functions (the hook's are) to keep rows memoized. */
  onApprove?: ApproveHandler;
  onDeny?: DenyHandler;
}

export const MessageList = memo(function MessageList({ messages, onApprove, onDeny }: MessageListProps) {
  return (
    <div className="message-list" role="log" aria-live="polite" aria-relevant="additions text">
      {messages.map((message) => (
        <ChatMessageView key={message.id} message={message} onApprove={onApprove} onDeny={onDeny} />
      ))}
    </div>
  );
});
