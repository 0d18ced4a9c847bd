/**
 * What an answer says besides its text: the model's reasoning (folded away
 * unless opened), its tool calls with their arguments and results, and
 * metadata. A button and a region rather than `<details>`: the state is
 * React's, so a streaming update never closes what the reader opened.
 */
import { memo, useId, useState } from "react";
import type { MessagePart, ToolPart } from "../client/chatStore";
import { Markdown } from "../markdown/render";

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
}

export const ToolCallView = memo(function ToolCallView({ part, streaming }: ToolCallViewProps) {
  const state = part.state === "running" && !streaming ? "no result" : TOOL_STATE[part.state];
  return (
    <div className="tool" data-state={part.state} data-tool={part.name}>
      <div className="tool-head">
        <span className="tool-name">{part.name}</span>
        <span className="tool-state">{state}</span>
      </div>
      {part.arguments !== "" ? <pre className="tool-arguments">{formatArguments(part.arguments)}</pre> : null}
      {part.output !== undefined ? (
        <pre className={part.state === "error" ? "tool-output tool-error" : "tool-output"}>{part.output}</pre>
      ) : null}
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
}

/** An answer's parts in order; the cursor follows the last text part while the answer streams. */
export const MessageParts = memo(function MessageParts({ parts, streaming }: MessagePartsProps) {
  const last = parts.length - 1;
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
            return <ToolCallView key={index} part={part} streaming={streaming} />;
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
