/**
 * A framework-free chat store: the conversation state plus the actions that
 * change it (send, stop, retry, regenerate, reset). React binds to it with
 * `useSyncExternalStore` (see `src/react/useStreamingChat.ts`); any other UI
 * can call `subscribe` / `getState` directly.
 *
 * Rendering cost is the point of this module. A long answer arrives as
 * thousands of small deltas; notifying subscribers on each one would make
 * React render thousands of times. Deltas are instead appended to a buffer
 * and applied in one state update per animation frame (`scheduleFlush`),
 * so a 20,000-token answer costs at most one render per frame. State
 * changes that the user must see at once (request sent, first token,
 * finished, stopped, failed) flush immediately, together with any
 * buffered text.
 *
 * State is immutable: every update makes a new `messages` array, but only
 * the message being streamed gets a new object, so finished messages keep
 * their identity and memoized components skip them.
 */
import { ChatStreamError, type ChatStreamErrorKind } from "./errors";
import { createId } from "./ids";
import type { ChatDoneEvent, ChatErrorEvent, ChatUsage } from "./protocol";
import { streamChat, type ChatStream, type FetchLike } from "./streamChat";

export type ChatRole = "user" | "assistant";

/** "streaming" for the answer being received; the others are final. */
export type MessageStatus = "streaming" | "done" | "cancelled" | "error";

export interface ChatMessage {
  readonly id: string;
  readonly role: ChatRole;
  readonly content: string;
  readonly status: MessageStatus;
  /** For assistant messages that finished: the server's finish_reason. */
  readonly finishReason?: string;
  /** For assistant messages: the server's run id. */
  readonly runId?: string;
}

/**
 * - idle: ready to send
 * - submitted: request sent, no token yet
 * - streaming: tokens arriving
 * - error: the last request failed; `error` says why, `retry()` tries again
 */
export type ChatStatus = "idle" | "submitted" | "streaming" | "error";

export interface ChatError {
  readonly kind: ChatStreamErrorKind;
  readonly message: string;
  readonly code?: string;
  readonly status?: number;
  readonly field?: string;
  readonly retryable: boolean;
}

export interface ChatState {
  readonly messages: readonly ChatMessage[];
  readonly status: ChatStatus;
  readonly error: ChatError | null;
  /** The server's conversation id, sent with follow-up messages. */
  readonly conversationId: string | undefined;
}

export interface FinishDetails {
  readonly finishReason: string;
  readonly runId: string | undefined;
  readonly conversationId: string | undefined;
  readonly usage: ChatUsage | undefined;
}

/** Runs `flush` later (once) and returns a function that cancels it. */
export type FlushScheduler = (flush: () => void) => () => void;

export interface ChatStoreOptions {
  /** The stream endpoint, e.g. "/api/chat/stream". */
  api: string | URL;
  /** Sent as `user_id`. */
  userId?: string;
  /** Continue an existing server conversation. */
  conversationId?: string;
  initialMessages?: readonly ChatMessage[];
  /** Extra JSON fields merged into every request body. */
  body?: Record<string, unknown>;
  /** Extra request headers, or a function returning them (e.g. a fresh auth token). */
  headers?: HeadersInit | (() => HeadersInit);
  fetch?: FetchLike;
  /**
   * Where to POST when the user stops an answer, e.g.
   * `(runId) => \`/api/runs/${runId}/cancel\``. Stop always closes the
   * connection, which cancels the run under the server's default
   * `on_disconnect=cancel`; this also stops it when the server lets runs
   * outlive their connection (`detach`). Failures are ignored.
   */
  cancelUrl?: (runId: string) => string | URL;
  /** How buffered deltas are flushed. Defaults to one flush per animation frame. */
  scheduleFlush?: FlushScheduler;
  generateId?: () => string;
  /** Called when an answer finishes normally (not on stop or error). */
  onFinish?: (message: ChatMessage, details: FinishDetails) => void;
  onError?: (error: ChatError) => void;
}

export interface ChatStore {
  getState(): ChatState;
  /** Returns an unsubscribe function. Listeners run after every state change. */
  subscribe(listener: () => void): () => void;
  /**
   * Send a user message and stream the answer. Resolves when the answer
   * is complete, stopped or failed (it never rejects; see `state.error`).
   * Ignored while another answer is in progress or when `text` is blank.
   */
  sendMessage(text: string): Promise<void>;
  /** Stop the current answer: aborts the request, keeping the text received so far. */
  stop(): void;
  /** After an error: send the failed request again. */
  retry(): Promise<void>;
  /** Drop the last answer and ask for a new one to the last user message. */
  regenerate(): Promise<void>;
  /** Stop anything in flight and start a new, empty conversation. */
  reset(): void;
  /** Change options (new callbacks, another endpoint) for the next request. */
  setOptions(options: Partial<ChatStoreOptions>): void;
}

