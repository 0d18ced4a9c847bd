/**
 * Incremental Server-Sent Events parser.
 *
 * Implements the parsing half of the WHATWG "event stream interpretation"
 * rules (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 *
 * - lines end in CR, LF or CRLF, and a CRLF may be split across two chunks;
 * - one leading U+FEFF BYTE ORDER MARK at the start of the stream is ignored;
 * - `data:` lines accumulate and are joined with LF; `event:` sets the type;
 *   `id:` sets the last event ID unless its value contains U+0000 NULL;
 *   `retry:` is honoured only when its value is ASCII digits;
 * - lines starting with ":" are comments; unknown fields are ignored;
 * - a blank line dispatches the event; an event with no `data:` line is
 *   not dispatched; an unfinished event at the end of the stream is dropped
 *   (the parser simply never sees the blank line that would dispatch it).
 *
 * The parser takes already-decoded text and does no I/O, so it runs
 * anywhere (browser, worker, Node). Decode bytes with
 * `new TextDecoder("utf-8", { ignoreBOM: true })` and `decode(chunk, { stream: true })`
 * so multi-byte characters split across chunks survive, and let this parser
 * strip the BOM (see `stream.ts`, which does exactly that).
 *
 * Shape modelled on eventsource-parser: `createParser(callbacks) → { feed, reset }`,
 * plain functions the caller can pass around unbound.
 */

/** One dispatched event. */
export interface EventSourceMessage {
  /** The event type: the last `event:` field, or "message" when none was given. */
  readonly event: string;
  /** The `data:` lines of the event joined with "\n". */
  readonly data: string;
  /**
   * The stream's last event ID at dispatch time. Per spec it persists across
   * events until another `id:` field changes it; "" when never set.
   */
  readonly id: string;
}

export interface ParserCallbacks {
  /** Called for every dispatched event, in order. Should not throw. */
  onEvent: (message: EventSourceMessage) => void;
  /** Called with the reconnection time in milliseconds from a valid `retry:` field. */
  onRetry?: (retryMs: number) => void;
  /** Called with the text of a comment line (without ":" and one leading space), e.g. heartbeats. */
  onComment?: (comment: string) => void;
}

export interface EventSourceParser {
  /** Feed the next piece of decoded text. Pieces may be split anywhere. */
  feed(chunk: string): void;
  /**
   * Forget everything: the unterminated line, the event being built, the
   * last event ID and whether a BOM was seen. Use before parsing a new stream.
   */
  reset(): void;
  /** The last event ID seen so far ("" if none). */
  readonly lastEventId: string;
}

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;
const BOM = 0xfeff;
const DIGITS_ONLY = /^[0-9]+$/;

/** A field line split at its first colon; a line without one is a field name with an empty value. */
function splitField(line: string): [field: string, value: string] {
  const colon = line.indexOf(":");
  if (colon === -1) return [line, ""];
  // Exactly one space after the colon is part of the syntax, not the value.
  return [line.slice(0, colon), line.slice(line.charCodeAt(colon + 1) === SPACE ? colon + 2 : colon + 1)];
}

class Parser {
  // Pieces of the current, not yet terminated line. A server may send one
  // long line in many small chunks; concatenating `buffer += chunk` and
  // rescanning the whole buffer for a newline on every chunk would be
  // O(n²) in the line length. Instead each chunk is scanned exactly once and
  // the pieces are joined once, when the line ends.
  private pieces: string[] = [];
  // The previous chunk ended in CR: if this chunk starts with LF, that LF is
  // the second half of a CRLF split across chunks, not an empty line.
  private afterCR = false;
  // Nothing has been fed yet, so a leading BOM is still to be stripped.
  private atStreamStart = true;

  // The event being built.
  private dataLines: string[] = [];
  private eventType = "";
  // "last event ID buffer" in the spec: survives dispatch, changed only by `id:`.
  private lastEventIdBuffer = "";
  lastEventId = "";

  // Taken once, as given, and called as plain functions.
  private readonly onEvent: ParserCallbacks["onEvent"];
  private readonly onRetry: ParserCallbacks["onRetry"];
  private readonly onComment: ParserCallbacks["onComment"];

  constructor(callbacks: ParserCallbacks) {
    ({ onEvent: this.onEvent, onRetry: this.onRetry, onComment: this.onComment } = callbacks);
  }

  feed(chunk: string): void {
    const length = chunk.length;
    if (length === 0) return;
    let position = this.skipStart(chunk);
    let lineStart = position;
    while (position < length) {
      const code = chunk.charCodeAt(position);
      if (code !== LF && code !== CR) {
        position += 1;
        continue;
      }
      const line = this.endLine(chunk.slice(lineStart, position));
      position += 1;
      if (code === CR) {
        if (position < length) {
          if (chunk.charCodeAt(position) === LF) position += 1;
        } else {
          // The LF of this CRLF, if any, is in the next chunk.
          this.afterCR = true;
        }
      }
      lineStart = position;
      this.processLine(line);
    }
    if (lineStart < length) this.pieces.push(chunk.slice(lineStart));
  }

  reset(): void {
    this.pieces = [];
    this.afterCR = false;
    this.atStreamStart = true;
    this.dataLines = [];
    this.eventType = "";
    this.lastEventIdBuffer = "";
    this.lastEventId = "";
  }

  /** Where the chunk's text starts: after the stream's BOM, or after the LF of a CRLF the last chunk split. */
  private skipStart(chunk: string): number {
    let position = 0;
    if (this.atStreamStart) {
      this.atStreamStart = false;
      if (chunk.charCodeAt(0) === BOM) position = 1;
    }
    if (this.afterCR) {
      this.afterCR = false;
      if (position < chunk.length && chunk.charCodeAt(position) === LF) position += 1;
    }
    return position;
  }

  /** The whole line that `tail` ends: joined with the pieces earlier chunks left. */
  private endLine(tail: string): string {
    if (this.pieces.length === 0) return tail;
    this.pieces.push(tail);
    const line = this.pieces.join("");
    this.pieces = [];
    return line;
  }

  private processLine(line: string): void {
    if (line.length === 0) {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === COLON) {
      const { onComment } = this;
      onComment?.(line.slice(line.charCodeAt(1) === SPACE ? 2 : 1));
      return;
    }
    const [field, value] = splitField(line);
    switch (field) {
      case "data":
        this.dataLines.push(value);
        break;
      case "event":
        this.eventType = value;
        break;
      case "id":
        // An id with NULL is ignored entirely (the whole field, not the event).
        if (value.indexOf("\u0000") === -1) this.lastEventIdBuffer = value;
        break;
      case "retry":
        if (DIGITS_ONLY.test(value)) {
          const { onRetry } = this;
          onRetry?.(parseInt(value, 10));
        }
        break;
      default:
        // Unknown fields are ignored, as the spec requires.
        break;
    }
  }

  private dispatch(): void {
    this.lastEventId = this.lastEventIdBuffer;
    if (this.dataLines.length === 0) {
      // No data field: nothing to dispatch (but `event:` is still cleared).
      this.eventType = "";
      return;
    }
    const message: EventSourceMessage = {
      event: this.eventType === "" ? "message" : this.eventType,
      data: this.dataLines.join("\n"),
      id: this.lastEventId,
    };
    this.dataLines = [];
    this.eventType = "";
    const { onEvent } = this;
    onEvent(message);
  }
}

export function createParser(callbacks: ParserCallbacks): EventSourceParser {
  const parser = new Parser(callbacks);
  return {
    feed: (chunk) => parser.feed(chunk),
    reset: () => parser.reset(),
    get lastEventId() {
      return parser.lastEventId;
    },
  };
}
