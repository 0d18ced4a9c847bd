/**
 * The GET /api/chat/stream path through the browser's own `EventSource`.
 *
 *   const stream = streamChatEventSource({ url: "/api/chat/stream", message: "Hi" });
 *   for await (const event of stream) { ... }
 *
 * It yields the same typed events as `streamChat`. Prefer `streamChat`
 * (POST) in applications: EventSource cannot send a body or headers and
 * cannot read an error response. This helper exists for environments that
 * only allow EventSource, and because EventSource's built-in reconnection
 * would otherwise silently re-run the request.
 */
import { abortReason, ChatStreamError } from "./errors";
import { toChatEvent, type ChatEvent } from "./protocol";
import type { ChatStream } from "./streamChat";

/** The subset of the EventSource constructor this helper needs (injectable for tests). */
export interface EventSourceLike {
  readonly readyState: number;
  onmessage: ((event: MessageEvent<string>) => void) | null;
  onerror: ((event: Event) => void) | null;
  close(): void;
}
export type EventSourceConstructor = new (url: string, init?: EventSourceInit) => EventSourceLike;

export interface StreamChatEventSourceOptions {
  /** The stream endpoint, e.g. "/api/chat/stream". Relative URLs resolve against the document. */
  url: string | URL;
  message: string;
  userId?: string;
  conversationId?: string;
  signal?: AbortSignal;
  withCredentials?: boolean;
  /** Defaults to the global `EventSource`. */
  EventSource?: EventSourceConstructor;
}

const CLOSED = 2;

/** Build the GET URL with the request as query parameters. */
export function chatStreamUrl(
  url: string | URL,
  params: { message: string; userId?: string; conversationId?: string },
): string {
  const base = typeof document !== "undefined" ? document.baseURI : globalThis.location?.href;
  const target = new URL(url, base);
  target.searchParams.set("message", params.message);
  if (params.userId !== undefined) target.searchParams.set("user_id", params.userId);
  if (params.conversationId !== undefined) target.searchParams.set("conversation_id", params.conversationId);
  return target.toString();
}

export function streamChatEventSource(options: StreamChatEventSourceOptions): ChatStream {
  const info = {
    lastEventId: undefined as string | undefined,
    runId: undefined as string | undefined,
    conversationId: undefined as string | undefined,
    retryMs: undefined as number | undefined,
  };
  const iterate = async function* (): AsyncGenerator<ChatEvent, void, undefined> {
    const { signal } = options;
    signal?.throwIfAborted();

    const Source = options.EventSource ?? (globalThis.EventSource as unknown as EventSourceConstructor | undefined);
    if (Source === undefined) throw new Error("EventSource is not available in this environment.");

    // Events arrive through callbacks; buffer them until the consumer pulls.
    const buffered: ChatEvent[] = [];
    let failure: { error: unknown } | undefined;
    let ended = false;
    let wake: (() => void) | undefined;
    const notify = () => {
      const resolve = wake;
      wake = undefined;
      resolve?.();
    };

    const source = new Source(chatStreamUrl(options.url, options), {
      withCredentials: options.withCredentials ?? false,
    });
    const fail = (error: unknown) => {
      if (ended || failure) return;
      failure = { error };
      source.close();
      notify();
    };
    const onAbort = () => fail(abortReason(signal as AbortSignal));
    signal?.addEventListener("abort", onAbort, { once: true });

    source.onmessage = (message) => {
      if (ended || failure) return;
      let event: ChatEvent | null;
      try {
        event = toChatEvent({ event: "message", data: String(message.data), id: message.lastEventId });
      } catch (error) {
        fail(error);
        return;
      }
      if (message.lastEventId !== "") info.lastEventId = message.lastEventId;
      if (event === null) return;
      buffered.push(event);
      if (event.type === "done") {
        if (event.runId !== undefined) info.runId = event.runId;
        if (event.conversationId !== undefined) info.conversationId = event.conversationId;
        // Close before the server's end of stream makes EventSource reconnect.
        ended = true;
        source.close();
      }
      notify();
    };
    source.onerror = () => {
      if (ended) return;
      // CLOSED: the request itself failed (non-200 status or wrong content
      // type); EventSource gives no access to the body. CONNECTING: the
      // connection dropped and EventSource would reconnect, which for a chat
      // request means asking the question again, so stop here instead.
      fail(
        source.readyState === CLOSED
          ? new ChatStreamError("http", "The server refused the stream request.", { retryable: true })
          : new ChatStreamError("incomplete", "The answer was cut off: the stream ended before it finished.", {
              retryable: true,
            }),
      );
    };

    try {
      for (;;) {
        const event = buffered.shift();
        if (event !== undefined) {
          yield event;
          if (event.type === "done") return;
          continue;
        }
        if (failure) throw failure.error;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      source.onmessage = null;
      source.onerror = null;
      source.close();
    }
  };

  const generator = iterate();
  return {
    [Symbol.asyncIterator]: () => generator,
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
