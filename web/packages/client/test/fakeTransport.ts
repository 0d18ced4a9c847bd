/**
 * A scripted `ChatTransport` for driving the chat store without HTTP: each
 * `send` and `reconnect` returns a stream the test feeds event by event, and
 * every call is recorded, with promises for "the store has made this call"
 * and "the store has taken everything fed so far".
 */
import type { ChatStream } from "../src/chatStream";
import type { ChatDoneEvent, ChatEvent } from "../src/protocol";
import type { ChatCancelRequest, ChatReconnectRequest, ChatSendRequest, ChatTransport } from "../src/transport";

/** Calls in order, and a promise for the nth. */
export class Calls<T> {
  readonly list: T[] = [];
  private waiters: { count: number; resolve: (item: T) => void }[] = [];

  record(item: T): void {
    this.list.push(item);
    const ready = this.waiters.filter((waiter) => waiter.count <= this.list.length);
    this.waiters = this.waiters.filter((waiter) => waiter.count > this.list.length);
    for (const waiter of ready) waiter.resolve(this.list[waiter.count - 1] as T);
  }

  /** Resolves with call number `count` (1-based) once it has been made. */
  nth(count: number): Promise<T> {
    const made = this.list[count - 1];
    if (made !== undefined) return Promise.resolve(made);
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }
}

type Item = { event: ChatEvent } | { error: unknown } | { end: true };

/** A `ChatStream` the test feeds; `runId` and `conversationId` play the response headers. */
export class FakeStream implements ChatStream {
  lastEventId: string | undefined;
  retryMs: number | undefined;
  /** Set when the consumer stopped reading (it left its loop or its signal aborted). */
  closed = false;
  private readonly items: Item[] = [];
  private wake: (() => void) | undefined;
  private waiting = false;
  private onWaiting: (() => void)[] = [];

  constructor(
    public runId: string | undefined,
    public conversationId: string | undefined,
    signal: AbortSignal,
  ) {
    signal.addEventListener("abort", () => this.fail(new DOMException("The operation was aborted.", "AbortError")), {
      once: true,
    });
  }

  push(...events: ChatEvent[]): void {
    for (const event of events) this.add({ event });
  }

  /** The connection drops: the consumer's next read throws `error`. */
  fail(error: unknown): void {
    this.add({ error });
  }

  /** The stream ends quietly, with or without a done frame. */
  end(): void {
    this.add({ end: true });
  }

  /** Resolves once the consumer has taken every item fed so far and waits for the next. */
  drained(): Promise<void> {
    if (this.waiting) return Promise.resolve();
    return new Promise((resolve) => this.onWaiting.push(resolve));
  }

  [Symbol.asyncIterator](): AsyncIterator<ChatEvent> {
    return this.iterate();
  }

  private add(item: Item): void {
    this.waiting = false;
    this.items.push(item);
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private async *iterate(): AsyncGenerator<ChatEvent, void, undefined> {
    try {
      for (;;) {
        const item = this.items.shift();
        if (item === undefined) {
          this.waiting = true;
          for (const resolve of this.onWaiting.splice(0)) resolve();
          await new Promise<void>((resolve) => {
            this.wake = resolve;
          });
          continue;
        }
        if ("end" in item) return;
        if ("error" in item) throw item.error;
        if (item.event.id !== "") this.lastEventId = item.event.id;
        yield item.event;
      }
    } finally {
      this.closed = true;
    }
  }
}

export interface FakeTransport {
  transport: ChatTransport;
  sends: Calls<{ request: ChatSendRequest; stream: FakeStream }>;
  reconnects: Calls<{ request: ChatReconnectRequest; stream: FakeStream }>;
  cancels: Calls<ChatCancelRequest>;
}

/** `cancel` resolves unless `options.cancel` says how it fails. */
export function fakeTransport(options: { cancel?: (request: ChatCancelRequest) => Promise<void> } = {}): FakeTransport {
  const sends: FakeTransport["sends"] = new Calls();
  const reconnects: FakeTransport["reconnects"] = new Calls();
  const cancels = new Calls<ChatCancelRequest>();
  const transport: ChatTransport = {
    send(request) {
      const stream = new FakeStream(`run-${sends.list.length + 1}`, "conv-t", request.signal);
      sends.record({ request, stream });
      return stream;
    },
    reconnect(request) {
      // A resumed run's response names the run but not the conversation.
      const stream = new FakeStream(request.runId, undefined, request.signal);
      reconnects.record({ request, stream });
      return stream;
    },
    cancel(request) {
      cancels.record(request);
      return options.cancel?.(request) ?? Promise.resolve();
    },
  };
  return { transport, sends, reconnects, cancels };
}

export function delta(id: number, text: string): ChatEvent {
  return { type: "delta", id: String(id), text };
}

export function done(id: number, extra: Partial<ChatDoneEvent> = {}): ChatEvent {
  return {
    type: "done",
    id: String(id),
    finishReason: "stop",
    runId: "run-1",
    conversationId: "conv-t",
    usage: undefined,
    ...extra,
  };
}
