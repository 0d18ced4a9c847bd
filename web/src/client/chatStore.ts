/**
 * A framework-free chat store: the conversation state plus the actions that
 * change it (send, stop, retry, regenerate, reset). React binds to it with
 * `useSyncExternalStore` (see `src/react/useStreamingChat.ts`); any other UI
 * can call `subscribe` / `getState` directly. The network is a
 * `ChatTransport` (transport.ts): tokenrelay's HTTP endpoints unless the
 * `transport` option says otherwise.
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
import {
  animationFrameScheduler,
  backendChatError,
  finishedStatus,
  lastUserIndex,
  toChatError,
  updateMessage,
  withoutFailedAnswer,
  type ChatMessage,
  type ChatState,
  type ChatStore,
  type ChatStoreOptions,
  type MessagePatch,
} from "./chatState";
import { cutOffError } from "./errors";
import { createId } from "./ids";
import type { ChatDoneEvent, ChatErrorEvent, ChatRequest } from "./protocol";
import { Reconnection, wait } from "./reconnect";
import type { ChatStream } from "./streamChat";
import { createHttpTransport, type ChatSendRequest, type ChatTransport } from "./transport";

export { animationFrameScheduler, toChatError } from "./chatState";
export type {
  ChatError,
  ChatMessage,
  ChatRole,
  ChatState,
  ChatStatus,
  ChatStore,
  ChatStoreOptions,
  FinishDetails,
  FlushScheduler,
  MessageStatus,
} from "./chatState";

/** One answer being received. */
interface Run {
  readonly controller: AbortController;
  readonly assistantId: string;
  /** The transport it was sent with: reconnecting and cancelling use the same one. */
  readonly transport: ChatTransport;
  /** Deltas received but not yet applied to the state. */
  pending: string[];
  /** The stream being read: the first one, or the latest reconnection. */
  stream: ChatStream | undefined;
  /** What the answer's earlier streams said, for as long as the current one has not said it. */
  runId: string | undefined;
  conversationId: string | undefined;
  lastEventId: string | undefined;
  /** An error frame, waiting for the done frame the server sends after it. */
  backendError: ChatErrorEvent | undefined;
}

function runIdOf(run: Run): string | undefined {
  return run.stream?.runId ?? run.runId;
}

function conversationIdOf(run: Run): string | undefined {
  return run.stream?.conversationId ?? run.conversationId;
}

/** Keep what the dropped stream knew: the reconnection's stream starts knowing less. */
function remember(run: Run, stream: ChatStream): void {
  run.runId = stream.runId ?? run.runId;
  run.conversationId = stream.conversationId ?? run.conversationId;
  run.lastEventId = stream.lastEventId ?? run.lastEventId;
}

/** Run `action` and forget how it ends: a thrown error and a rejection alike. */
function ignoreFailure(action: () => Promise<void>): void {
  try {
    action().catch(() => {});
  } catch {
    // A transport that throws at once is ignored the same way.
  }
}

class Store {
  options: ChatStoreOptions;
  state: ChatState;
  private readonly listeners = new Set<() => void>();
  private run: Run | null = null;
  private cancelScheduledFlush: (() => void) | null = null;
  // The text of the last request, for retry().
  private lastRequest: string | undefined;

