// The AI SDK's own UI-message-stream reader (DefaultChatTransport validates every chunk against the `ai`
// package's uiMessageChunkSchema) against the real server.
import {
  DefaultChatTransport,
  UI_MESSAGE_STREAM_HEADERS,
  type UIMessage,
  type UIMessageChunk,
  getToolName,
  isToolUIPart,
  readUIMessageStream,
} from "ai";
import { describe, expect, it } from "vitest";
import { api, baseUrl, newChatId, textOf, userMessage } from "./helpers";

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out.push(value);
  }
}

async function send(text: string, chatId = newChatId()): Promise<UIMessageChunk[]> {
  const transport = new DefaultChatTransport<UIMessage>({ api });
  const stream = await transport.sendMessages({
    chatId,
    messages: [userMessage(text)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  return collect(stream);
}

async function lastMessage(chunks: UIMessageChunk[]): Promise<UIMessage | undefined> {
  const stream = new ReadableStream<UIMessageChunk>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
  let last: UIMessage | undefined;
  for await (const message of readUIMessageStream({ stream })) last = message;
  return last;
}

describe("UI message stream v1", () => {
  it("answers with the SDK's headers and a stream that ends in [DONE]", async () => {
    const body = { id: newChatId(), messages: [userMessage("hello")], trigger: "submit-message" };
    const response = await fetch(api, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-vercel-ai-ui-message-stream")).toBe(UI_MESSAGE_STREAM_HEADERS["x-vercel-ai-ui-message-stream"]);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const raw = await response.text();
    expect(raw.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(raw).toMatch(/^id: \d+$/m); // the run's sequence ids, for exact resumes
  });

  it("streams text as start / text-start / text-delta / text-end / finish", async () => {
    const chunks = await send("hello");
    // Deltas that queued up while the connection was busy are joined into one: how many varies.
    const types = chunks.map((c) => c.type).filter((type, i, all) => type !== "text-delta" || all[i - 1] !== type);
    expect(types).toEqual(["start", "start-step", "text-start", "text-delta", "text-end", "finish-step", "finish"]);
    expect(chunks.at(-1)).toMatchObject({ type: "finish", finishReason: "stop" });
    const message = await lastMessage(chunks);
    expect(message?.role).toBe("assistant");
    expect(textOf(message)).toBe("Hello from tokenrelay.");
  });

  it("streams reasoning as its own part", async () => {
    const message = await lastMessage(await send("think"));
    expect(message?.parts.filter((p) => p.type !== "step-start")).toMatchObject([
      { type: "reasoning", text: "The user wants a greeting.", state: "done" },
      { type: "text", text: "Hi!", state: "done" },
    ]);
  });

  it("streams a tool call with its input and output", async () => {
    const chunks = await send("weather?");
    expect(chunks.map((c) => c.type)).toContain("tool-input-available");
    const message = await lastMessage(chunks);
    const tools = (message?.parts ?? []).filter(isToolUIPart);
    expect(tools).toHaveLength(1);
    const tool = tools[0]!;
    expect(getToolName(tool)).toBe("get_weather");
    expect(tool).toMatchObject({
      toolCallId: "call_1",
      state: "output-available",
      input: { city: "Paris" },
      output: "sunny, 21C",
      providerExecuted: true,
    });
    expect(textOf(message)).toBe("Let me check.It is sunny in Paris.");
    // The answer after the tool result is a new step, as the SDK's own agents write it.
    expect(message?.parts.filter((p) => p.type === "step-start")).toHaveLength(2);
  });

  it("reports a failure as an error chunk", async () => {
    const chunks = await send("fail");
    expect(chunks).toContainEqual({ type: "error", errorText: "the model fell over" });
    expect(chunks.at(-1)).toMatchObject({ type: "finish", finishReason: "error" });
  });

  it("reconnectToStream gets 204 (null) when the chat has nothing running", async () => {
    const transport = new DefaultChatTransport<UIMessage>({ api });
    expect(await transport.reconnectToStream({ chatId: newChatId() })).toBeNull();
    expect(baseUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });
});
