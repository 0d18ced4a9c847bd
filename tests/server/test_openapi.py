"""The OpenAPI document tells the truth: schemathesis sends generated requests (valid and not) to every operation of
a real ``tokenrelay serve``-style server (uvicorn on a free port, the synthetic backend, SQLite history) and checks
each answer against the document: no 5xx, every status and content type documented, every body fits its schema."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.helpers import serving
from tokenrelay.backends.synthetic import SyntheticBackend
from tokenrelay.server import Relay
from tokenrelay.server.settings import Settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# What each operation answered, over the whole module: a run that sent nothing proves nothing.
SEEN: dict[str, set[tuple[int, str]]] = {}


class ServerThread:
    """The app served by uvicorn (with ``tokenrelay serve``'s edge) in its own thread and event loop: schemathesis
    sends its requests synchronously, from the test's thread."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.address: tuple[str, int] | None = None
        self.failure: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="openapi-server", daemon=True)

    def __enter__(self) -> tuple[str, int]:
        self._thread.start()
        if not self._ready.wait(30) or self.address is None:
            raise RuntimeError(f"the server did not start: {self.failure!r}")
        return self.address

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server did not stop"

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__ / the test, not lost in the thread
            self.failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serving(self.relay) as address:
            self.address = address
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = Path(tmp_path_factory.mktemp("openapi")) / "history.db"
    # Short answers: every stream ends quickly, so a generated request never waits on a long run.
    settings_ = Settings(backend="synthetic", database_url=f"sqlite+aiosqlite:///{database}", body_timeout_s=5)
    relay = Relay(SyntheticBackend(tokens=3, interval_ms=0), settings_)
    server = ServerThread(relay)
    with server as (host, port):
        yield f"http://{host}:{port}"
    assert relay.runs.active_runs == 0, "a run outlived the test"
    assert server.failure is None, f"the server failed: {server.failure!r}"


@pytest.fixture(scope="module")
def api_schema(server_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{server_url}/openapi.json")


OPERATIONS = [
    "POST /api/chat/stream",
    "GET /api/chat/stream",
    "GET /api/runs/{run_id}/stream",
    "POST /api/runs/{run_id}/cancel",
    "POST /api/runs/{run_id}/approvals",
    "GET /api/conversations",
    "GET /api/conversations/{conversation_id}/messages",
    "DELETE /api/conversations/{conversation_id}",
    "GET /api/health",
    "POST /api/chat",
    "GET /api/chat/{chat_id}/stream",
    "GET /v1/models",
    "GET /v1/models/{model_name}",
    "POST /v1/chat/completions",
    "POST /api/ag-ui",
]


# These take no input that could be made invalid: there is no negative request to send them.
NO_INPUT = {"GET /api/health", "GET /v1/models", "GET /v1/models/{model_name}"}
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS]
CASES += [(op, GenerationMode.NEGATIVE) for op in OPERATIONS if op not in NO_INPUT]


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{op}-{mode.value}" for op, mode in CASES])
def test_every_operation_conforms(api_schema: Any, operation: str, mode: GenerationMode) -> None:
    method, path = operation.split(" ")
    strategy = api_schema[path][method].as_strategy(generation_mode=mode)

    @given(case=strategy)
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def conforms(case: schemathesis.Case) -> None:
        response = case.call(timeout=10)
        content_type = response.headers.get("content-type", [""])[0]
        SEEN.setdefault(operation, set()).add((response.status_code, content_type))
        case.validate_response(response, checks=CHECKS)

    conforms()


