/**
 * The user's conversations on the server: the list (GET /api/conversations),
 * one conversation's messages (GET /api/conversations/{id}/messages) as chat
 * store messages, and deleting one (DELETE /api/conversations/{id}).
 * Failures are `ChatStreamError`s of kind "http" or "network", as for the
 * stream, so a 401 reads the same everywhere.
 */
import type { ChatMessage, MessageStatus } from "./chatState.js";
import { ChatStreamError, errorFromResponse } from "./errors.js";
import type { ApprovalState, MessagePart } from "./parts.js";
import type { FetchLike } from "./streamChat.js";

export interface ConversationSummary {
  readonly id: string;
  readonly title: string;
  /** Seconds since the epoch. */
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface ConversationsOptions {
  /** The API root, e.g. "api" (relative to the page) or "/api". */
  base: string;
  headers?: HeadersInit | (() => HeadersInit);
  fetch?: FetchLike;
}

/** A conversation read back: its messages, and the run still writing its last answer, if the server says so. */
export interface LoadedConversation {
  readonly messages: ChatMessage[];
  readonly runningRunId: string | undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function text(value: unknown): string {
  return typeof value === "string" ? value : "";
}

async function request(options: ConversationsOptions, path: string, method = "GET"): Promise<Response> {
  const headers = new Headers(typeof options.headers === "function" ? options.headers() : options.headers);
  headers.set("Accept", "application/json");
  const doFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  let response: Response;
  try {
    response = await doFetch(`${options.base.replace(/\/+$/, "")}/${path}`, { method, headers, cache: "no-store" });
  } catch (cause) {
    throw new ChatStreamError("network", "Could not reach the server. Check your connection and try again.", {
      cause,
      retryable: true,
    });
  }
  if (!response.ok) throw await errorFromResponse(response);
  return response;
}

async function json(response: Response): Promise<Record<string, unknown>> {
  const body: unknown = await response.json().catch(() => null);
  if (!isRecord(body)) throw new ChatStreamError("protocol", "The server sent something that is not a JSON object.");
  return body;
}

/** The user's conversations, most recent first. */
export async function listConversations(options: ConversationsOptions, limit = 100): Promise<ConversationSummary[]> {
  const body = await json(await request(options, `conversations?limit=${limit}`));
  const items = Array.isArray(body.conversations) ? body.conversations : [];
  return items.filter(isRecord).map((item) => ({
    id: text(item.id),
    title: text(item.title),
    createdAt: typeof item.created_at === "number" ? item.created_at : 0,
    updatedAt: typeof item.updated_at === "number" ? item.updated_at : 0,
  }));
}

/** Delete a conversation and its messages. A conversation already gone counts as deleted. */
export async function deleteConversation(options: ConversationsOptions, id: string): Promise<void> {
  try {
    await request(options, `conversations/${encodeURIComponent(id)}`, "DELETE");
  } catch (error) {
    if (!(error instanceof ChatStreamError && error.status === 404)) throw error;
  }
}

/** A conversation's messages; `null` when the server has no such conversation (anymore). */
export async function loadConversation(options: ConversationsOptions, id: string): Promise<LoadedConversation | null> {
  let response: Response;
  try {
    response = await request(options, `conversations/${encodeURIComponent(id)}/messages`);
  } catch (error) {
    if (error instanceof ChatStreamError && error.status === 404) return null;
    throw error;
  }
  const rows = (await json(response)).messages;
  const messages: ChatMessage[] = [];
  let runningRunId: string | undefined;
  (Array.isArray(rows) ? rows : []).filter(isRecord).forEach((row, index) => {
    const running = RUNNING.has(text(row.status));
    // An answer still being written is followed live instead of shown as stored.
    if (running && row.role === "assistant" && typeof row.run_id === "string") runningRunId = row.run_id;
    else messages.push(toMessage(id, index, row));
  });
  return { messages, runningRunId };
}

// "waiting": paused for a person's approval; following it replays the calls it waits for, with their buttons.
const RUNNING = new Set(["running", "streaming", "pending", "waiting"]);

const STATUS: Readonly<Record<string, MessageStatus>> = { complete: "done", cancelled: "cancelled", failed: "error" };

/** One stored row as a chat message; the id is stable across loads, so rendering keeps its rows. */
function toMessage(conversationId: string, index: number, row: Record<string, unknown>): ChatMessage {
  const role = row.role === "user" ? "user" : "assistant";
  const status = STATUS[text(row.status)] ?? "done";
  const parts = Array.isArray(row.parts) ? row.parts.filter(isRecord) : [];
  const shown = withResults(parts.flatMap(toPart));
  const finish = parts.find((part) => part.type === "finish");
  const error = parts.find((part) => part.type === "error");
  const message: { -readonly [key in keyof ChatMessage]: ChatMessage[key] } = {
    id: `${conversationId}:${index}`,
    role,
    content: text(row.content),
    status,
  };
  if (typeof row.run_id === "string") message.runId = row.run_id;
  if (role === "assistant" && shown.some((part) => part.type !== "text")) message.parts = shown;
  const reason = finish?.reason ?? (status === "cancelled" ? "cancelled" : status === "error" ? "error" : undefined);
  if (typeof reason === "string") message.finishReason = reason;
  const code = row.error_code ?? error?.code;
  if (typeof code === "string") message.errorCode = code;
  return message;
}

/** Each tool result folded into its call, as a streamed answer shows them. */
function withResults(parts: readonly MessagePart[]): MessagePart[] {
  const out: MessagePart[] = [];
  for (const part of parts) {
    const callIndex = part.type === "tool" && part.name === "" ? out.findIndex((p) => p.type === "tool" && p.callId === part.callId) : -1;
    const call = out[callIndex];
    if (part.type === "tool" && call?.type === "tool") out[callIndex] = { ...call, state: part.state, output: part.output };
    else out.push(part.type === "tool" && part.name === "" ? { ...part, name: "tool" } : part);
  }
  return out;
}

/** A stored approval; one never answered can no longer be: the stored answer has ended. */
function approvalPart(part: Record<string, unknown>): MessagePart {
  const state: ApprovalState = part.approved === true ? "approved" : part.approved === false ? "denied" : "expired";
  const shown = { type: "approval" as const, callId: text(part.call_id), name: text(part.name) || "tool", arguments: text(part.arguments), state };
  return typeof part.reason === "string" && part.reason !== "" ? { ...shown, reason: part.reason } : shown;
}

/** A stored part as shown; usage, finish and error are how the answer ended, not parts of it. */
function toPart(part: Record<string, unknown>): MessagePart[] {
  switch (part.type) {
    case "text":
    case "reasoning":
      return [{ type: part.type, text: text(part.text) }];
    case "tool-call":
      return [
        { type: "tool", callId: text(part.call_id), name: text(part.name) || "tool", arguments: text(part.arguments), state: "running" },
      ];
    case "tool-result": {
      // Named "" until folded into its call (withResults).
      const state = part.is_error === true ? "error" : "done";
      return [{ type: "tool", callId: text(part.call_id), name: "", arguments: "", state, output: text(part.output) }];
    }
    case "metadata":
      return isRecord(part.data) ? [{ type: "metadata", data: part.data }] : [];
    case "tool-approval":
      return [approvalPart(part)];
    default:
      return [];
  }
}
