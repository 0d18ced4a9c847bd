/**
 * The chat store's shape: its options and interface, the messages and
 * conversation state it holds, and the pure functions that change them.
 * The store itself is in chatStore.ts.
 */
import { ChatStreamError, type ChatStreamErrorKind } from "./errors.js";
import { applyEvents, expireApprovals, type MessagePart } from "./parts.js";
import type { ChatDoneEvent, ChatErrorEvent, ChatPartEvent, ChatUsage } from "./protocol.js";
import type { ReconnectOptions } from "./reconnect.js";
import type { ChatTransport, HttpTransportOptions } from "./transport.js";

export type ChatRole = "user" | "assistant";

/** "streaming" for the answer being received; the others are final. */
export type MessageStatus = "streaming" | "done" | "cancelled" | "error";

export interface ChatMessage {
  readonly id: string;
  readonly role: ChatRole;
  readonly content: string;
  readonly status: MessageStatus;
  /** For assistant messages that finished: the server's finish_reason. */
  readonly finishReason?: string;
  /** For assistant messages: the server's run id. */
  readonly runId?: string;
  /**
   * For answers with more than text: text, reasoning, tool calls and
   * metadata in order (`content` is still the text). Absent for plain text.
   */
  readonly parts?: readonly MessagePart[];
  /** While the answer waits for the model: how many runs are ahead of it. */
  readonly queuePosition?: number;
  /** False when the server could not save the answer to the conversation's history. */
  readonly saved?: false;
  /** For a failed answer: the error's code, when known. */
  readonly errorCode?: string;
}

/**
 * - idle: ready to send
 * - submitted: request sent, no token yet
 * - streaming: tokens arriving
 * - error: the last request failed; `error` says why, `retry()` tries again
 */
export type ChatStatus = "idle" | "submitted" | "streaming" | "error";

export interface ChatError {
  readonly kind: ChatStreamErrorKind;
  readonly message: string;
  readonly code?: string;
  readonly status?: number;
  readonly field?: string;
  readonly retryable: boolean;
  /**
   * The server refused the message before answering it (413, 422, 401,
   * 429...): its text, taken out of the conversation again so the page can
   * put it back in the composer. `retry()` sends it again.
   */
  readonly unsent?: string;
}

export interface ChatState {
  readonly messages: readonly ChatMessage[];
  readonly status: ChatStatus;
  readonly error: ChatError | null;
  /** The server's conversation id, sent with follow-up messages. */
  readonly conversationId: string | undefined;
  /** The run being received, once the server has named it (for resuming it after a reload). */
  readonly runId?: string;
}

export interface FinishDetails {
  readonly finishReason: string;
  readonly runId: string | undefined;
  readonly conversationId: string | undefined;
  readonly usage: ChatUsage | undefined;
}

/** Runs `flush` later (once) and returns a function that cancels it. */
export type FlushScheduler = (flush: () => void) => () => void;

/** `api`, `headers`, `fetch`, `cancelUrl` and `resumeUrl` configure the default HTTP transport. */
export interface ChatStoreOptions extends HttpTransportOptions {
  /** How requests reach the server. Defaults to `createHttpTransport(options)`. */
  transport?: ChatTransport;
  /**
   * Reconnect after a dropped connection, resuming after the last event
   * received. On by default (`DEFAULT_RECONNECT`); `false` turns it off.
   */
  reconnect?: ReconnectOptions | false;
  /** Sent as `user_id`. */
  userId?: string;
  /** Continue an existing server conversation. */
  conversationId?: string;
  initialMessages?: readonly ChatMessage[];
  /** Extra JSON fields merged into every request body. */
  body?: Record<string, unknown>;
  /** How buffered deltas are flushed. Defaults to one flush per animation frame. */
  scheduleFlush?: FlushScheduler;
  generateId?: () => string;
  /** Called when an answer finishes normally (not on stop or error). */
  onFinish?: (message: ChatMessage, details: FinishDetails) => void;
  onError?: (error: ChatError) => void;
}

export interface ChatStore {
  getState(): ChatState;
  /** Returns an unsubscribe function. Listeners run after every state change. */
  subscribe(listener: () => void): () => void;
  /**
   * Send a user message and stream the answer. Resolves when the answer
   * is complete, stopped or failed (it never rejects; see `state.error`).
   * Ignored while another answer is in progress or when `text` is blank.
   */
  sendMessage(text: string): Promise<void>;
  /** Stop the current answer: aborts the request, keeping the text received so far. */
  stop(): void;
  /**
   * After an error: pick the answer up again when its connection was lost
   * (the question is not asked twice), or send the failed request again.
   */
  retry(): Promise<void>;
  /** Drop the last answer and ask for a new one to the last user message. */
  regenerate(): Promise<void>;
  /** Stop anything in flight and start a new, empty conversation. */
  reset(): void;
  /**
   * Show conversation `conversationId` with `messages` (e.g. read from the
   * server). An answer in progress is left to finish on the server (this is
   * not a Stop): the store just stops following it.
   */
  load(conversationId: string | undefined, messages: readonly ChatMessage[]): void;
  /**
   * Follow run `runId` of the current conversation as a new answer, from its
   * start (or after `lastEventId`): a reloaded page picking up an answer that
   * is still being written. Ignored while another answer is in progress.
   */
  resume(runId: string, lastEventId?: string): Promise<void>;
  /**
   * Answer tool call `callId` that run `runId` waits for: run it
   * (`approved`) or not (`reason` goes to the model). Shown at once, then
   * confirmed by the run's stream, which goes on once every pending call is
   * answered. Resolves with null once recorded, or with the error (also on
   * the call's part, `error`); never rejects.
   */
  approve(runId: string, callId: string, approved: boolean, reason?: string): Promise<ChatError | null>;
  /** Change options (new callbacks, another endpoint) for the next request. */
  setOptions(options: Partial<ChatStoreOptions>): void;
}

