/**
 * The tokenrelay event protocol carried in SSE `data:` payloads:
 *
 *   {"delta": "Hel"}
 *   {"error": {"code": "backend_error", "message": "...", "retryable": false}}
 *   {"done": true, "finish_reason": "stop", "run_id": "...", "conversation_id": "...", "usage": {...}}
 *   {"reasoning": "..."}                                  the model's reasoning, apart from the answer
 *   {"tool_call": {"id", "name"}}                         a tool call starts
 *   {"tool_call_delta": {"id", "arguments"}}              a fragment of its JSON arguments
 *   {"tool_result": {"id", "output", "is_error"}}         what the tool returned
 *   {"metadata": {...}}                                   out-of-band facts, e.g. {"queue_position": 2}
 *   {"approval_request": {"id", "name", "arguments"}}     a tool call that waits for a person's approval
 *   {"paused": {"expires_at"}}                            the run waits for its approvals until then (unix seconds)
 *   {"approval": {"id", "approved", "reason"}}            a call was answered; the run goes on
 *
 * Payloads are validated here and turned into a discriminated union, so the
 * rest of the code never touches untyped JSON.
 */
import { ChatStreamError } from "./errors.js";
import type { EventSourceMessage } from "./parser.js";

export type FinishReason = "stop" | "length" | "cancelled" | "error" | "tool_calls";

/** Token counts and similar numbers reported by the server; the shape is the backend's. */
export type ChatUsage = Readonly<Record<string, unknown>>;

export interface ChatDeltaEvent {
  readonly type: "delta";
  /** The SSE event id ("" if the server sent none). */
  readonly id: string;
  readonly text: string;
}

export interface ChatErrorEvent {
  readonly type: "error";
  readonly id: string;
  readonly code: string;
  readonly message: string;
  readonly retryable: boolean;
}

export interface ChatDoneEvent {
  readonly type: "done";
  readonly id: string;
  /** One of `FinishReason`; kept open so a newer server does not break older clients. */
  readonly finishReason: FinishReason | (string & {});
  readonly runId: string | undefined;
  readonly conversationId: string | undefined;
  readonly usage: ChatUsage | undefined;
  /** False when the server could not save the answer to the conversation's history; otherwise undefined. */
  readonly saved?: false;
}

export interface ChatReasoningEvent {
  readonly type: "reasoning";
  readonly id: string;
  readonly text: string;
}

export interface ChatToolCallEvent {
  readonly type: "tool-call";
  readonly id: string;
  readonly callId: string;
  readonly name: string;
}

export interface ChatToolCallDeltaEvent {
  readonly type: "tool-call-delta";
  readonly id: string;
  readonly callId: string;
  /** A fragment of the call's JSON arguments, in order. */
  readonly arguments: string;
}

export interface ChatToolResultEvent {
  readonly type: "tool-result";
  readonly id: string;
  readonly callId: string;
  readonly output: string;
  readonly isError: boolean;
}

export interface ChatMetadataEvent {
  readonly type: "metadata";
  readonly id: string;
  readonly data: Readonly<Record<string, unknown>>;
}

/** The model asked to call a tool that needs a person's approval: the call has not run. */
export interface ChatApprovalRequestEvent {
  readonly type: "approval-request";
  readonly id: string;
  readonly callId: string;
  readonly name: string;
  /** The call's JSON arguments. */
  readonly arguments: string;
}

/** The run waits (the stream stays open) until every pending call is answered, or until `expiresAt`. */
export interface ChatPausedEvent {
  readonly type: "paused";
  readonly id: string;
  /** Unix time in seconds; after it the run ends with the error "approval_expired". */
  readonly expiresAt: number | undefined;
}

/** A pending call was answered (by this page or any other): every viewer sees the decision. */
export interface ChatApprovalEvent {
  readonly type: "approval";
  readonly id: string;
  readonly callId: string;
  readonly approved: boolean;
  readonly reason: string | undefined;
}

/** The events that add to an answer, besides its text: what the chat store keeps as message parts. */
export type ChatPartEvent =
  | ChatDeltaEvent
  | ChatReasoningEvent
  | ChatToolCallEvent
  | ChatToolCallDeltaEvent
  | ChatToolResultEvent
  | ChatMetadataEvent
  | ChatApprovalRequestEvent
  | ChatPausedEvent
  | ChatApprovalEvent;

