import { describe, expect, it } from "vitest";
import { deleteConversation, listConversations, loadConversation } from "../src/conversations";
import { ChatStreamError } from "../src/errors";
import { fakeFetch, jsonResponse } from "./helpers";

const api = (fetch: ReturnType<typeof fakeFetch>["fetch"]) => ({ base: "/api/", headers: () => ({ Authorization: "Bearer t" }), fetch });

describe("the conversations API", () => {
  it("lists conversations with the caller's headers", async () => {
    const { fetch, calls } = fakeFetch(() =>
      jsonResponse(200, { conversations: [{ id: "c1", title: "Apples", created_at: 1, updated_at: 2 }, "junk"] }),
    );
    expect(await listConversations(api(fetch))).toEqual([{ id: "c1", title: "Apples", createdAt: 1, updatedAt: 2 }]);
    expect(calls[0]!.url).toBe("/api/conversations?limit=100");
    expect(calls[0]!.headers.get("authorization")).toBe("Bearer t");
  });

  it("reads stored rows as messages: statuses, parts with each result folded into its call, a running answer", async () => {
    const rows = [
      { role: "user", content: "weather?", status: "complete", run_id: null },
      {
        role: "assistant",
        content: "Sunny.",
        status: "complete",
        run_id: "r1",
        parts: [
          { type: "reasoning", text: "Let me look." },
          { type: "tool-call", call_id: "c1", name: "get_weather", arguments: '{"city": "Paris"}' },
          { type: "tool-result", call_id: "c1", output: "sunny", is_error: false },
          { type: "text", text: "Sunny." },
          { type: "usage", input_tokens: 3, output_tokens: 2 },
          { type: "finish", reason: "length" },
        ],
      },
      { role: "user", content: "and tomorrow?", status: "complete" },
      { role: "assistant", content: "Hm", status: "failed", run_id: "r2", error_code: "model_error" },
      { role: "user", content: "again", status: "complete" },
      { role: "assistant", content: "", status: "running", run_id: "r3" },
    ];
    const { fetch, calls } = fakeFetch(() => jsonResponse(200, { conversation_id: "c 1", messages: rows }));
    const loaded = await loadConversation(api(fetch), "c 1");
    expect(calls[0]!.url).toBe("/api/conversations/c%201/messages");
    expect(loaded!.runningRunId).toBe("r3");
    expect(loaded!.messages.map(({ role, status }) => `${role}:${status}`)).toEqual([
      "user:done",
      "assistant:done",
      "user:done",
      "assistant:error",
      "user:done",
    ]);
    expect(loaded!.messages[1]).toMatchObject({ runId: "r1", finishReason: "length", content: "Sunny." });
    expect(loaded!.messages[1]!.parts).toEqual([
      { type: "reasoning", text: "Let me look." },
      { type: "tool", callId: "c1", name: "get_weather", arguments: '{"city": "Paris"}', state: "done", output: "sunny" },
      { type: "text", text: "Sunny." },
    ]);
    expect(loaded!.messages[3]).toMatchObject({ errorCode: "model_error", finishReason: "error" });
    expect(loaded!.messages[3]!.parts).toBeUndefined(); // text only: no parts to show
    expect(new Set(loaded!.messages.map((message) => message.id)).size).toBe(5);
  });

  it("answers null for a conversation that is gone, and raises the server's error otherwise", async () => {
    const gone = fakeFetch(() => jsonResponse(404, { error: { code: "conversation_not_found", message: "unknown" } }));
    expect(await loadConversation(api(gone.fetch), "c")).toBeNull();
    await deleteConversation(api(gone.fetch), "c"); // already gone: deleted all the same
    expect(gone.calls[1]!.method).toBe("DELETE");
    const refused = fakeFetch(() => jsonResponse(401, { error: { code: "invalid_token", message: "the bearer token is not valid" } }));
    const error = await listConversations(api(refused.fetch)).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ChatStreamError);
    expect(error).toMatchObject({ status: 401, code: "invalid_token" });
  });
});
