/**
 * A framework-free chat store: the conversation state plus the actions that
 * change it (send, stop, retry, regenerate, reset). React binds to it with
 * `useSyncExternalStore` (see `useStreamingChat` in @tokenrelay/react); any other UI
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
  type ChatError,
  type ChatMessage,
  type ChatState,
  type ChatStore,
  type ChatStoreOptions,
  type MessagePatch,
  type PendingEvent,
} from "./chatState.js";
import { answerApproval } from "./approvals.js";
import { ChatStreamError, cutOffError } from "./errors.js";
import { createId } from "./ids.js";
import type { ChatDoneEvent, ChatRequest } from "./protocol.js";
import { DEFAULT_RECONNECT, Reconnection, wait } from "./reconnect.js";
import { conversationIdOf, newRun, remember, runIdOf, settleStop, type Failure, type Run } from "./run.js";
import type { ChatStream } from "./streamChat.js";
import { createHttpTransport, type ChatTransport } from "./transport.js";

export type { ChatStoreOptions } from "./chatState.js";

/** A drop that reconnecting may get past: the connection, not the request, failed. */
function isDrop(cause: unknown): boolean {
  return cause instanceof ChatStreamError && (cause.kind === "network" || cause.kind === "incomplete" || cause.retryable);
}

class Store {
  options: ChatStoreOptions;
  state: ChatState;
  private readonly listeners = new Set<() => void>();
  private run: Run | null = null;
  private cancelScheduledFlush: (() => void) | null = null;
  // What retry() does: set when an answer fails.
  private failure: Failure | undefined;
  // The text of the last question asked, for regenerate-style retries.
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
    await this.start(text, [...this.state.messages, user], false, user.id);
  }

  stop(): void {
    const current = this.stopRun();
    if (current === null) return;
    this.failure = undefined;
    this.commit(current, { status: "cancelled", finishReason: "cancelled", runId: runIdOf(current) }, {
      status: "idle",
      error: null,
      conversationId: conversationIdOf(current) ?? this.state.conversationId,
      runId: undefined,
    });
  }

  async retry(): Promise<void> {
    const failure = this.failure;
    if (this.run !== null || this.state.status !== "error" || failure === undefined) return;
    if (failure.kind === "refused") return this.sendMessage(failure.text);
    if (failure.kind === "interrupted") return this.follow(failure.runId, failure.lastEventId, failure.assistantId);
    if (failure.text === undefined) return;
    await this.start(failure.text, withoutFailedAnswer(this.state.messages), true);
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
    this.clear(undefined, []);
  }

  load(conversationId: string | undefined, messages: readonly ChatMessage[]): void {
    // Not a Stop: an answer being received goes on on the server, and opening its conversation again picks it up.
    const current = this.run;
    this.run = null;
    current?.controller.abort();
    this.clear(conversationId, messages);
  }

  private clear(conversationId: string | undefined, messages: readonly ChatMessage[]): void {
    this.cancelFlush();
    this.failure = undefined;
    this.lastRequest = undefined;
    this.setState({ messages, status: "idle", error: null, conversationId });
  }

  async resume(runId: string, lastEventId?: string): Promise<void> {
    if (this.run !== null) return;
    const question = this.state.messages[lastUserIndex(this.state.messages)];
    this.lastRequest = question?.content;
    await this.follow(runId, lastEventId, undefined);
  }

  approve(runId: string, callId: string, approved: boolean, reason?: string): Promise<ChatError | null> {
    const host = {
      messages: () => this.state.messages,
      setMessages: (messages: readonly ChatMessage[]) => this.setState({ ...this.state, messages }),
      transport: this.run?.transport ?? this.transport(),
      userId: this.options.userId,
    };
    return answerApproval(host, { runId, callId, approved, reason });
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

  /** Apply the run's buffered events plus `patch` to its assistant message and `statePatch` to the state, in one update. */
  private commit(current: Run, patch: MessagePatch, statePatch: Partial<ChatState>): ChatMessage | undefined {
    this.cancelFlush();
    const events = current.pending;
    current.pending = [];
    const { messages, updated } = updateMessage(this.state.messages, current.assistantId, events, patch);
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
  private async start(text: string, baseMessages: readonly ChatMessage[], again: boolean, questionId?: string): Promise<void> {
    const question = questionId === undefined ? undefined : { id: questionId, text };
    const current = this.begin(newRun(this.newId(), this.transport(), question), baseMessages);
    this.lastRequest = text;
    const body = this.requestBody(text, again);
    await this.drive(current, () => current.transport.send({ body, signal: current.controller.signal, onOpen: () => this.opened(current) }));
  }

  /** Follow run `runId` into answer `assistantId` (an answer that was interrupted), or into a new one. */
  private async follow(runId: string, lastEventId: string | undefined, assistantId: string | undefined): Promise<void> {
    const current = newRun(assistantId ?? this.newId(), this.transport(), undefined, { runId, lastEventId });
    this.begin(current, this.state.messages);
    await this.drive(current, () => this.reconnectStream(current, runId, lastEventId));
  }

  private transport(): ChatTransport {
    return this.options.transport ?? createHttpTransport(this.options);
  }

  /** Make `current` the run in progress, its answer streaming (a new one, or the interrupted one resumed). */
  private begin(current: Run, baseMessages: readonly ChatMessage[]): Run {
    this.run = current;
    this.failure = undefined;
    this.cancelFlush();
    const shown = baseMessages.some((message) => message.id === current.assistantId);
    const messages = shown
      ? baseMessages.map((message) => (message.id === current.assistantId ? { ...message, status: "streaming" as const } : message))
      : [...baseMessages, { id: current.assistantId, role: "assistant" as const, content: "", status: "streaming" as const }];
    this.setState({ ...this.state, messages, status: "submitted", error: null, runId: current.runId });
    return current;
  }

  private requestBody(text: string, again: boolean): ChatRequest {
    const body: ChatRequest = { ...this.options.body, message: text };
    if (this.options.userId !== undefined) body.user_id = this.options.userId;
    if (this.state.conversationId !== undefined) body.conversation_id = this.state.conversationId;
    if (again) body.regenerate = true;
    return body;
  }

  private async drive(current: Run, open: () => ChatStream): Promise<void> {
    try {
      await this.readToEnd(current, open);
    } catch (cause) {
      if (this.run !== current) return; // stop() or reset() already updated the state
      this.fail(current, cause);
    }
  }

  /** The server named the run (its response headers arrived): a stopped run is cancelled now, a live one shown. */
  private opened(current: Run): void {
    current.opened = true;
    if (current.stopped) {
      settleStop(current, this.options.userId);
      return;
    }
    const runId = runIdOf(current);
    const conversationId = conversationIdOf(current) ?? this.state.conversationId;
    if (this.run !== current || (runId === this.state.runId && conversationId === this.state.conversationId)) return;
    this.setState({ ...this.state, runId, conversationId });
  }

  private reconnectStream(current: Run, runId: string, lastEventId: string | undefined): ChatStream {
    const { signal } = current.controller;
    const onOpen = () => this.opened(current);
    return current.transport.reconnect({ runId, lastEventId, userId: this.options.userId, signal, onOpen });
  }

  /**
   * Read the answer to its done frame: the first stream, then a
   * reconnection after each drop the `reconnect` policy allows. Throws the
   * error that ended the answer.
   */
  private async readToEnd(current: Run, open: () => ChatStream): Promise<void> {
    const reconnecting = this.options.reconnect === false ? { attempts: 0 } : (this.options.reconnect ?? DEFAULT_RECONNECT);
    const reconnection = new Reconnection(reconnecting, current.runId !== undefined);
    let stream = open();
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
      stream = this.reconnectStream(current, runId, lastEventId);
    }
  }

  /** Apply one stream's events to the answer. True once the answer is over here: finished, stopped or replaced. */
  private async read(current: Run, stream: ChatStream): Promise<boolean> {
    for await (const event of stream) {
      // Stopped or reset meanwhile: cancel the run if that waited for its id; leaving the loop closes the connection.
      current.opened = true;
      if (this.run !== current) {
        if (current.stopped) settleStop(current, this.options.userId);
        return true;
      }
      current.received = true;
      switch (event.type) {
        case "error":
          // The server follows an error frame with a done frame.
          current.backendError = event;
          break;
        case "done":
          this.finish(current, event);
          return true;
        default:
          this.receive(current, event.type === "delta" ? event.text : event);
      }
    }
    return this.run !== current;
  }

  private receive(current: Run, item: PendingEvent): void {
    if (item === "") return;
    current.pending.push(item);
    if (this.state.status === "submitted") {
      const conversationId = conversationIdOf(current) ?? this.state.conversationId;
      this.commit(current, {}, { status: "streaming", conversationId, runId: runIdOf(current) });
    } else {
      this.scheduleFlush(current);
    }
  }

  private finish(current: Run, done: ChatDoneEvent): void {
    this.run = null;
    const conversationId = done.conversationId ?? conversationIdOf(current) ?? this.state.conversationId;
    const runId = done.runId ?? runIdOf(current);
    const { finishReason } = done;
    const saved = done.saved === false ? { saved: false as const } : {};
    if (finishReason === "error" || current.backendError !== undefined) {
      const error = backendChatError(current.backendError);
      this.failure = { kind: "failed", text: this.lastRequest };
      const patch = { status: "error" as const, finishReason, runId, errorCode: error.code, ...saved };
      this.commit(current, patch, { status: "error", error, conversationId, runId: undefined });
      this.options.onError?.(error);
      return;
    }
    const message = this.commit(
      current,
      { status: finishedStatus(done), finishReason, runId, ...saved },
      { status: "idle", error: null, conversationId, runId: undefined },
    );
    if (message !== undefined) this.options.onFinish?.(message, { finishReason, runId, conversationId, usage: done.usage });
  }

  private fail(current: Run, cause: unknown): void {
    this.run = null;
    const conversationId = conversationIdOf(current) ?? this.state.conversationId;
    const runId = runIdOf(current);
    let error: ChatError = toChatError(cause);
    const question = current.question;
    if (question !== undefined && !current.received && error.kind === "http") {
      // Refused before answering: the message goes back to its sender, not into the conversation.
      this.failure = { kind: "refused", text: question.text };
      error = { ...error, unsent: question.text };
      const messages = this.state.messages.filter((m) => m.id !== question.id && m.id !== current.assistantId);
      this.cancelFlush();
      current.pending = [];
      this.setState({ ...this.state, messages, status: "error", error, conversationId, runId: undefined });
    } else {
      this.failure =
        runId !== undefined && isDrop(cause)
          ? { kind: "interrupted", runId, lastEventId: current.lastEventId, assistantId: current.assistantId }
          : { kind: "failed", text: this.lastRequest };
      this.commit(current, { status: "error" }, { status: "error", error, conversationId, runId: undefined });
    }
    this.options.onError?.(error);
  }

  private stopRun(): Run | null {
    const current = this.run;
    if (current === null) return null;
    this.run = null;
    current.stopped = true;
    if (current.stream !== undefined) remember(current, current.stream);
    settleStop(current, this.options.userId);
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
    load: (conversationId, messages) => store.load(conversationId, messages),
    resume: (runId, lastEventId) => store.resume(runId, lastEventId),
    approve: (runId, callId, approved, reason) => store.approve(runId, callId, approved, reason),
    setOptions(next) {
      store.options = { ...store.options, ...next };
    },
  };
}