export type ChatEvent = ChatPartEvent | ChatErrorEvent | ChatDoneEvent;

/** The POST body (and, as query parameters, the GET parameters) of /api/chat/stream. */
export interface ChatRequest {
  message: string;
  user_id?: string;
  conversation_id?: string;
  [extra: string]: unknown;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function optionalString(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * Turn one SSE message into a chat event.
 *
 * Returns `null` for payloads this client does not know (a newer server may
 * add event kinds; ignoring them keeps old pages working). Throws a
 * `ChatStreamError` of kind "protocol" for data that is not JSON at all.
 */
export function toChatEvent(message: EventSourceMessage): ChatEvent | null {
  if (message.event !== "message" && message.event !== "delta" && message.event !== "error" && message.event !== "done") {
    return null;
  }
  let payload: unknown;
  try {
    payload = JSON.parse(message.data);
  } catch (cause) {
    throw new ChatStreamError("protocol", "The server sent an event that is not valid JSON.", {
      cause,
      body: message.data,
    });
  }
  if (!isRecord(payload)) return null;
  const id = message.id;
  if (typeof payload.delta === "string") return { type: "delta", id, text: payload.delta };
  if (payload.error !== undefined && payload.error !== null) return errorEvent(id, payload.error);
  if (payload.done === true) return doneEvent(id, payload);
  return partEvent(id, payload);
}

function errorEvent(id: string, raw: unknown): ChatErrorEvent {
  const error = isRecord(raw) ? raw : {};
  return {
    type: "error",
    id,
    code: optionalString(error.code) ?? "unknown_error",
    message: optionalString(error.message) ?? (typeof raw === "string" && raw !== "" ? raw : "The model failed to answer."),
    retryable: error.retryable === true,
  };
}

function doneEvent(id: string, payload: Record<string, unknown>): ChatDoneEvent {
  const done: ChatDoneEvent = {
    type: "done",
    id,
    finishReason: optionalString(payload.finish_reason) ?? "stop",
    runId: optionalString(payload.run_id),
    conversationId: optionalString(payload.conversation_id),
    usage: isRecord(payload.usage) ? payload.usage : undefined,
  };
  return payload.saved === false ? { ...done, saved: false } : done;
}

/** Reasoning, tool calls and metadata; `null` for a payload this client does not know. */
function partEvent(id: string, payload: Record<string, unknown>): ChatPartEvent | null {
  if (typeof payload.reasoning === "string") return { type: "reasoning", id, text: payload.reasoning };
  const call = payload.tool_call;
  if (isRecord(call) && typeof call.id === "string") {
    return { type: "tool-call", id, callId: call.id, name: typeof call.name === "string" ? call.name : "tool" };
  }
  const delta = payload.tool_call_delta;
  if (isRecord(delta) && typeof delta.id === "string" && typeof delta.arguments === "string") {
    return { type: "tool-call-delta", id, callId: delta.id, arguments: delta.arguments };
  }
  const result = payload.tool_result;
  if (isRecord(result) && typeof result.id === "string") {
    const output = typeof result.output === "string" ? result.output : JSON.stringify(result.output ?? null);
    return { type: "tool-result", id, callId: result.id, output, isError: result.is_error === true };
  }
  if (isRecord(payload.metadata)) return { type: "metadata", id, data: payload.metadata };
  return approvalEvent(id, payload);
}

/** The approval frames; `null` for a payload this client does not know. */
function approvalEvent(id: string, payload: Record<string, unknown>): ChatPartEvent | null {
  const request = payload.approval_request;
  if (isRecord(request) && typeof request.id === "string") {
    const name = typeof request.name === "string" && request.name !== "" ? request.name : "tool";
    const args = typeof request.arguments === "string" ? request.arguments : JSON.stringify(request.arguments ?? {});
    return { type: "approval-request", id, callId: request.id, name, arguments: args };
  }
  const paused = payload.paused;
  if (isRecord(paused)) {
    const expiresAt = typeof paused.expires_at === "number" && Number.isFinite(paused.expires_at) ? paused.expires_at : undefined;
    return { type: "paused", id, expiresAt };
  }
  const answer = payload.approval;
  if (isRecord(answer) && typeof answer.id === "string" && typeof answer.approved === "boolean") {
    return { type: "approval", id, callId: answer.id, approved: answer.approved, reason: optionalString(answer.reason) };
  }
  return null;
}
