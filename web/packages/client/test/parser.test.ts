import { describe, expect, it } from "vitest";
import { createParser, type EventSourceMessage } from "../src/parser";
import { createEventSourceStream } from "../src/stream";
import { fixtures, lineEndingVariants, type Fixture } from "./fixtures/sse";

interface Parsed {
  events: EventSourceMessage[];
  retries: number[];
  comments: string[];
}

const encoder = new TextEncoder();

/** Parse byte chunks the way a network reader does: streaming decode, then the parser. */
function parseByteChunks(chunks: Uint8Array[]): Parsed {
  const result: Parsed = { events: [], retries: [], comments: [] };
  const parser = createParser({
    onEvent: (event) => result.events.push(event),
    onRetry: (retry) => result.retries.push(retry),
    onComment: (comment) => result.comments.push(comment),
  });
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  for (const chunk of chunks) parser.feed(decoder.decode(chunk, { stream: true }));
  parser.feed(decoder.decode());
  return result;
}

function parseStringChunks(chunks: string[]): Parsed {
  const result: Parsed = { events: [], retries: [], comments: [] };
  const parser = createParser({
    onEvent: (event) => result.events.push(event),
    onRetry: (retry) => result.retries.push(retry),
    onComment: (comment) => result.comments.push(comment),
  });
  for (const chunk of chunks) parser.feed(chunk);
  return result;
}

function expected(fixture: Fixture): Parsed {
  return {
    events: fixture.events,
    retries: fixture.retries ?? [],
    comments: fixture.comments ?? [],
  };
}

/** Cut `bytes` at the given ascending offsets. */
function cut(bytes: Uint8Array, offsets: number[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const offset of offsets) {
    chunks.push(bytes.subarray(start, offset));
    start = offset;
  }
  chunks.push(bytes.subarray(start));
  return chunks;
}

/** Every way to cut into two pieces, and into three for short streams. */
function* allSplits(length: number, maxThreeWay = 160): Generator<number[]> {
  for (let i = 0; i <= length; i += 1) yield [i];
  if (length > maxThreeWay) return;
  for (let i = 1; i < length; i += 1) {
    for (let j = i + 1; j < length; j += 1) yield [i, j];
  }
}

describe("createParser: fixtures", () => {
  for (const fixture of fixtures) {
    for (const variant of lineEndingVariants(fixture.text)) {
      const bytes = encoder.encode(variant.text);

      it(`${fixture.name} [${variant.ending}] whole`, () => {
        expect(parseByteChunks([bytes])).toEqual(expected(fixture));
      });

      it(`${fixture.name} [${variant.ending}] split at every byte position (2 and 3 pieces)`, () => {
        let checked = 0;
        for (const offsets of allSplits(bytes.length)) {
          const result = parseByteChunks(cut(bytes, offsets));
          // toEqual on every split is slow; compare cheaply, explain on failure.
          if (JSON.stringify(result) !== JSON.stringify(expected(fixture))) {
            expect({ offsets, result }).toEqual({ offsets, result: expected(fixture) });
          }
          checked += 1;
        }
        expect(checked).toBeGreaterThan(bytes.length);
      });

      it(`${fixture.name} [${variant.ending}] one byte at a time`, () => {
        const chunks = Array.from(bytes, (_, index) => bytes.subarray(index, index + 1));
        expect(parseByteChunks(chunks)).toEqual(expected(fixture));
      });

      it(`${fixture.name} [${variant.ending}] one UTF-16 unit at a time (string input)`, () => {
        expect(parseStringChunks(variant.text.split(""))).toEqual(expected(fixture));
      });
    }
  }
});

