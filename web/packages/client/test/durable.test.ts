/**
 * The store keeps an answer through what happens to its connection: it
 * cancels on Stop even before the server named the run, picks a lost answer
 * up again on Retry instead of asking twice, follows a run after a reload,
 * leaves a run going when another conversation is opened, and keeps an
 * answer's reasoning, tool calls and queue position.
 */
import { describe, expect, it } from "vitest";
import { createChatStore, type ChatStoreOptions } from "../src/chatStore";
import { ChatStreamError } from "../src/errors";
import type { ChatEvent } from "../src/protocol";
import { delta, done, fakeTransport } from "./fakeTransport";
import { manualScheduler } from "./helpers";

function dropped(): ChatStreamError {
  return new ChatStreamError("network", "The connection was interrupted before the answer finished.", { retryable: true });
}

function setup(options: Partial<ChatStoreOptions> = {}) {
  const fake = fakeTransport();
  const scheduler = manualScheduler();
  const store = createChatStore({ api: "/unused", transport: fake.transport, scheduleFlush: scheduler.schedule, ...options });
  const answer = () => store.getState().messages.filter((message) => message.role === "assistant").at(-1);
  return { ...fake, store, scheduler, answer };
}

describe("Stop", () => {
  it("cancels a run the server has not named yet, as soon as it does, then closes the connection", async () => {
    const { store, sends, cancels } = setup({ userId: "bob" });
    void store.sendMessage("q");
    const { request, stream } = await sends.nth(1);
    stream.runId = undefined; // no response headers yet
    store.stop();
    expect(store.getState()).toMatchObject({ status: "idle", error: null });
    expect(cancels.list).toHaveLength(0);
    expect(request.signal.aborted).toBe(false); // closing now would leave the run going on the server

    stream.runId = "run-late";
    request.onOpen?.();
    expect(cancels.list).toEqual([{ runId: "run-late", userId: "bob" }]);
    expect(request.signal.aborted).toBe(true);
    expect(store.getState().messages.map((message) => message.role)).toEqual(["user"]);
  });

  it("cancels at the first event when the transport does not report the response", async () => {
    const { store, sends, cancels } = setup();
    void store.sendMessage("q");
    const { request, stream } = await sends.nth(1);
    const runId = stream.runId;
    stream.runId = undefined;
    store.stop();
    stream.runId = runId;
    stream.push(delta(1, "late"));
    await expect.poll(() => cancels.list).toEqual([{ runId: "run-1", userId: undefined }]);
    expect(request.signal.aborted).toBe(true);
  });

  it("closes at once when the server answered without naming the run: there is nothing to wait for", async () => {
    const { store, sends, cancels } = setup();
    void store.sendMessage("q");
    const { request, stream } = await sends.nth(1);
    stream.runId = undefined;
    stream.push(delta(1, "a"));
    await stream.drained();
    store.stop();
    expect(request.signal.aborted).toBe(true);
    expect(cancels.list).toHaveLength(0);
  });
});

describe("Retry after the connection was lost for good", () => {
  it("follows the same run again after the last event, into the same answer, and asks nothing twice", async () => {
    const { store, sends, reconnects, answer } = setup({ reconnect: { attempts: 1, delayMs: 0 } });
    const sent = store.sendMessage("q");
    const first = (await sends.nth(1)).stream;
    first.push(delta(1, "Hello"));
    first.fail(dropped());
    (await reconnects.nth(1)).stream.fail(dropped());
    await sent;
    expect(store.getState()).toMatchObject({ status: "error", error: { kind: "network" } });
    const interrupted = answer();
    expect(interrupted).toMatchObject({ content: "Hello", status: "error" });

    const retried = store.retry();
    const again = await reconnects.nth(2);
    expect(again.request).toMatchObject({ runId: "run-1", lastEventId: "1" });
    expect(answer()).toMatchObject({ id: interrupted!.id, status: "streaming" });
    again.stream.push(delta(2, ", world"), done(3));
    await retried;
    expect(sends.list).toHaveLength(1);
    expect(store.getState().messages.map(({ role, content, status }) => `${role}:${content}:${status}`)).toEqual([
      "user:q:done",
      "assistant:Hello, world:done",
    ]);
  });

  it("asks again (as a regenerate) after an answer that failed on the server", async () => {
    const { store, sends } = setup();
    const sent = store.sendMessage("q");
    (await sends.nth(1)).stream.push(
      delta(1, "Hm"),
      { type: "error", id: "2", code: "model_error", message: "it broke", retryable: true },
      done(3, { finishReason: "error" }),
    );
    await sent;
    expect(store.getState().messages.at(-1)).toMatchObject({ status: "error", errorCode: "model_error" });
    void store.retry();
    expect((await sends.nth(2)).request.body).toMatchObject({ message: "q", regenerate: true });
  });
});

