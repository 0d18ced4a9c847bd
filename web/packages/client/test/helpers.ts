/**
 * A fake streaming fetch for tests: responses whose body the test feeds
 * chunk by chunk, with the request's AbortSignal wired like a real fetch
 * (aborting errors the body) unless `ignoreSignal` is set.
 */
import type { FetchLike } from "../src/streamChat";

const encoder = new TextEncoder();

export interface RecordedCall {
  url: string;
  method: string;
  headers: Headers;
  body: Record<string, unknown>;
  signal: AbortSignal;
}

export interface ControlledBody {
  stream: ReadableStream<Uint8Array>;
  push(chunk: string | Uint8Array): void;
  close(): void;
  error(reason: unknown): void;
  /** Resolves once the consumer has read everything pushed so far and is waiting for more. */
  drained(): Promise<void>;
  /** Set when the consumer cancelled the body (closing the connection). */
  readonly cancelled: boolean;
}

export function controlledBody(): ControlledBody {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  let closed = false;
  // A read is pending on an empty queue: with a high-water mark of 0 the
  // stream pulls only then, so a pull is the consumer asking for more.
  let waiting = false;
  let onDrained: (() => void)[] = [];
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      pull() {
        waiting = true;
        const resolve = onDrained;
        onDrained = [];
        for (const callback of resolve) callback();
      },
      cancel() {
        cancelled = true;
        closed = true;
      },
    },
    { highWaterMark: 0 },
  );
  return {
    stream,
    push(chunk) {
      if (closed) return;
      waiting = false;
      controller.enqueue(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
    },
    close() {
      if (closed) return;
      closed = true;
      controller.close();
    },
    error(reason) {
      if (closed) return;
      closed = true;
      controller.error(reason);
    },
    drained() {
      if (waiting) return Promise.resolve();
      return new Promise((resolve) => onDrained.push(resolve));
    },
    get cancelled() {
      return cancelled;
    },
  };
}

export function abortError(): DOMException {
  return new DOMException("The operation was aborted.", "AbortError");
}

export interface FakeFetch {
  fetch: FetchLike;
  calls: RecordedCall[];
}

/**
 * `respond` builds the response for each call. By default the call's
 * signal errors a body created with `controlledBody` through `wire`.
 */
export function fakeFetch(respond: (call: RecordedCall, index: number) => Response | Promise<Response>): FakeFetch {
  const calls: RecordedCall[] = [];
  const fetch: FetchLike = async (input, init = {}) => {
    const signal = init.signal ?? new AbortController().signal;
    const call: RecordedCall = {
      url: String(input),
      method: init.method ?? "GET",
      headers: new Headers(init.headers),
      body: typeof init.body === "string" ? (JSON.parse(init.body) as Record<string, unknown>) : {},
      signal,
    };
    calls.push(call);
    if (signal.aborted) throw abortError();
    return respond(call, calls.length - 1);
  };
  return { fetch, calls };
}

/** Make a body behave like a real fetch body: aborting the request errors it. */
export function wire(body: ControlledBody, signal: AbortSignal): ControlledBody {
  signal.addEventListener("abort", () => body.error(abortError()), { once: true });
  return body;
}

export function sseResponse(body: ReadableStream<Uint8Array> | string, init: { headers?: Record<string, string>; status?: number } = {}): Response {
  return new Response(body, {
    status: init.status ?? 200,
    headers: { "content-type": "text/event-stream; charset=utf-8", ...init.headers },
  });
}

export function jsonResponse(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}

/** Seed-protocol frames for the given deltas followed by the done frame. */
export function seedStream(
  deltas: string[],
  done: { finish_reason?: string; run_id?: string; conversation_id?: string } = {},
): string {
  let id = 0;
  let text = "";
  for (const delta of deltas) {
    id += 1;
    text += `id: ${id}\ndata: ${JSON.stringify({ delta })}\n\n`;
  }
  id += 1;
  text += `id: ${id}\ndata: ${JSON.stringify({ done: true, finish_reason: "stop", run_id: "run-1", conversation_id: "conv-1", ...done })}\n\n`;
  return text;
}

export function doneFrame(id: number, extra: Record<string, unknown> = {}): string {
  return `id: ${id}\ndata: ${JSON.stringify({ done: true, finish_reason: "stop", run_id: "run-1", conversation_id: "conv-1", ...extra })}\n\n`;
}

export function deltaFrame(id: number, delta: string): string {
  return `id: ${id}\ndata: ${JSON.stringify({ delta })}\n\n`;
}

/** A scheduler the test flushes by hand, to observe batching exactly. */
export function manualScheduler() {
  const pending = new Set<() => void>();
  return {
    schedule: (flush: () => void) => {
      pending.add(flush);
      return () => {
        pending.delete(flush);
      };
    },
    get size() {
      return pending.size;
    },
    flush() {
      const callbacks = Array.from(pending);
      pending.clear();
      for (const callback of callbacks) callback();
    },
  };
}
