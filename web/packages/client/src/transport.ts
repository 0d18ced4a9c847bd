/**
 * The chat store's view of the network: a `ChatTransport` sends a request,
 * picks a run up again after a dropped connection, and cancels a run. The
 * store (chatStore.ts) keeps the conversation state and never builds a URL
 * or a request itself, so tests and other hosts (a worker, a native bridge,
 * another endpoint layout) can drive it with a transport of their own.
 *
 * `createHttpTransport` is the default: tokenrelay's HTTP endpoints through
 * `streamChat` (POST /api/chat/stream), `resumeChat` (GET
 * /api/runs/{id}/stream with `Last-Event-ID`), POST /api/runs/{id}/cancel and
 * POST /api/runs/{id}/approvals (the answer to a tool call that waits for approval).
 */
import { ChatStreamError, errorFromResponse } from "./errors.js";
import type { ChatRequest } from "./protocol.js";
import { resumeChat, streamChat, type ChatStream, type FetchLike } from "./streamChat.js";

/** Start an answer. */
export interface ChatSendRequest {
  /** The JSON body: the message, `user_id`, `conversation_id`, `regenerate` and any extra fields. */
  readonly body: ChatRequest;
  /** Aborted when the user stops the answer: the transport closes the connection. */
  readonly signal: AbortSignal;
  /** Call when the server has answered (the stream's `runId` is known), before the first event. Optional. */
  readonly onOpen?: () => void;
}

/** Pick a run up after a dropped connection. */
export interface ChatReconnectRequest {
  readonly runId: string;
  /** The id of the last event received: the run's stream continues after it. */
  readonly lastEventId: string | undefined;
  /** The user the run belongs to (the server only lets a user follow their own runs). */
  readonly userId: string | undefined;
  readonly signal: AbortSignal;
  /** As for `ChatSendRequest.onOpen`. */
  readonly onOpen?: () => void;
}

/** Stop a run on the server. */
export interface ChatCancelRequest {
  readonly runId: string;
  /** The user the run belongs to (the server only lets a user cancel their own runs). */
  readonly userId: string | undefined;
}

/** Answer a tool call the run waits for: run it (`approved`) or not. */
export interface ChatApproveRequest {
  readonly runId: string;
  readonly callId: string;
  readonly approved: boolean;
  /** Given to the model with a denial. */
  readonly reason?: string;
  /** The user the run belongs to. */
  readonly userId: string | undefined;
}

/**
 * What the chat store asks of the network. Streams follow the `ChatStream`
 * contract: they yield `delta` and `error` events and finally `done`, throw a
 * `ChatStreamError` when they fail, and close their connection when the
 * request's signal aborts or the consumer stops iterating.
 */
export interface ChatTransport {
  /** Send a message; the stream carries the answer. */
  send(request: ChatSendRequest): ChatStream;
  /** The rest of a run's answer, after `lastEventId`; a stream that ends without `done` counts as another drop. */
  reconnect(request: ChatReconnectRequest): ChatStream;
  /**
   * Ask the server to stop a run. The store has already closed the
   * connection when it calls this, and ignores failures.
   */
  cancel(request: ChatCancelRequest): Promise<void>;
  /**
   * Record the answer to a tool call that waits for approval; rejects (with
   * a `ChatStreamError`) when the server did not record it. The decision and
   * the run's continuation arrive on the run's stream. Optional: without it
   * the store cannot answer approvals.
   */
  approve?(request: ChatApproveRequest): Promise<void>;
}

