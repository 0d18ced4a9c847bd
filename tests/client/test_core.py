"""The client's I/O-free core, driven with bytes and ``httpx.Response`` objects: no server, no socket, no sleep."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import pytest

from tests.client.frames import deltas, done, frame
from tests.protocols.helpers import AGENT_RUN, CTX, numbered
from tokenrelay import errors
from tokenrelay.client import (
    ChatResult,
    Delta,
    Done,
    IncompleteStreamError,
    Metadata,
    Other,
    Reasoning,
    Resume,
    StreamError,
    StreamEvent,
    TokenrelayConnectionError,
    TokenrelayHTTPError,
    ToolCall,
    ToolCallDelta,
    ToolCallRecord,
    ToolResult,
    Usage,
)
from tokenrelay.client.core import (
    HEALTH,
    Attempts,
    Follower,
    Request,
    cancel_request,
    cancelled,
    health,
    http_options,
)
from tokenrelay.events import FinishEvent, MetadataEvent, ToolCallResult
from tokenrelay.protocols.seed import SeedEncoder

BASE = "http://relay.test"

# An answer of the scripted network: a response (its whole body, then the server closes), a transport error on
# sending, or a response cut by a transport error after its body.
Answer = httpx.Response | httpx.TransportError | tuple[httpx.Response, httpx.TransportError]


@dataclass
class Trace:
    events: list[StreamEvent] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    @property
    def delays(self) -> list[float]:
        return [r.delay for r in self.requests]


def drive(attempts: Attempts, *answers: Answer, chunk: int = 7) -> Trace:
    """The shells' loop, with scripted answers for the network; every answer must be asked for."""
    trace = Trace()
    script = iter(answers)
    while (request := attempts.next_request()) is not None:
        trace.requests.append(request)
        answer = next(script)
        try:
            if isinstance(answer, httpx.TransportError):
                raise answer
            response, cut = answer if isinstance(answer, tuple) else (answer, None)
            if not attempts.accepts(response):
                attempts.refused(response, response.content)
                continue
            body = response.content
            for start in range(0, len(body), chunk):  # odd-sized chunks: frames arrive cut anywhere
                trace.events += attempts.feed(body[start : start + chunk])
            if cut is not None:
                raise cut
        except httpx.TransportError as exc:
            attempts.failed(exc, BASE)
    assert list(script) == [], "the core stopped before the script's end"
    return trace


def ok(body: bytes, run_id: str | None = "r1") -> httpx.Response:
    headers = {"x-run-id": run_id} if run_id is not None else {}
    return httpx.Response(200, headers=headers, content=body)


def cut(body: bytes, run_id: str | None = "r1") -> tuple[httpx.Response, httpx.TransportError]:
    return ok(body, run_id), httpx.ReadError("connection reset")


def chat(policy: Resume | None = None, user_id: str | None = "ann") -> Attempts:
    return Attempts.chat(policy or Resume(), "hi", user_id, None)


def text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


# --- Follower: bytes in, events out, across reconnections -------------------------------------------------------


def test_a_stream_cut_anywhere_into_chunks_gives_the_same_events() -> None:
    body = deltas(1, "a", "b") + done(3, run_id="r1", conversation_id="c1", usage={"output_tokens": 2})
    expected = [Delta("a", "1"), Delta("b", "2"), Done("stop", "r1", "c1", Usage(None, 2), "3")]
    for at in range(len(body) + 1):
        follower = Follower()
        assert follower.feed(body[:at]) + follower.feed(body[at:]) == expected
        assert follower.done
        assert follower.text == ["a", "b"]
        assert follower.last_id == "3"


def test_a_reconnection_drops_the_half_frame_and_what_was_already_delivered() -> None:
    follower = Follower()
    third = deltas(3, "c")
    assert follower.feed(deltas(1, "a", "b") + third[:5]) == [Delta("a", "1"), Delta("b", "2")]
    follower.reconnect()
    assert follower.feed(deltas(2, "b", "c", "d")) == [Delta("c", "3"), Delta("d", "4")]
    assert "".join(follower.text) == "abcd"


def test_the_servers_retry_hint_outlives_its_connection() -> None:
    follower = Follower()
    assert follower.feed(b"retry: 1500\n\n") == []
    follower.reconnect()
    follower.feed(deltas(1, "a"))
    assert follower.retry_ms == 1500


