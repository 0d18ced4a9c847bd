// The real AG-UI client, @ag-ui/client's HttpAgent (with its event verifier, schema enforcement and reducer), against
// a real tokenrelay server: text, reasoning, a tool call, an error, a Stop, a resume after a cut, an approval.
import { HttpAgent, buildResumeArray } from "@ag-ui/client";
import type { AssistantMessage, BaseEvent, Message } from "@ag-ui/core";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  ResumableAgent,
  type WireFrame,
  cancelUrl,
  detachUrl,
  eventually,
  newThreadId,
  recordingFetch,
  textOf,
  userMessage,
} from "./helpers";

// Anything the client strips, drops or doubts is reported through console.warn with an "[ag-ui]" prefix.
let warnings: string[] = [];
beforeEach(() => {
  warnings = [];
  vi.spyOn(console, "warn").mockImplementation((...args: unknown[]) => void warnings.push(args.map(String).join(" ")));
});
afterEach(() => {
  vi.restoreAllMocks();
  expect(warnings).toEqual([]);
});

function agentFor(question: string, frames: WireFrame[] = [], url = detachUrl): HttpAgent {
  const agent = new HttpAgent({ url: `${url}/api/ag-ui`, threadId: newThreadId(), fetch: recordingFetch(frames) });
  agent.addMessage(userMessage(question));
  return agent;
}

