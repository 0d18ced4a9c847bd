/**
 * A TransformStream wrapper around the SSE parser:
 *
 *   response.body.pipeThrough(createEventSourceStream()) // ReadableStream<EventSourceMessage>
 *
 * Bytes go in, events come out. Kept separate from `parser.ts` so the
 * parser itself stays free of any stream or I/O API.
 */
import { createParser, type EventSourceMessage } from "./parser.js";

export interface EventSourceStreamOptions {
  onRetry?: (retryMs: number) => void;
  onComment?: (comment: string) => void;
}

/**
 * Create a `TransformStream` from raw response bytes to parsed events.
 *
 * Decoding uses `TextDecoder` with `stream: true`, so a multi-byte UTF-8
 * character split between two network chunks is held back until its last
 * byte arrives instead of turning into U+FFFD. `ignoreBOM: true` keeps a
 * leading BOM in the text so the parser strips exactly one, as the SSE spec
 * says (a default TextDecoder would strip it and the parser a second one).
 */
export function createEventSourceStream(
  options: EventSourceStreamOptions = {},
): TransformStream<Uint8Array, EventSourceMessage> {
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  let feed: (text: string) => void = () => {};

  return new TransformStream<Uint8Array, EventSourceMessage>({
    start(controller) {
      const parser = createParser({
        onEvent: (message) => controller.enqueue(message),
        onRetry: options.onRetry,
        onComment: options.onComment,
      });
      feed = parser.feed;
    },
    transform(chunk) {
      feed(decoder.decode(chunk, { stream: true }));
    },
    flush() {
      // Emit any bytes the decoder was holding (an incomplete character
      // becomes U+FFFD). An event without its terminating blank line is not
      // dispatched: the spec discards an unfinished event at end of stream.
      feed(decoder.decode());
    },
  });
}