def test_frames_the_client_does_not_model_are_other_events() -> None:
    follower = Follower()
    body = (
        frame(1, {"error": {"code": "overloaded", "message": "busy", "retryable": True}})
        + frame(2, {"error": {}})
        + frame(3, {"handoff": "billing"})
        + b"id: 4\ndata: [1, 2]\n\n"
        + frame(5, {"tool_call": "not an object"})
        + frame(6, {"done": True, "usage": "?", "saved": "no"})
    )
    assert follower.feed(body) == [
        StreamError("overloaded", "busy", True, "1"),
        StreamError("error", "", False, "2"),
        Other({"handoff": "billing"}, "3"),
        Other({"value": [1, 2]}, "4"),
        Other({"tool_call": "not an object"}, "5"),
        Done("stop", None, None, None, "6"),
    ]


def test_every_frame_the_server_writes_is_a_typed_event() -> None:
    # The frames come from the server's own seed encoder, so that the client and the server cannot drift apart.
    encoder = SeedEncoder(CTX)
    run = [*AGENT_RUN[:-1], MetadataEvent({"queue_position": 2}), ToolCallResult("call_2", "no such city", True)]
    body = encoder.encode(numbered([*run, FinishEvent("length")]))
    events = Follower().feed(body)
    assert events == [
        Metadata({"queue_position": 0}, "1"),
        Reasoning("Look", "2"),
        Reasoning(" it up.", "3"),
        Delta("Let me ", "4"),
        Delta("check.", "5"),
        ToolCall("call_1", "get_weather", "6"),
        ToolCallDelta("call_1", '{"city": ', "7"),
        ToolCallDelta("call_1", '"Paris"}', "8"),
        ToolResult("call_1", "sunny, 21C", False, "9"),
        Delta("It is ", "10"),
        Delta("sunny.", "11"),
        # 12 is the usage, which the seed protocol carries in its done frame
        Metadata({"queue_position": 2}, "13"),
        ToolResult("call_2", "no such city", True, "14"),
        Done("length", "run1", "conv1", Usage(12, 7), "15"),
    ]
    assert isinstance(events[-3], Metadata)
    assert events[-3].queue_position == 2
    result = ChatResult("", "", None, None)
    for event in events:
        result.add(event)
    assert result == ChatResult(
        "Let me check.It is sunny.",
        "length",
        "run1",
        "conv1",
        Usage(12, 7),
        reasoning="Look it up.",
        tool_calls=[
            ToolCallRecord("call_1", "get_weather", '{"city": "Paris"}', "sunny, 21C"),
            ToolCallRecord("call_2", "", "", "no such city", is_error=True),  # its start came before the cursor
        ],
        metadata={"queue_position": 2},
    )


def test_the_done_frame_says_when_the_answer_was_not_saved() -> None:
    (event,) = Follower().feed(frame(3, {"done": True, "finish_reason": "stop", "saved": False}))
    assert event == Done("stop", None, None, None, "3", saved=False)
    assert Metadata({"queue_position": True}, "1").queue_position is None  # a bool is not a position


# --- Attempts: what to request, how long to wait, when to give up -------------------------------------------------


def test_a_chat_is_posted_once_when_its_stream_is_whole() -> None:
    attempts = Attempts.chat(Resume(), "hi", "ann", "c1")
    trace = drive(attempts, ok(deltas(1, "a") + done(2)))
    assert trace.requests == [
        Request("POST", "/api/chat/stream", json={"message": "hi", "user_id": "ann", "conversation_id": "c1"})
    ]
    assert trace.events == [Delta("a", "1"), Done("stop", None, None, None, "2")]
    attempts.end()


def test_the_post_body_leaves_out_what_was_not_given() -> None:
    first = Attempts.chat(Resume(), "hi", None, None).next_request()
    assert first == Request("POST", "/api/chat/stream", json={"message": "hi"})


def test_a_cut_chat_is_resumed_from_its_last_event_id_without_duplicates() -> None:
    attempts = chat()
    trace = drive(attempts, cut(deltas(1, "a", "b")), ok(deltas(2, "b", "c") + done(4)))
    assert trace.requests[1] == Request("GET", "/api/runs/r1/stream", 0.25, {"last-event-id": "2"}, {"user_id": "ann"})
    assert [e.id for e in trace.events] == ["1", "2", "3", "4"]
    assert text(trace.events) == "abc"
    attempts.end()


def test_a_stream_the_server_closes_early_is_resumed_too() -> None:
    attempts = chat(user_id=None)
    trace = drive(attempts, ok(deltas(1, "a")), ok(done(2)))
    assert trace.requests[1] == Request("GET", "/api/runs/r1/stream", 0.25, {"last-event-id": "1"}, {})
    attempts.end()


