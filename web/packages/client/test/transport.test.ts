import { describe, expect, it, onTestFinished, vi } from "vitest";
import { createChatStore, type ChatStoreOptions } from "../src/chatStore";
import { ChatStreamError } from "../src/errors";
import { createHttpTransport } from "../src/transport";
import { delta, done, fakeTransport } from "./fakeTransport";
import { controlledBody, deltaFrame, doneFrame, fakeFetch, jsonResponse, manualScheduler, sseResponse, wire } from "./helpers";

function dropped(): ChatStreamError {
  return new ChatStreamError("network", "The connection was interrupted before the answer finished.", { retryable: true });
}

function setup(options: Partial<ChatStoreOptions> = {}, cancel?: Parameters<typeof fakeTransport>[0]) {
  const fake = fakeTransport(cancel);
  const scheduler = manualScheduler();
  const store = createChatStore({ api: "/unused", transport: fake.transport, scheduleFlush: scheduler.schedule, ...options });
  const answer = () => store.getState().messages.filter((message) => message.role === "assistant").at(-1);
  return { ...fake, store, scheduler, answer };
}

describe("the chat store on a transport", () => {
  it("send: the request goes to the transport and the answer comes from its stream", async () => {
    const { store, sends, answer } = setup({ userId: "u1", body: { model: "m" } });
    const sent = store.sendMessage("Hi");
    const { request, stream } = await sends.nth(1);
    expect(request.body).toEqual({ model: "m", message: "Hi", user_id: "u1" });
    expect(request.signal.aborted).toBe(false);
    expect(store.getState().status).toBe("submitted");

    stream.push(delta(1, "Hel"));
    await stream.drained();
    expect(store.getState().status).toBe("streaming");
    stream.push(delta(2, "lo"), done(3));
    await sent;
    expect(answer()).toMatchObject({ content: "Hello", status: "done", runId: "run-1", finishReason: "stop" });
    expect(store.getState()).toMatchObject({ status: "idle", error: null, conversationId: "conv-t" });
    expect(stream.closed).toBe(true);
  });

  it("send: follow-ups carry the conversation id, retry and regenerate say `regenerate`", async () => {
    const { store, sends } = setup();
    const first = store.sendMessage("one");
    (await sends.nth(1)).stream.push(done(1));
    await first;
    const second = store.sendMessage("two");
    (await sends.nth(2)).stream.fail(new ChatStreamError("http", "busy", { status: 503, retryable: true }));
    await second;
    expect(store.getState().status).toBe("error");
    // Refused before it was answered: the question is sent again as it was, not as a regenerate.
    expect(store.getState().error).toMatchObject({ status: 503, unsent: "two" });
    const retried = store.retry();
    (await sends.nth(3)).stream.push(done(1));
    await retried;
    const regenerated = store.regenerate();
    (await sends.nth(4)).stream.push(done(1));
    await regenerated;
    expect(sends.list.map(({ request }) => request.body)).toEqual([
      { message: "one" },
      { message: "two", conversation_id: "conv-t" },
      { message: "two", conversation_id: "conv-t" },
      { message: "two", conversation_id: "conv-t", regenerate: true },
    ]);
  });

  it("reconnect: after a drop the answer continues from the last event received", async () => {
    const { store, sends, reconnects, answer, scheduler } = setup({ userId: "alice", reconnect: { attempts: 2, delayMs: 0 } });
    const sent = store.sendMessage("long");
    const first = (await sends.nth(1)).stream;
    first.push(delta(1, "Hello"), delta(2, ", "));
    first.fail(dropped());

    const { request, stream } = await reconnects.nth(1);
    expect(request).toMatchObject({ runId: "run-1", lastEventId: "2", userId: "alice" });
    expect(request.signal).toBe(sends.list[0]!.request.signal);
    // The drop is not shown: the answer is still streaming, the text so far kept.
    expect(store.getState()).toMatchObject({ status: "streaming", error: null });
    stream.push(delta(3, "world"), done(4));
    await sent;
    expect(answer()).toMatchObject({ content: "Hello, world", status: "done", runId: "run-1" });
    // The resumed response did not name the conversation: the first one's id is kept.
    expect(store.getState()).toMatchObject({ status: "idle", conversationId: "conv-t" });
    expect(store.getState().messages).toHaveLength(2);
    expect(scheduler.size).toBe(0);
  });

  it("reconnect: an error frame before the drop still ends the answer in error when its done frame arrives", async () => {
    const { store, sends, reconnects } = setup({ reconnect: { attempts: 1, delayMs: 0 } });
    const sent = store.sendMessage("q");
    const first = (await sends.nth(1)).stream;
    first.push(delta(1, "half"), { type: "error", id: "2", code: "backend_error", message: "The model crashed.", retryable: false });
    first.fail(dropped());
    (await reconnects.nth(1)).stream.push(done(3, { finishReason: "error" }));
    await sent;
    expect(store.getState()).toMatchObject({ status: "error", error: { kind: "backend", message: "The model crashed." } });
  });

  it("reconnect: gives up after `attempts` failures in a row; an event received resets the count", async () => {
    const errors: string[] = [];
    const { store, sends, reconnects, answer } = setup({
      reconnect: { attempts: 2, delayMs: 0 },
      onError: (error) => errors.push(error.kind),
    });
    const sent = store.sendMessage("q");
    (await sends.nth(1)).stream.push(delta(1, "a"));
    sends.list[0]!.stream.fail(dropped());
    (await reconnects.nth(1)).stream.fail(dropped()); // failure 1 without progress
    const third = (await reconnects.nth(2)).stream;
    third.push(delta(2, "b")); // progress: the count starts again
    third.fail(dropped());
    (await reconnects.nth(3)).stream.fail(dropped());
    (await reconnects.nth(4)).stream.end(); // ended without done: a drop too
    await sent;
    expect(reconnects.list.map(({ request }) => request.lastEventId)).toEqual(["1", "1", "2", "2"]);
    expect(store.getState()).toMatchObject({ status: "error", error: { kind: "incomplete" } });
    expect(answer()).toMatchObject({ content: "ab", status: "error" });
    expect(errors).toEqual(["incomplete"]);
  });

  it("reconnect: on by default, six tries with backoff", async () => {
    const { store, sends, reconnects, answer } = setup();
    const sent = store.sendMessage("q");
    const first = (await sends.nth(1)).stream;
    first.push(delta(1, "half "));
    first.fail(dropped());
    (await reconnects.nth(1)).stream.push(delta(2, "whole"), done(3));
    await sent;
    expect(reconnects.list[0]!.request).toMatchObject({ runId: "run-1", lastEventId: "1" });
    expect(answer()).toMatchObject({ content: "half whole", status: "done" });
    expect(store.getState()).toMatchObject({ status: "idle", error: null });
  });

  it("reconnect: `false` turns it off, so a drop is the answer's error", async () => {
    const { store, sends, reconnects, answer } = setup({ reconnect: false });
    const sent = store.sendMessage("q");
    const stream = (await sends.nth(1)).stream;
    stream.push(delta(1, "cut"));
    stream.fail(dropped());
    await sent;
    expect(reconnects.list).toHaveLength(0);
    expect(store.getState()).toMatchObject({ status: "error", error: { kind: "network", retryable: true } });
    expect(answer()).toMatchObject({ content: "cut", status: "error" });
  });

  it("reconnect: never for a request the server refused, nor before the run is known", async () => {
    const { store, sends, reconnects } = setup({ reconnect: { attempts: 3, delayMs: 0 } });
    const refused = store.sendMessage("q");
    (await sends.nth(1)).stream.fail(new ChatStreamError("http", "The server is busy.", { status: 503, retryable: true }));
    await refused;
    expect(store.getState().error).toMatchObject({ kind: "http", status: 503 });

    const retried = store.retry();
    const unreachable = (await sends.nth(2)).stream;
    unreachable.runId = undefined; // no response at all, so no X-Run-Id
    unreachable.fail(new ChatStreamError("network", "Could not reach the server.", { retryable: true }));
    await retried;
    expect(store.getState().error).toMatchObject({ kind: "network" });
    expect(reconnects.list).toHaveLength(0);
  });

  it("reconnect: stop() while waiting to reconnect sends no reconnection", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    onTestFinished(() => {
      vi.useRealTimers();
    });
    const { store, sends, reconnects, cancels, answer } = setup({ reconnect: { attempts: 3, delayMs: 60_000 } });
    const sent = store.sendMessage("q");
    const stream = (await sends.nth(1)).stream;
    stream.push(delta(1, "partial"));
    stream.fail(dropped());
    await vi.waitFor(() => expect(vi.getTimerCount()).toBe(1)); // the wait before reconnecting
    store.stop();
    await sent;
    expect(vi.getTimerCount()).toBe(0); // stopping ended the wait
    expect(reconnects.list).toHaveLength(0);
    expect(cancels.list).toEqual([{ runId: "run-1", userId: undefined }]);
    expect(answer()).toMatchObject({ content: "partial", status: "cancelled" });
  });

  it("cancel: stop() aborts the request and asks the transport to cancel the run", async () => {
    const { store, sends, cancels, answer } = setup({ userId: "alice" });
    const sent = store.sendMessage("q");
    const { request, stream } = await sends.nth(1);
    stream.push(delta(1, "partial"));
    await stream.drained();
    store.stop();
    expect(request.signal.aborted).toBe(true);
    expect(cancels.list).toEqual([{ runId: "run-1", userId: "alice" }]);
    await sent;
    expect(stream.closed).toBe(true);
    expect(answer()).toMatchObject({ content: "partial", status: "cancelled", runId: "run-1" });
    expect(store.getState()).toMatchObject({ status: "idle", error: null });
  });

  it("cancel: a failing cancel changes nothing, and reset() cancels too", async () => {
    const { store, sends, cancels } = setup({}, { cancel: () => Promise.reject(new Error("offline")) });
    void store.sendMessage("q");
    await (await sends.nth(1)).stream.drained();
    store.stop();
    expect(store.getState().status).toBe("idle");

    const throwing = setup({}, {
      cancel: () => {
        throw new Error("not even a promise");
      },
    });
    void throwing.store.sendMessage("q");
    await (await throwing.sends.nth(1)).stream.drained();
    throwing.store.reset();
    expect(throwing.cancels.list).toHaveLength(1);
    expect(throwing.store.getState()).toEqual({ messages: [], status: "idle", error: null, conversationId: undefined });
    expect(cancels.list).toHaveLength(1);
  });

  it("cancel: not asked for a run the server never named", async () => {
    const { store, sends, cancels } = setup();
    void store.sendMessage("q");
    const { stream } = await sends.nth(1);
    stream.runId = undefined;
    store.stop();
    expect(cancels.list).toHaveLength(0);
  });
});

