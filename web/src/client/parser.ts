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
 * a closure over plain variables rather than a class.
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

export function createParser(callbacks: ParserCallbacks): EventSourceParser {
  const { onEvent, onRetry, onComment } = callbacks;

  // Pieces of the current, not yet terminated line. A server may send one
  // long line in many small chunks; concatenating `buffer += chunk` and
  // rescanning the whole buffer for a newline on every chunk would be
  // O(n²) in the line length. Instead each chunk is scanned exactly once and
  // the pieces are joined once, when the line ends.
  let pieces: string[] = [];
  // The previous chunk ended in CR: if this chunk starts with LF, that LF is
  // the second half of a CRLF split across chunks, not an empty line.
  let afterCR = false;
  // Nothing has been fed yet, so a leading BOM is still to be stripped.
  let atStreamStart = true;

  // The event being built.
  let dataLines: string[] = [];
  let eventType = "";
  // "last event ID buffer" in the spec: survives dispatch, changed only by `id:`.
  let lastEventIdBuffer = "";
  let lastEventId = "";

  function dispatch(): void {
    lastEventId = lastEventIdBuffer;
    if (dataLines.length === 0) {
      // No data field: nothing to dispatch (but `event:` is still cleared).
      eventType = "";
      return;
    }
    const message: EventSourceMessage = {
      event: eventType === "" ? "message" : eventType,
      data: dataLines.join("\n"),
      id: lastEventId,
    };
    dataLines = [];
    eventType = "";
    onEvent(message);
  }

  function processLine(line: string): void {
    if (line.length === 0) {
      dispatch();
      return;
    }
    if (line.charCodeAt(0) === COLON) {
      onComment?.(line.slice(line.charCodeAt(1) === SPACE ? 2 : 1));
      return;
    }
    const colon = line.indexOf(":");
    let field: string;
    let value: string;
    if (colon === -1) {
      // A line without a colon is a field name with an empty value.
      field = line;
      value = "";
    } else {
      field = line.slice(0, colon);
      // Exactly one space after the colon is part of the syntax, not the value.
      value = line.slice(line.charCodeAt(colon + 1) === SPACE ? colon + 2 : colon + 1);
    }
    switch (field) {
      case "data":
        dataLines.push(value);
        break;
      case "event":
        eventType = value;
        break;
      case "id":
        // An id with NULL is ignored entirely (the whole field, not the event).
        if (value.indexOf("\u0000") === -1) lastEventIdBuffer = value;
        break;
      case "retry":
        if (DIGITS_ONLY.test(value)) onRetry?.(parseInt(value, 10));
        break;
      default:
        // Unknown fields are ignored, as the spec requires.
        break;
    }
  }

  function feed(chunk: string): void {
    const length = chunk.length;
    if (length === 0) return;
    let position = 0;

    if (atStreamStart) {
      atStreamStart = false;
      if (chunk.charCodeAt(0) === BOM) position = 1;
    }
    if (afterCR) {
      afterCR = false;
      if (position < length && chunk.charCodeAt(position) === LF) position += 1;
    }

    let lineStart = position;
    while (position < length) {
      const code = chunk.charCodeAt(position);
      if (code !== LF && code !== CR) {
        position += 1;
        continue;
      }
      const tail = chunk.slice(lineStart, position);
      let line: string;
      if (pieces.length === 0) {
        line = tail;
      } else {
        pieces.push(tail);
        line = pieces.join("");
        pieces = [];
      }
      position += 1;
      if (code === CR) {
        if (position < length) {
          if (chunk.charCodeAt(position) === LF) position += 1;
        } else {
          // The LF of this CRLF, if any, is in the next chunk.
          afterCR = true;
        }
      }
      lineStart = position;
      processLine(line);
    }
    if (lineStart < length) pieces.push(chunk.slice(lineStart));
  }

  function reset(): void {
    pieces = [];
    afterCR = false;
    atStreamStart = true;
    dataLines = [];
    eventType = "";
    lastEventIdBuffer = "";
    lastEventId = "";
  }

  return {
    feed,
    reset,
    get lastEventId() {
      return lastEventId;
    },
  };
}
