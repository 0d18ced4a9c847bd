import { HttpAgent, type HttpAgentConfig } from "@ag-ui/client";
import type { Message, RunAgentInput } from "@ag-ui/core";
import { inject } from "vitest";

export { eventually } from "../../test/support";

export const detachUrl = inject("detachUrl");
export const cancelUrl = inject("cancelUrl");

let counter = 0;

/** A fresh thread id per test: the server keeps each thread's history. */
export function newThreadId(): string {
  counter += 1;
  return `agui-${Date.now().toString(36)}-${counter}`;
}

export function userMessage(content: string): Message {
  counter += 1;
  return { id: `u-${counter}`, role: "user", content };
}

/** One SSE frame as it came off the wire: its id and its JSON. */
export type WireFrame = { id: string | undefined; event: { type: string; [key: string]: unknown } };

/**
 * A fetch that hands the response to the agent unchanged while it records every whole frame (its `id:` and its
 * data), in order: what an EventSource-like reader would know of the stream.
 */
export function recordingFetch(frames: WireFrame[]): (url: string, init: RequestInit) => Promise<Response> {
  return async (url, init) => {
    const response = await fetch(url, init);
    if (!response.body) return response;
    const decoder = new TextDecoder();
    let buffer = "";
    const tee = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        buffer += decoder.decode(chunk, { stream: true });
        const blocks = buffer.split("\n\n");
        buffer = blocks.pop() ?? "";
        for (const block of blocks) {
          const lines = block.split("\n");
          const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
          const id = lines.find((l) => l.startsWith("id: "))?.slice(4);
          if (data.length > 0) frames.push({ id, event: JSON.parse(data.join("\n")) });
        }
        controller.enqueue(chunk);
      },
    });
    return new Response(response.body.pipeThrough(tee), { status: response.status, headers: response.headers });
  };
}

/**
 * The stock HttpAgent, able to pick a run up where it was: with `resumeFrom` set, its next run reads tokenrelay's
 * resume route (`GET /api/runs/{id}/stream?protocol=ag-ui`, with `Last-Event-ID`) instead of POSTing a new input.
 */
export class ResumableAgent extends HttpAgent {
  public resumeFrom: { runId: string; lastEventId: string } | undefined;
  private readonly postUrl: string;

  constructor(config: HttpAgentConfig) {
    super(config);
    this.postUrl = config.url;
  }

  run(input: RunAgentInput): ReturnType<HttpAgent["run"]> {
    const resume = this.resumeFrom;
    this.url = resume ? `${new URL(this.postUrl).origin}/api/runs/${resume.runId}/stream?protocol=ag-ui` : this.postUrl;
    return super.run(input);
  }

  protected requestInit(input: RunAgentInput): RequestInit {
    if (this.resumeFrom === undefined) return super.requestInit(input);
    return {
      method: "GET",
      headers: { ...this.headers, Accept: "text/event-stream", "Last-Event-ID": this.resumeFrom.lastEventId },
      signal: this.abortController.signal,
    };
  }
}

export function textOf(messages: readonly Message[], role: Message["role"] = "assistant"): string[] {
  return messages.filter((m) => m.role === role).map((m) => (typeof m.content === "string" ? m.content : ""));
}