describe("createParser: edge cases", () => {
  it("treats a CRLF split across chunks as one line ending", () => {
    // If the split LF were a second line ending it would be a blank line and
    // dispatch "a" on its own.
    const result = parseStringChunks(["data: a\r", "\ndata: b\r\n\r\n"]);
    expect(result.events).toEqual([{ event: "message", data: "a\nb", id: "" }]);
  });

  it("keeps CR at the end of a chunk pending across empty chunks", () => {
    const result = parseStringChunks(["data: a\r", "", "", "\ndata: b\r", "\r"]);
    expect(result.events).toEqual([{ event: "message", data: "a\nb", id: "" }]);
  });

  it("treats CR CR as two line endings", () => {
    const result = parseStringChunks(["data: a\r", "\r", "data: b\r\r"]);
    expect(result.events.map((event) => event.data)).toEqual(["a", "b"]);
  });

  it("decodes multi-byte characters split between chunks", () => {
    const bytes = encoder.encode("data: 👋é\n\n");
    // Cut inside the 4-byte emoji and inside the 2-byte é.
    const result = parseByteChunks(cut(bytes, [7, 8, 9, 11, 12]));
    expect(result.events[0]?.data).toBe("👋é");
  });

  it("strips a BOM that arrives split across byte chunks", () => {
    const bytes = encoder.encode("\uFEFFdata: x\n\n");
    expect(bytes.slice(0, 3)).toEqual(new Uint8Array([0xef, 0xbb, 0xbf]));
    const result = parseByteChunks(cut(bytes, [1, 2]));
    expect(result.events).toEqual([{ event: "message", data: "x", id: "" }]);
  });

  it("exposes the last event id", () => {
    const parser = createParser({ onEvent: () => {} });
    parser.feed("id: 41\ndata: a\n\nid: 42\ndata: b\n");
    // id 42 is buffered but its event was not dispatched yet.
    expect(parser.lastEventId).toBe("41");
    parser.feed("\n");
    expect(parser.lastEventId).toBe("42");
  });

  it("reset() forgets the unfinished event and line", () => {
    const events: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (event) => events.push(event) });
    parser.feed("id: 1\nevent: half\ndata: lost\ndata: also lo");
    parser.reset();
    parser.feed("\uFEFFdata: fresh\n\n");
    expect(events).toEqual([{ event: "message", data: "fresh", id: "" }]);
    expect(parser.lastEventId).toBe("");
  });

  it("handles a long line delivered one character at a time in linear time", () => {
    const events: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (event) => events.push(event) });
    const payload = "x".repeat(300_000);
    parser.feed("data: ");
    for (let index = 0; index < payload.length; index += 1) parser.feed("x");
    parser.feed("\n\n");
    expect(events).toHaveLength(1);
    expect(events[0]?.data.length).toBe(payload.length);
  });

  it("handles many events in one chunk", () => {
    const events: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (event) => events.push(event) });
    let text = "";
    for (let index = 1; index <= 5000; index += 1) text += `id: ${index}\ndata: {"delta":"t${index}"}\n\n`;
    parser.feed(text);
    expect(events).toHaveLength(5000);
    expect(events[4999]).toEqual({ event: "message", data: '{"delta":"t5000"}', id: "5000" });
  });
});

describe("createEventSourceStream", () => {
  async function collect(chunks: Uint8Array[]): Promise<{ events: EventSourceMessage[]; retries: number[]; comments: string[] }> {
    const retries: number[] = [];
    const comments: string[] = [];
    const source = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(chunk);
        controller.close();
      },
    });
    const events: EventSourceMessage[] = [];
    const reader = source
      .pipeThrough(createEventSourceStream({ onRetry: (r) => retries.push(r), onComment: (c) => comments.push(c) }))
      .getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      events.push(value);
    }
    return { events, retries, comments };
  }

  for (const name of ["tokenrelay seed protocol", "multi-byte UTF-8", "leading BOM is stripped once", "unfinished event at the end is discarded"]) {
    const fixture = fixtures.find((candidate) => candidate.name === name) as Fixture;
    it(`${name}: every two-piece split of the CRLF variant`, async () => {
      const bytes = encoder.encode((lineEndingVariants(fixture.text)[2] as { text: string }).text);
      for (let offset = 0; offset <= bytes.length; offset += 1) {
        const result = await collect(cut(bytes, [offset]));
        if (JSON.stringify(result) !== JSON.stringify(expected(fixture))) {
          expect({ offset, result }).toEqual({ offset, result: expected(fixture) });
        }
      }
    });
  }

  it("flushes an incomplete trailing character as U+FFFD but drops the unfinished event", async () => {
    const bytes = encoder.encode("data: ok\n\ndata: 👋");
    const result = await collect([bytes.subarray(0, bytes.length - 1)]);
    expect(result.events).toEqual([{ event: "message", data: "ok", id: "" }]);
  });
});
