"""``tokenrelay chat`` asks about a tool call the run waits for, and ``tokenrelay approve`` answers one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.approvals.helpers import CALL, tool_runs, until_paused
from tests.test_cli import module_server, run_chat


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    record = tmp_path / "tool-calls"
    steps = [
        {"type": "text-delta", "text": "Deleting."},
        {"approval": {"call_id": CALL, "name": "delete_file", "arguments": '{"path": "a"}', "record": str(record)}},
        {"type": "text-delta", "text": " Done."},
    ]
    (tmp_path / "script.json").write_text(json.dumps(steps))
    with module_server(tmp_path, "--synthetic-script", str(tmp_path / "script.json")) as url:
        yield url, record


def test_chat_asks_and_an_answer_of_yes_runs_the_tool(served: tuple[str, Path]) -> None:
    url, record = served
    out = run_chat(url, "delete a", stdin="y\n")
    assert out.returncode == 0, out.stderr
    assert 'approve delete_file({"path": "a"})? [y/N]' in out.stdout
    assert "Deleting." in out.stdout
    assert "Done." in out.stdout
    assert tool_runs(record) == [CALL]


def test_chat_with_no_answer_denies_the_call(served: tuple[str, Path]) -> None:
    url, record = served
    out = run_chat(url, "delete a", stdin="")
    assert out.returncode == 0, out.stderr
    assert "[denied]" in out.stdout
    assert "The user denied this tool call." in out.stdout
    assert tool_runs(record) == []


async def test_the_approve_command_answers_a_waiting_run(served: tuple[str, Path]) -> None:
    url, record = served
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        run_id, follower = await until_paused(client, message="delete a")
        try:
            command = [sys.executable, "-m", "tokenrelay", "approve", run_id, CALL, "--url", url, "--user-id", "ann"]
            wrong = await asyncio.to_thread(run, [*command[:-1], "bob"])
            assert wrong.returncode == 1
            assert "404" in wrong.stderr or "not_found" in wrong.stderr
            done = await asyncio.to_thread(run, command)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "approved (resumed)"
            payloads = await follower.done()
        finally:
            await follower.close()
    assert payloads[-1]["finish_reason"] == "stop"
    assert tool_runs(record) == [CALL]