/** One flush per animation frame; a 16 ms timer where there is no `requestAnimationFrame`. */
export const animationFrameScheduler: FlushScheduler = (flush) => {
  if (typeof requestAnimationFrame === "function") {
    const handle = requestAnimationFrame(() => flush());
    return () => cancelAnimationFrame(handle);
  }
  const timer = setTimeout(flush, 16);
  return () => clearTimeout(timer);
};

/** What an update may change on the streaming message (never its id, role or, directly, its text). */
export type MessagePatch = Partial<Omit<ChatMessage, "id" | "role" | "content" | "parts">>;

/** What an answer arriving in pieces is made of: text (as plain strings, the common case) and the other parts. */
export type PendingEvent = string | ChatPartEvent;

export function toChatError(error: unknown): ChatError {
  if (error instanceof ChatStreamError) {
    return {
      kind: error.kind,
      message: error.message,
      code: error.code,
      status: error.status,
      field: error.field,
      retryable: error.retryable,
    };
  }
  return {
    kind: "network",
    message: error instanceof Error && error.message !== "" ? error.message : "Something went wrong.",
    retryable: true,
  };
}

/** The error shown for an answer that ended with an error frame or `finish_reason: "error"`. */
export function backendChatError(backendError: ChatErrorEvent | undefined): ChatError {
  return {
    kind: "backend",
    message: backendError?.message ?? "The model failed to answer.",
    code: backendError?.code,
    retryable: backendError?.retryable ?? false,
  };
}

/** The error code of a run that waited for approvals past their expiry. */
export const APPROVAL_EXPIRED = "approval_expired";

/** The final status of an answer that ended normally. */
export function finishedStatus(done: ChatDoneEvent): MessageStatus {
  return done.finishReason === "cancelled" ? "cancelled" : "done";
}

/** The message with `events` applied; a plain text answer stays a string append. */
function withEvents(message: ChatMessage, events: readonly PendingEvent[]): ChatMessage {
  if (events.length === 0) return message;
  if (message.parts === undefined && message.queuePosition === undefined && events.every((e) => typeof e === "string")) {
    return { ...message, content: message.content + events.join("") };
  }
  const { content, parts, queuePosition } = applyEvents(message, events);
  const next: { -readonly [key in keyof ChatMessage]: ChatMessage[key] } = { ...message, content, parts, queuePosition };
  if (parts === undefined) delete next.parts;
  if (queuePosition === undefined) delete next.queuePosition;
  return next;
}

/**
 * Apply `events` and `patch` to message `id`, returning the new list and the
 * updated message. A message left with nothing in it when it ends in error
 * or cancellation is removed: an empty bubble says nothing the error banner
 * does not.
 */
export function updateMessage(
  messages: readonly ChatMessage[],
  id: string,
  events: readonly PendingEvent[],
  patch: MessagePatch,
): { messages: ChatMessage[]; updated: ChatMessage | undefined } {
  const next = messages.slice();
  // The streaming message is almost always last: search from the end.
  for (let index = next.length - 1; index >= 0; index -= 1) {
    const message = next[index];
    if (message === undefined || message.id !== id) continue;
    let updated: ChatMessage = { ...withEvents(message, events), ...patch };
    // The run stopped waiting: the calls it waited for can no longer be answered.
    if (updated.errorCode === APPROVAL_EXPIRED && updated.parts !== undefined) updated = { ...updated, parts: expireApprovals(updated.parts) };
    const empty = updated.content === "" && (updated.parts === undefined || updated.parts.length === 0);
    const drop = empty && (updated.status === "error" || updated.status === "cancelled");
    if (drop) next.splice(index, 1);
    else next[index] = updated;
    return { messages: next, updated };
  }
  return { messages: next, updated: undefined };
}

/** The messages `retry()` starts from: without the failed answer, if it left one. */
export function withoutFailedAnswer(messages: readonly ChatMessage[]): readonly ChatMessage[] {
  const last = messages[messages.length - 1];
  return last !== undefined && last.role === "assistant" && last.status === "error" ? messages.slice(0, -1) : messages;
}

/** Index of the last user message, or -1. */
export function lastUserIndex(messages: readonly ChatMessage[]): number {
  let index = messages.length - 1;
  while (index >= 0 && messages[index]?.role !== "user") index -= 1;
  return index;
}