export interface HttpTransportOptions {
  /** The stream endpoint, e.g. "/api/chat/stream". */
  api: string | URL;
  /** Extra request headers, or a function returning them (e.g. a fresh auth token). */
  headers?: HeadersInit | (() => HeadersInit);
  /** A fetch implementation (tests, instrumentation). Defaults to the global fetch. */
  fetch?: FetchLike;
  /**
   * Where to POST when the user stops an answer. Defaults to
   * `runs/{runId}/cancel` beside the `api` endpoint's `chat/`: a closed
   * connection alone does not stop a run under the server's default policy,
   * which keeps it for a client that comes back.
   */
  cancelUrl?: (runId: string) => string | URL;
  /** A run's stream, for reconnecting. Defaults to `runs/{runId}/stream` beside the `api` endpoint's `chat/`. */
  resumeUrl?: (runId: string) => string | URL;
  /** Where to POST a tool call's approval. Defaults to `runs/{runId}/approvals` beside the `api` endpoint's `chat/`. */
  approvalsUrl?: (runId: string) => string | URL;
}

function resolveHeaders(headers: HttpTransportOptions["headers"]): HeadersInit | undefined {
  return typeof headers === "function" ? headers() : headers;
}

function pageUrl(): string {
  return globalThis.location?.href ?? "http://localhost/";
}

/** `url` with `user_id` set, when there is a user: the server checks that a run is theirs. */
function forUser(url: string | URL, userId: string | undefined): string | URL {
  if (userId === undefined) return url;
  const withUser = new URL(url, pageUrl());
  withUser.searchParams.set("user_id", userId);
  return withUser;
}

/** `runs/{runId}/stream` next to the stream endpoint: "/api/chat/stream" gives "/api/runs/{runId}/stream". */
function defaultResumeUrl(api: string | URL, runId: string): URL {
  return new URL(`../runs/${encodeURIComponent(runId)}/stream`, new URL(api, pageUrl()));
}

function defaultCancelUrl(api: string | URL, runId: string): URL {
  return new URL(`../runs/${encodeURIComponent(runId)}/cancel`, new URL(api, pageUrl()));
}

function defaultApprovalsUrl(api: string | URL, runId: string): URL {
  return new URL(`../runs/${encodeURIComponent(runId)}/approvals`, new URL(api, pageUrl()));
}

async function postApproval(doFetch: FetchLike, options: HttpTransportOptions, request: ChatApproveRequest): Promise<void> {
  const { runId, callId, approved, reason, userId } = request;
  const url = forUser(options.approvalsUrl?.(runId) ?? defaultApprovalsUrl(options.api, runId), userId);
  const headers = new Headers(resolveHeaders(options.headers));
  headers.set("Content-Type", "application/json");
  const body = JSON.stringify(reason === undefined || reason === "" ? { tool_call_id: callId, approved } : { tool_call_id: callId, approved, reason });
  let response: Response;
  try {
    response = await doFetch(url, { method: "POST", headers, body });
  } catch (cause) {
    throw new ChatStreamError("network", "Could not reach the server to send the answer. Try again.", { cause, retryable: true });
  }
  if (!response.ok) throw await errorFromResponse(response);
}

/** The transport for tokenrelay's HTTP endpoints (what the chat store uses unless given another). */
export function createHttpTransport(options: HttpTransportOptions): ChatTransport {
  const doFetch: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  return {
    send: ({ body, signal, onOpen }) =>
      streamChat({ url: options.api, body, signal, onOpen, fetch: options.fetch, headers: resolveHeaders(options.headers) }),
    reconnect: ({ runId, lastEventId, userId, signal, onOpen }) =>
      resumeChat({
        url: forUser(options.resumeUrl?.(runId) ?? defaultResumeUrl(options.api, runId), userId),
        lastEventId,
        signal,
        onOpen,
        fetch: options.fetch,
        headers: resolveHeaders(options.headers),
      }),
    async cancel({ runId, userId }) {
      const url = forUser(options.cancelUrl?.(runId) ?? defaultCancelUrl(options.api, runId), userId);
      // keepalive: the request survives the page being closed right after Stop.
      await doFetch(url, { method: "POST", headers: resolveHeaders(options.headers), keepalive: true });
    },
    approve: (request) => postApproval(doFetch, options, request),
  };
}
