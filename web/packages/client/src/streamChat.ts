/**
 * `streamChat`: POST a chat request and read the answer as typed events.
 *
 *   const stream = streamChat({ url: "/api/chat/stream", body: { message }, signal });
 *   for await (const event of stream) {
 *     if (event.type === "delta") append(event.text);
 *   }
 *   stream.conversationId; // for the follow-up request
 *
 * Uses fetch + ReadableStream (not EventSource) so it can POST a JSON body,
 * read the server's error body on 4xx/5xx and be cancelled with an
 * AbortSignal. Aborting the signal, or leaving the `for await` loop early,
 * closes the HTTP connection: the server treats that as "cancel the run".
 */
import { emptyInfo, noteDone, toChatStream, type ChatStream, type MutableStreamInfo } from "./chatStream.js";
import { abortReason, ChatStreamError, cutOffError, errorFromResponse, isAbortError } from "./errors.js";
import { createParser, type EventSourceMessage } from "./parser.js";
import { toChatEvent, type ChatEvent, type ChatRequest } from "./protocol.js";

export type { ChatStream, ChatStreamInfo } from "./chatStream.js";

export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface StreamChatOptions {
  /** The stream endpoint, e.g. "/api/chat/stream". */
  url: string | URL;
  /** The JSON body: `{ message, user_id?, conversation_id? }`. */
  body: ChatRequest;
  /** Abort to stop the answer; the connection is closed and iteration rejects with the abort reason. */
  signal?: AbortSignal;
  /** A fetch implementation (tests, instrumentation). Defaults to the global fetch. */
  fetch?: FetchLike;
  /** Extra request headers. */
  headers?: HeadersInit;
  /** Called once the server has answered with the stream (its run id is then known), before the first event. */
  onOpen?: () => void;
}

export interface ResumeChatOptions {
  /** The run's stream URL, e.g. `/api/runs/${runId}/stream` (see `runStreamUrl`). */
  url: string | URL;
  /** The last event id already received (`ChatStream.lastEventId`): the server sends what came after it. */
  lastEventId: string | undefined;
  signal?: AbortSignal;
  fetch?: FetchLike;
  headers?: HeadersInit;
  onOpen?: () => void;
}

interface OpenRequest {
  url: string | URL;
  init: RequestInit;
  signal: AbortSignal | undefined;
  fetch: FetchLike | undefined;
  /** For a resume: 204 No Content means the run had nothing left to send. */
  allowNoContent: boolean;
  onOpen: (() => void) | undefined;
}

const defaultFetch: FetchLike = (input, init) => globalThis.fetch(input, init);

/** What a failed fetch or read throws: the abort reason when aborted, else a retryable "network" error. */
function failure(cause: unknown, signal: AbortSignal | undefined, message: string): unknown {
  if (signal?.aborted) return abortReason(signal);
  if (isAbortError(cause)) return cause;
  return new ChatStreamError("network", message, { cause, retryable: true });
}

/** Send the request and check the response: the event stream's body, or `null` for a resume's 204. */
async function openBody(request: OpenRequest, info: MutableStreamInfo): Promise<ReadableStream<Uint8Array> | null> {
  const { signal } = request;
  signal?.throwIfAborted();
  let response: Response;
  try {
    response = await (request.fetch ?? defaultFetch)(request.url, { ...request.init, signal, cache: "no-store" });
  } catch (cause) {
    throw failure(cause, signal, "Could not reach the server. Check your connection and try again.");
  }

  info.runId = response.headers.get("X-Run-Id") ?? info.runId;
  info.conversationId = response.headers.get("X-Conversation-Id") ?? info.conversationId;

  if (!response.ok) throw await errorFromResponse(response);
  request.onOpen?.();
  if (response.status === 204 && request.allowNoContent) return null;

  const contentType = response.headers.get("Content-Type");
  if (contentType !== null && !contentType.toLowerCase().includes("text/event-stream")) {
    void response.body?.cancel().catch(() => {});
    throw new ChatStreamError("protocol", `Expected an event stream but the server sent ${contentType}.`, {
      status: response.status,
    });
  }
  if (response.body === null) {
    throw new ChatStreamError("protocol", "The server sent an empty response.", { status: response.status });
  }
  return response.body;
}

function createStream(request: OpenRequest, info: MutableStreamInfo): ChatStream {
  const iterate = async function* (): AsyncGenerator<ChatEvent, void, undefined> {
    const body = await openBody(request, info);
    if (body !== null) yield* readChatEvents(body, info, request.signal);
  };
  return toChatStream(iterate(), info);
}

