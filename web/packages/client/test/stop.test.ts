import { describe, expect, it } from "vitest";
import { tokenrelayStop } from "../src/stop";

interface Call {
  url: string;
  init: RequestInit;
}

/** A fetch whose answers the test hands out, one per request, in order. */
function heldFetch() {
  const calls: Call[] = [];
  const answers: Array<(response: Response) => void> = [];
  const fetch = ((input: RequestInfo | URL, init: RequestInit = {}) => {
    calls.push({ url: String(input), init });
    return new Promise<Response>((resolve) => answers.push(resolve));
  }) as typeof globalThis.fetch;
  const answer = (index: number, response: Response) => answers[index]?.(response);
  return { fetch, calls, answer };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
const streamResponse = (runId: string) => new Response("data: {}\n\n", { headers: { "x-run-id": runId } });
const cancelled = (value: boolean) => Response.json({ run_id: "r", cancelled: value });

describe("tokenrelayStop", () => {
  it("cancels the run of the latest answer, as the user the transport names", async () => {
    const fake = heldFetch();
    const stopper = tokenrelayStop("http://server/", { fetch: fake.fetch, userId: "al ice", headers: () => ({ A: "1" }) });
    const first = stopper.fetch("http://server/api/chat", { method: "POST" });
    fake.answer(0, streamResponse("run-1"));
    await first;
    const second = stopper.fetch("http://server/api/chat", { method: "POST" });
    fake.answer(1, streamResponse("run/2"));
    await second;

    const result = stopper.cancel();
    await tick();
    expect(fake.calls[2]?.url).toBe("http://server/api/runs/run%2F2/cancel?user_id=al%20ice");
    expect(fake.calls[2]?.init).toMatchObject({ method: "POST", headers: { A: "1" } });
    fake.answer(2, cancelled(true));
    expect(await result).toBe(true);
  });

  it("says false when the server had nothing to cancel, or when no answer was opened", async () => {
    const fake = heldFetch();
    const stopper = tokenrelayStop("http://server", { fetch: fake.fetch });
    expect(await stopper.cancel()).toBe(false);
    expect(fake.calls).toHaveLength(0);

    const opened = stopper.fetch("http://server/api/chat", {});
    fake.answer(0, streamResponse("run-1"));
    await opened;
    const result = stopper.cancel();
    await tick();
    fake.answer(1, cancelled(false));
    expect(await result).toBe(false);
  });

  it("holds an abort back until the run id is known, so that cancel() can name the run", async () => {
    const fake = heldFetch();
    const stopper = tokenrelayStop("http://server", { fetch: fake.fetch });
    const controller = new AbortController();
    const opened = stopper.fetch("http://server/api/chat", { signal: controller.signal });
    controller.abort();
    const inner = fake.calls[0]?.init.signal;
    expect(inner?.aborted).toBe(false);

    fake.answer(0, streamResponse("run-1"));
    await opened;
    await tick();
    expect(inner?.aborted).toBe(true);
    const result = stopper.cancel();
    await tick();
    expect(fake.calls[1]?.url).toBe("http://server/api/runs/run-1/cancel");
    fake.answer(1, cancelled(true));
    expect(await result).toBe(true);
  });

  it("does not send a request whose signal is already aborted", async () => {
    const fake = heldFetch();
    const stopper = tokenrelayStop("http://server", { fetch: fake.fetch });
    const controller = new AbortController();
    controller.abort(new Error("gone"));
    await expect(stopper.fetch("http://server/api/chat", { signal: controller.signal })).rejects.toThrow("gone");
    expect(fake.calls).toHaveLength(0);
  });
});
