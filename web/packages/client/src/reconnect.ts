/**
 * When the chat store reconnects after a dropped connection, and how long it
 * waits first. I/O-free: the store asks `next()` after each failure and does
 * the waiting and the request itself.
 *
 * On by default (`DEFAULT_RECONNECT`): the server keeps a run whose
 * connection dropped for a grace period (30 s by default), and the waits
 * here add up to well under it. Under `on_disconnect=cancel` the run is
 * already over when the client comes back, and the resume shows how it
 * ended.
 */
import { ChatStreamError } from "./errors.js";

export interface ReconnectOptions {
  /** Reconnections in a row without a new event before giving up (an event received resets the count). */
  attempts: number;
  /** The first wait in milliseconds, doubled after each failure in a row (at most 8 s). Defaults to 250. */
  delayMs?: number;
}

/** Where the dropped stream stood. */
export interface StreamPosition {
  readonly runId: string | undefined;
  readonly lastEventId: string | undefined;
  /** The server's `retry:` hint: a longer wait than the backoff's wins. */
  readonly retryMs: number | undefined;
}

/** Six tries in a row: 0.25 + 0.5 + 1 + 2 + 4 + 8 s, about 16 s of a dead network before the answer fails. */
export const DEFAULT_RECONNECT: ReconnectOptions = { attempts: 6, delayMs: 250 };

const DEFAULT_DELAY_MS = 250;
const MAX_DELAY_MS = 8000;

/** The reconnection bookkeeping of one answer. */
export class Reconnection {
  private failures = 0;
  private seen: string | undefined;
  private reconnected: boolean;

  /** `resuming`: the first stream is already a reconnection, so a 5xx on it is worth another try. */
  constructor(
    private readonly options: ReconnectOptions | undefined,
    resuming = false,
  ) {
    this.reconnected = resuming;
  }

  /**
   * Milliseconds to wait before reconnecting after `cause`, or `null` to give
   * up (`cause` is then the answer's error). Only a drop is worth another
   * try: a connection that broke or a stream that ended without `done`, and,
   * once reconnecting, a status the server may answer differently later
   * (429, 5xx). Nothing is retried before the run id is known.
   */
  next(cause: unknown, position: StreamPosition): number | null {
    if (position.runId === undefined || !this.isDrop(cause)) return null;
    if (position.lastEventId !== this.seen) {
      // Progress since the last drop: the count is of failures in a row.
      this.seen = position.lastEventId;
      this.failures = 0;
    }
    if (this.failures >= (this.options?.attempts ?? 0)) return null;
    const backoff = Math.min((this.options?.delayMs ?? DEFAULT_DELAY_MS) * 2 ** this.failures, MAX_DELAY_MS);
    this.failures += 1;
    this.reconnected = true;
    return Math.max(backoff, position.retryMs ?? 0);
  }

  private isDrop(cause: unknown): boolean {
    if (!(cause instanceof ChatStreamError)) return false;
    if (cause.kind === "network" || cause.kind === "incomplete") return true;
    return this.reconnected && cause.kind === "http" && cause.retryable;
  }
}

/** Resolve after `ms`, or at once when `signal` aborts (the caller then sees that its run was stopped). */
export function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
