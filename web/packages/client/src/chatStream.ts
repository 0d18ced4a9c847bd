/**
 * `ChatStream`, what `streamChat`, `resumeChat` and `streamChatEventSource`
 * return: a single-use async iterable of chat events plus what the response
 * has said about its run so far.
 */
import type { ChatDoneEvent, ChatEvent } from "./protocol.js";

/** Metadata about a stream, filled in as the response arrives. */
export interface ChatStreamInfo {
  /** The id of the last event received: what a resume request sends as `Last-Event-ID`. */
  readonly lastEventId: string | undefined;
  /** From the `X-Run-Id` header, then the `done` frame. */
  readonly runId: string | undefined;
  /** From the `X-Conversation-Id` header, then the `done` frame. Send it back to continue the conversation. */
  readonly conversationId: string | undefined;
  /** The reconnection delay from the last `retry:` field, if the server sent one. */
  readonly retryMs: number | undefined;
}

/**
 * A single-use async iterable of chat events (a second loop yields
 * nothing). It yields `delta` and `error` events and finally the `done`
 * event, then completes. It throws a `ChatStreamError` on HTTP errors (with
 * the server's message), network failures, malformed data, or a stream that
 * ends without `done`; and the signal's abort reason (an `AbortError`) when
 * aborted.
 */
export interface ChatStream extends AsyncIterable<ChatEvent>, ChatStreamInfo {}

/** The writable side of `ChatStreamInfo`, for the code that reads the response. */
export type MutableStreamInfo = { -readonly [key in keyof ChatStreamInfo]: ChatStreamInfo[key] };

export function emptyInfo(): MutableStreamInfo {
  return { lastEventId: undefined, runId: undefined, conversationId: undefined, retryMs: undefined };
}

/** The done frame names the run and the conversation for certain. */
export function noteDone(info: MutableStreamInfo, event: ChatDoneEvent): void {
  if (event.runId !== undefined) info.runId = event.runId;
  if (event.conversationId !== undefined) info.conversationId = event.conversationId;
}

/** A `ChatStream` over `events`, its metadata read live from `info`. */
export function toChatStream(events: AsyncGenerator<ChatEvent, void, undefined>, info: ChatStreamInfo): ChatStream {
  return {
    [Symbol.asyncIterator]: () => events,
    get lastEventId() {
      return info.lastEventId;
    },
    get runId() {
      return info.runId;
    },
    get conversationId() {
      return info.conversationId;
    },
    get retryMs() {
      return info.retryMs;
    },
  };
}