describe("conversations", () => {
  it("resume() follows a running run from its start as a new answer; runId is in the state while it runs", async () => {
    const { store, reconnects, answer } = setup();
    store.load("conv-r", [{ id: "u", role: "user", content: "question", status: "done" }]);
    const resumed = store.resume("run-9");
    const { request, stream } = await reconnects.nth(1);
    expect(request).toMatchObject({ runId: "run-9", lastEventId: undefined });
    expect(store.getState()).toMatchObject({ status: "submitted", conversationId: "conv-r", runId: "run-9" });
    stream.push(delta(1, "all of "), delta(2, "it"), done(3, { runId: "run-9", conversationId: "conv-r" }));
    await resumed;
    expect(answer()).toMatchObject({ content: "all of it", status: "done", runId: "run-9" });
    expect(store.getState().runId).toBeUndefined();
  });

  it("load() leaves the answer in progress running on the server: it is not a Stop", async () => {
    const { store, sends, cancels } = setup();
    void store.sendMessage("q");
    const { request, stream } = await sends.nth(1);
    stream.push(delta(1, "a"));
    await stream.drained();
    store.load("other", []);
    expect(request.signal.aborted).toBe(true);
    expect(cancels.list).toHaveLength(0);
    expect(store.getState()).toEqual({ messages: [], status: "idle", error: null, conversationId: "other" });
  });
});

describe("an answer's parts", () => {
  it("keeps reasoning, tool calls with arguments and results, metadata and the queue position", async () => {
    const { store, sends, answer } = setup();
    const sent = store.sendMessage("weather?");
    const { stream } = await sends.nth(1);
    const queued: ChatEvent = { type: "metadata", id: "1", data: { queue_position: 3 } };
    stream.push(queued);
    await stream.drained();
    expect(answer()).toMatchObject({ queuePosition: 3, content: "" });
    expect(answer()!.parts).toBeUndefined();
    stream.push(
      { type: "reasoning", id: "2", text: "Think" },
      { type: "reasoning", id: "3", text: "ing." },
      { type: "tool-call", id: "4", callId: "c1", name: "get_weather" },
      { type: "tool-call-delta", id: "5", callId: "c1", arguments: '{"city":' },
      { type: "tool-call-delta", id: "6", callId: "c1", arguments: '"Paris"}' },
      { type: "tool-result", id: "7", callId: "c1", output: "sunny", isError: false },
      { type: "tool-result", id: "8", callId: "c2", output: "no such tool", isError: true },
      { type: "metadata", id: "9", data: { agent: "Helper" } },
      delta(10, "Sunny"),
      delta(11, "."),
      done(12, { finishReason: "length", saved: false }),
    );
    await sent;
    const final = answer()!;
    expect(final).toMatchObject({ content: "Sunny.", status: "done", finishReason: "length", saved: false });
    expect(final.queuePosition).toBeUndefined();
    expect(final.parts).toEqual([
      { type: "reasoning", text: "Thinking." },
      { type: "tool", callId: "c1", name: "get_weather", arguments: '{"city":"Paris"}', state: "done", output: "sunny" },
      { type: "tool", callId: "c2", name: "tool", arguments: "", state: "error", output: "no such tool" },
      { type: "metadata", data: { agent: "Helper" } },
      { type: "text", text: "Sunny." },
    ]);
  });

  it("turns the text before the first other part into the first part", async () => {
    const { store, sends, answer } = setup();
    const sent = store.sendMessage("q");
    (await sends.nth(1)).stream.push(
      delta(1, "Let me check. "),
      { type: "tool-call", id: "2", callId: "c", name: "look" },
      delta(3, "Done."),
      done(4),
    );
    await sent;
    expect(answer()!.parts).toEqual([
      { type: "text", text: "Let me check. " },
      { type: "tool", callId: "c", name: "look", arguments: "", state: "running" },
      { type: "text", text: "Done." },
    ]);
    expect(answer()!.content).toBe("Let me check. Done.");
  });
});
