"""Tool approval in the AI SDK's protocol: the response ends at the pause with the call waiting for approval, and
useChat's next request (``addToolApprovalResponse``: its last message the assistant's, a part ``approval-responded``)
records the answer and streams the continuation of the same message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.approvals.helpers import ARGS, CALL, approval_script, tool_runs
from tests.approvals.test_memory import serve
from tokenrelay.sse import ServerSentEvent, SSEDecoder


async def chunks(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    async with client.stream("POST", "/api/chat?user_id=ann", json=body) as r:
        assert r.status_code == 200, await r.aread()
        decoder, out = SSEDecoder(), []
        async for raw in r.aiter_raw():
            out += [e.data for e in decoder.feed(raw) if isinstance(e, ServerSentEvent)]
    assert out[-1] == "[DONE]"
    return [json.loads(d) for d in out[:-1]]


def user(text: str) -> dict[str, Any]:
    return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}


async def test_use_chat_pauses_at_the_approval_and_goes_on_with_the_answer(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record)) as (client, _):
        first = await chunks(client, {"id": "chat-1", "messages": [user("delete notes")]})
        types = [c["type"] for c in first]
        assert types == [
            "start",
            "start-step",
            "text-start",
            "text-delta",
            "text-end",
            "tool-input-start",
            "tool-input-delta",
            "tool-input-available",
            "tool-approval-request",
            "finish-step",
            "finish",
        ]
        assert first[8] == {"type": "tool-approval-request", "approvalId": CALL, "toolCallId": CALL}
        assert first[-1]["finishReason"] == "tool-calls"
        assert tool_runs(record) == []
        # What useChat holds then, with the person's answer (addToolApprovalResponse) on the tool part.
        assistant = {
            "id": first[0]["messageId"],
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "text", "text": "Let me delete it.", "state": "done"},
                {
                    "type": "tool-delete_file",
                    "toolCallId": CALL,
                    "state": "approval-responded",
                    "input": json.loads(ARGS),
                    "providerExecuted": True,
                    "approval": {"id": CALL, "approved": True},
                },
            ],
        }
        body = {"id": "chat-1", "messages": [user("delete notes"), assistant], "trigger": "submit-message"}
        rest = await chunks(client, body)
        assert [c["type"] for c in rest] == [
            "start",
            "start-step",
            "tool-output-available",
            "finish-step",
            "start-step",
            "text-start",
            "text-delta",
            "text-end",
            "finish-step",
            "finish",
        ]
        assert rest[0]["messageId"] == first[0]["messageId"]  # the same message goes on
        assert rest[2]["output"] == "deleted notes.txt"
        assert rest[-1]["finishReason"] == "stop"
        assert tool_runs(record) == [CALL]
        # useChat sending the same answer again (a retry) is one answer: the tool ran once.
        again = await chunks(client, body)
        assert again[-1]["type"] == "finish"
        assert tool_runs(record) == [CALL]


async def test_a_denial_through_use_chat_is_tool_output_denied(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    async with serve(approval_script(record)) as (client, _):
        first = await chunks(client, {"id": "chat-2", "messages": [user("delete notes")]})
        part = {
            "type": "tool-delete_file",
            "toolCallId": CALL,
            "state": "approval-responded",
            "input": json.loads(ARGS),
            "approval": {"id": CALL, "approved": False, "reason": "no"},
        }
        assistant = {"id": first[0]["messageId"], "role": "assistant", "parts": [part]}
        rest = await chunks(client, {"id": "chat-2", "messages": [user("delete notes"), assistant]})
        assert {"type": "tool-output-denied", "toolCallId": CALL, "providerExecuted": True} in rest
        assert tool_runs(record) == []
