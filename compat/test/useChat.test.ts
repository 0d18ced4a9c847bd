// @ai-sdk/react's useChat with DefaultChatTransport, unmodified, under React Testing Library, against the real
// server: text, a tool call, an error, Stop (with tokenrelayStop, the server cancels the run) and resume.
import { useChat } from "@ai-sdk/react";
import { act, renderHook, waitFor } from "@testing-library/react";
import { tokenrelayStop } from "@tokenrelay/client";
import { DefaultChatTransport, isToolUIPart } from "ai";
import { afterEach, describe, expect, it } from "vitest";
import { api, baseUrl, eventually, health, newChatId, textOf } from "./helpers";

function renderChat({ fetch, ...options }: { id?: string; resume?: boolean; fetch?: typeof globalThis.fetch } = {}) {
  const transport = new DefaultChatTransport({ api, fetch });
  return renderHook(() => useChat({ transport, ...options }));
}

afterEach(async () => {
  // Every test leaves the server idle; the next one may count on it.
  await eventually(async () => expect((await health()).active_runs).toBe(0));
});

describe("useChat", () => {
  it("sends a message and shows the streamed answer", async () => {
    const { result } = renderChat();
    await act(() => result.current.sendMessage({ text: "hello" }));
    await waitFor(() => expect(result.current.status).toBe("ready"));
    expect(result.current.error).toBeUndefined();
    expect(result.current.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
    expect(textOf(result.current.messages[1])).toBe("Hello from tokenrelay.");
  });

  it("keeps the conversation on the server: a follow-up is a new turn of the same chat", async () => {
    const { result } = renderChat({ id: newChatId() });
    await act(() => result.current.sendMessage({ text: "hello" }));
    await waitFor(() => expect(result.current.status).toBe("ready"));
    await act(() => result.current.sendMessage({ text: "weather?" }));
    await waitFor(() => expect(result.current.status).toBe("ready"));
    expect(result.current.messages.map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant"]);
    expect(textOf(result.current.messages[3])).toBe("Let me check.It is sunny in Paris.");
  });

  it("shows a tool call the server ran, with its input and output", async () => {
    const { result } = renderChat();
    await act(() => result.current.sendMessage({ text: "weather?" }));
    await waitFor(() => expect(result.current.status).toBe("ready"));
    const answer = result.current.messages[1];
    const tool = answer?.parts.find(isToolUIPart);
    expect(tool).toMatchObject({
      type: "tool-get_weather",
      toolCallId: "call_1",
      state: "output-available",
      input: { city: "Paris" },
      output: "sunny, 21C",
    });
  });

  it("surfaces a mid-stream failure as the hook's error", async () => {
    const { result } = renderChat();
    await act(() => result.current.sendMessage({ text: "fail" }));
    await waitFor(() => expect(result.current.status).toBe("error"));
    expect(result.current.error?.message).toBe("the model fell over");
    expect(textOf(result.current.messages[1])).toBe("Starting");
  });

  it("stop() with tokenrelayStop's cancel() cancels the run on the server at once", async () => {
    const before = await health();
    const stopper = tokenrelayStop(baseUrl);
    const { result } = renderChat({ fetch: stopper.fetch });
    act(() => {
      void result.current.sendMessage({ text: "slow" });
    });
    await waitFor(() => expect(textOf(result.current.messages[1])).toContain("tick"));
    expect((await health()).active_runs).toBe(1);
    const pressed = Date.now();
    let cancelled = false;
    await act(async () => {
      [, cancelled] = await Promise.all([result.current.stop(), stopper.cancel()]);
    });
    expect(cancelled).toBe(true);
    // cancel() returns once the server recorded the run's end: the model was stopped, not left to finish.
    const after = await health();
    expect(after.active_runs).toBe(0);
    expect(Date.now() - pressed).toBeLessThan(250);
    expect(after.backend_info.streams_cancelled).toBe(before.backend_info.streams_cancelled + 1);
    expect(result.current.status).toBe("ready");
    expect(textOf(result.current.messages[1])).not.toContain("done.");
  });

  it("a Stop pressed before the server answered still cancels the run it started", async () => {
    const before = await health();
    // The response is held back until the Stop was pressed: the request is out, its run id not in yet.
    let sent!: () => void;
    let answer!: () => void;
    const requestSent = new Promise<void>((resolve) => (sent = resolve));
    const pressed = new Promise<void>((resolve) => (answer = resolve));
    const heldBack: typeof globalThis.fetch = async (input, init) => {
      const response = fetch(input, init);
      sent();
      await pressed;
      return response;
    };
    const stopper = tokenrelayStop(baseUrl, { fetch: heldBack });
    const { result } = renderChat({ fetch: stopper.fetch });
    act(() => {
      void result.current.sendMessage({ text: "slow" });
    });
    await requestSent;
    await waitFor(() => expect(result.current.status).toBe("submitted"));
    let cancelled = false;
    await act(async () => {
      const stopped = Promise.all([result.current.stop(), stopper.cancel()]);
      answer();
      [, cancelled] = await stopped;
    });
    expect(cancelled).toBe(true);
    const after = await health();
    expect(after.active_runs).toBe(0);
    expect(after.backend_info.streams_cancelled).toBe(before.backend_info.streams_cancelled + 1);
    await waitFor(() => expect(result.current.status).toBe("ready"));
  });

  it("a bare stop() only drops the connection: the run goes on for a resume", async () => {
    const before = await health();
    const { result } = renderChat();
    act(() => {
      void result.current.sendMessage({ text: "slow" });
    });
    await waitFor(() => expect(textOf(result.current.messages[1])).toContain("tick"));
    await act(() => result.current.stop());
    expect(result.current.status).toBe("ready");
    expect((await health()).active_runs).toBe(1);
    const after = await eventually(async () => {
      const now = await health();
      expect(now.active_runs).toBe(0);
      return now;
    });
    expect(after.backend_info.streams_cancelled).toBe(before.backend_info.streams_cancelled);
  });

  it("resume: true picks up the chat's running answer (and gets 204 when nothing runs)", async () => {
    const id = newChatId();
    const first = renderChat({ id });
    act(() => {
      void first.result.current.sendMessage({ text: "slow" });
    });
    await waitFor(() => expect(textOf(first.result.current.messages[1])).toContain("tick"));

    // Another tab (or this one after a reload) opens the same chat: useChat asks GET /api/chat/{id}/stream.
    const second = renderChat({ id, resume: true });
    await waitFor(() => expect(second.result.current.status).toBe("streaming"));
    await waitFor(() => expect(second.result.current.status).toBe("ready"), { timeout: 10_000 });
    const resumed = second.result.current.messages.at(-1);
    expect(resumed?.role).toBe("assistant");
    expect(textOf(resumed)).toMatch(/^(tick ){19}done\.$/); // the whole answer, from its start
    await waitFor(() => expect(first.result.current.status).toBe("ready"));
    expect(textOf(first.result.current.messages[1])).toBe(textOf(resumed));

    // Nothing runs any more: a third opening of the chat resumes nothing and stays ready.
    const third = renderChat({ id, resume: true });
    await waitFor(() => expect(third.result.current.status).toBe("ready"));
    expect(third.result.current.messages).toEqual([]);
    const response = await fetch(`${baseUrl}/api/chat/${id}/stream`);
    expect(response.status).toBe(204);
  });
});
