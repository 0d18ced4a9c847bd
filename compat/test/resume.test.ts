// Resuming after any event id, read by the SDK itself: DefaultChatTransport.reconnectToStream (which validates every
// chunk against the SDK's schema) with Last-Event-ID, then readUIMessageStream continuing the message the client
// held. The SDK throws on a delta for a part its stream has not started, so every resume point is a real check.
import { DefaultChatTransport, type UIMessage, type UIMessageChunk, isToolUIPart, readUIMessageStream } from "ai";
import { describe, expect, it } from "vitest";
import { api, baseUrl, newChatId, textOf, userMessage } from "./helpers";

type Frame = { id: number | undefined; chunk: UIMessageChunk };

function parseFrames(raw: string): Frame[] {
  const frames: Frame[] = [];
  for (const block of raw.split("\n\n")) {
    const id = /^id: (\d+)$/m.exec(block)?.[1];
    const data = /^data: (.*)$/m.exec(block)?.[1];
    if (data === undefined || data === "[DONE]") continue;
    frames.push({ id: id === undefined ? undefined : Number(id), chunk: JSON.parse(data) as UIMessageChunk });
  }
  return frames;
}

/** The raw stream of a new chat's answer: its run id and every frame with the id written on it. */
async function record(text: string, chatId = newChatId()): Promise<{ runId: string; frames: Frame[] }> {
  const response = await fetch(api, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: chatId, messages: [userMessage(text)], trigger: "submit-message" }),
  });
  expect(response.status).toBe(200);
  return { runId: response.headers.get("x-run-id") ?? "", frames: parseFrames(await response.text()) };
}

function streamOf<T>(items: T[]): ReadableStream<T> {
  return new ReadableStream<T>({
    start(controller) {
      for (const item of items) controller.enqueue(item);
      controller.close();
    },
  });
}

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream as unknown as AsyncIterable<T>) out.push(item);
  return out;
}

/** The message the SDK builds from ``chunks``, continuing ``message``; any error the SDK raises fails the test. */
async function build(chunks: UIMessageChunk[], message?: UIMessage): Promise<UIMessage | undefined> {
  let last = message;
  const stream = readUIMessageStream({ message, stream: streamOf(chunks), terminateOnError: true });
  for await (const snapshot of stream) last = snapshot;
  return last;
}

/** The rest of a run after ``after``, as the SDK's transport reads it from ``url`` with Last-Event-ID. */
async function resumeChunks(url: string, after: number, chatId = newChatId()): Promise<UIMessageChunk[]> {
  const transport = new DefaultChatTransport<UIMessage>({
    api,
    prepareReconnectToStreamRequest: () => ({ api: url, headers: { "Last-Event-ID": String(after) } }),
  });
  const stream = await transport.reconnectToStream({ chatId });
  expect(stream).not.toBeNull();
  return collect(stream!);
}

function summary(message: UIMessage | undefined) {
  const parts = message?.parts ?? [];
  return {
    text: textOf(message),
    reasoning: parts.map((p) => (p.type === "reasoning" ? p.text : "")).join(""),
    tools: parts.filter(isToolUIPart).map((p) => ({ id: p.toolCallId, state: p.state, input: p.input, output: p.output })),
  };
}

describe("resume after any event id", () => {
  for (const question of ["weather?", "think"]) {
    it(`continues "${question}" from every id, inside text, reasoning and a tool call`, async () => {
      const { runId, frames } = await record(question);
      const whole = summary(await build(frames.map((f) => f.chunk)));
      const ids = [...new Set(frames.flatMap((f) => (f.id === undefined ? [] : [f.id])))];
      expect(ids.length).toBeGreaterThan(2);
      for (const after of ids.slice(0, -1)) {
        // The client holds every frame up to the last one that carries an id <= after.
        const held = frames.slice(0, frames.findLastIndex((f) => f.id !== undefined && f.id <= after) + 1);
        const rest = await resumeChunks(`${baseUrl}/api/runs/${runId}/stream?protocol=ai-sdk`, after);
        const message = await build(held.map((f) => f.chunk));
        expect({ after, ...summary(await build(rest, message)) }).toEqual({ after, ...whole });
        await build(rest); // a reader that kept nothing accepts it too
      }
    });
  }

  it("resumes a running chat mid-text through GET /api/chat/{id}/stream with Last-Event-ID", async () => {
    const chatId = newChatId();
    const response = await fetch(api, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: chatId, messages: [userMessage("slow")], trigger: "submit-message" }),
    });
    // Read the live stream until a few deltas are in, as a client would before its connection drops.
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let raw = "";
    while ((raw.match(/"text-delta"/g) ?? []).length < 3) raw += (await reader.read()).value ?? "";
    raw = raw.slice(0, raw.lastIndexOf("\n\n") + 2);
    const held = parseFrames(raw);
    const after = Math.max(...held.flatMap((f) => (f.id === undefined ? [] : [f.id])));
    const rest = resumeChunks(`${api}/${chatId}/stream`, after, chatId);
    const message = await build(held.map((f) => f.chunk));
    expect(textOf(message)).toMatch(/^(tick )+$/);
    const resumed = await rest;
    expect(resumed[0]).toMatchObject({ type: "text-start" }); // the open part, re-opened for the new stream
    expect(textOf(await build(resumed, message))).toBe(`${"tick ".repeat(19)}done.`);
    await reader.cancel();
  });
});
