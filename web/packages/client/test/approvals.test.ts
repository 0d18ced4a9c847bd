import { describe, expect, it, vi } from "vitest";
import { pendingApprovals } from "../src/approvals";
import type { ChatMessage } from "../src/chatState";
import { createChatStore, type ChatStoreOptions } from "../src/chatStore";
import { loadConversation } from "../src/conversations";
import type { ApprovalPart } from "../src/parts";
import { toChatEvent } from "../src/protocol";
import { controlledBody, doneFrame, fakeFetch, jsonResponse, sseResponse, wire, type ControlledBody, type RecordedCall } from "./helpers";

const frame = (id: number, payload: unknown) => `id: ${id}\ndata: ${JSON.stringify(payload)}\n\n`;

/** The seed frames of a run that pauses at call_1, as the server sends them. */
const PAUSED = [
  frame(1, { delta: "Let me look. " }),
  frame(2, { tool_call: { id: "call_1", name: "get_weather" } }),
  frame(3, { tool_call_delta: { id: "call_1", arguments: '{"city": "Paris"}' } }),
  frame(4, { approval_request: { id: "call_1", name: "get_weather", arguments: '{"city": "Paris"}' } }),
  frame(5, { paused: { expires_at: 1_900_000_000.5 } }),
].join("");

const microtaskFlush: ChatStoreOptions["scheduleFlush"] = (flush) => {
  let live = true;
  queueMicrotask(() => {
    if (live) flush();
  });
  return () => {
    live = false;
  };
};

/** A server: streams the test feeds, and approvals answered by `answer` (200 by default). */
function server(answer: (call: RecordedCall) => Response = () => jsonResponse(200, { status: "resumed" })) {
  const bodies: ControlledBody[] = [];
  const { fetch, calls } = fakeFetch((call) => {
    if (call.url.includes("/approvals")) return answer(call);
    const body = wire(controlledBody(), call.signal);
    bodies.push(body);
    return sseResponse(body.stream, { headers: { "x-run-id": "run-1", "x-conversation-id": "conv-1" } });
  });
  const store = createChatStore({
    api: "/api/chat/stream",
    fetch,
    userId: "u 1",
    headers: () => ({ Authorization: "Bearer tok" }),
    scheduleFlush: microtaskFlush,
    reconnect: { attempts: 2, delayMs: 1 },
  });
  return { store, calls, bodies, approvals: () => calls.filter((call) => call.url.includes("/approvals")) };
}

function approvalOf(messages: readonly ChatMessage[]): ApprovalPart | undefined {
  const part = messages.at(-1)?.parts?.find((p) => p.type === "approval");
  return part?.type === "approval" ? part : undefined;
}

async function pausedRun(context: ReturnType<typeof server>) {
  const sent = context.store.sendMessage("weather?");
  await vi.waitFor(() => expect(context.bodies).toHaveLength(1));
  context.bodies[0]!.push(PAUSED);
  await vi.waitFor(() => expect(approvalOf(context.store.getState().messages)?.expiresAt).toBeDefined());
  // In an object: an async function would wait for a promise it returns.
  return { sent };
}

