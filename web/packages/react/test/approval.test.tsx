// @vitest-environment jsdom
import { cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import type { ApprovalPart, FetchLike, MessagePart } from "@tokenrelay/client";
import { MessageList } from "../src/StreamingMessage";
import { MessageParts } from "../src/MessageParts";
import { useStreamingChat, type UseStreamingChatResult } from "../src/useStreamingChat";
import { controlledBody, doneFrame, fakeFetch, jsonResponse, sseResponse, wire, type ControlledBody } from "../../client/test/helpers";

afterEach(() => {
  cleanup();
});

const frame = (id: number, payload: unknown) => `id: ${id}\ndata: ${JSON.stringify(payload)}\n\n`;

const PAUSED = [
  frame(1, { tool_call: { id: "call_1", name: "get_weather" } }),
  frame(2, { tool_call_delta: { id: "call_1", arguments: '{"city":"Paris","days":2}' } }),
  frame(3, { approval_request: { id: "call_1", name: "get_weather", arguments: '{"city":"Paris","days":2}' } }),
  frame(4, { paused: { expires_at: 1_900_000_000 } }),
].join("");

function Chat({ fetch, onRender }: { fetch: FetchLike; onRender: (chat: UseStreamingChatResult) => void }) {
  const chat = useStreamingChat("/api/chat/stream", { fetch, userId: "u1" });
  onRender(chat);
  return (
    <>
      <button onClick={() => void chat.sendMessage("weather?")}>send</button>
      <MessageList messages={chat.messages} onApprove={chat.approve} onDeny={chat.deny} />
    </>
  );
}

function setup(answer: () => Response = () => jsonResponse(200, { status: "resumed" })) {
  const bodies: ControlledBody[] = [];
  const fake = fakeFetch((call) => {
    if (call.url.includes("/approvals")) return answer();
    const body = wire(controlledBody(), call.signal);
    bodies.push(body);
    return sseResponse(body.stream, { headers: { "x-run-id": "run-9", "x-conversation-id": "conv-1" } });
  });
  const seen: { chat?: UseStreamingChatResult } = {};
  render(<Chat fetch={fake.fetch} onRender={(chat) => (seen.chat = chat)} />);
  return { ...fake, bodies, seen, approvals: () => fake.calls.filter((call) => call.url.includes("/approvals")) };
}

async function paused(context: ReturnType<typeof setup>) {
  fireEvent.click(screen.getByText("send"));
  await waitFor(() => expect(context.bodies).toHaveLength(1));
  context.bodies[0]!.push(PAUSED);
  return screen.findByRole("group", { name: "Approve the call to get_weather?" });
}

// Generous: rendering in jsdom on a busy machine is slow, and every wait here is a condition.
describe("tool approvals in React", { timeout: 30_000 }, () => {
  it("the hook lists the pending call; Approve answers it and the decision shows", async () => {
    const context = setup();
    const group = await paused(context);
    expect(context.seen.chat!.pendingApprovals).toEqual([expect.objectContaining({ runId: "run-9", callId: "call_1", name: "get_weather" })]);
    const tool = group.closest(".tool") as HTMLElement;
    expect(within(tool).getByText("waiting for approval")).toBeTruthy();
    expect(tool.querySelector(".tool-arguments")!.textContent).toBe('{\n  "city": "Paris",\n  "days": 2\n}');

    fireEvent.click(within(group).getByRole("button", { name: "Approve" }));
    await waitFor(() => expect(context.approvals()).toHaveLength(1));
    expect(context.approvals()[0]!.body).toEqual({ tool_call_id: "call_1", approved: true });
    expect(new URL(context.approvals()[0]!.url).pathname).toBe("/api/runs/run-9/approvals");
    await waitFor(() => expect(tool.querySelector(".approval-decision")!.textContent).toBe("Approved"));
    expect(screen.queryByRole("button", { name: "Approve" })).toBeNull();
    expect(context.seen.chat!.pendingApprovals).toEqual([]);

    context.bodies[0]!.push(frame(5, { approval: { id: "call_1", approved: true, reason: null } }));
    context.bodies[0]!.push(frame(6, { tool_result: { id: "call_1", output: "sunny", is_error: false } }) + doneFrame(7));
    await waitFor(() => expect(tool.querySelector(".tool-output")?.textContent).toBe("sunny"));
    expect(within(tool).getByText("done")).toBeTruthy();
  });

  it("Deny sends the reason typed; a refused answer shows its error and the buttons again", async () => {
    const context = setup(() => jsonResponse(503, { error: { code: "unavailable", message: "try again later" } }));
    const group = await paused(context);
    fireEvent.change(within(group).getByLabelText("Reason for denying (optional)"), { target: { value: "too far" } });
    fireEvent.click(within(group).getByRole("button", { name: "Deny" }));
    await waitFor(() => expect(context.approvals()).toHaveLength(1));
    expect(context.approvals()[0]!.body).toEqual({ tool_call_id: "call_1", approved: false, reason: "too far" });
    const again = await screen.findByRole("group", { name: "Approve the call to get_weather?" });
    await waitFor(() => expect(again.querySelector(".approval-error")?.textContent).toBe("try again later"));
    expect(within(again).getByRole("button", { name: "Approve" })).toBeTruthy();
    context.seen.chat!.stop();
  });
});

describe("MessageParts with approvals", () => {
  const approval = (state: ApprovalPart["state"], extra: Partial<ApprovalPart> = {}): ApprovalPart => ({
    type: "approval",
    callId: "c1",
    name: "delete_file",
    arguments: '{"path":"/tmp/x"}',
    state,
    ...extra,
  });

  it("shows a call whose start was not seen as the call, with its buttons", () => {
    const calls: string[] = [];
    render(<MessageParts parts={[approval("pending")]} streaming onApprove={(id) => calls.push(`approve ${id}`)} onDeny={(id, reason) => calls.push(`deny ${id} ${reason}`)} />);
    expect(document.querySelector(".tool-name")!.textContent).toBe("delete_file");
    expect(document.querySelector(".tool-arguments")!.textContent).toBe('{\n  "path": "/tmp/x"\n}');
    fireEvent.click(screen.getByRole("button", { name: "Deny" }));
    fireEvent.click(screen.getByRole("button", { name: "Approve" }));
    expect(calls).toEqual(["deny c1 undefined", "approve c1"]);
  });

  it("shows each decision, and no buttons without handlers", () => {
    const tool: MessagePart = { type: "tool", callId: "c1", name: "delete_file", arguments: "{}", state: "error", output: "The user denied this tool call." };
    const { rerender } = render(<MessageParts parts={[tool, approval("denied", { reason: "no" })]} streaming={false} />);
    expect(document.querySelectorAll(".tool")).toHaveLength(1);
    expect(document.querySelector(".approval-decision")!.textContent).toBe("Denied: no");
    rerender(<MessageParts parts={[approval("expired")]} streaming={false} />);
    expect(document.querySelector(".approval-decision")!.textContent).toBe("Not answered in time");
    expect(document.querySelector(".tool-state")!.textContent).toBe("not run");
    rerender(<MessageParts parts={[approval("approved", { sending: true })]} streaming />);
    expect(document.querySelector(".approval-decision")!.textContent).toBe("Approving…");
    rerender(<MessageParts parts={[approval("pending")]} streaming />);
    expect(screen.queryByRole("button")).toBeNull();
    expect(document.querySelector(".approval-decision")!.textContent).toBe("Waiting for approval");
  });
});
