"""The chat page answers a tool call that waits for a person's approval: Approve runs it and the answer streams on,
Deny shows the denial and the model's answer, and a reload while the run waits brings the buttons back. Chromium
against the real server (``--synthetic-script`` with an ``approval`` step); every wait is a condition with a timeout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, wait_until
from tests.e2e.test_browser import LAST_ANSWER, send

pytestmark = pytest.mark.e2e


def script(record: Path) -> dict[str, Any]:
    return {
        "*": [
            {"type": "text-delta", "text": "Let me look. "},
            {
                "approval": {
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris", "days": 2}',
                    "output": "sunny, 21°C",
                    "record": str(record),
                }
            },
            {"type": "text-delta", "text": "Answer after the tool."},
            {"type": "finish", "reason": "stop"},
        ]
    }


def start(serve: Any, tmp_path: Path) -> tuple[Server, Path]:
    record = tmp_path / "ran.txt"
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script(record)))
    return serve("--synthetic-script", str(path)), record


def runs(record: Path) -> list[str]:
    return record.read_text().split() if record.exists() else []


def wait_for_request(page: Any) -> Any:
    tool = page.locator(f"{LAST_ANSWER} .tool[data-tool='get_weather']")
    tool.locator(".approval[data-state='pending']").wait_for(timeout=15_000)
    return tool


def no_alert(page: Any) -> None:
    assert page.get_by_role("alert").count() == 0, page.get_by_role("alert").all_inner_texts()


def test_approve_runs_the_tool_and_the_answer_streams_on(serve: Any, page: Any, tmp_path: Path) -> None:
    server, record = start(serve, tmp_path)
    page.goto(server.url)
    send(page, "weather?")
    tool = wait_for_request(page)
    assert tool.locator(".tool-state").inner_text() == "waiting for approval"
    assert json.loads(tool.locator(".tool-arguments").inner_text()) == {"city": "Paris", "days": 2}
    assert "\n" in tool.locator(".tool-arguments").inner_text()  # pretty-printed
    assert page.locator(f"{LAST_ANSWER}[data-status='streaming']").count() == 1
    assert runs(record) == []  # nothing ran before the answer

    tool.get_by_role("button", name="Approve").click()
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    assert tool.locator(".approval-decision").inner_text() == "Approved"
    assert tool.get_by_role("button", name="Approve").count() == 0
    assert tool.locator(".tool-output").inner_text() == "sunny, 21°C"
    assert tool.locator(".tool-state").inner_text() == "done"
    assert "Answer after the tool." in page.locator(f"{LAST_ANSWER} .message-body").inner_text()
    assert runs(record) == ["call_1"]
    no_alert(page)


def test_deny_with_a_reason_shows_the_denial_and_the_models_answer(serve: Any, page: Any, tmp_path: Path) -> None:
    server, record = start(serve, tmp_path)
    page.goto(server.url)
    send(page, "weather?")
    tool = wait_for_request(page)
    tool.get_by_label("Reason for denying (optional)").fill("not today")
    tool.get_by_role("button", name="Deny").click()
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    assert tool.locator(".approval-decision").inner_text() == "Denied: not today"
    assert tool.get_attribute("data-state") == "error"
    denial = tool.locator(".tool-error").inner_text()
    assert "denied" in denial.lower()
    assert "not today" in denial
    assert "Answer after the tool." in page.locator(f"{LAST_ANSWER} .message-body").inner_text()
    assert runs(record) == []
    no_alert(page)


def test_a_reload_while_the_run_waits_keeps_the_approve_button_and_it_works(
    serve: Any, page: Any, tmp_path: Path
) -> None:
    server, record = start(serve, tmp_path)
    page.goto(server.url)
    send(page, "weather?")
    wait_for_request(page)
    assert page.evaluate("location.hash").startswith("#c=")

    page.reload()
    tool = wait_for_request(page)
    page.locator("[data-role='user']").first.wait_for()
    assert page.locator("[data-role='user'] .message-plain").all_inner_texts() == ["weather?"]
    assert page.locator("[data-role='assistant']").count() == 1
    tool.get_by_role("button", name="Approve").click()
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    assert tool.locator(".tool-output").inner_text() == "sunny, 21°C"
    assert "Answer after the tool." in page.locator(f"{LAST_ANSWER} .message-body").inner_text()
    wait_until(lambda: runs(record) == ["call_1"], timeout=5, what="the approved call to have run once")
    no_alert(page)

    # Once it ended, a reload shows the decided call from the history, with no buttons.
    page.reload()
    stored = page.locator(f"{LAST_ANSWER} .tool[data-tool='get_weather']")
    stored.locator(".approval-decision").wait_for()
    assert stored.locator(".approval-decision").inner_text() == "Approved"
    assert page.get_by_role("button", name="Approve").count() == 0