describe("tool approvals", { timeout: 20_000 }, () => {
  it("parses the request, pause and answer frames; ignores malformed ones", () => {
    const parse = (data: unknown) => toChatEvent({ event: "message", data: JSON.stringify(data), id: "7" });
    expect(parse({ approval_request: { id: "c", name: "rm", arguments: '{"path": "/"}' } })).toEqual({
      type: "approval-request",
      id: "7",
      callId: "c",
      name: "rm",
      arguments: '{"path": "/"}',
    });
    expect(parse({ paused: { expires_at: 12.5 } })).toEqual({ type: "paused", id: "7", expiresAt: 12.5 });
    expect(parse({ approval: { id: "c", approved: false, reason: "no" } })).toEqual({
      type: "approval",
      id: "7",
      callId: "c",
      approved: false,
      reason: "no",
    });
    expect(parse({ approval: { id: "c", approved: true, reason: null } })).toMatchObject({ approved: true, reason: undefined });
    expect(parse({ approval: { id: "c" } })).toBeNull();
    expect(parse({ approval_request: { name: "no id" } })).toBeNull();
  });

  it("shows a pending call, sends Approve with auth and user id, and streams the continuation", async () => {
    const context = server();
    const { store, bodies } = context;
    const { sent } = await pausedRun(context);
    expect(store.getState().status).toBe("streaming");
    expect(approvalOf(store.getState().messages)).toEqual({
      type: "approval",
      callId: "call_1",
      name: "get_weather",
      arguments: '{"city": "Paris"}',
      state: "pending",
      expiresAt: 1_900_000_000.5,
    });
    expect(pendingApprovals(store.getState())).toEqual([
      expect.objectContaining({ runId: "run-1", callId: "call_1", name: "get_weather", expiresAt: 1_900_000_000.5 }),
    ]);

    expect(await store.approve("run-1", "call_1", true)).toBeNull();
    const [call] = context.approvals();
    expect(call!.method).toBe("POST");
    expect(new URL(call!.url).pathname).toBe("/api/runs/run-1/approvals");
    expect(new URL(call!.url).searchParams.get("user_id")).toBe("u 1");
    expect(call!.headers.get("authorization")).toBe("Bearer tok");
    expect(call!.headers.get("content-type")).toBe("application/json");
    expect(call!.body).toEqual({ tool_call_id: "call_1", approved: true });
    expect(approvalOf(store.getState().messages)).toMatchObject({ state: "approved" });
    expect(approvalOf(store.getState().messages)?.sending).toBeUndefined();
    expect(pendingApprovals(store.getState())).toEqual([]);
    // Answered once: a second click sends nothing.
    expect(await store.approve("run-1", "call_1", true)).toBeNull();
    expect(context.approvals()).toHaveLength(1);

    bodies[0]!.push(frame(6, { approval: { id: "call_1", approved: true, reason: null } }));
    bodies[0]!.push(frame(7, { tool_result: { id: "call_1", output: "sunny", is_error: false } }));
    bodies[0]!.push(frame(8, { delta: "It is sunny." }) + doneFrame(9, { run_id: "run-1" }));
    await sent;
    const answer = store.getState().messages.at(-1)!;
    expect(answer).toMatchObject({ status: "done", content: "Let me look. It is sunny." });
    expect(answer.parts?.map((part) => part.type)).toEqual(["text", "tool", "approval", "text"]);
    expect(answer.parts?.[1]).toMatchObject({ state: "done", output: "sunny" });
    expect(approvalOf([answer])).toEqual(expect.objectContaining({ state: "approved" }));
  });

  it("sends Deny with its reason; a refused answer goes back to pending with the error", async () => {
    let status = 409;
    const context = server((call) =>
      status === 409
        ? jsonResponse(409, { error: { code: "conflict", message: `tool call '${String(call.body.tool_call_id)}' was already answered otherwise` } })
        : jsonResponse(200, { status: "resumed" }),
    );
    const { sent } = await pausedRun(context);
    const { store } = context;
    const error = await store.approve("run-1", "call_1", false, "  not today  ");
    expect(error).toMatchObject({ kind: "http", status: 409, code: "conflict" });
    expect(context.approvals()[0]!.body).toEqual({ tool_call_id: "call_1", approved: false, reason: "not today" });
    expect(approvalOf(store.getState().messages)).toMatchObject({ state: "pending", error: "tool call 'call_1' was already answered otherwise" });
    expect(approvalOf(store.getState().messages)?.reason).toBeUndefined();

    status = 200;
    expect(await store.approve("run-1", "call_1", false, "not today")).toBeNull();
    const part = approvalOf(store.getState().messages);
    expect(part).toMatchObject({ state: "denied", reason: "not today" });
    expect(part?.error).toBeUndefined();
    store.stop();
    await sent;
  });

  it("marks the call expired when the server says the approval expired", async () => {
    const context = server(() => jsonResponse(404, { error: { code: "approval_expired", message: "the approval expired" } }));
    const { sent } = await pausedRun(context);
    expect(await context.store.approve("run-1", "call_1", true)).toMatchObject({ code: "approval_expired" });
    expect(approvalOf(context.store.getState().messages)).toMatchObject({ state: "expired", error: "the approval expired" });
    context.store.stop();
    await sent;
  });

  it("a run that stops waiting ends with its pending calls expired", async () => {
    const context = server();
    const { sent } = await pausedRun(context);
    const error = { error: { code: "approval_expired", message: "nobody answered", retryable: false } };
    context.bodies[0]!.push(frame(6, error) + doneFrame(7, { finish_reason: "error", run_id: "run-1" }));
    await sent;
    const state = context.store.getState();
    expect(state.error).toMatchObject({ code: "approval_expired" });
    expect(state.messages.at(-1)).toMatchObject({ status: "error", errorCode: "approval_expired" });
    expect(approvalOf(state.messages)).toMatchObject({ state: "expired" });
    expect(pendingApprovals(state)).toEqual([]);
  });

  it("keeps the pending call across a dropped connection, and a reload's resume replays it", async () => {
    const context = server();
    const { sent } = await pausedRun(context);
    context.bodies[0]!.error(new TypeError("network down"));
    await vi.waitFor(() => expect(context.bodies).toHaveLength(2));
    expect(context.calls[1]!.headers.get("last-event-id")).toBe("5");
    expect(approvalOf(context.store.getState().messages)).toMatchObject({ state: "pending" });
    expect(await context.store.approve("run-1", "call_1", true)).toBeNull();
    context.bodies[1]!.push(frame(6, { approval: { id: "call_1", approved: true, reason: null } }) + doneFrame(7));
    await sent;
    expect(approvalOf(context.store.getState().messages)).toMatchObject({ state: "approved" });

    // A reloaded page follows the run from its start: the frames come again, and with them the pending call.
    const reloaded = server();
    const resumed = reloaded.store.resume("run-1");
    await vi.waitFor(() => expect(reloaded.bodies).toHaveLength(1));
    expect(reloaded.calls[0]!.headers.get("last-event-id")).toBeNull();
    reloaded.bodies[0]!.push(PAUSED);
    await vi.waitFor(() => expect(pendingApprovals(reloaded.store.getState())).toHaveLength(1));
    expect(pendingApprovals(reloaded.store.getState())[0]).toMatchObject({ runId: "run-1", callId: "call_1" });
    reloaded.store.stop();
    await resumed;
  });

  it("reads stored approvals, and follows a waiting run instead of showing it as stored", async () => {
    const { fetch } = fakeFetch(() =>
      jsonResponse(200, {
        messages: [
          { role: "user", content: "weather?", status: "complete", parts: [{ type: "text", text: "weather?" }] },
          {
            role: "assistant",
            content: "",
            status: "complete",
            run_id: "r1",
            parts: [
              { type: "tool-call", call_id: "c1", name: "get_weather", arguments: "{}" },
              { type: "tool-approval", call_id: "c1", name: "get_weather", arguments: "{}", approved: false, reason: "no" },
              { type: "tool-approval", call_id: "c2", name: "get_pollen", arguments: "{}", approved: null },
            ],
          },
          { role: "user", content: "again", status: "complete" },
          { role: "assistant", content: "", status: "waiting", run_id: "r2", parts: [] },
        ],
      }),
    );
    const loaded = await loadConversation({ base: "/api/", fetch }, "c");
    expect(loaded!.runningRunId).toBe("r2");
    expect(loaded!.messages).toHaveLength(3);
    expect(loaded!.messages[1]!.parts?.slice(1)).toEqual([
      { type: "approval", callId: "c1", name: "get_weather", arguments: "{}", state: "denied", reason: "no" },
      { type: "approval", callId: "c2", name: "get_pollen", arguments: "{}", state: "expired" },
    ]);
  });
});
