import { describe, expect, it } from "vitest";
import { chatStreamUrl, streamChatEventSource, type EventSourceLike } from "../src/eventSource";
import type { ChatEvent } from "../src/protocol";

/** A scriptable stand-in for the browser's EventSource. */
class FakeEventSource implements EventSourceLike {
  static instances: FakeEventSource[] = [];
  readyState = 0;
  onmessage: ((event: MessageEvent<string>) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  closed = false;

  static onCreate: (() => void) | undefined;

  constructor(
    readonly url: string,
    readonly init?: EventSourceInit,
  ) {
    FakeEventSource.instances.push(this);
    FakeEventSource.onCreate?.();
  }

  emit(data: unknown, lastEventId = ""): void {
    this.readyState = 1;
    this.onmessage?.({ data: JSON.stringify(data), lastEventId } as MessageEvent<string>);
  }

  fail(readyState: number): void {
    this.readyState = readyState;
    this.onerror?.(new Event("error"));
  }

  close(): void {
    this.closed = true;
    this.readyState = 2;
  }
}

function latest(): FakeEventSource {
  const instance = FakeEventSource.instances[FakeEventSource.instances.length - 1];
  if (instance === undefined) throw new Error("no EventSource was created");
  return instance;
}

/** The EventSource the stream opens once iterated: resolves when there is one more than `before`. */
function opened(before: number): Promise<FakeEventSource> {
  return new Promise((resolve) => {
    const check = () => {
      const source = FakeEventSource.instances[before];
      if (source === undefined) return;
      FakeEventSource.onCreate = undefined;
      resolve(source);
    };
    FakeEventSource.onCreate = check;
    check();
  });
}

describe("chatStreamUrl", () => {
  it("puts the request in the query string", () => {
    const url = new URL(
      chatStreamUrl("http://localhost:1/api/chat/stream", { message: "a b&c", userId: "u", conversationId: "c" }),
    );
    expect(url.pathname).toBe("/api/chat/stream");
    expect(url.searchParams.get("message")).toBe("a b&c");
    expect(url.searchParams.get("user_id")).toBe("u");
    expect(url.searchParams.get("conversation_id")).toBe("c");
  });
});

describe("streamChatEventSource", () => {
  it("yields typed events and closes the EventSource at the done frame", async () => {
    const before = FakeEventSource.instances.length;
    const stream = streamChatEventSource({
      url: "http://localhost:1/api/chat/stream",
      message: "hi",
      EventSource: FakeEventSource,
    });
    const events: ChatEvent[] = [];
    const done = (async () => {
      for await (const event of stream) events.push(event);
    })();
    const source = await opened(before);
    expect(new URL(source.url).searchParams.get("message")).toBe("hi");
    source.emit({ delta: "Hel" }, "1");
    source.emit({ delta: "lo" }, "2");
    source.emit({ done: true, finish_reason: "stop", run_id: "r", conversation_id: "c" }, "3");
    await done;
    expect(events.map((event) => event.type)).toEqual(["delta", "delta", "done"]);
    expect(source.closed).toBe(true);
    expect(stream.lastEventId).toBe("3");
    expect(stream.conversationId).toBe("c");
    expect(stream.runId).toBe("r");
  });

  it("does not let EventSource reconnect (and re-ask) when the connection drops", async () => {
    const before = FakeEventSource.instances.length;
    const stream = streamChatEventSource({ url: "http://localhost:1/s", message: "hi", EventSource: FakeEventSource });
    const iterator = stream[Symbol.asyncIterator]();
    const first = iterator.next();
    const source = await opened(before);
    source.emit({ delta: "a" }, "1");
    expect(await first).toEqual({ done: false, value: { type: "delta", id: "1", text: "a" } });
    source.fail(0); // CONNECTING: the browser would reconnect
    await expect(iterator.next()).rejects.toMatchObject({ kind: "incomplete" });
    expect(source.closed).toBe(true);
  });

  it("reports a refused request", async () => {
    const before = FakeEventSource.instances.length;
    const stream = streamChatEventSource({ url: "http://localhost:1/s", message: "", EventSource: FakeEventSource });
    const iterator = stream[Symbol.asyncIterator]();
    const next = iterator.next();
    (await opened(before)).fail(2);
    await expect(next).rejects.toMatchObject({ kind: "http" });
  });

  it("aborting closes the EventSource and rejects with AbortError", async () => {
    const before = FakeEventSource.instances.length;
    const controller = new AbortController();
    const stream = streamChatEventSource({
      url: "http://localhost:1/s",
      message: "hi",
      signal: controller.signal,
      EventSource: FakeEventSource,
    });
    const iterator = stream[Symbol.asyncIterator]();
    const next = iterator.next();
    await opened(before);
    controller.abort();
    await expect(next).rejects.toMatchObject({ name: "AbortError" });
    expect(latest().closed).toBe(true);
  });
});
