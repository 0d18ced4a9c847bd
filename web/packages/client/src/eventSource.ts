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
import { emptyInfo, noteDone, toChatStream, type ChatStream, type MutableStreamInfo } from "./chatStream.js";
import { abortReason, ChatStreamError, cutOffError } from "./errors.js";
import { toChatEvent, type ChatEvent } from "./protocol.js";

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

/** Events that arrived through EventSource's callbacks, waiting for the consumer to pull them. */
class Inbox {
  private readonly buffered: ChatEvent[] = [];
  private failure: { error: unknown } | undefined;
  private ended = false;
  private wake: (() => void) | undefined;

  /** Neither finished (done frame) nor failed: callbacks still matter. */
  get open(): boolean {
    return !this.ended && this.failure === undefined;
  }

  /** Whether the done frame has arrived. */
  get finished(): boolean {
    return this.ended;
  }

  push(event: ChatEvent): void {
    this.buffered.push(event);
    if (event.type === "done") this.ended = true;
    this.notify();
  }

  /** Record the error the stream throws once the events before it are pulled. False if it came too late to matter. */
  fail(error: unknown): boolean {
    if (!this.open) return false;
    this.failure = { error };
    this.notify();
    return true;
  }

  async *drain(): AsyncGenerator<ChatEvent, void, undefined> {
    for (;;) {
      const event = this.buffered.shift();
      if (event !== undefined) {
        yield event;
        if (event.type === "done") return;
        continue;
      }
      if (this.failure) throw this.failure.error;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private notify(): void {
    const resolve = this.wake;
    this.wake = undefined;
    resolve?.();
  }
}

/** One EventSource message into the inbox; malformed data fails the stream. */
function receive(message: MessageEvent<string>, inbox: Inbox, info: MutableStreamInfo, fail: (error: unknown) => void): void {
  if (!inbox.open) return;
  let event: ChatEvent | null;
  try {
    event = toChatEvent({ event: "message", data: String(message.data), id: message.lastEventId });
  } catch (error) {
    fail(error);
    return;
  }
  if (message.lastEventId !== "") info.lastEventId = message.lastEventId;
  if (event === null) return;
  if (event.type === "done") noteDone(info, event);
  inbox.push(event);
}

/**
 * CLOSED: the request itself failed (non-200 status or wrong content type);
 * EventSource gives no access to the body. CONNECTING: the connection
 * dropped and EventSource would reconnect, which for a chat request means
 * asking the question again, so the stream stops here instead.
 */
function connectionError(source: EventSourceLike): ChatStreamError {
  return source.readyState === CLOSED
    ? new ChatStreamError("http", "The server refused the stream request.", { retryable: true })
    : cutOffError();
}

async function* follow(options: StreamChatEventSourceOptions, info: MutableStreamInfo): AsyncGenerator<ChatEvent, void, undefined> {
  const { signal } = options;
  signal?.throwIfAborted();

  const Source = options.EventSource ?? (globalThis.EventSource as unknown as EventSourceConstructor | undefined);
  if (Source === undefined) throw new Error("EventSource is not available in this environment.");

  const inbox = new Inbox();
  const source = new Source(chatStreamUrl(options.url, options), {
    withCredentials: options.withCredentials ?? false,
  });
  const fail = (error: unknown) => {
    if (inbox.fail(error)) source.close();
  };
  const onAbort = () => fail(abortReason(signal as AbortSignal));
  signal?.addEventListener("abort", onAbort, { once: true });

  source.onmessage = (message) => {
    receive(message, inbox, info, fail);
    // Close before the server's end of stream makes EventSource reconnect.
    if (inbox.finished) source.close();
  };
  source.onerror = () => {
    if (!inbox.finished) fail(connectionError(source));
  };

  try {
    yield* inbox.drain();
  } finally {
    signal?.removeEventListener("abort", onAbort);
    source.onmessage = null;
    source.onerror = null;
    source.close();
  }
}

export function streamChatEventSource(options: StreamChatEventSourceOptions): ChatStream {
  const info = emptyInfo();
  return toChatStream(follow(options, info), info);
}
