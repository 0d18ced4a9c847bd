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
import type { ChatPartEvent } from "./protocol.js";

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

/** "pending" until answered; "expired" when the run stopped waiting first. */
export type ApprovalState = "pending" | "approved" | "denied" | "expired";

/** A tool call that waits for a person's approval (it has not run), and then the answer it got. */
export interface ApprovalPart {
  readonly type: "approval";
  readonly callId: string;
  readonly name: string;
  /** The call's JSON arguments. */
  readonly arguments: string;
  readonly state: ApprovalState;
  /** Why the call was denied, when the person said. */
  readonly reason?: string;
  /** Unix seconds: when the run stops waiting (from the server's pause). */
  readonly expiresAt?: number;
  /** This page's answer is on its way to the server (`state` shows it already). */
  readonly sending?: boolean;
  /** Why this page's answer was not recorded (the call may then still be pending). */
  readonly error?: string;
}

export type MessagePart = TextPart | ReasoningPart | ToolPart | MetadataPart | ApprovalPart;

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

/** The approval part of call `callId`, changed by `update`; false when there is none. */
export function updateApproval(parts: MessagePart[], callId: string, update: (part: ApprovalPart) => ApprovalPart): boolean {
  for (let index = parts.length - 1; index >= 0; index -= 1) {
    const part = parts[index];
    if (part?.type === "approval" && part.callId === callId) {
      parts[index] = update(part);
      return true;
    }
  }
  return false;
}

/** A decided approval: the answer, without what only an answer on its way had. */
export function decided(part: ApprovalPart, approved: boolean, reason: string | undefined): ApprovalPart {
  const { sending: _sending, error: _error, reason: _reason, ...rest } = part;
  return reason === undefined ? { ...rest, state: approved ? "approved" : "denied" } : { ...rest, state: approved ? "approved" : "denied", reason };
}

/** The parts with every call still pending marked expired (the run stopped waiting), or the same array. */
export function expireApprovals(parts: readonly MessagePart[]): readonly MessagePart[] {
  if (!parts.some((part) => part.type === "approval" && part.state === "pending")) return parts;
  return parts.map((part) => (part.type === "approval" && part.state === "pending" ? { ...part, state: "expired" as const } : part));
}

function applyApproval(parts: MessagePart[], event: Extract<ChatPartEvent, { type: "approval-request" | "paused" | "approval" }>): void {
  switch (event.type) {
    case "approval-request": {
      const request = { callId: event.callId, name: event.name, arguments: event.arguments };
      if (!updateApproval(parts, event.callId, (part) => ({ ...part, ...request }))) {
        parts.push({ type: "approval", ...request, state: "pending" });
      }
      break;
    }
    case "paused": {
      const { expiresAt } = event;
      if (expiresAt === undefined) break;
      for (const [index, part] of parts.entries()) {
        if (part.type === "approval" && part.state === "pending") parts[index] = { ...part, expiresAt };
      }
      break;
    }
    case "approval":
      updateApproval(parts, event.callId, (part) => decided(part, event.approved, event.reason));
      break;
  }
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
    default:
      applyApproval(parts, event);
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
