"""End to end with the agents backend: a real MCP server whose tool needs approval (it records each call), the
model's side replayed from recorded upstream bytes, through a real server and the approvals route."""

from __future__ import annotations

from pathlib import Path

from tests.approvals.helpers import keys, until_paused
from tests.approvals.test_memory import serve
from tests.backends.replay import ReplayServer
from tests.backends.test_agents import (
    Orders,
    orders,  # noqa: F401 (the fixture: a real MCP server)
)
from tests.backends.test_agents_approval import MCP_CALL_ID, mcp_backend


async def test_an_mcp_tool_is_reached_exactly_once_after_approval(
    tmp_path: Path,
    orders: Orders,  # noqa: F811
) -> None:
    async with ReplayServer() as replay:
        replay.reply("agents/mcp_tool_call.sse")
        replay.reply("agents/mcp_final.sse")
        async with serve(mcp_backend(replay, orders, "*")) as (client, _):
            run_id, follower = await until_paused(client, message="Please cancel order A-1042.")
            try:
                request = await follower.until("approval_request")
                assert request["approval_request"]["id"] == MCP_CALL_ID
                assert request["approval_request"]["name"] == "lookup_order"
                assert orders.calls == []  # not reached while it waits
                url = f"/api/runs/{run_id}/approvals?user_id=ann"
                answer = {"tool_call_id": MCP_CALL_ID, "approved": True}
                first, second = await client.post(url, json=answer), await client.post(url, json=answer)
                assert (first.status_code, second.status_code) == (200, 200)
                payloads = await follower.done()
            finally:
                await follower.close()
    assert orders.calls == ["A-1042"]
    result = next(p["tool_result"] for p in payloads if "tool_result" in p)
    assert result["output"] == "Order A-1042: shipped on 2025-06-12"
    assert keys(payloads)[-1] == "done"
    assert payloads[-1]["finish_reason"] == "stop"
