// @vitest-environment jsdom
import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { FetchLike } from "@tokenrelay/client";
import { useStreamingChat, type UseStreamingChatResult } from "../src/useStreamingChat";
import { controlledBody, deltaFrame, doneFrame, fakeFetch, jsonResponse, seedStream, sseResponse, wire, type ControlledBody } from "../../client/test/helpers";

afterEach(() => {
  cleanup();
});

interface HarnessProps {
  fetch: FetchLike;
  onRender?: (chat: UseStreamingChatResult) => void;
  /** Receives each click's `sendMessage` promise (settled once that send is over, or at once if it was ignored). */
  onSend?: (sent: Promise<void>) => void;
}

function Harness({ fetch, onRender, onSend }: HarnessProps) {
  const chat = useStreamingChat("/api/chat/stream", { fetch });
  onRender?.(chat);
  const answer = chat.messages.filter((message) => message.role === "assistant").at(-1);
  const send = () => {
    const sent = chat.sendMessage("go");
    onSend?.(sent);
  };
  return (
    <div>
      <button onClick={send}>send</button>
      <button onClick={chat.stop}>stop</button>
      <button onClick={() => void chat.retry()}>retry</button>
      <output data-testid="status">{chat.status}</output>
      <output data-testid="loading">{String(chat.isLoading)}</output>
      <output data-testid="length">{answer?.content.length ?? 0}</output>
      <output data-testid="answer">{answer?.content ?? ""}</output>
      <output data-testid="error">{chat.error?.message ?? ""}</output>
      <output data-testid="count">{chat.messages.length}</output>
    </div>
  );
}

function streamingFetch() {
  const bodies: ControlledBody[] = [];
  const fake = fakeFetch(({ signal }) => {
    const body = wire(controlledBody(), signal);
    bodies.push(body);
    return sseResponse(body.stream);
  });
  return { ...fake, bodies };
}

/** The next animation frame: when the store flushes what it buffered. */
const nextFrame = () => new Promise<void>((resolve) => requestAnimationFrame(() => resolve()));

