/**
 * What an answer says besides its text: the model's reasoning (folded away
 * unless opened), its tool calls with their arguments and results, and
 * metadata. A button and a region rather than `<details>`: the state is
 * React's, so a streaming update never closes what the reader opened.
 */
import { memo, useId, useState } from "react";
import type { ApprovalPart, MessagePart, ToolPart } from "@tokenrelay/client";
import { ApprovalControls, type ApproveHandler, type DenyHandler } from "./ApprovalControls.js";
import { Markdown } from "./markdown/render.js";

// The blinking cursor, as StreamingMessage shows it (that module renders this one, so it is not imported from it).
const cursor = <span className="cursor" aria-hidden="true" />;

export interface ReasoningViewProps {
  text: string;
  /** The reasoning is still being written. */
  active: boolean;
}

export const ReasoningView = memo(function ReasoningView({ text, active }: ReasoningViewProps) {
  const [open, setOpen] = useState(false);
  const regionId = useId();
  return (
    <div className="reasoning" data-open={open}>
      <button
        type="button"
        className="reasoning-toggle"
        aria-expanded={open}
        aria-controls={regionId}
        onClick={() => setOpen((value) => !value)}
      >
        {active ? "Thinking…" : "Reasoning"}
      </button>
      {open ? (
        <div className="reasoning-text" id={regionId}>
          {text}
        </div>
      ) : null}
    </div>
  );
});

const TOOL_STATE: Record<ToolPart["state"], string> = { running: "running…", done: "done", error: "failed" };

/** Pretty-printed JSON when the arguments parse, as written when they do not (yet). */
function formatArguments(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

export interface ToolCallViewProps {
  part: ToolPart;
  /** The answer is still streaming: a call without a result is running, not left without one. */
  streaming: boolean;
  /** When the call needs a person's approval: the request and its answer. */
  approval?: ApprovalPart;
  onApprove?: ApproveHandler;
  onDeny?: DenyHandler;
}

function toolState(part: ToolPart, streaming: boolean, approval: ApprovalPart | undefined): string {
  if (part.state === "running" && approval !== undefined && approval.state !== "approved") {
    return approval.state === "pending" ? "waiting for approval" : approval.state === "denied" ? "denied" : "not run";
  }
  return part.state === "running" && !streaming ? "no result" : TOOL_STATE[part.state];
}

export const ToolCallView = memo(function ToolCallView({ part, streaming, approval, onApprove, onDeny }: ToolCallViewProps) {
  const state = toolState(part, streaming, approval);
  return (
    <div className="tool" data-state={part.state} data-tool={part.name} data-approval={approval?.state}>
      <div className="tool-head">
        <span className="tool-name">{part.name}</span>
        <span className="tool-state">{state}</span>
      </div>
      {part.arguments !== "" ? <pre className="tool-arguments">{formatArguments(part.arguments)}</pre> : null}
      {part.output !== undefined ? (
        <pre className={part.state === "error" ? "tool-output tool-error" : "tool-output"}>{part.output}</pre>
      ) : null}
      {approval !== undefined ? <ApprovalControls part={approval} onApprove={onApprove} onDeny={onDeny} /> : null}
    </div>
  );
});

function metadataText(data: Readonly<Record<string, unknown>>): string {
  return Object.entries(data)
    .map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(", ");
}

export interface MessagePartsProps {
  parts: readonly MessagePart[];
  streaming: boolean;
  /** Answer a tool call that waits for approval; without these its buttons are not shown. */
  onApprove?: ApproveHandler;
  onDeny?: DenyHandler;
}

/** Each call's approval, by call id, and the ids of the calls shown as tool parts (which show it themselves). */
function approvalsOf(parts: readonly MessagePart[]) {
  const approvals = new Map<string, ApprovalPart>();
  const tools = new Set<string>();
  for (const part of parts) {
    if (part.type === "approval") approvals.set(part.callId, part);
    else if (part.type === "tool") tools.add(part.callId);
  }
  return { approvals, tools };
}

/** An approval for a call whose start was not seen: shown as the call it asks for. */
function asTool(part: ApprovalPart): ToolPart {
  return { type: "tool", callId: part.callId, name: part.name, arguments: part.arguments, state: "running" };
}

/** An answer's parts in order; the cursor follows the last text part while the answer streams. */
export const MessageParts = memo(function MessageParts({ parts, streaming, onApprove, onDeny }: MessagePartsProps) {
  const last = parts.length - 1;
  const { approvals, tools } = approvalsOf(parts);
  const answer = { onApprove, onDeny };
  return (
    <>
      {parts.map((part, index) => {
        const active = streaming && index === last;
        switch (part.type) {
          case "text":
            return <Markdown key={index} text={part.text} streaming={active} cursor={active ? cursor : null} />;
          case "reasoning":
            return <ReasoningView key={index} text={part.text} active={active} />;
          case "tool":
            return <ToolCallView key={index} part={part} streaming={streaming} approval={approvals.get(part.callId)} {...answer} />;
          case "approval":
            return tools.has(part.callId) ? null : (
              <ToolCallView key={index} part={asTool(part)} streaming={streaming} approval={part} {...answer} />
            );
          case "metadata":
            return (
              <p key={index} className="message-meta">
                {metadataText(part.data)}
              </p>
            );
        }
      })}
    </>
  );
});
