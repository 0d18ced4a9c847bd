import { describe, expect, it } from "vitest";
import { createChatStore, type ChatStoreOptions } from "../src/chatStore";
import {
  controlledBody,
  deltaFrame,
  doneFrame,
  fakeFetch,
  jsonResponse,
  manualScheduler,
  seedStream,
  sseResponse,
  wire,
  type ControlledBody,
} from "./helpers";

function setup(respond: Parameters<typeof fakeFetch>[0], options: Partial<ChatStoreOptions> = {}) {
  const scheduler = manualScheduler();
  const { fetch, calls } = fakeFetch(respond);
  const store = createChatStore({ api: "/api/chat/stream", fetch, scheduleFlush: scheduler.schedule, ...options });
  let notifications = 0;
  store.subscribe(() => {
    notifications += 1;
  });
  return {
    store,
    calls,
    scheduler,
    get notifications() {
      return notifications;
    },
  };
}

/** A fetch whose every response body is controlled by the test. */
function controlledFetch(options: Partial<ChatStoreOptions> = {}) {
  const bodies: ControlledBody[] = [];
  const context = setup(({ signal }) => {
    const body = wire(controlledBody(), signal);
    bodies.push(body);
    return sseResponse(body.stream, { headers: { "x-run-id": `run-${bodies.length}`, "x-conversation-id": "conv-h" } });
  }, options);
  return Object.assign(context, { bodies });
}

