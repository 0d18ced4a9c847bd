/**
 * Typed errors raised by `streamChat`, `resumeChat` and `streamChatEventSource`.
 *
 * One class with a `kind` discriminator rather than a class per failure:
 * callers mostly want "show `message`, offer Retry when `retryable`", and
 * `instanceof ChatStreamError` survives bundling.
 */

export type ChatStreamErrorKind =
  /** The server answered with a non-2xx status before streaming (e.g. 422 validation error). */
  | "http"
  /** The request could not be sent or the connection broke while reading. */
  | "network"
  /** The stream ended without its final `done` frame. */
  | "incomplete"
  /** The server sent something that is not the tokenrelay event protocol. */
  | "protocol"
  /** The model backend failed mid-stream (an `error` frame). */
  | "backend";

export interface ChatStreamErrorInit {
  status?: number;
  code?: string;
  field?: string;
  retryable?: boolean;
  body?: unknown;
  cause?: unknown;
}

export class ChatStreamError extends Error {
  readonly kind: ChatStreamErrorKind;
  /** HTTP status, for kind "http". */
  readonly status: number | undefined;
  /** Machine-readable code from the server, e.g. "backend_error" or "validation_error". */
  readonly code: string | undefined;
  /** The request field the server complained about, when it said. */
  readonly field: string | undefined;
  /** Whether sending the same request again may succeed. */
  readonly retryable: boolean;
  /** The parsed (or raw text) error body, for kind "http". */
  readonly body: unknown;

  constructor(kind: ChatStreamErrorKind, message: string, init: ChatStreamErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "ChatStreamError";
    this.kind = kind;
    this.status = init.status;
    this.code = init.code;
    this.field = init.field;
    this.retryable = init.retryable ?? false;
    this.body = init.body;
  }
}

/** The error for a stream that ended before its `done` frame: the answer was cut off. */
export function cutOffError(): ChatStreamError {
  return new ChatStreamError("incomplete", "The answer was cut off: the stream ended before it finished.", {
    retryable: true,
  });
}

/** True for the error a fetch or stream read rejects with after `AbortController.abort()`. */
export function isAbortError(error: unknown): boolean {
  return (
    typeof error === "object" &&
    error !== null &&
    "name" in error &&
    (error as { name: unknown }).name === "AbortError"
  );
}

/** The rejection to use for an aborted signal: its reason, or a standard AbortError. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}

interface ExtractedMessage {
  message: string;
  code?: string;
  field?: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The last meaningful part of a FastAPI `loc` such as ["body", "message"]. */
function fieldFromLoc(loc: unknown): string | undefined {
  if (!Array.isArray(loc)) return undefined;
  const parts = loc.filter((part) => part !== "body" && part !== "query" && part !== "path");
  return parts.length > 0 ? parts.map(String).join(".") : undefined;
}

/**
 * Pull a human-readable message out of the error bodies the server sends:
 * `{"error": {"code", "message", "field"}}`, FastAPI's
 * `{"detail": [{"loc", "msg", "type"}, ...]}` and `{"detail": "text"}`.
 */
export function extractErrorMessage(body: unknown): ExtractedMessage | undefined {
  if (!isRecord(body)) return undefined;
  const error = body.error;
  if (isRecord(error) && typeof error.message === "string" && error.message !== "") {
    return {
      message: error.message,
      code: typeof error.code === "string" ? error.code : undefined,
      field: typeof error.field === "string" ? error.field : undefined,
    };
  }
  if (typeof error === "string" && error !== "") return { message: error };
  const detail = body.detail;
  if (typeof detail === "string" && detail !== "") return { message: detail };
  if (Array.isArray(detail) && detail.length > 0) {
    let field: string | undefined;
    const messages: string[] = [];
    for (const item of detail) {
      if (!isRecord(item) || typeof item.msg !== "string") continue;
      const itemField = fieldFromLoc(item.loc);
      field ??= itemField;
      messages.push(itemField ? `${itemField}: ${item.msg}` : item.msg);
    }
    if (messages.length > 0) return { message: messages.join("; "), code: "validation_error", field };
  }
  if (typeof body.message === "string" && body.message !== "") return { message: body.message };
  return undefined;
}

/** Statuses where trying the same request again later can succeed. */
function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

/** Build the typed error for a non-2xx response, reading its body for the server's message. */
export async function errorFromResponse(response: Response): Promise<ChatStreamError> {
  let body: unknown;
  let text = "";
  try {
    text = await response.text();
    body = text;
    body = JSON.parse(text);
  } catch {
    // Not JSON (or unreadable): keep the raw text, if any.
  }
  const extracted = extractErrorMessage(body);
  const fallback =
    text.trim() !== "" && text.length <= 200 && !text.trimStart().startsWith("<")
      ? text.trim()
      : `The server answered ${response.status}${response.statusText ? ` ${response.statusText}` : ""}.`;
  return new ChatStreamError("http", extracted?.message ?? fallback, {
    status: response.status,
    code: extracted?.code,
    field: extracted?.field,
    retryable: isRetryableStatus(response.status),
    body,
  });
}