/** One flush per animation frame; a 16 ms timer where there is no `requestAnimationFrame`. */
export const animationFrameScheduler: FlushScheduler = (flush) => {
  if (typeof requestAnimationFrame === "function") {
    const handle = requestAnimationFrame(() => flush());
    return () => cancelAnimationFrame(handle);
  }
  const timer = setTimeout(flush, 16);
  return () => clearTimeout(timer);
};

interface Run {
  readonly controller: AbortController;
  readonly assistantId: string;
  readonly request: string;
  /** Deltas received but not yet applied to the state. */
  pending: string[];
  stream: ChatStream | undefined;
}

export function toChatError(error: unknown): ChatError {
  if (error instanceof ChatStreamError) {
    return {
      kind: error.kind,
      message: error.message,
      code: error.code,
      status: error.status,
      field: error.field,
      retryable: error.retryable,
    };
  }
  return {
    kind: "network",
    message: error instanceof Error && error.message !== "" ? error.message : "Something went wrong.",
    retryable: true,
  };
}

function resolveHeaders(headers: ChatStoreOptions["headers"]): HeadersInit | undefined {
  return typeof headers === "function" ? headers() : headers;
}

export function createChatStore(initialOptions: ChatStoreOptions): ChatStore {
  let options: ChatStoreOptions = { ...initialOptions };
  let state: ChatState = {
    messages: initialOptions.initialMessages ?? [],
    status: "idle",
    error: null,
    conversationId: initialOptions.conversationId,
  };
  const listeners = new Set<() => void>();
  let run: Run | null = null;
  let cancelScheduledFlush: (() => void) | null = null;
  // The text of the last request, for retry().
  let lastRequest: string | undefined;

  const newId = () => (options.generateId ?? createId)();

  function setState(next: ChatState): void {
    state = next;
    for (const listener of Array.from(listeners)) listener();
  }

  function cancelFlush(): void {
    if (cancelScheduledFlush !== null) {
      cancelScheduledFlush();
      cancelScheduledFlush = null;
    }
  }

  /**
   * Apply the run's buffered text plus `patch` to its assistant message and
   * `statePatch` to the state, in a single update. A message left with no
   * text when it ends in error or cancellation is removed: an empty bubble
   * says nothing the error banner does not.
   */
  function commit(
    current: Run,
    patch: Partial<Omit<ChatMessage, "id" | "role" | "content">>,
    statePatch: Partial<ChatState>,
  ): ChatMessage | undefined {
    cancelFlush();
    const text = current.pending.length > 0 ? current.pending.join("") : "";
    current.pending = [];
    const messages = state.messages.slice();
    let updated: ChatMessage | undefined;
    // The streaming message is almost always last: search from the end.
    for (let index = messages.length - 1; index >= 0; index -= 1) {
      const message = messages[index];
      if (message === undefined || message.id !== current.assistantId) continue;
      updated = { ...message, ...patch, content: message.content + text };
      const drop = updated.content === "" && (updated.status === "error" || updated.status === "cancelled");
      if (drop) messages.splice(index, 1);
      else messages[index] = updated;
      break;
    }
    setState({ ...state, ...statePatch, messages });
    return updated;
  }

  function scheduleFlush(current: Run): void {
    if (cancelScheduledFlush !== null) return;
    const scheduler = options.scheduleFlush ?? animationFrameScheduler;
    cancelScheduledFlush = scheduler(() => {
      cancelScheduledFlush = null;
      if (run === current && current.pending.length > 0) commit(current, {}, {});
    });
  }

  function finish(current: Run, done: ChatDoneEvent, backendError: ChatErrorEvent | undefined): void {
    run = null;
    const conversationId = done.conversationId ?? current.stream?.conversationId ?? state.conversationId;
    const runId = done.runId ?? current.stream?.runId;
    if (done.finishReason === "error" || backendError !== undefined) {
      const error: ChatError = {
        kind: "backend",
        message: backendError?.message ?? "The model failed to answer.",
        code: backendError?.code,
        retryable: backendError?.retryable ?? false,
      };
      commit(current, { status: "error", finishReason: done.finishReason, runId }, {
        status: "error",
        error,
        conversationId,
      });
      options.onError?.(error);
      return;
    }
    const message = commit(
      current,
      { status: done.finishReason === "cancelled" ? "cancelled" : "done", finishReason: done.finishReason, runId },
      { status: "idle", error: null, conversationId },
    );
    if (message !== undefined) {
      options.onFinish?.(message, { finishReason: done.finishReason, runId, conversationId, usage: done.usage });
    }
  }

  function fail(current: Run, cause: unknown): void {
    run = null;
    const error = toChatError(cause);
    commit(current, { status: "error" }, {
      status: "error",
      error,
      conversationId: current.stream?.conversationId ?? state.conversationId,
    });
    options.onError?.(error);
  }

  // `again`: this asks the last question once more (retry, regenerate), so the server neither stores it twice nor
  // keeps the replaced answer in the model's context.
  async function start(text: string, baseMessages: readonly ChatMessage[], again = false): Promise<void> {
    const current: Run = {
      controller: new AbortController(),
      assistantId: newId(),
      request: text,
      pending: [],
      stream: undefined,
    };
    run = current;
    lastRequest = text;
    cancelFlush();
    setState({
      ...state,
      messages: [...baseMessages, { id: current.assistantId, role: "assistant", content: "", status: "streaming" }],
      status: "submitted",
      error: null,
    });

    let backendError: ChatErrorEvent | undefined;
    try {
      const body: Record<string, unknown> = { ...options.body, message: text };
      if (options.userId !== undefined) body.user_id = options.userId;
      if (state.conversationId !== undefined) body.conversation_id = state.conversationId;
      if (again) body.regenerate = true;
      const stream = streamChat({
        url: options.api,
        body: body as { message: string },
        signal: current.controller.signal,
        fetch: options.fetch,
        headers: resolveHeaders(options.headers),
      });
      current.stream = stream;
      for await (const event of stream) {
        // Stopped or reset meanwhile: leaving the loop closes the connection.
        if (run !== current) return;
        if (event.type === "delta") {
          if (event.text === "") continue;
          current.pending.push(event.text);
          if (state.status === "submitted") {
            commit(current, {}, { status: "streaming", conversationId: stream.conversationId ?? state.conversationId });
          } else {
            scheduleFlush(current);
          }
        } else if (event.type === "error") {
          // The server follows an error frame with a done frame.
          backendError = event;
        } else {
          finish(current, event, backendError);
          return;
        }
      }
      // streamChat throws rather than ending without a done frame, so this
      // is only reached if the run was replaced.
    } catch (cause) {
      if (run !== current) return; // stop() or reset() already updated the state
      fail(current, cause);
    }
  }

  function stopRun(): Run | null {
    const current = run;
    if (current === null) return null;
    run = null;
    // Aborting the fetch closes the connection; the server cancels the run.
    current.controller.abort();
    const runId = current.stream?.runId;
    if (options.cancelUrl !== undefined && runId !== undefined) {
      let url: string | URL = options.cancelUrl(runId);
      if (options.userId !== undefined) {
        // The server only lets a user cancel their own runs.
        url = new URL(url, globalThis.location?.href ?? "http://localhost/");
        url.searchParams.set("user_id", options.userId);
      }
      const doFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
      // keepalive: the request survives the page being closed right after Stop.
      void doFetch(url, { method: "POST", headers: resolveHeaders(options.headers), keepalive: true }).catch(() => {});
    }
    return current;
  }

  return {
    getState: () => state,
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    async sendMessage(text) {
      if (run !== null || text.trim() === "") return;
      const user: ChatMessage = { id: newId(), role: "user", content: text, status: "done" };
      await start(text, [...state.messages, user]);
    },
    stop() {
      const current = stopRun();
      if (current === null) return;
      commit(current, { status: "cancelled", finishReason: "cancelled", runId: current.stream?.runId }, {
        status: "idle",
        error: null,
        conversationId: current.stream?.conversationId ?? state.conversationId,
      });
    },
    async retry() {
      if (run !== null || state.status !== "error" || lastRequest === undefined) return;
      const messages = state.messages;
      const last = messages[messages.length - 1];
      const base = last !== undefined && last.role === "assistant" && last.status === "error" ? messages.slice(0, -1) : messages;
      await start(lastRequest, base, true);
    },
    async regenerate() {
      if (run !== null) return;
      const messages = state.messages;
      let index = messages.length - 1;
      while (index >= 0 && messages[index]?.role !== "user") index -= 1;
      const user = messages[index];
      if (user === undefined) return;
      await start(user.content, messages.slice(0, index + 1), true);
    },
    reset() {
      stopRun();
      cancelFlush();
      lastRequest = undefined;
      setState({ messages: [], status: "idle", error: null, conversationId: undefined });
    },
    setOptions(next) {
      options = { ...options, ...next };
    },
  };
}