def test_the_delay_doubles_while_resumes_fail_and_starts_over_after_progress() -> None:
    attempts = chat(Resume(max_retries=5, backoff_s=0.1, max_backoff_s=0.3))
    trace = drive(
        attempts,
        cut(deltas(1, "a")),
        httpx.ReadError("reset before a byte"),
        httpx.ConnectError("refused"),  # a resume that cannot connect is one more failure, not the end
        httpx.Response(503),
        ok(deltas(2, "b")),  # progress: the count starts over
        httpx.Response(502),
        ok(done(3)),
    )
    assert trace.delays == [0.0, 0.1, 0.2, 0.3, 0.3, 0.1, 0.2]
    assert text(trace.events) == "ab"
    attempts.end()


def test_it_gives_up_after_max_retries_in_a_row_with_what_it_had() -> None:
    attempts = chat(Resume(max_retries=2))
    trace = drive(attempts, cut(deltas(1, "a", "b")), httpx.ReadError("x"), httpx.ReadError("y"))
    assert len(trace.requests) == 3  # the POST and two resumes
    with pytest.raises(IncompleteStreamError) as info:
        attempts.end()
    assert info.value.last_event_id == "2"
    assert info.value.text == "ab"


def test_resuming_can_be_turned_off() -> None:
    attempts = chat(Resume(max_retries=0))
    drive(attempts, cut(deltas(1, "a")))
    with pytest.raises(IncompleteStreamError):
        attempts.end()


def test_the_servers_retry_hint_makes_the_wait_longer_never_shorter() -> None:
    attempts = chat(Resume(backoff_s=0.001))
    trace = drive(attempts, cut(b"retry: 400\n\n" + deltas(1, "a")), ok(done(2)))
    assert trace.delays == [0.0, 0.4]
    long = chat(Resume(backoff_s=2.0))
    assert drive(long, cut(b"retry: 400\n\n" + deltas(1, "a")), ok(done(2))).delays == [0.0, 2.0]