  constructor(options: ChatStoreOptions) {
    this.options = { ...options };
    this.state = { messages: options.initialMessages ?? [], status: "idle", error: null, conversationId: options.conversationId };
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  async sendMessage(text: string): Promise<void> {
    if (this.run !== null || text.trim() === "") return;
    const user: ChatMessage = { id: this.newId(), role: "user", content: text, status: "done" };
    await this.start(text, [...this.state.messages, user]);
  }

  stop(): void {
    const current = this.stopRun();
    if (current === null) return;
    this.commit(current, { status: "cancelled", finishReason: "cancelled", runId: runIdOf(current) }, {
      status: "idle",
      error: null,
      conversationId: conversationIdOf(current) ?? this.state.conversationId,
    });
  }

  async retry(): Promise<void> {
    if (this.run !== null || this.state.status !== "error" || this.lastRequest === undefined) return;
    await this.start(this.lastRequest, withoutFailedAnswer(this.state.messages), true);
  }

  async regenerate(): Promise<void> {
    if (this.run !== null) return;
    const messages = this.state.messages;
    const index = lastUserIndex(messages);
    const user = messages[index];
    if (user === undefined) return;
    await this.start(user.content, messages.slice(0, index + 1), true);
  }

  reset(): void {
    this.stopRun();
    this.cancelFlush();
    this.lastRequest = undefined;
    this.setState({ messages: [], status: "idle", error: null, conversationId: undefined });
  }

  private newId(): string {
    return (this.options.generateId ?? createId)();
  }

  private setState(next: ChatState): void {
    this.state = next;
    for (const listener of Array.from(this.listeners)) listener();
  }

  private cancelFlush(): void {
    if (this.cancelScheduledFlush !== null) {
      this.cancelScheduledFlush();
      this.cancelScheduledFlush = null;
    }
  }

  /** Apply the run's buffered text plus `patch` to its assistant message and `statePatch` to the state, in one update. */
  private commit(current: Run, patch: MessagePatch, statePatch: Partial<ChatState>): ChatMessage | undefined {
    this.cancelFlush();
    const text = current.pending.length > 0 ? current.pending.join("") : "";
    current.pending = [];
    const { messages, updated } = updateMessage(this.state.messages, current.assistantId, text, patch);
    this.setState({ ...this.state, ...statePatch, messages });
    return updated;
  }

  private scheduleFlush(current: Run): void {
    if (this.cancelScheduledFlush !== null) return;
    const scheduler = this.options.scheduleFlush ?? animationFrameScheduler;
    this.cancelScheduledFlush = scheduler(() => {
      this.cancelScheduledFlush = null;
      if (this.run === current && current.pending.length > 0) this.commit(current, {}, {});
    });
  }

  // `again`: this asks the last question once more (retry, regenerate), so the server neither stores it twice nor
  // keeps the replaced answer in the model's context.
  private async start(text: string, baseMessages: readonly ChatMessage[], again = false): Promise<void> {
    const current = this.begin(text, baseMessages);
    try {
      await this.follow(current, { body: this.requestBody(text, again), signal: current.controller.signal });
    } catch (cause) {
      if (this.run !== current) return; // stop() or reset() already updated the state
      this.fail(current, cause);
    }
  }

  private begin(text: string, baseMessages: readonly ChatMessage[]): Run {
    const current: Run = {
      controller: new AbortController(),
      assistantId: this.newId(),
      transport: this.options.transport ?? createHttpTransport(this.options),
      pending: [],
      stream: undefined,
      runId: undefined,
      conversationId: undefined,
      lastEventId: undefined,
      backendError: undefined,
    };
    this.run = current;
    this.lastRequest = text;
    this.cancelFlush();
    this.setState({
      ...this.state,
      messages: [...baseMessages, { id: current.assistantId, role: "assistant", content: "", status: "streaming" }],
      status: "submitted",
      error: null,
    });
    return current;
  }

  private requestBody(text: string, again: boolean): ChatRequest {
    const body: ChatRequest = { ...this.options.body, message: text };
    if (this.options.userId !== undefined) body.user_id = this.options.userId;
    if (this.state.conversationId !== undefined) body.conversation_id = this.state.conversationId;
    if (again) body.regenerate = true;
    return body;
  }

  /**
   * Read the answer to its done frame: the first stream, then a
   * reconnection after each drop the `reconnect` policy allows. Throws the
   * error that ended the answer.
   */
  private async follow(current: Run, request: ChatSendRequest): Promise<void> {
    const reconnection = new Reconnection(this.options.reconnect);
    let stream = current.transport.send(request);
    for (;;) {
      current.stream = stream;
      let cause: unknown;
      try {
        if (await this.read(current, stream)) return;
        cause = cutOffError(); // a transport's stream may end quietly without its done frame
      } catch (error) {
        cause = error;
      }
      if (this.run !== current) return;
      remember(current, stream);
      const { runId, lastEventId } = current;
      const delay = reconnection.next(cause, { runId, lastEventId, retryMs: stream.retryMs });
      if (delay === null || runId === undefined) throw cause;
      await wait(delay, current.controller.signal);
      if (this.run !== current) return;
      stream = current.transport.reconnect({ runId, lastEventId, userId: this.options.userId, signal: request.signal });
    }
  }

  /** Apply one stream's events to the answer. True once the answer is over here: finished, stopped or replaced. */
  private async read(current: Run, stream: ChatStream): Promise<boolean> {
    for await (const event of stream) {
      // Stopped or reset meanwhile: leaving the loop closes the connection.
      if (this.run !== current) return true;
      switch (event.type) {
        case "delta":
          this.receive(current, event.text);
          break;
        case "error":
          // The server follows an error frame with a done frame.
          current.backendError = event;
          break;
        case "done":
          this.finish(current, event);
          return true;
      }
    }
    return this.run !== current;
  }

  private receive(current: Run, text: string): void {
    if (text === "") return;
    current.pending.push(text);
    if (this.state.status === "submitted") {
      this.commit(current, {}, { status: "streaming", conversationId: conversationIdOf(current) ?? this.state.conversationId });
    } else {
      this.scheduleFlush(current);
    }
  }

  private finish(current: Run, done: ChatDoneEvent): void {
    this.run = null;
    const conversationId = done.conversationId ?? conversationIdOf(current) ?? this.state.conversationId;
    const runId = done.runId ?? runIdOf(current);
    const { finishReason } = done;
    if (finishReason === "error" || current.backendError !== undefined) {
      const error = backendChatError(current.backendError);
      this.commit(current, { status: "error", finishReason, runId }, { status: "error", error, conversationId });
      this.options.onError?.(error);
      return;
    }
    const message = this.commit(
      current,
      { status: finishedStatus(done), finishReason, runId },
      { status: "idle", error: null, conversationId },
    );
    if (message !== undefined) this.options.onFinish?.(message, { finishReason, runId, conversationId, usage: done.usage });
  }

  private fail(current: Run, cause: unknown): void {
    this.run = null;
    const error = toChatError(cause);
    this.commit(current, { status: "error" }, {
      status: "error",
      error,
      conversationId: conversationIdOf(current) ?? this.state.conversationId,
    });
    this.options.onError?.(error);
  }

  private stopRun(): Run | null {
    const current = this.run;
    if (current === null) return null;
    this.run = null;
    // Aborting the request closes the connection; the server cancels the run.
    current.controller.abort();
    const runId = runIdOf(current);
    if (runId !== undefined) ignoreFailure(() => current.transport.cancel({ runId, userId: this.options.userId }));
    return current;
  }
}

/** A chat store over `options.transport`, or over tokenrelay's HTTP endpoints at `options.api`. */
export function createChatStore(initialOptions: ChatStoreOptions): ChatStore {
  const store = new Store(initialOptions);
  // Plain functions, not methods: callers pass them around unbound (`onClick={stop}`).
  return {
    getState: () => store.state,
    subscribe: (listener) => store.subscribe(listener),
    sendMessage: (text) => store.sendMessage(text),
    stop: () => store.stop(),
    retry: () => store.retry(),
    regenerate: () => store.regenerate(),
    reset: () => store.reset(),
    setOptions(next) {
      store.options = { ...store.options, ...next };
    },
  };
}