# Requests a generator rarely hits (useChat's last message must be the user's text), each answered whole: the
# media type it must have, and what its body must end with (the seed's done frame, the others' [DONE]).
SEED_END = '"done": true'
STREAMS: list[tuple[str, dict[str, Any], str, str]] = [
    ("POST /api/chat/stream", {"body": {"message": "hello", "user_id": "u1"}}, "text/event-stream", SEED_END),
    (
        "POST /api/chat/stream",
        {"body": {"message": "hi"}, "query": {"protocol": "ai-sdk"}},
        "text/event-stream",
        "[DONE]",
    ),
    (
        "POST /api/chat/stream",
        {"body": {"message": "hi"}, "query": {"protocol": "openai"}},
        "text/event-stream",
        "[DONE]",
    ),
    ("GET /api/chat/stream", {"query": {"message": "hello", "user_id": "u2"}}, "text/event-stream", SEED_END),
    (
        "POST /api/chat",
        {"body": {"id": "chat-1", "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}},
        "text/event-stream",
        "[DONE]",
    ),
    (
        "POST /v1/chat/completions",
        {"body": {"model": "any", "messages": [{"role": "user", "content": "hi"}]}},
        "application/json",
        "}",
    ),
    (
        "POST /v1/chat/completions",
        {"body": {"model": "any", "messages": [{"role": "user", "content": "hi"}], "stream": True}},
        "text/event-stream",
        "[DONE]",
    ),
    (
        "POST /api/ag-ui",
        {"body": {"threadId": "agui-1", "runId": "r1", "messages": [{"id": "u1", "role": "user", "content": "hi"}]}},
        "text/event-stream",
        "RUN_FINISHED",
    ),
]


@pytest.mark.parametrize(
    ("operation", "parts", "media_type", "end"), STREAMS, ids=[f"{s[0]}-{i}" for i, s in enumerate(STREAMS)]
)
def test_whole_answers_conform(
    api_schema: Any, operation: str, parts: dict[str, Any], media_type: str, end: str
) -> None:
    method, path = operation.split(" ")
    case = api_schema[path][method].Case(media_type="application/json" if "body" in parts else None, **parts)
    response = case.call(timeout=10)
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"][0]
    SEEN.setdefault(operation, set()).add((response.status_code, content_type))
    case.validate_response(response, checks=CHECKS)
    assert content_type.startswith(media_type)
    last = response.text.rstrip().splitlines()[-1]
    assert end in last, f"the answer did not end: {last!r}"


def test_every_operation_was_exercised(api_schema: Any) -> None:
    """Runs after the generated tests (same module, declared later): each operation was called, and the streaming
    ones answered a whole stream at least once."""
    operations = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in api_schema.get_all_operations())}
    assert operations == set(OPERATIONS), "the document's operations are the ones tested"
    assert operations <= SEEN.keys(), f"never called: {operations - SEEN.keys()}"
    for key in ("POST /api/chat/stream", "POST /api/chat", "POST /v1/chat/completions"):
        assert any(status == 200 for status, _ in SEEN[key]), f"{key} never answered 200: {SEEN[key]}"
    streamed = {key for key, seen in SEEN.items() if any(t.startswith("text/event-stream") for _, t in seen)}
    assert {"POST /api/chat/stream", "POST /api/chat"} <= streamed


def test_the_document_describes_bodies_and_streams(server_url: str) -> None:
    """What the document says, stated once by hand: request bodies, error shapes, and streams that are not JSON."""
    doc = requests.get(f"{server_url}/openapi.json", timeout=10).json()
    paths = doc["paths"]
    for path in ("/api/chat/stream", "/api/chat", "/v1/chat/completions"):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True
        assert "properties" in body["content"]["application/json"]["schema"]
    stream = paths["/api/chat/stream"]["post"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    assert "itemSchema" in stream["text/event-stream"]
    assert set(paths["/api/conversations/{conversation_id}"]["delete"]["responses"]) >= {"204", "404", "415"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert paths["/v1/chat/completions"]["post"]["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OpenAIErrorBody"
    }


def test_the_checks_catch_an_undocumented_answer(server_url: str) -> None:
    """The checks are not vacuous: with the 422 of ``?limit=`` taken out of the document, the same request fails
    status-code conformance, and a stream documented as JSON fails content-type conformance."""
    doc = requests.get(f"{server_url}/openapi.json", timeout=10).json()
    del doc["paths"]["/api/conversations"]["get"]["responses"]["422"]
    chat = doc["paths"]["/api/chat/stream"]["post"]["responses"]["200"]
    chat["content"] = {"application/json": {"schema": {"type": "object"}}}
    altered = schemathesis.openapi.from_dict(doc)
    case = altered["/api/conversations"]["GET"].Case(query={"limit": "0"})
    with pytest.raises(FailureGroup, match="Undocumented status code"):
        case.validate_response(case.call(base_url=server_url, timeout=10), checks=CHECKS)
    case = altered["/api/chat/stream"]["POST"].Case(body={"message": "hi"}, media_type="application/json")
    with pytest.raises(FailureGroup, match="Undocumented Content-Type"):
        case.validate_response(case.call(base_url=server_url, timeout=10), checks=CHECKS)