def test_resume_delay_is_capped() -> None:
    policy = Resume(backoff_s=0.25, max_backoff_s=8.0)
    assert [policy.delay(n, None) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(0, 3000) == 3.0


@pytest.mark.parametrize("status", [404, 204, 401])
def test_a_resume_answered_with_no_stream_to_come_ends_it(status: int) -> None:
    attempts = chat()
    trace = drive(attempts, cut(deltas(1, "a")), httpx.Response(status))
    assert len(trace.requests) == 2
    with pytest.raises(IncompleteStreamError) as info:
        attempts.end()
    assert info.value.text == "a"


def test_a_stream_without_a_run_id_cannot_be_resumed() -> None:
    attempts = chat()
    trace = drive(attempts, cut(deltas(1, "a"), run_id=None))
    assert len(trace.requests) == 1
    with pytest.raises(IncompleteStreamError):
        attempts.end()


def test_a_refused_first_request_is_the_servers_error() -> None:
    body = b'{"error": {"code": "invalid_request", "message": "message is empty", "field": "message"}}'
    with pytest.raises(TokenrelayHTTPError) as info:
        drive(chat(), httpx.Response(422, content=body))
    assert (info.value.status_code, info.value.code, info.value.field) == (422, "invalid_request", "message")
    assert info.value.message == "message is empty"
    with pytest.raises(TokenrelayHTTPError) as info:
        drive(chat(), httpx.Response(502, content=b"Bad gateway, from the proxy"))
    assert (info.value.code, info.value.message) == ("http_error", "Bad gateway, from the proxy")
    with pytest.raises(TokenrelayHTTPError) as info:
        drive(chat(), httpx.Response(503))
    assert info.value.message == "Service Unavailable"


def test_an_unreachable_server_is_a_connection_error_only_for_the_first_request() -> None:
    refused = httpx.ConnectError("connection refused")
    with pytest.raises(TokenrelayConnectionError) as info:
        drive(chat(), refused)
    assert str(info.value) == "cannot reach http://relay.test: connection refused"
    assert info.value.__cause__ is refused


def test_a_first_request_cut_before_its_answer_is_an_incomplete_stream() -> None:
    attempts = chat()
    drive(attempts, httpx.ReadTimeout("no answer"))  # no run id to resume
    with pytest.raises(IncompleteStreamError) as info:
        attempts.end()
    assert (info.value.last_event_id, info.value.text) == ("", "")


def test_a_run_is_followed_from_after_an_event_id() -> None:
    attempts = Attempts.run(Resume(), "r9", 2, "ann")
    trace = drive(attempts, cut(deltas(2, "b", "c")), ok(deltas(3, "c") + done(4)))
    assert trace.requests[0] == Request("GET", "/api/runs/r9/stream", 0.0, {"last-event-id": "2"}, {"user_id": "ann"})
    assert trace.requests[1] == Request("GET", "/api/runs/r9/stream", 0.25, {"last-event-id": "3"}, {"user_id": "ann"})
    assert [e.id for e in trace.events] == ["3", "4"]  # event 2 was before the cursor
    attempts.end()


def test_a_run_followed_from_its_start_asks_after_event_zero() -> None:
    first = Attempts.run(Resume(), "r9", 0, None).next_request()
    assert first == Request("GET", "/api/runs/r9/stream", 0.0, {"last-event-id": "0"}, {})


def test_a_finished_run_with_nothing_after_the_cursor_is_an_empty_stream() -> None:
    attempts = Attempts.run(Resume(), "r9", 7, None)
    assert drive(attempts, httpx.Response(204)).events == []
    attempts.end()  # no error: nothing was missing


def test_an_unknown_run_is_the_servers_error() -> None:
    with pytest.raises(TokenrelayHTTPError) as info:
        drive(
            Attempts.run(Resume(), "nope", 0, None),
            httpx.Response(404, content=b'{"error": {"code": "run_not_found", "message": "no such run"}}'),
        )
    assert (info.value.status_code, info.value.code) == (404, "run_not_found")


# --- the other requests, and the errors' one root ---------------------------------------------------------------


def test_cancel_and_health_requests_and_answers() -> None:
    assert cancel_request("r1", "ann") == Request("POST", "/api/runs/r1/cancel", params={"user_id": "ann"})
    assert cancel_request("r1", None).params == {}
    assert cancelled(httpx.Response(200, json={"cancelled": True})) is True
    assert cancelled(httpx.Response(200, json={"cancelled": False})) is False
    with pytest.raises(TokenrelayHTTPError) as info:
        cancelled(httpx.Response(404, json={"error": {"code": "run_not_found", "message": "no such run"}}))
    assert info.value.code == "run_not_found"
    assert (HEALTH.method, HEALTH.path, HEALTH.params) == ("GET", "/api/health", {})
    assert health(httpx.Response(200, json={"status": "ok"})) == {"status": "ok"}
    with pytest.raises(TokenrelayHTTPError):
        health(httpx.Response(503, text="down"))


def test_http_options_send_the_token_and_keep_the_callers_headers() -> None:
    options = http_options(BASE, {"x-app": "cli"}, "secret", 30.0)
    assert options["base_url"] == BASE
    assert options["headers"] == {"x-app": "cli", "authorization": "Bearer secret"}
    assert options["timeout"] == httpx.Timeout(30.0, connect=10.0)
    assert http_options(BASE, None, None, 5.0)["headers"] == {}


def test_every_client_error_is_a_tokenrelay_error() -> None:
    for error in (TokenrelayHTTPError, TokenrelayConnectionError, IncompleteStreamError):
        assert issubclass(error, errors.TokenrelayError)
    from tokenrelay.client import TokenrelayError

    assert TokenrelayError is errors.TokenrelayError


# --- Stop: the cancel request, whenever it is asked for ----------------------------------------------------------


def test_a_stop_asked_for_once_the_run_is_named_is_sent_at_once() -> None:
    attempts = Attempts.chat(Resume(), "hi", "ann", None)
    assert not attempts.started
    attempts.next_request()
    assert attempts.started
    assert attempts.cancel() is None  # the POST is unanswered: no run to name yet
    headers = {"x-run-id": "r1", "x-conversation-id": "c1"}
    assert attempts.accepts(httpx.Response(200, headers=headers))
    assert (attempts.run_id, attempts.conversation_id) == ("r1", "c1")
    # The Stop asked for before the answer goes out as soon as the answer names the run, and only once.
    assert attempts.pending_cancel() == Request("POST", "/api/runs/r1/cancel", params={"user_id": "ann"})
    assert attempts.pending_cancel() is None
    assert attempts.cancel() == Request("POST", "/api/runs/r1/cancel", params={"user_id": "ann"})
    assert attempts.pending_cancel() is None  # a cancel sent at once is not pending


def test_no_cancel_is_pending_unless_one_was_asked_for() -> None:
    attempts = Attempts.run(Resume(), "r9", 0, None)
    attempts.next_request()
    assert attempts.accepts(httpx.Response(200))
    assert attempts.pending_cancel() is None
    assert attempts.cancel() == Request("POST", "/api/runs/r9/cancel")
