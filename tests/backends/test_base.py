"""The Backend protocol itself: every backend has its members, and the shared pieces behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import providers
from tests.backends.replay import ReplayServer
from tokenrelay.backends import Backend, Pause, ScriptedBackend, SyntheticBackend
from tokenrelay.backends._tools import text_turn, text_turns
from tokenrelay.backends.agents import AgentsBackend
from tokenrelay.backends.local import LocalBackend
from tokenrelay.backends.script_file import ScriptFileBackend
from tokenrelay.events import TextDelta
from tokenrelay.messages import Message


async def test_every_backend_has_the_protocols_members(replay: ReplayServer, tmp_path: Path) -> None:
    backends: list[object] = [
        SyntheticBackend(),
        ScriptedBackend([TextDelta("hi"), Pause(0)]),
        ScriptFileBackend({"*": [TextDelta("hi")]}),
        LocalBackend(model_path=tmp_path / "absent.gguf"),  # built, not loaded
        providers.openai_chat(replay),
        providers.openai_responses(replay),
        providers.anthropic(replay),
        AgentsBackend(model="m", base_url=f"{replay.url}/v1"),
    ]
    for backend in backends:
        assert isinstance(backend, Backend), type(backend).__name__


@pytest.mark.parametrize(
    "backend",
    [SyntheticBackend(), ScriptedBackend([]), ScriptFileBackend({})],
    ids=lambda b: type(b).__name__,
)
async def test_backends_with_nothing_to_set_up_load_start_and_close_as_no_ops(backend: Backend) -> None:
    backend.load()
    await backend.start()
    await backend.close()


def test_the_local_backend_fails_fast_in_load_with_a_one_line_reason(tmp_path: Path) -> None:
    from tokenrelay.backends.base import BackendError

    with pytest.raises(BackendError) as caught:
        LocalBackend(model_path=tmp_path / "absent.gguf").load()
    assert caught.value.code == "model_not_found"
    assert "\n" not in caught.value.message


def test_a_tool_message_is_labelled_user_text_and_the_others_pass_as_they_are() -> None:
    assert text_turn(Message("tool", "42")) == ("user", "[tool output]\n42")
    for role in ("system", "user", "assistant"):
        assert text_turn(Message(role, "x")) == (role, "x")
    assert text_turns([Message("user", "a"), Message("tool", "b")]) == [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "[tool output]\nb"},
    ]