describe("useStreamingChat", () => {
  it("renders a 20,000-token answer in a bounded number of renders (one per animation frame)", async () => {
    expect(typeof requestAnimationFrame).toBe("function");
    const { fetch, bodies } = streamingFetch();
    let renders = 0;
    render(<Harness fetch={fetch} onRender={() => (renders += 1)} />);
    fireEvent.click(screen.getByText("send"));
    await waitFor(() => expect(bodies).toHaveLength(1));
    const body = bodies[0]!;
    const rendersBefore = renders;

    const tokens = 20_000;
    const chunks = 200;
    let id = 0;
    const started = performance.now();
    for (let chunk = 0; chunk < chunks; chunk += 1) {
      let text = "";
      for (let index = 0; index < tokens / chunks; index += 1) text += deltaFrame(++id, "x");
      body.push(text);
      // The store has read this chunk (it is waiting for the next) before the next arrives.
      await body.drained();
      // Several chunks per frame, as from a fast model: a frame passes every 10 chunks.
      if (chunk % 10 === 9) await nextFrame();
    }
    const rendersWhileStreaming = renders - rendersBefore;
    body.push(doneFrame(++id));
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("idle"));
    const elapsedMs = performance.now() - started;

    expect(screen.getByTestId("length").textContent).toBe(String(tokens));
    const streamingRenders = renders - rendersBefore;
    // At most about one render per 16 ms frame (plus the immediate ones for
    // the first token and for done); 20,000 renders without batching.
    const frameBudget = Math.ceil(elapsedMs / 16) + 5;
    expect(streamingRenders).toBeLessThanOrEqual(frameBudget);
    expect(streamingRenders).toBeLessThan(tokens / 100);
    expect(streamingRenders).toBeGreaterThanOrEqual(2);
    // The first token at once, then the frames' flushes: the text grew on screen before it was done.
    expect(rendersWhileStreaming).toBeGreaterThanOrEqual(2);
  });

  it("shows text as it arrives, before the answer is finished", async () => {
    const { fetch, bodies } = streamingFetch();
    render(<Harness fetch={fetch} />);
    fireEvent.click(screen.getByText("send"));
    await waitFor(() => expect(bodies).toHaveLength(1));
    expect(screen.getByTestId("loading").textContent).toBe("true");
    bodies[0]!.push(deltaFrame(1, "Hello"));
    await waitFor(() => expect(screen.getByTestId("answer").textContent).toBe("Hello"));
    bodies[0]!.push(deltaFrame(2, ", world"));
    await waitFor(() => expect(screen.getByTestId("answer").textContent).toBe("Hello, world"));
    expect(screen.getByTestId("status").textContent).toBe("streaming");
    bodies[0]!.push(doneFrame(3));
    await waitFor(() => expect(screen.getByTestId("loading").textContent).toBe("false"));
  });

  it("stop() aborts the fetch signal and ends loading", async () => {
    const { fetch, bodies, calls } = streamingFetch();
    render(<Harness fetch={fetch} />);
    fireEvent.click(screen.getByText("send"));
    await waitFor(() => expect(bodies).toHaveLength(1));
    bodies[0]!.push(deltaFrame(1, "partial"));
    await waitFor(() => expect(screen.getByTestId("answer").textContent).toBe("partial"));
    fireEvent.click(screen.getByText("stop"));
    expect(calls[0]!.signal.aborted).toBe(true);
    expect(screen.getByTestId("loading").textContent).toBe("false");
    expect(screen.getByTestId("answer").textContent).toBe("partial");
    expect(screen.getByTestId("error").textContent).toBe("");
  });

  it("unmounting aborts the request", async () => {
    const { fetch, bodies, calls } = streamingFetch();
    const { unmount } = render(<Harness fetch={fetch} />);
    fireEvent.click(screen.getByText("send"));
    await waitFor(() => expect(bodies).toHaveLength(1));
    bodies[0]!.push(deltaFrame(1, "a"));
    await waitFor(() => expect(screen.getByTestId("answer").textContent).toBe("a"));
    unmount();
    expect(calls[0]!.signal.aborted).toBe(true);
  });

  it("does not start a second request while one is running", async () => {
    const { fetch, bodies, calls } = streamingFetch();
    const sends: Promise<void>[] = [];
    render(<Harness fetch={fetch} onSend={(sent) => sends.push(sent)} />);
    fireEvent.click(screen.getByText("send"));
    fireEvent.click(screen.getByText("send"));
    await waitFor(() => expect(bodies).toHaveLength(1));
    fireEvent.click(screen.getByText("send"));
    // The later sends are over (ignored) while the first still streams.
    await act(() => Promise.all(sends.slice(1)));
    expect(sends).toHaveLength(3);
    expect(calls).toHaveLength(1);
    expect(screen.getByTestId("count").textContent).toBe("2");
  });

  it("exposes the error with the server's message, and retry() recovers", async () => {
    let attempt = 0;
    const { fetch, calls } = fakeFetch(() => {
      attempt += 1;
      return attempt === 1
        ? jsonResponse(422, { error: { code: "invalid_request", message: "message: must not be empty or blank", field: "message" } })
        : sseResponse(seedStream(["fine now"]));
    });
    render(<Harness fetch={fetch} />);
    fireEvent.click(screen.getByText("send"));
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("error"));
    expect(screen.getByTestId("error").textContent).toBe("message: must not be empty or blank");
    fireEvent.click(screen.getByText("retry"));
    await waitFor(() => expect(screen.getByTestId("answer").textContent).toBe("fine now"));
    expect(screen.getByTestId("status").textContent).toBe("idle");
    expect(screen.getByTestId("error").textContent).toBe("");
    expect(calls).toHaveLength(2);
  });

  it("uses the latest callbacks without recreating the store", async () => {
    const { fetch } = fakeFetch(() => sseResponse(seedStream(["x"])));
    const first = vi.fn();
    const second = vi.fn();
    function WithCallback({ onFinish }: { onFinish: () => void }) {
      const chat = useStreamingChat("/api/chat/stream", { fetch, onFinish });
      return (
        <div>
          <button onClick={() => void chat.sendMessage("go")}>send</button>
          <output data-testid="status">{chat.status}</output>
        </div>
      );
    }
    const { rerender } = render(<WithCallback onFinish={first} />);
    rerender(<WithCallback onFinish={second} />);
    fireEvent.click(screen.getByText("send"));
    await waitFor(() => expect(second).toHaveBeenCalledTimes(1));
    expect(first).not.toHaveBeenCalled();
  });
});
