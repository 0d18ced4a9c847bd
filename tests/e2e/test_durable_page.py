"""The chat page keeps what it shows: it resumes after a cut, survives a reload, lists conversations, signs in,
shows reasoning and tool calls, never sends a draft on Stop and gives a refused message back. Chromium against the
real server, with its default history (SQLite in the test's directory) and default on-disconnect policy.

Every wait is a condition with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DroppingProxy, Server, get_json, wait_until
from tests.e2e.test_browser import GREW_WHILE_STREAMING, LAST_ANSWER, answer_state, send

pytestmark = pytest.mark.e2e


def stream_requests(page: Any) -> list[tuple[str, str]]:
    """(method, path) of every request the page makes to the API."""
    seen: list[tuple[str, str]] = []
    page.on("request", lambda r: seen.append((r.method, r.url.split("/", 3)[3])) if "/api/" in r.url else None)
    return seen


def no_alert(page: Any) -> None:
    assert page.get_by_role("alert").count() == 0, page.get_by_role("alert").all_inner_texts()


def test_a_connection_cut_mid_answer_resumes_and_finishes_without_an_error(
    serve: Any, dropping_proxy: Any, page: Any
) -> None:
    server: Server = serve("--synthetic-tokens", "60", "--synthetic-interval-ms", "40", "--synthetic-token", "w ")
    proxy: DroppingProxy = dropping_proxy(server)
    requests = stream_requests(page)
    page.goto(proxy.url)
    send(page, "keep going through a cut")
    page.wait_for_function(GREW_WHILE_STREAMING, arg=[10], timeout=15_000)

    assert proxy.drop() >= 1
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=20_000)
    assert answer_state(page)["text"].split() == ["w"] * 60
    no_alert(page)
    # One question, picked up again after the last event id: the run was followed, not asked again.
    assert [r for r in requests if r == ("POST", "api/chat/stream")] == [("POST", "api/chat/stream")]
    assert any(method == "GET" and path.startswith("api/runs/") for method, path in requests)
    assert server.health()["backend_info"]["streams_started"] == 1


def test_a_reload_mid_answer_restores_the_conversation_and_picks_the_answer_up(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "50", "--synthetic-interval-ms", "50", "--synthetic-token", "r ")
    page.goto(server.url)
    send(page, "first question")
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    send(page, "second question")
    page.wait_for_function(GREW_WHILE_STREAMING, arg=[6], timeout=10_000)
    assert page.evaluate("location.hash").startswith("#c=")

    page.reload()
    # Both questions and the first answer come back from the server; the second answer goes on where it is.
    page.locator("[data-role='user']").nth(1).wait_for()
    assert page.locator("[data-role='user'] .message-plain").all_inner_texts() == ["first question", "second question"]
    page.locator("[data-role='assistant']").nth(1).and_(page.locator("[data-status='done']")).wait_for(timeout=20_000)
    texts = page.locator("[data-role='assistant'] .message-body").all_inner_texts()
    assert [text.split() for text in texts] == [["r"] * 50, ["r"] * 50]
    no_alert(page)
    assert server.health()["backend_info"]["streams_started"] == 2

    # Once it ended, a reload shows it from the history and follows nothing.
    page.reload()
    page.locator("[data-role='assistant']").nth(1).wait_for()
    assert page.locator("[data-status='streaming']").count() == 0


def test_sidebar_opens_starts_and_deletes_conversations(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "3", "--synthetic-interval-ms", "5")
    page.goto(server.url)
    sidebar = page.get_by_role("navigation", name="Conversations")
    for question in ("about apples", "about pears"):
        page.get_by_role("button", name="New chat").click()
        send(page, question)
        page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
        sidebar.get_by_role("button", name=question, exact=True).wait_for()

    sidebar.get_by_role("button", name="about apples", exact=True).click()
    page.locator("[data-role='user']", has_text="about apples").wait_for()
    wait_until(lambda: page.locator("[data-role='user']").count() == 1, timeout=5, what="only the opened conversation")
    assert page.locator(f"{LAST_ANSWER} .message-body").inner_text() == "You said: about"

    page.get_by_role("button", name="New chat").click()
    page.get_by_text("Ask something").wait_for()
    assert page.evaluate("location.hash") == ""

    sidebar.get_by_role("button", name="about pears", exact=True).click()
    page.locator("[data-role='user']", has_text="about pears").wait_for()
    sidebar.get_by_role("button", name="Delete “about pears”").click()
    sidebar.get_by_role("button", name="about pears", exact=True).wait_for(state="detached")
    page.get_by_text("Ask something").wait_for()
    titles = [c["title"] for c in get_json(f"{server.url}/api/conversations")["conversations"]]
    assert titles == ["about apples"]


def test_stop_with_a_draft_cancels_the_run_and_keeps_the_draft(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "100000", "--synthetic-interval-ms", "20", "--synthetic-token", "x ")
    requests = stream_requests(page)
    page.goto(server.url)
    send(page, "a long answer")
    page.wait_for_function(GREW_WHILE_STREAMING, arg=[10], timeout=10_000)
    box = page.get_by_label("Message")
    box.fill("my next question, not to be sent yet")

    page.get_by_role("button", name="Stop").click()
    page.locator(f"{LAST_ANSWER}[data-status='cancelled']").wait_for()
    wait_until(lambda: server.health()["active_runs"] == 0, timeout=5, what="the run to be cancelled")
    assert server.health()["backend_info"]["streams_cancelled"] == 1
    assert box.input_value() == "my next question, not to be sent yet"
    # The question, then the explicit cancel of its run: the draft was not sent.
    posts = [path for method, path in requests if method == "POST"]
    assert len(posts) == 2
    assert posts[0] == "api/chat/stream"
    assert re.fullmatch(r"api/runs/[^/]+/cancel", posts[1])
    assert page.locator("[data-role='user']").count() == 1


def test_a_refused_message_goes_back_to_the_composer_and_retry_sends_it_fixed(serve: Any, page: Any) -> None:
    server: Server = serve("--max-message-bytes", "16", "--synthetic-tokens", "3", "--synthetic-interval-ms", "5")
    page.goto(server.url)
    send(page, "this message is longer than sixteen bytes")
    page.get_by_role("alert").wait_for()
    box = page.get_by_label("Message")
    assert box.input_value() == "this message is longer than sixteen bytes"
    assert page.locator("[data-role='user']").count() == 0

    box.fill("short one")
    page.get_by_role("button", name="Retry").click()
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    assert page.locator("[data-role='user'] .message-plain").all_inner_texts() == ["short one"]
    assert box.input_value() == ""
    no_alert(page)
    assert server.health()["backend_info"]["streams_started"] == 1


SCRIPT: dict[str, Any] = {
    "*": [
        {"type": "metadata", "data": {"queue_position": 2}},
        {"pause": 0.6},
        {"type": "reasoning-delta", "text": "The user wants the weather. "},
        {"type": "reasoning-delta", "text": "I should call the tool."},
        {"type": "tool-call-start", "call_id": "call_1", "name": "get_weather"},
        {"type": "tool-call-args-delta", "call_id": "call_1", "delta": '{"city": '},
        {"type": "tool-call-args-delta", "call_id": "call_1", "delta": '"Paris"}'},
        {"pause": 0.6},
        {"type": "tool-call-result", "call_id": "call_1", "output": "sunny, 21°C"},
        {"type": "tool-call-start", "call_id": "call_2", "name": "get_pollen"},
        {"type": "tool-call-result", "call_id": "call_2", "output": "pollen service down", "is_error": True},
        {"type": "text-delta", "text": "It is **sunny** in Paris."},
        {"type": "finish", "reason": "length"},
    ]
}


def test_reasoning_tool_calls_queue_position_and_the_length_ending_are_shown(
    serve: Any, page: Any, tmp_path: Path
) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    server: Server = serve("--synthetic-script", str(script))
    page.goto(server.url)
    send(page, "weather?")
    answer = page.locator(LAST_ANSWER)
    answer.get_by_text("Waiting for the model: 2 answers ahead").wait_for()
    weather = answer.locator(".tool[data-tool='get_weather']")
    weather.wait_for()
    assert weather.locator(".tool-state").inner_text() == "running…"
    assert page.get_by_text("Waiting for the model").count() == 0

    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    assert json.loads(weather.locator(".tool-arguments").inner_text()) == {"city": "Paris"}
    assert weather.locator(".tool-output").inner_text() == "sunny, 21°C"
    assert weather.locator(".tool-state").inner_text() == "done"
    pollen = answer.locator(".tool[data-tool='get_pollen']")
    assert pollen.get_attribute("data-state") == "error"
    assert pollen.locator(".tool-error").inner_text() == "pollen service down"
    assert answer.locator("strong").inner_text() == "sunny"
    assert "Cut off at the length limit" in answer.locator(".message-note").inner_text()

    # Reasoning is folded away until asked for.
    toggle = answer.get_by_role("button", name="Reasoning")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert answer.get_by_text("I should call the tool.").count() == 0
    toggle.click()
    assert answer.locator(".reasoning-text").inner_text() == "The user wants the weather. I should call the tool."
    assert toggle.get_attribute("aria-expanded") == "true"


def test_sign_in_with_a_bearer_token_when_the_server_asks(serve: Any, page: Any) -> None:
    server: Server = serve(
        "--auth-tokens",
        json.dumps({"secret-token": "alice"}),
        "--synthetic-tokens",
        "3",
        "--synthetic-interval-ms",
        "5",
    )
    authorizations: list[str | None] = []
    page.on("request", lambda r: authorizations.append(r.headers.get("authorization")) if "/api/" in r.url else None)
    page.goto(server.url)
    form = page.get_by_role("form", name="Sign in")
    form.wait_for()
    assert "needs an access token" in form.inner_text()

    page.get_by_label("Access token").fill("wrong-token")
    page.get_by_role("button", name="Sign in").click()
    # The list is asked for again with the token, and refused: the page says so.
    page.get_by_text("That access token was not accepted").wait_for()

    page.get_by_label("Access token").fill("secret-token")
    page.get_by_role("button", name="Sign in").click()
    form.wait_for(state="detached")
    send(page, "hello as alice")
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    page.get_by_role("navigation", name="Conversations").get_by_role(
        "button", name="hello as alice", exact=True
    ).wait_for()
    assert authorizations[-1] == "Bearer secret-token"
    assert "Bearer secret-token" in authorizations
    # Kept for the session: a reload needs no new sign-in, and the conversation is alice's.
    page.reload()
    page.locator("[data-role='user']", has_text="hello as alice").wait_for()
    assert page.get_by_role("form", name="Sign in").count() == 0