describe("createHttpTransport", () => {
  it("send POSTs the body to the stream endpoint with the caller's headers", async () => {
    const { fetch, calls } = fakeFetch(() => sseResponse(deltaFrame(1, "a") + doneFrame(2)));
    let token = 0;
    const transport = createHttpTransport({ api: "/api/chat/stream", fetch, headers: () => ({ authorization: `Bearer t${++token}` }) });
    const events = [];
    for await (const event of transport.send({ body: { message: "hi" }, signal: new AbortController().signal })) events.push(event.type);
    expect(events).toEqual(["delta", "done"]);
    expect(calls[0]).toMatchObject({ url: "/api/chat/stream", method: "POST", body: { message: "hi" } });
    expect(calls[0]!.headers.get("authorization")).toBe("Bearer t1");
  });

  it("reconnect GETs the run's stream beside the endpoint, after the last event id, as the user", async () => {
    const { fetch, calls } = fakeFetch(() => sseResponse(doneFrame(5)));
    const transport = createHttpTransport({ api: "http://host/prefix/api/chat/stream", fetch });
    const signal = new AbortController().signal;
    for await (const event of transport.reconnect({ runId: "r/1", lastEventId: "4", userId: "alice", signal })) {
      expect(event.type).toBe("done");
    }
    const url = new URL(calls[0]!.url);
    expect(url.pathname).toBe("/prefix/api/runs/r%2F1/stream");
    expect(url.searchParams.get("user_id")).toBe("alice");
    expect(calls[0]!.method).toBe("GET");
    expect(calls[0]!.headers.get("last-event-id")).toBe("4");

    const custom = createHttpTransport({ api: "/x", fetch, resumeUrl: (runId) => `http://other/${runId}` });
    for await (const _ of custom.reconnect({ runId: "r2", lastEventId: undefined, userId: undefined, signal })) void _;
    expect(calls[1]!.url).toBe("http://other/r2");
    expect(calls[1]!.headers.has("last-event-id")).toBe(false);
  });

  it("cancel POSTs to runs/{id}/cancel beside the endpoint (or cancelUrl) with keepalive", async () => {
    const seen: RequestInit[] = [];
    const { fetch, calls } = fakeFetch(() => jsonResponse(200, { cancelled: true }));
    const recording: typeof fetch = (input, init) => {
      seen.push(init ?? {});
      return fetch(input, init);
    };
    await createHttpTransport({ api: "/prefix/api/chat/stream", fetch: recording }).cancel({ runId: "r 1", userId: "u" });
    await createHttpTransport({ api: "/api/chat/stream", fetch: recording, cancelUrl: (runId) => `/elsewhere/${runId}` }).cancel({
      runId: "r",
      userId: undefined,
    });
    const urls = calls.map((call) => new URL(call.url, "http://localhost/"));
    expect(urls.map((url) => url.pathname)).toEqual(["/prefix/api/runs/r%201/cancel", "/elsewhere/r"]);
    expect(urls.map((url) => url.searchParams.get("user_id"))).toEqual(["u", null]);
    expect(calls.map((call) => call.method)).toEqual(["POST", "POST"]);
    expect(seen.map((init) => init.keepalive)).toEqual([true, true]);
  });

  it("drives the store through a dropped connection: POST, then GET with Last-Event-ID", async () => {
    const first = controlledBody();
    const { fetch, calls } = fakeFetch(({ signal }, index) =>
      index === 0
        ? sseResponse(wire(first, signal).stream, { headers: { "x-run-id": "run-7", "x-conversation-id": "conv-7" } })
        : sseResponse(deltaFrame(3, "world") + doneFrame(4, { run_id: "run-7", conversation_id: "conv-7" })),
    );
    const store = createChatStore({ api: "/api/chat/stream", fetch, reconnect: { attempts: 1, delayMs: 0 } });
    const sent = store.sendMessage("q");
    first.push(deltaFrame(1, "Hello") + deltaFrame(2, ", "));
    await first.drained();
    first.error(new TypeError("network error"));
    await sent;
    expect(calls.map(({ method, url }) => `${method} ${new URL(url, "http://localhost/").pathname}`)).toEqual([
      "POST /api/chat/stream",
      "GET /api/runs/run-7/stream",
    ]);
    expect(calls[1]!.headers.get("last-event-id")).toBe("2");
    expect(store.getState().messages[1]).toMatchObject({ content: "Hello, world", status: "done", runId: "run-7" });
  });
});
