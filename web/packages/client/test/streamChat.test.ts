import { describe, expect, it } from "vitest";
import { ChatStreamError } from "../src/errors";
import type { ChatEvent } from "../src/protocol";
import { resumeChat, runStreamUrl, streamChat, type ChatStream } from "../src/streamChat";
import {
  controlledBody,
  deltaFrame,
  doneFrame,
  fakeFetch,
  jsonResponse,
  seedStream,
  sseResponse,
  wire,
} from "./helpers";

async function collect(stream: ChatStream): Promise<ChatEvent[]> {
  const events: ChatEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

describe("streamChat", () => {
  it("POSTs JSON and yields typed events in order", async () => {
    const { fetch, calls } = fakeFetch(() =>
      sseResponse(
        "retry: 2000\n\n" +
          deltaFrame(1, "Hel") +
          ": ping\n\n" +
          deltaFrame(2, "lo") +
          `id: 3\ndata: ${JSON.stringify({ error: { code: "backend_error", message: "model crashed", retryable: true } })}\n\n` +
          doneFrame(4, { finish_reason: "error", usage: { output_tokens: 2 } }),
        { headers: { "x-run-id": "run-h", "x-conversation-id": "conv-h" } },
      ),
    );
    const stream = streamChat({
      url: "/api/chat/stream",
      body: { message: "Hi", user_id: "u1", conversation_id: "c0" },
      fetch,
      headers: { Authorization: "Bearer t" },
    });
    const events = await collect(stream);

    expect(calls).toHaveLength(1);
    const call = calls[0]!;
    expect(call.method).toBe("POST");
    expect(call.url).toBe("/api/chat/stream");
    expect(call.body).toEqual({ message: "Hi", user_id: "u1", conversation_id: "c0" });
    expect(call.headers.get("content-type")).toBe("application/json");
    expect(call.headers.get("accept")).toBe("text/event-stream");
    expect(call.headers.get("authorization")).toBe("Bearer t");

    expect(events).toEqual([
      { type: "delta", id: "1", text: "Hel" },
      { type: "delta", id: "2", text: "lo" },
      { type: "error", id: "3", code: "backend_error", message: "model crashed", retryable: true },
      {
        type: "done",
        id: "4",
        finishReason: "error",
        runId: "run-1",
        conversationId: "conv-1",
        usage: { output_tokens: 2 },
      },
    ]);
    expect(stream.lastEventId).toBe("4");
    expect(stream.retryMs).toBe(2000);
    // The done frame wins over the headers.
    expect(stream.runId).toBe("run-1");
    expect(stream.conversationId).toBe("conv-1");
  });

  it("exposes header ids before the done frame and tracks the last event id", async () => {
    const body = controlledBody();
    const { fetch } = fakeFetch(({ signal }) =>
      sseResponse(wire(body, signal).stream, { headers: { "x-run-id": "run-h", "x-conversation-id": "conv-h" } }),
    );
    const stream = streamChat({ url: "/s", body: { message: "x" }, fetch });
    const iterator = stream[Symbol.asyncIterator]();
    body.push(deltaFrame(7, "a"));
    expect(await iterator.next()).toEqual({ done: false, value: { type: "delta", id: "7", text: "a" } });
    expect(stream.runId).toBe("run-h");
    expect(stream.conversationId).toBe("conv-h");
    expect(stream.lastEventId).toBe("7");
    body.push(deltaFrame(8, "b"));
    await iterator.next();
    expect(stream.lastEventId).toBe("8");
    await iterator.return?.();
  });

  it("resumeChat GETs the run's stream with Last-Event-ID and continues from there", async () => {
    const { fetch, calls } = fakeFetch(() => sseResponse(deltaFrame(42, "rest") + doneFrame(43)));
    const stream = resumeChat({ url: runStreamUrl("run/1"), lastEventId: "41", fetch });
    expect(stream.lastEventId).toBe("41");
    const events = await collect(stream);
    expect(calls[0]!.url).toBe("/api/runs/run%2F1/stream");
    expect(calls[0]!.method).toBe("GET");
    expect(calls[0]!.headers.get("last-event-id")).toBe("41");
    expect(events.map((event) => event.type)).toEqual(["delta", "done"]);
    expect(stream.lastEventId).toBe("43");
  });

  it("resumeChat yields nothing when the run has nothing left (204)", async () => {
    const { fetch } = fakeFetch(() => new Response(null, { status: 204 }));
    expect(await collect(resumeChat({ url: "/api/runs/r/stream", lastEventId: "9", fetch }))).toEqual([]);
  });

  it("resumeChat reports an expired run with the server's message", async () => {
    const { fetch } = fakeFetch(() => jsonResponse(404, { error: { code: "run_not_found", message: "run r is unknown or expired" } }));
    await expect(collect(resumeChat({ url: "/api/runs/r/stream", lastEventId: "9", fetch }))).rejects.toMatchObject({
      kind: "http",
      status: 404,
      code: "run_not_found",
    });
  });

  it("reads reasoning, tool calls, results and metadata; ignores kinds it does not know", async () => {
    const { fetch } = fakeFetch(() =>
      sseResponse(
        `id: 1\ndata: {"reasoning":"hmm"}\n\n` +
          `id: 2\ndata: {"tool_call":{"id":"t","name":"f"}}\n\n` +
          `id: 3\ndata: {"tool_call_delta":{"id":"t","arguments":"{\\"a\\": 1}"}}\n\n` +
          `id: 4\ndata: {"tool_result":{"id":"t","output":"boom","is_error":true}}\n\n` +
          `id: 5\ndata: {"metadata":{"queue_position":2}}\n\n` +
          `id: 6\ndata: {"sparkles":true}\n\n` +
          `event: ping\ndata: not json at all\n\n` +
          deltaFrame(7, "ok") +
          `id: 8\ndata: {"done":true,"finish_reason":"stop","saved":false}\n\n`,
      ),
    );
    const events = await collect(streamChat({ url: "/s", body: { message: "x" }, fetch }));
    expect(events).toEqual([
      { type: "reasoning", id: "1", text: "hmm" },
      { type: "tool-call", id: "2", callId: "t", name: "f" },
      { type: "tool-call-delta", id: "3", callId: "t", arguments: '{"a": 1}' },
      { type: "tool-result", id: "4", callId: "t", output: "boom", isError: true },
      { type: "metadata", id: "5", data: { queue_position: 2 } },
      { type: "delta", id: "7", text: "ok" },
      { type: "done", id: "8", finishReason: "stop", runId: undefined, conversationId: undefined, usage: undefined, saved: false },
    ]);
  });

  it("parses the same events whatever the chunking (CRLF server, split everywhere)", async () => {
    const text = seedStream(["Grüße ", "👋", " — ", "日本"]).replace(/\n/g, "\r\n");
    const bytes = new TextEncoder().encode(text);
    const expected = await collect(streamChat({ url: "/s", body: { message: "x" }, fetch: fakeFetch(() => sseResponse(text)).fetch }));
    expect(expected.filter((event) => event.type === "delta").map((event) => (event.type === "delta" ? event.text : "")).join("")).toBe(
      "Grüße 👋 — 日本",
    );
    for (let offset = 1; offset < bytes.length; offset += 1) {
      const { fetch } = fakeFetch(() => {
        const body = controlledBody();
        body.push(bytes.slice(0, offset));
        body.push(bytes.slice(offset));
        body.close();
        return sseResponse(body.stream);
      });
      const events = await collect(streamChat({ url: "/s", body: { message: "x" }, fetch }));
      if (JSON.stringify(events) !== JSON.stringify(expected)) expect({ offset, events }).toEqual({ offset, events: expected });
    }
  });

  it("throws a typed error with the server's message on an HTTP error", async () => {
    const { fetch } = fakeFetch(() =>
      jsonResponse(413, { error: { code: "message_too_long", message: "message: 40000 bytes is over the limit", field: "message" } }),
    );
    const error = await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch })));
    expect(error).toBeInstanceOf(ChatStreamError);
    expect(error).toMatchObject({
      kind: "http",
      status: 413,
      code: "message_too_long",
      field: "message",
      retryable: false,
      message: "message: 40000 bytes is over the limit",
    });
  });

  it("reads FastAPI validation details", async () => {
    const { fetch } = fakeFetch(() =>
      jsonResponse(422, { detail: [{ loc: ["body", "message"], msg: "Field required", type: "missing" }] }),
    );
    const error = await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch })));
    expect(error).toMatchObject({ kind: "http", status: 422, field: "message", message: "message: Field required" });
  });

  it("falls back to a status message for non-JSON errors and marks 5xx/429 retryable", async () => {
    const { fetch } = fakeFetch(() => new Response("<html><body>Bad gateway</body></html>", { status: 502, statusText: "Bad Gateway" }));
    const error = await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch })));
    expect(error).toMatchObject({ kind: "http", status: 502, retryable: true, message: "The server answered 502 Bad Gateway." });

    const overloaded = fakeFetch(() => jsonResponse(503, { error: { code: "overloaded", message: "too many runs" } }));
    expect(await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch: overloaded.fetch })))).toMatchObject({
      retryable: true,
      message: "too many runs",
    });
  });

  it("throws 'incomplete' when the stream ends without its done frame", async () => {
    const { fetch } = fakeFetch(() => sseResponse(deltaFrame(1, "partial") + "id: 2\ndata: {\"delta\":\"cut"));
    const stream = streamChat({ url: "/s", body: { message: "x" }, fetch });
    const seen: ChatEvent[] = [];
    const error = await failure(
      (async () => {
        for await (const event of stream) seen.push(event);
      })(),
    );
    expect(seen).toEqual([{ type: "delta", id: "1", text: "partial" }]);
    expect(error).toMatchObject({ kind: "incomplete", retryable: true });
  });

  it("throws 'network' when fetch fails or the connection drops", async () => {
    const offline = fakeFetch(() => Promise.reject(new TypeError("Failed to fetch")));
    expect(await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch: offline.fetch })))).toMatchObject({
      kind: "network",
      retryable: true,
    });

    const body = controlledBody();
    const dropped = fakeFetch(() => sseResponse(body.stream));
    const promise = failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch: dropped.fetch })));
    body.push(deltaFrame(1, "a"));
    await body.drained();
    body.error(new TypeError("network error"));
    expect(await promise).toMatchObject({ kind: "network" });
  });

  it("throws 'protocol' for a non-SSE response or invalid JSON", async () => {
    const html = fakeFetch(() => new Response("<!doctype html>", { status: 200, headers: { "content-type": "text/html" } }));
    expect(await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch: html.fetch })))).toMatchObject({
      kind: "protocol",
    });
    const garbage = fakeFetch(() => sseResponse("data: {not json\n\n"));
    expect(await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch: garbage.fetch })))).toMatchObject({
      kind: "protocol",
    });
  });

  it("aborting the signal rejects with AbortError and cancels the body", async () => {
    const body = controlledBody();
    const { fetch, calls } = fakeFetch(({ signal }) => sseResponse(wire(body, signal).stream));
    const controller = new AbortController();
    const seen: string[] = [];
    const promise = failure(
      (async () => {
        for await (const event of streamChat({ url: "/s", body: { message: "x" }, fetch, signal: controller.signal })) {
          if (event.type === "delta") seen.push(event.text);
        }
      })(),
    );
    body.push(deltaFrame(1, "a"));
    await body.drained();
    controller.abort();
    const error = await promise;
    expect((error as Error).name).toBe("AbortError");
    expect(calls[0]!.signal.aborted).toBe(true);
    expect(seen).toEqual(["a"]);
  });

  it("cancels the body on abort even if the fetch implementation ignores the signal", async () => {
    const body = controlledBody();
    const { fetch } = fakeFetch(() => sseResponse(body.stream)); // not wired to the signal
    const controller = new AbortController();
    const promise = failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch, signal: controller.signal })));
    body.push(deltaFrame(1, "a"));
    await body.drained();
    controller.abort();
    expect((await promise as Error).name).toBe("AbortError");
    expect(body.cancelled).toBe(true);
  });

  it("rejects at once when the signal is already aborted", async () => {
    const { fetch, calls } = fakeFetch(() => sseResponse(seedStream(["a"])));
    const controller = new AbortController();
    controller.abort();
    const error = await failure(collect(streamChat({ url: "/s", body: { message: "x" }, fetch, signal: controller.signal })));
    expect((error as Error).name).toBe("AbortError");
    expect(calls).toHaveLength(0);
  });

  it("leaving the loop early closes the connection", async () => {
    const body = controlledBody();
    const { fetch } = fakeFetch(() => sseResponse(body.stream));
    body.push(deltaFrame(1, "a") + deltaFrame(2, "b"));
    for await (const event of streamChat({ url: "/s", body: { message: "x" }, fetch })) {
      expect(event.type).toBe("delta");
      break;
    }
    expect(body.cancelled).toBe(true);
  });

  it("can only be iterated once", async () => {
    const { fetch } = fakeFetch(() => sseResponse(seedStream(["a"])));
    const stream = streamChat({ url: "/s", body: { message: "x" }, fetch });
    expect(await collect(stream)).toHaveLength(2);
    expect(await collect(stream)).toEqual([]);
  });
});
