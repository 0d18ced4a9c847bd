"""The chat page in a real browser against the real server (synthetic backend).

Every wait is a condition with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.e2e.conftest import Server, wait_until

pytestmark = pytest.mark.e2e

LAST_ANSWER = "[data-role='assistant']:last-of-type"

# JS predicates over the last assistant message.
ANSWER_STATE = """() => {
  const answers = document.querySelectorAll("[data-role='assistant']");
  const last = answers[answers.length - 1];
  return last ? { status: last.dataset.status, text: last.querySelector('.message-body').textContent } : null;
}"""
GREW_WHILE_STREAMING = """([length]) => {
  const answers = document.querySelectorAll("[data-role='assistant']");
  const last = answers[answers.length - 1];
  if (!last || last.dataset.status !== 'streaming') return false;
  return last.querySelector('.message-body').textContent.length > length;
}"""


def answer_state(page: Any) -> dict[str, str]:
    state: dict[str, str] | None = page.evaluate(ANSWER_STATE)
    assert state is not None, "no assistant message on the page"
    return state


def chat_requests(page: Any) -> list[dict[str, Any]]:
    """Record the JSON bodies of the page's POSTs to the stream endpoint."""
    bodies: list[dict[str, Any]] = []

    def on_request(request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/api/chat/stream"):
            bodies.append(json.loads(request.post_data or "{}"))

    page.on("request", on_request)
    return bodies


def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def test_answer_streams_in_and_follow_ups_continue_the_conversation(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "40", "--synthetic-interval-ms", "50", "--synthetic-token", "tok ")
    requests = chat_requests(page)
    responses: list[Any] = []
    page.on("response", lambda r: responses.append(r) if r.url.endswith("/api/chat/stream") else None)
    page.goto(server.url)

    box = page.get_by_label("Message")
    # Shift+Enter is a newline, not a send.
    box.fill("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    assert box.input_value() == "first line\nsecond line"
    assert requests == []
    page.get_by_role("button", name="Send").click()

    # The question appears as typed, the Stop button replaces Send, the cursor blinks.
    user = page.locator("[data-role='user']").first
    user.wait_for()
    assert user.locator(".message-plain").inner_text() == "first line\nsecond line"
    page.get_by_role("button", name="Stop").wait_for()
    page.locator(f"{LAST_ANSWER} .cursor").wait_for()

    # At least two intermediate states, each longer than the last, while still streaming.
    seen: list[int] = []
    length = 0
    for _ in range(3):
        page.wait_for_function(GREW_WHILE_STREAMING, arg=[length], timeout=10_000)
        length = len(answer_state(page)["text"])
        seen.append(length)
    assert seen == sorted(seen)
    assert len(set(seen)) == 3

    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)
    final = answer_state(page)["text"]
    assert final.split() == ["tok"] * 40
    assert len(final) > seen[-1]
    assert page.locator(".cursor").count() == 0
    page.get_by_role("button", name="Send").wait_for()

    # The follow-up carries the conversation id the server gave the first answer.
    assert len(responses) == 1
    conversation_id = responses[0].headers["x-conversation-id"]
    send(page, "and a follow-up")
    page.locator("[data-role='assistant']").nth(1).and_(page.locator("[data-status='done']")).wait_for(timeout=15_000)
    assert [body["message"] for body in requests] == ["first line\nsecond line", "and a follow-up"]
    assert "conversation_id" not in requests[0]
    assert requests[1]["conversation_id"] == conversation_id
    assert page.locator("[data-role='user']").count() == 2


def test_stop_aborts_the_request_and_the_server_cancels_the_run(serve: Any, page: Any) -> None:
    server: Server = serve(
        "--synthetic-tokens", "100000", "--synthetic-interval-ms", "20", "--synthetic-token", "word "
    )
    page.goto(server.url)
    send(page, "a very long answer please")

    page.wait_for_function(GREW_WHILE_STREAMING, arg=[20], timeout=10_000)
    wait_until(lambda: server.health()["active_runs"] == 1, timeout=10, what="the run to be active")

    page.get_by_role("button", name="Stop").click()
    page.get_by_role("button", name="Send").wait_for()
    page.locator(f"{LAST_ANSWER}[data-status='cancelled']").wait_for()
    stopped_text = answer_state(page)["text"]

    # Closing the connection is the cancel: the server's run count drops to zero.
    wait_until(lambda: server.health()["active_runs"] == 0, timeout=10, what="active_runs to drop to 0")
    assert server.health()["backend_info"]["streams_cancelled"] == 1
    # Nothing more arrived after Stop.
    assert answer_state(page)["text"] == stopped_text
    assert page.locator(LAST_ANSWER).get_by_text("Stopped").count() == 1
    assert page.get_by_role("alert").count() == 0


def test_event_source_helper_streams_over_get(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "12", "--synthetic-interval-ms", "10", "--synthetic-token", "ev ")
    page.goto(server.url)
    result = page.evaluate(
        """async () => {
          const stream = window.tokenrelay.streamChatEventSource({ url: "api/chat/stream", message: "over GET" });
          const types = [];
          let text = "";
          for await (const event of stream) {
            types.push(event.type);
            if (event.type === "delta") text += event.text;
          }
          return { types, text, lastEventId: stream.lastEventId, conversationId: stream.conversationId };
        }"""
    )
    assert result["types"][-1] == "done"
    assert set(result["types"][:-1]) == {"delta"}
    assert result["text"] == "ev " * 12
    assert re.fullmatch(r"\d+", result["lastEventId"])
    assert result["conversationId"]
    # The helper closed the EventSource at the done frame: no reconnect, no second run.
    wait_until(lambda: server.health()["active_runs"] == 0, timeout=10, what="active_runs to drop to 0")
    assert server.health()["backend_info"]["streams_started"] == 1


XSS_TEXT = (
    "Here: <img src=x onerror=\"window.__xss='img'\"> and <script>window.__xss='script'</script> "
    "<svg onload=\"window.__xss='svg'\"></svg> <iframe src=\"javascript:window.__xss='iframe'\"></iframe> "
    "[click me](javascript:window.__xss='link') ![pic](javascript:window.__xss='image') "
    "<a href=\"javascript:window.__xss='anchor'\">anchor</a> <details open ontoggle=\"window.__xss='details'\"> "
    "**bold <img src=y onerror=\"window.__xss='bold'\">** and a safe [link](https://example.com/)."
)

DOM_AUDIT = """() => {
  const root = document.getElementById("root");
  const handlers = [];
  for (const element of root.querySelectorAll("*")) {
    for (const attribute of element.attributes) {
      if (attribute.name.startsWith("on")) handlers.push(element.tagName + " " + attribute.name);
    }
  }
  return {
    xss: window.__xss === undefined ? null : String(window.__xss),
    dangerous: root.querySelectorAll("script, img, svg, iframe, object, embed, details, style").length,
    scriptsInDocument: Array.from(document.scripts, (s) => s.src),
    handlers,
    hrefs: Array.from(root.querySelectorAll("a[href]"), (a) => a.getAttribute("href")),
    text: root.querySelector("[data-role='assistant'] .message-body").textContent,
  };
}"""


def test_model_output_never_runs_as_html(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-text", XSS_TEXT, "--synthetic-interval-ms", "5")
    page.goto(server.url)
    send(page, "<img src=x onerror=\"window.__xss='user'\"> say something nasty")
    page.locator(f"{LAST_ANSWER}[data-status='done']").wait_for(timeout=15_000)

    audit = page.evaluate(DOM_AUDIT)
    assert audit["xss"] is None
    assert audit["dangerous"] == 0
    assert audit["handlers"] == []
    assert audit["hrefs"] == ["https://example.com/"]
    # Only the page's own bundle is a script.
    assert len(audit["scriptsInDocument"]) == 1
    assert re.search(r"/assets/index-[\w-]+\.js$", audit["scriptsInDocument"][0])
    # The markup is shown as text.
    assert "<img src=x onerror=" in audit["text"]
    assert "<script>" in audit["text"]
    assert page.locator("[data-role='user']").inner_text().count("<img src=x") == 1
    # Clicking the neutered javascript: link does nothing.
    page.get_by_text("click me").click()
    assert page.evaluate("window.__xss") is None


def test_backend_error_is_shown_with_retry(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "50", "--synthetic-interval-ms", "5", "--synthetic-fail-after", "3")
    requests = chat_requests(page)
    page.goto(server.url)
    send(page, "this will fail")

    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "synthetic failure after 3 tokens" in alert.inner_text()
    # The partial answer stays, marked as interrupted.
    page.locator(f"{LAST_ANSWER}[data-status='error']").wait_for()

    page.get_by_role("button", name="Retry").click()
    wait_until(lambda: len(requests) == 2, timeout=10, what="the retry request")
    assert requests[1]["message"] == "this will fail"
    alert.wait_for()
    page.locator(f"{LAST_ANSWER}[data-status='error']").wait_for()
    # Retry replaced the failed answer instead of adding another; the question is not repeated.
    assert page.locator("[data-role='assistant']").count() == 1
    assert page.locator("[data-role='user']").count() == 1


def test_rejected_request_shows_the_servers_message(serve: Any, page: Any) -> None:
    server: Server = serve("--max-message-bytes", "16")
    page.goto(server.url)
    send(page, "this message is longer than sixteen bytes")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert re.search(r"over the limit of 16", alert.inner_text())
    page.get_by_role("button", name="Retry").wait_for()
    page.get_by_role("button", name="Send").wait_for()
    assert page.locator("[data-role='assistant']").count() == 0


def test_resume_picks_up_after_the_last_event_id(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "30", "--synthetic-interval-ms", "20")
    page.goto(server.url)
    result = page.evaluate(
        """async () => {
          const { streamChat, resumeChat } = window.tokenrelay;
          const first = streamChat({ url: "api/chat/stream", body: { message: "resume me" } });
          const iterator = first[Symbol.asyncIterator]();
          let before = "";
          for (let deltas = 0; deltas < 3; ) {
            const { value } = await iterator.next();
            if (value.type === "delta") { before += value.text; deltas += 1; }
          }
          const resumed = resumeChat({ url: `api/runs/${first.runId}/stream`, lastEventId: first.lastEventId });
          let rest = "";
          const types = [];
          for await (const event of resumed) {
            types.push(event.type);
            if (event.type === "delta") rest += event.text;
          }
          let all = before;
          for (;;) {
            const { done, value } = await iterator.next();
            if (done) break;
            if (value.type === "delta") all += value.text;
          }
          return { before, rest, all, types };
        }"""
    )
    assert result["types"][-1] == "done"
    assert result["rest"]
    assert result["before"] + result["rest"] == result["all"]
    assert result["all"].startswith("You said: resume me.")


CSP_VIOLATIONS = """() => new Promise((resolve) => {
  window.__cspViolations = window.__cspViolations || [];
  resolve(window.__cspViolations);
})"""


def test_the_page_runs_under_its_strict_content_security_policy(serve: Any, page: Any) -> None:
    server: Server = serve("--synthetic-tokens", "5", "--synthetic-interval-ms", "10")
    # Violations are recorded from the very first script on, before the page's own code runs.
    page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    response = page.goto(server.url)
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    send(page, "hello")
    wait_until(lambda: answer_state(page)["status"] == "done", timeout=15, what="the answer to finish")
    assert page.evaluate(CSP_VIOLATIONS) == []
    assert console == []
