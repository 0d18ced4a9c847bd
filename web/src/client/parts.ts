/**
 * An answer's parts: its text, the model's reasoning, the tools it called
 * and what they returned, in the order they happened. A plain answer has no
 * `parts` at all (its `content` says everything), so the per-token path of
 * the common case stays a string append; the first reasoning or tool event
 * turns the text so far into the first part.
 *
 * Also the reading of the server's stored messages
 * (GET /api/conversations/{id}/messages) into the same shape, so a reloaded
 * conversation shows what the streamed one showed.
 */
import type { ChatPartEvent } from "./protocol";

export interface TextPart {
  readonly type: "text";
  readonly text: string;
}

export interface ReasoningPart {
  readonly type: "reasoning";
  readonly text: string;
}

/** "running" until its result arrives; "error" when the tool failed. */
export type ToolState = "running" | "done" | "error";

export interface ToolPart {
  readonly type: "tool";
  readonly callId: string;
  readonly name: string;
  /** The JSON arguments as the model wrote them (possibly still incomplete while it streams). */
  readonly arguments: string;
  readonly state: ToolState;
  /** The tool's output, or its error message when `state` is "error". */
  readonly output?: string;
}

export interface MetadataPart {
  readonly type: "metadata";
  readonly data: Readonly<Record<string, unknown>>;
}

export type MessagePart = TextPart | ReasoningPart | ToolPart | MetadataPart;

/** What an answer's events change: its text, its parts and the queue position shown while it waits. */
export interface AnswerContent {
  readonly content: string;
  readonly parts?: readonly MessagePart[];
  readonly queuePosition?: number;
}

/** Append `text` to a text or reasoning part at the end, or add one. */
function appendText(parts: MessagePart[], type: "text" | "reasoning", text: string): void {
  const last = parts[parts.length - 1];
  if (last !== undefined && last.type === type) parts[parts.length - 1] = { type, text: last.text + text };
  else parts.push({ type, text });
}

function updateTool(parts: MessagePart[], callId: string, update: (part: ToolPart) => ToolPart): void {
  for (let index = parts.length - 1; index >= 0; index -= 1) {
    const part = parts[index];
    if (part?.type === "tool" && part.callId === callId) {
      parts[index] = update(part);
      return;
    }
  }
  // A result or arguments for a call whose start was not seen: show it all the same.
  parts.push(update({ type: "tool", callId, name: "tool", arguments: "", state: "running" }));
}

function queuePositionOf(data: Readonly<Record<string, unknown>>): number | undefined {
  const position = data.queue_position;
  return typeof position === "number" && Number.isFinite(position) ? position : undefined;
}

function applyPart(parts: MessagePart[], event: Exclude<ChatPartEvent, { type: "delta" }>): void {
  switch (event.type) {
    case "reasoning":
      appendText(parts, "reasoning", event.text);
      break;
    case "tool-call":
      parts.push({ type: "tool", callId: event.callId, name: event.name, arguments: "", state: "running" });
      break;
    case "tool-call-delta":
      updateTool(parts, event.callId, (part) => ({ ...part, arguments: part.arguments + event.arguments }));
      break;
    case "tool-result":
      updateTool(parts, event.callId, (part) => ({ ...part, output: event.output, state: event.isError ? "error" : "done" }));
      break;
    case "metadata":
      parts.push({ type: "metadata", data: event.data });
      break;
  }
}

/**
 * `answer` after `events` (text as plain strings, in order). Text only
 * grows `content` while the answer has no parts; anything else gives it
 * parts, starting with the text received so far. A queue position is shown
 * until the answer's first output.
 */
export function applyEvents(answer: AnswerContent, events: readonly (string | ChatPartEvent)[]): AnswerContent {
  let content = answer.content;
  let parts: MessagePart[] | undefined = answer.parts?.slice();
  let queuePosition = answer.queuePosition;
  for (const event of events) {
    if (typeof event === "string" || event.type === "delta") {
      const text = typeof event === "string" ? event : event.text;
      content += text;
      if (parts !== undefined && text !== "") appendText(parts, "text", text);
      if (text !== "") queuePosition = undefined;
      continue;
    }
    if (event.type === "metadata") {
      const position = queuePositionOf(event.data);
      if (position !== undefined) {
        queuePosition = position > 0 ? position : undefined;
        if (Object.keys(event.data).length === 1) continue; // only the queue position: not worth a part
      }
    } else {
      queuePosition = undefined;
    }
    parts ??= content === "" ? [] : [{ type: "text", text: content }];
    applyPart(parts, event);
  }
  return { content, parts, queuePosition };
}
