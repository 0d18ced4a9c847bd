// A tool call that needs a person's approval, through @ai-sdk/react's useChat, unmodified: the answer stops at the
// call in state "approval-requested"; addToolApprovalResponse, with sendAutomaticallyWhen:
// lastAssistantMessageIsCompleteWithApprovalResponses, sends the chat again and the same message goes on (approved:
// the tool's output, then the rest of the text; denied: "output-denied").
import { useChat } from "@ai-sdk/react";
import { act, renderHook, waitFor } from "@testing-library/react";
import { DefaultChatTransport, isToolUIPart, lastAssistantMessageIsCompleteWithApprovalResponses } from "ai";
import { describe, expect, it } from "vitest";
import { api, newChatId, textOf } from "./helpers";

function renderChat() {
  const transport = new DefaultChatTransport({ api });
  const id = newChatId(); // once: a new id on a render would be a new chat
  return renderHook(() =>
    useChat({ id, transport, sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses }),
  );
}

describe("tool approval", () => {
  for (const approved of [true, false]) {
    it(`pauses at the call and goes on once it is ${approved ? "approved" : "denied"}`, async () => {
      const { result } = renderChat();
      await act(() => result.current.sendMessage({ text: "delete?" }));
      await waitFor(() => expect(result.current.status).toBe("ready"));
      expect(result.current.error).toBeUndefined();
      const asked = result.current.messages[1]?.parts.find(isToolUIPart);
      expect(asked).toMatchObject({
        type: "tool-delete_file",
        toolCallId: "call_del",
        state: "approval-requested",
        input: { path: "notes.txt" },
        approval: { id: "call_del" },
      });
      await act(async () => {
        await result.current.addToolApprovalResponse({ id: "call_del", approved, reason: "checked" });
      });
      await waitFor(() => expect(textOf(result.current.messages[1])).toContain("Done."));
      await waitFor(() => expect(result.current.status).toBe("ready"));
      expect(result.current.error).toBeUndefined();
      expect(result.current.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
      const tool = result.current.messages[1]?.parts.find(isToolUIPart);
      expect(tool).toMatchObject(
        approved
          ? { toolCallId: "call_del", state: "output-available", output: "deleted notes.txt" }
          : { toolCallId: "call_del", state: "output-denied" },
      );
      expect(textOf(result.current.messages[1])).toBe("Let me delete it. Done.");
    });
  }
});
