/**
 * The tokenrelay event protocol carried in SSE `data:` payloads:
 *
 *   {"delta": "Hel"}
 *   {"error": {"code": "backend_error", "message": "...", "retryable": false}}
 *   {"done": true, "finish_reason": "stop", "run_id": "...", "conversation_id": "...", "usage": {...}}
 *
 * Payloads are validated here and turned into a discriminated union, so the
 * rest of the code never touches untyped JSON.
 */
import { ChatStreamError } from "./errors";
import type { EventSourceMessage } from "./parser";

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
}

export type ChatEvent = ChatDeltaEvent | ChatErrorEvent | ChatDoneEvent;

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

  if (typeof payload.delta === "string") {
    return { type: "delta", id, text: payload.delta };
  }
  if (payload.error !== undefined && payload.error !== null) {
    const error = isRecord(payload.error) ? payload.error : {};
    return {
      type: "error",
      id,
      code: optionalString(error.code) ?? "unknown_error",
      message:
        optionalString(error.message) ??
        (typeof payload.error === "string" && payload.error !== "" ? payload.error : "The model failed to answer."),
      retryable: error.retryable === true,
    };
  }
  if (payload.done === true) {
    return {
      type: "done",
      id,
      finishReason: optionalString(payload.finish_reason) ?? "stop",
      runId: optionalString(payload.run_id),
      conversationId: optionalString(payload.conversation_id),
      usage: isRecord(payload.usage) ? payload.usage : undefined,
    };
  }
  return null;
}