describe("createChatStore", () => {
  it("streams an answer: user message, assistant message, statuses, conversation id", async () => {
    const { store, calls } = setup(() => sseResponse(seedStream(["Hello", ", ", "world"])), { userId: "u1" });
    expect(store.getState()).toMatchObject({ messages: [], status: "idle", error: null });
    await store.sendMessage("Hi there");
    const state = store.getState();
    expect(state.status).toBe("idle");
    expect(state.conversationId).toBe("conv-1");
    expect(state.messages.map(({ role, content, status }) => ({ role, content, status }))).toEqual([
      { role: "user", content: "Hi there", status: "done" },
      { role: "assistant", content: "Hello, world", status: "done" },
    ]);
    expect(state.messages[1]).toMatchObject({ finishReason: "stop", runId: "run-1" });
    expect(calls[0]!.body).toEqual({ message: "Hi there", user_id: "u1" });
  });

  it("gives every message a unique id", async () => {
    const { store } = setup(() => sseResponse(seedStream(["a"])));
    for (let index = 0; index < 20; index += 1) await store.sendMessage(`m${index}`);
    const ids = store.getState().messages.map((message) => message.id);
    expect(ids).toHaveLength(40);
    expect(new Set(ids).size).toBe(40);
  });

  it("sends the conversation id with follow-ups", async () => {
    const { store, calls } = setup((_, index) => sseResponse(seedStream([`answer ${index}`], { conversation_id: "conv-A" })));
    await store.sendMessage("first");
    await store.sendMessage("second");
    expect(calls[0]!.body.conversation_id).toBeUndefined();
    expect(calls[1]!.body.conversation_id).toBe("conv-A");
    expect(store.getState().messages).toHaveLength(4);
  });

  it("batches deltas: one state update per scheduled flush, not per token", async () => {
    const context = controlledFetch();
    const { store, bodies, scheduler } = context;
    const sent = store.sendMessage("go");
    const body = bodies[0]!;
    await body.drained();
    body.push(deltaFrame(1, "first "));
    await body.drained();
    // The first token is shown at once (status becomes "streaming").
    expect(store.getState().status).toBe("streaming");
    const before = context.notifications;

    let frames = "";
    for (let index = 2; index <= 1001; index += 1) frames += deltaFrame(index, "x");
    // Many frames spread over many network chunks.
    for (let offset = 0; offset < frames.length; offset += 997) body.push(frames.slice(offset, offset + 997));
    await body.drained(); // every chunk read
    expect(context.notifications).toBe(before); // nothing rendered yet: waiting for the frame
    expect(scheduler.size).toBe(1);
    scheduler.flush();
    expect(context.notifications).toBe(before + 1);
    expect(store.getState().messages[1]!.content).toBe(`first ${"x".repeat(1000)}`);

    body.push(deltaFrame(1002, "y") + doneFrame(1003));
    await sent;
    // The done frame flushes pending text immediately, together with the status change.
    expect(store.getState().messages[1]).toMatchObject({ content: `first ${"x".repeat(1000)}y`, status: "done" });
    expect(scheduler.size).toBe(0);
  });

  it("keeps finished messages' identity while another streams", async () => {
    const { store, bodies, scheduler } = controlledFetch();
    const first = store.sendMessage("one");
    bodies[0]!.push(seedStream(["done answer"]));
    await first;
    const [user, answer] = store.getState().messages;

    void store.sendMessage("two");
    bodies[1]!.push(deltaFrame(1, "a"));
    await bodies[1]!.drained();
    bodies[1]!.push(deltaFrame(2, "b"));
    await bodies[1]!.drained();
    scheduler.flush();
    const messages = store.getState().messages;
    expect(messages[0]).toBe(user);
    expect(messages[1]).toBe(answer);
    expect(messages[3]!.content).toBe("ab");
    store.stop();
  });

  it("stop() aborts the request, keeps the partial answer and marks it cancelled", async () => {
    const { store, bodies, calls } = controlledFetch();
    const sent = store.sendMessage("long one");
    bodies[0]!.push(deltaFrame(1, "partial ") + deltaFrame(2, "answer"));
    await bodies[0]!.drained();
    expect(store.getState().status).toBe("streaming");
    store.stop();
    expect(calls[0]!.signal.aborted).toBe(true);
    expect(store.getState().status).toBe("idle");
    expect(store.getState().error).toBeNull();
    expect(store.getState().messages[1]).toMatchObject({ content: "partial answer", status: "cancelled" });
    await sent;
    // Later chunks (had the server kept sending) change nothing.
    expect(store.getState().messages[1]).toMatchObject({ content: "partial answer", status: "cancelled" });
    expect(store.getState().conversationId).toBe("conv-h");
  });

  it("stop() also POSTs to cancelUrl when given, for servers that keep runs after a disconnect", async () => {
    const { store, bodies, calls } = controlledFetch({
      cancelUrl: (runId) => `/api/runs/${runId}/cancel`,
      userId: "alice",
    });
    void store.sendMessage("q");
    bodies[0]!.push(deltaFrame(1, "a"));
    await bodies[0]!.drained();
    store.stop();
    expect(calls[0]!.signal.aborted).toBe(true);
    expect(calls).toHaveLength(2);
    expect(calls[1]!.method).toBe("POST");
    const url = new URL(calls[1]!.url);
    expect(url.pathname).toBe("/api/runs/run-1/cancel");
    expect(url.searchParams.get("user_id")).toBe("alice");
  });

  it("stop() before the first token removes the empty answer", async () => {
    const { store, calls, bodies } = controlledFetch();
    void store.sendMessage("hi");
    await bodies[0]!.drained(); // the store is reading the answer
    store.stop();
    expect(calls[0]!.signal.aborted).toBe(true);
    expect(store.getState().messages.map((message) => message.role)).toEqual(["user"]);
  });

  it("ignores a send while an answer is in progress, and blank messages", async () => {
    const { store, calls, bodies } = controlledFetch();
    const first = store.sendMessage("one");
    await bodies[0]!.drained();
    await store.sendMessage("two");
    await store.sendMessage("   ");
    expect(calls).toHaveLength(1);
    bodies[0]!.push(seedStream(["ok"]));
    await first;
    expect(store.getState().messages.map((message) => message.content)).toEqual(["one", "ok"]);
  });

  it("shows the server's message on an HTTP error, gives the message back, and retry() sends it again", async () => {
    let attempt = 0;
    const { store, calls } = setup(() => {
      attempt += 1;
      return attempt === 1
        ? jsonResponse(503, { error: { code: "overloaded", message: "The server is busy, try again." } })
        : sseResponse(seedStream(["recovered"]));
    });
    await store.sendMessage("hello");
    expect(store.getState().status).toBe("error");
    expect(store.getState().error).toMatchObject({ kind: "http", status: 503, message: "The server is busy, try again.", retryable: true });
    // Refused: the message leaves the conversation and comes back as `unsent`, for the composer.
    expect(store.getState().messages).toEqual([]);
    expect(store.getState().error?.unsent).toBe("hello");

    await store.retry();
    expect(calls).toHaveLength(2);
    expect(calls[1]!.body.message).toBe("hello");
    expect(calls[1]!.body.regenerate).toBeUndefined();
    expect(store.getState().status).toBe("idle");
    expect(store.getState().error).toBeNull();
    expect(store.getState().messages.map(({ role, content }) => `${role}:${content}`)).toEqual(["user:hello", "assistant:recovered"]);
  });

  it("a backend error frame keeps the partial answer; retry() replaces it", async () => {
    let attempt = 0;
    const errors: string[] = [];
    const { store } = setup(
      () => {
        attempt += 1;
        if (attempt > 1) return sseResponse(seedStream(["second try"]));
        return sseResponse(
          deltaFrame(1, "half an ans") +
            `id: 2\ndata: ${JSON.stringify({ error: { code: "backend_error", message: "The model crashed.", retryable: false } })}\n\n` +
            doneFrame(3, { finish_reason: "error" }),
        );
      },
      { onError: (error) => errors.push(error.message) },
    );
    await store.sendMessage("q");
    expect(store.getState()).toMatchObject({ status: "error", error: { kind: "backend", code: "backend_error", message: "The model crashed." } });
    expect(store.getState().messages[1]).toMatchObject({ content: "half an ans", status: "error" });
    expect(errors).toEqual(["The model crashed."]);
    // The conversation continues server-side; keep its id.
    expect(store.getState().conversationId).toBe("conv-1");

    await store.retry();
    expect(store.getState().messages.map(({ role, content, status }) => `${role}:${content}:${status}`)).toEqual([
      "user:q:done",
      "assistant:second try:done",
    ]);
  });

  it("a stream cut off without its done frame is an error", async () => {
    const { store } = setup(() => sseResponse(deltaFrame(1, "cut")));
    await store.sendMessage("q");
    expect(store.getState()).toMatchObject({ status: "error", error: { kind: "incomplete" } });
    expect(store.getState().messages[1]).toMatchObject({ content: "cut", status: "error" });
  });

  it("regenerate() drops the last answer and asks again", async () => {
    const { store, calls } = setup((_, index) => sseResponse(seedStream([`answer ${index}`])));
    await store.sendMessage("q1");
    await store.sendMessage("q2");
    await store.regenerate();
    expect(calls.map((call) => call.body.message)).toEqual(["q1", "q2", "q2"]);
    // Only the repeat says so: the server then neither stores q2 twice nor keeps answer 1 in the model's context.
    expect(calls.map((call) => call.body.regenerate)).toEqual([undefined, undefined, true]);
    expect(store.getState().messages.map((message) => message.content)).toEqual(["q1", "answer 0", "q2", "answer 2"]);
  });

  it("reset() aborts and starts a new conversation", async () => {
    const { store, calls, bodies } = controlledFetch();
    await (async () => {
      const sent = store.sendMessage("a");
      bodies[0]!.push(seedStream(["b"]));
      await sent;
    })();
    void store.sendMessage("c");
    await bodies[1]!.drained();
    store.reset();
    expect(calls[1]!.signal.aborted).toBe(true);
    expect(store.getState()).toEqual({ messages: [], status: "idle", error: null, conversationId: undefined });
  });

  it("calls onFinish with the finished message and details", async () => {
    const finished: unknown[] = [];
    const { store } = setup(() => sseResponse(seedStream(["x"], { finish_reason: "length" })), {
      onFinish: (message, details) => finished.push({ content: message.content, ...details }),
    });
    await store.sendMessage("q");
    expect(finished).toEqual([{ content: "x", finishReason: "length", runId: "run-1", conversationId: "conv-1", usage: undefined }]);
  });
});