describe("HttpAgent against tokenrelay", () => {
  it("streams a text answer into an assistant message, every frame with its id", async () => {
    const frames: WireFrame[] = [];
    const agent = agentFor("Hello", frames);
    const seen: BaseEvent[] = [];
    const { newMessages } = await agent.runAgent({}, { onEvent: ({ event }) => void seen.push(event) });
    expect(textOf(newMessages)).toEqual(["Hello from tokenrelay."]);
    // (The server joins deltas that come close together: how many CONTENT events there are depends on timing.)
    const types = seen.map((e) => e.type).filter((type, i, all) => type !== all[i - 1]);
    expect(types).toEqual(["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]);
    const started = seen[0] as BaseEvent & { threadId: string; runId: string };
    expect(started.threadId).toBe(agent.threadId);
    expect(frames.every((f) => f.id !== undefined && /^\d+$/.test(f.id))).toBe(true);
    expect(frames.at(-1)?.event).toMatchObject({
      type: "RUN_FINISHED",
      usage: [{ inputTokens: 1, outputTokens: 3, totalTokens: 4 }],
    });
    // The thread is a tokenrelay conversation: the answer is in its history.
    const history = await (await fetch(`${detachUrl}/api/conversations/${agent.threadId}/messages`)).json();
    expect(history.messages.map((m: { content: string }) => m.content)).toEqual(["Hello", "Hello from tokenrelay."]);
  });

  it("keeps the thread: a follow-up is answered in the same conversation", async () => {
    const agent = agentFor("Hello");
    await agent.runAgent();
    agent.addMessage(userMessage("Again"));
    await agent.runAgent();
    expect(agent.messages.map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant"]);
    const history = await (await fetch(`${detachUrl}/api/conversations/${agent.threadId}/messages`)).json();
    expect(history.messages).toHaveLength(4);
  });

  it("shows reasoning as a reasoning message before the answer", async () => {
    const agent = agentFor("think");
    await agent.runAgent();
    expect(agent.messages.map((m) => [m.role, m.content])).toEqual([
      ["user", "think"],
      ["reasoning", "The user wants a greeting."],
      ["assistant", "Hi!"],
    ]);
  });

  it("puts a server-side tool call and its result in the messages, in the provider's order", async () => {
    const agent = agentFor("weather?");
    const ends: { toolCallName: string; toolCallArgs: Record<string, unknown> }[] = [];
    await agent.runAgent({}, { onToolCallEndEvent: ({ toolCallName, toolCallArgs }) => void ends.push({ toolCallName, toolCallArgs }) });
    expect(ends).toEqual([{ toolCallName: "get_weather", toolCallArgs: { city: "Paris" } }]);
    const [, call, result, after] = agent.messages as [Message, AssistantMessage, Message, Message];
    expect(call).toMatchObject({ role: "assistant", content: "Let me check." });
    expect(call.toolCalls).toEqual([
      { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } },
    ]);
    expect(result).toMatchObject({ role: "tool", toolCallId: "call_1", content: "sunny, 21C" });
    expect(after).toMatchObject({ role: "assistant", content: "It is sunny in Paris." });
  });

  it("reports a failed run as RUN_ERROR with tokenrelay's error code", async () => {
    const agent = agentFor("fail");
    const errors: { code?: string; message: string }[] = [];
    await agent.runAgent({}, { onRunErrorEvent: ({ event }) => void errors.push(event) }).catch(() => undefined);
    expect(errors).toEqual([expect.objectContaining({ code: "model_error", message: "the model fell over" })]);
    expect(textOf(agent.messages)).toEqual(["Starting"]);
  });

  it("cancels the run when the client aborts (the server's on-disconnect is cancel)", async () => {
    const agent = agentFor("slow", [], cancelUrl);
    let runId = "";
    let aborted = false;
    await agent
      .runAgent(
        {},
        {
          onRunStartedEvent: ({ event }) => void (runId = event.runId),
          onTextMessageContentEvent: () => {
            if (!aborted) {
              aborted = true;
              agent.abortRun();
            }
          },
        },
      )
      .catch(() => undefined);
    expect(runId).not.toBe("");
    // The run ended cancelled, and its partial answer is kept as such.
    const last = await eventually(async () => {
      const history = await (await fetch(`${cancelUrl}/api/conversations/${agent.threadId}/messages`)).json();
      const answer = history.messages.at(-1);
      expect(answer.status).toBe("cancelled");
      return answer;
    });
    expect(last.run_id).toBe(runId);
    expect(last.content).not.toContain("done.");
    const health = await (await fetch(`${cancelUrl}/api/health`)).json();
    expect(health.active_runs).toBe(0);
  });

  it("resumes a cut stream from its last event id: nothing lost, nothing twice", async () => {
    const frames: WireFrame[] = [];
    const agent = new ResumableAgent({ url: `${detachUrl}/api/ag-ui`, threadId: newThreadId(), fetch: recordingFetch(frames) });
    agent.addMessage(userMessage("slow"));
    let runId = "";
    let applied = 0; // events the agent took in: what its state holds
    let contents = 0;
    let cut = false;
    await agent
      .runAgent(
        {},
        {
          // Every event it applied came off the wire, in order, except the RUN_ERROR it makes itself on an abort.
          onEvent: ({ event }) => {
            if (!(event.type === "RUN_ERROR" && (event as { code?: string }).code === "abort")) applied += 1;
          },
          onRunStartedEvent: ({ event }) => void (runId = event.runId),
          onTextMessageContentEvent: () => {
            contents += 1;
            if (contents === 4 && !cut) {
              cut = true;
              agent.abortRun(); // the connection is gone mid-answer; the run goes on (detach)
            }
          },
        },
      )
      .catch(() => undefined);
    const before = frames.slice(0, applied);
    const lastEventId = before.at(-1)?.id;
    expect(lastEventId).toBeDefined();
    const partial = textOf(agent.messages)[0] ?? "";
    expect(partial).not.toContain("done.");

    frames.length = 0;
    agent.resumeFrom = { runId, lastEventId: lastEventId ?? "0" };
    await agent.runAgent();
    const after = [...frames];
    const full = Array.from({ length: 19 }, (_, i) => `t${i} `).join("") + "done.";
    // One assistant message, whole: the resumed stream re-opened it and appended to it.
    expect(agent.messages.map((m) => [m.role, m.content])).toEqual([
      ["user", "slow"],
      ["assistant", full],
    ]);
    // On the wire: the two streams' content frames are the answer, in strictly increasing ids (none twice), and the
    // resumed one continues the same message after a RUN_STARTED of its own.
    const content = [...before, ...after].filter((f) => f.event.type === "TEXT_MESSAGE_CONTENT");
    expect(content.map((f) => f.event.delta).join("")).toBe(full);
    const ids = content.map((f) => Number(f.id));
    expect(ids.every((id, i) => i === 0 || id > (ids[i - 1] ?? 0))).toBe(true);
    expect(after.map((f) => f.event.type).slice(0, 2)).toEqual(["RUN_STARTED", "TEXT_MESSAGE_START"]);
    expect(after[1]?.event.messageId).toBe(before.find((f) => f.event.type === "TEXT_MESSAGE_START")?.event.messageId);
    expect(Number(after[0]?.id)).toBe(Number(lastEventId));
  });

  it("turns a tool approval into an interrupt, and its resume entry into the same run going on", async () => {
    const agent = agentFor("delete x");
    const outcomes: string[] = [];
    await agent.runAgent({}, { onRunFinishedEvent: (params) => void outcomes.push(params.outcome) });
    expect(outcomes).toEqual(["interrupt"]);
    expect(agent.pendingInterrupts).toEqual([
      expect.objectContaining({ id: "call_del", toolCallId: "call_del", reason: "tool_approval" }),
    ]);
    const runId = (agent.messages.at(-1) as AssistantMessage).id.replace(/-\d+$/, "");
    const resume = buildResumeArray(agent.pendingInterrupts, { call_del: { status: "resolved", payload: { approved: true } } });
    const answers: unknown[] = [];
    await agent.runAgent(
      { resume },
      {
        onRunFinishedEvent: (params) => void outcomes.push(params.outcome),
        onCustomEvent: ({ event }) => void answers.push([event.name, event.value]),
      },
    );
    expect(outcomes).toEqual(["interrupt", "success"]);
    expect(answers).toEqual([["tool-approval-response", { toolCallId: "call_del", approved: true }]]);
    expect(agent.pendingInterrupts).toEqual([]);
    const tool = agent.messages.find((m) => m.role === "tool");
    expect(tool).toMatchObject({ toolCallId: "call_del", content: "deleted" });
    expect(textOf(agent.messages).at(-1)).toBe("Done.");
    expect(agent.messages.at(-1)?.id.startsWith(runId)).toBe(true); // the same tokenrelay run
  });
});
