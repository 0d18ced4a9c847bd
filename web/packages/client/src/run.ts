/**
 * One answer being received by the chat store, and what the store remembers
 * of an answer that failed, so `retry()` knows whether to pick the run up
 * again, to send the question again, or to send a refused message anew.
 */
import type { PendingEvent } from "./chatState.js";
import type { ChatStream } from "./chatStream.js";
import type { ChatErrorEvent } from "./protocol.js";
import type { ChatTransport } from "./transport.js";

/** How long a stopped answer waits for the server to name its run (to cancel it) before just closing. */
export const STOP_WAIT_MS = 5000;

export interface Run {
  readonly controller: AbortController;
  readonly assistantId: string;
  /** The transport it was sent with: reconnecting and cancelling use the same one. */
  readonly transport: ChatTransport;
  /** Events received but not yet applied to the state. */
  pending: PendingEvent[];
  /** The stream being read: the first one, or the latest reconnection. */
  stream: ChatStream | undefined;
  /** What the answer's earlier streams said, for as long as the current one has not said it. */
  runId: string | undefined;
  conversationId: string | undefined;
  lastEventId: string | undefined;
  /** An error frame, waiting for the done frame the server sends after it. */
  backendError: ChatErrorEvent | undefined;
  /** The user message this run added (by `sendMessage`), taken back out when the server refuses it. */
  readonly question: { readonly id: string; readonly text: string } | undefined;
  /** Whether any event arrived: a refusal can only come before the first. */
  received: boolean;
  /** Whether the server has answered: after that, a run id it did not give will not come. */
  opened: boolean;
  /** Stopped by the user: the cancel is sent as soon as the run's id is known. */
  stopped: boolean;
  cancelSent: boolean;
  stopTimer: ReturnType<typeof setTimeout> | undefined;
}

/** What `retry()` does after the answer in error. */
export type Failure =
  /** The server refused the message: send it again, as a new message. */
  | { readonly kind: "refused"; readonly text: string }
  /** The connection was lost for good: follow the run again after the last event received. */
  | {
      readonly kind: "interrupted";
      readonly runId: string;
      readonly lastEventId: string | undefined;
      readonly assistantId: string;
    }
  /** The answer failed: ask the question again. */
  | { readonly kind: "failed"; readonly text: string | undefined };

export function newRun(
  assistantId: string,
  transport: ChatTransport,
  question: Run["question"],
  known: { runId?: string; lastEventId?: string } = {},
): Run {
  return {
    controller: new AbortController(),
    assistantId,
    transport,
    pending: [],
    stream: undefined,
    runId: known.runId,
    conversationId: undefined,
    lastEventId: known.lastEventId,
    backendError: undefined,
    question,
    received: false,
    opened: false,
    stopped: false,
    cancelSent: false,
    stopTimer: undefined,
  };
}

export function runIdOf(run: Run): string | undefined {
  return run.stream?.runId ?? run.runId;
}

export function conversationIdOf(run: Run): string | undefined {
  return run.stream?.conversationId ?? run.conversationId;
}

/** Keep what the dropped stream knew: the reconnection's stream starts knowing less. */
export function remember(run: Run, stream: ChatStream): void {
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

/**
 * The end of a stopped run: the explicit cancel (a closed connection alone
 * leaves the run to finish, under the server's default policy), then the
 * connection closed. Before the server has named the run there is nothing
 * to cancel yet: the connection stays open until it does (the store calls
 * this again then) or until `STOP_WAIT_MS` have passed.
 */
export function settleStop(run: Run, userId: string | undefined): void {
  const runId = runIdOf(run);
  if (runId === undefined && !run.opened && !run.controller.signal.aborted) {
    run.stopTimer ??= setTimeout(() => settleAnyway(run), STOP_WAIT_MS);
    return;
  }
  if (runId !== undefined && !run.cancelSent) {
    run.cancelSent = true;
    ignoreFailure(() => run.transport.cancel({ runId, userId }));
  }
  settleAnyway(run);
}

function settleAnyway(run: Run): void {
  if (run.stopTimer !== undefined) clearTimeout(run.stopTimer);
  run.stopTimer = undefined;
  run.controller.abort();
}