/** POST a message and stream the answer. */
export function streamChat(options: StreamChatOptions): ChatStream {
  const headers = new Headers(options.headers);
  headers.set("Content-Type", "application/json");
  headers.set("Accept", "text/event-stream");
  return createStream(
    {
      url: options.url,
      init: { method: "POST", headers, body: JSON.stringify(options.body) },
      signal: options.signal,
      fetch: options.fetch,
      allowNoContent: false,
      onOpen: options.onOpen,
    },
    emptyInfo(),
  );
}

/** The resume URL of a run: `${base}/${runId}/stream`. */
export function runStreamUrl(runId: string, base = "/api/runs"): string {
  return `${base.replace(/\/+$/, "")}/${encodeURIComponent(runId)}/stream`;
}

/**
 * Pick up a run's stream after a dropped connection: GET the run's stream
 * with `Last-Event-ID`, receiving only the events after it. Yields the
 * same events as `streamChat`; yields nothing if the run had already sent
 * everything (HTTP 204). Whether a run survives its connection is the
 * server's `on_disconnect` policy.
 */
export function resumeChat(options: ResumeChatOptions): ChatStream {
  const headers = new Headers(options.headers);
  headers.set("Accept", "text/event-stream");
  if (options.lastEventId !== undefined) headers.set("Last-Event-ID", options.lastEventId);
  const info = emptyInfo();
  info.lastEventId = options.lastEventId;
  return createStream(
    {
      url: options.url,
      init: { method: "GET", headers },
      signal: options.signal,
      fetch: options.fetch,
      allowNoContent: true,
      onOpen: options.onOpen,
    },
    info,
  );
}

/**
 * A decoder of one response body: each chunk read in, its chat events out.
 * Each event's id (and what a done frame says) is noted in `info` as the
 * event is handed on, not when its chunk arrives, so `lastEventId` never
 * names an event the consumer has not had: a resume from it skips nothing.
 */
function eventDecoder(info: MutableStreamInfo): (chunk: ReadableStreamReadResult<Uint8Array>) => Generator<ChatEvent> {
  // ignoreBOM: the parser strips the one BOM the SSE spec allows.
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  // Events parsed from the current chunk; one network chunk often holds
  // several frames, and they are yielded after the chunk is parsed.
  let queue: EventSourceMessage[] = [];
  const parser = createParser({
    onEvent: (message) => queue.push(message),
    onRetry: (retryMs) => {
      info.retryMs = retryMs;
    },
  });
  return function* (chunk) {
    parser.feed(chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true }));
    const messages = queue;
    queue = [];
    for (const message of messages) {
      const event = toChatEvent(message);
      if (message.id !== "") info.lastEventId = message.id;
      if (event === null) continue;
      if (event.type === "done") noteDone(info, event);
      yield event;
    }
  };
}

/** The next chunk, a failed read turned into the error the stream throws. */
async function readChunk(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  signal: AbortSignal | undefined,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  try {
    return await reader.read();
  } catch (cause) {
    throw failure(cause, signal, "The connection was interrupted before the answer finished.");
  }
}

/**
 * Read an SSE body and yield chat events until the `done` frame.
 * Exported for tests and for callers that obtain the body some other way.
 */
export async function* readChatEvents(
  body: ReadableStream<Uint8Array>,
  info: MutableStreamInfo = emptyInfo(),
  signal?: AbortSignal,
): AsyncGenerator<ChatEvent, void, undefined> {
  const reader = body.getReader();
  const decode = eventDecoder(info);
  // Cancel the body as soon as the signal fires, even if the fetch
  // implementation ignores the signal: a pending read() then settles and the
  // connection is released instead of leaking until the server gives up.
  const onAbort = () => {
    void reader.cancel(signal?.reason).catch(() => {});
  };
  signal?.addEventListener("abort", onAbort, { once: true });

  let finished = false;
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await readChunk(reader, signal);
      } catch (error) {
        finished = true; // the body failed: there is nothing left to cancel
        throw error;
      }
      if (signal?.aborted) throw abortReason(signal);
      if (chunk.done) finished = true;
      for (const event of decode(chunk)) {
        yield event;
        if (event.type === "done") return;
      }
      if (chunk.done) throw cutOffError();
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // Leaving early (done frame, consumer `break`, error): close the
    // connection so the server stops the run and frees its resources.
    if (!finished) void reader.cancel().catch(() => {});
    try {
      reader.releaseLock();
    } catch {
      // Already released or still locked by a pending read in some engines.
    }
  }
}
