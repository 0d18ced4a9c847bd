"""Tool turns handed back to each provider in its own form, checked against the provider SDK's own request types."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from pydantic import TypeAdapter

from tokenrelay.backends._tools import (
    NO_RESULT,
    agents_input,
    anthropic_turns,
    chat_completion_messages,
    plain_messages,
    responses_input,
)
from tokenrelay.backends.base import GenerateOptions
from tokenrelay.messages import FinishPart, Message, ReasoningPart, TextPart, ToolCallPart, ToolResultPart, UsagePart

ANSWER = Message(
    "assistant",
    "Let me look. It is sunny.",
    (
        ReasoningPart("the user wants the weather"),
        TextPart("Let me look."),
        ToolCallPart("call_1", "weather", '{"city": "Paris"}'),
        ToolCallPart("call.2", "clock", ""),  # a parallel call; an id Anthropic would refuse as it is
        ToolResultPart("call_1", "sunny"),
        ToolResultPart("call.2", "no clock here", is_error=True),
        TextPart(" It is sunny."),
        UsagePart(3, 4),
        FinishPart("stop"),
    ),
)
STOPPED = Message(  # a run stopped while its tool was running: a call without a result
    "assistant", "", (ToolCallPart("call_9", "search", '{"q": "ss'), FinishPart("cancelled"))
)
CONVERSATION = [
    Message("system", "Be brief."),
    Message("user", "Weather in Paris?"),
    ANSWER,
    Message("user", "And search for SSE"),
    STOPPED,
    Message("user", "Never mind."),
]


def materialized(value: Any) -> Any:
    """``value`` with every lazily validated iterable consumed: pydantic checks an ``Iterable[...]`` field's items
    only as they are read, so a request is only known valid once all of it has been."""
    if isinstance(value, Mapping):
        return {k: materialized(v) for k, v in value.items()}
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Iterable):
        return [materialized(v) for v in value]
    return value


def valid(kind: Any, value: Any) -> None:
    """``value`` is a ``kind`` (an SDK's request type) exactly: nothing refused, nothing dropped as unknown."""
    adapter = TypeAdapter(kind)  # kept until the lazy iterables are read: they use its validators
    checked = materialized(adapter.validate_python(value))
    assert checked == materialized(value)


def valid_each(value: list[Any], kind_of: Callable[[Any], Any]) -> None:
    """Each item of ``value`` is exactly the SDK type ``kind_of`` names for it (the SDKs' whole unions take
    seconds to build a validator for; each item is checked against the member of the union it must be)."""
    for item in value:
        valid(kind_of(item), item)


def test_chat_completions_get_assistant_tool_calls_and_tool_messages() -> None:
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionSystemMessageParam,
        ChatCompletionToolMessageParam,
        ChatCompletionUserMessageParam,
    )

    out = chat_completion_messages(CONVERSATION, "You are helpful.")
    by_role = {
        "system": ChatCompletionSystemMessageParam,
        "user": ChatCompletionUserMessageParam,
        "assistant": ChatCompletionAssistantMessageParam,
        "tool": ChatCompletionToolMessageParam,
    }
    valid_each(out, lambda m: by_role[m["role"]])
    assert out == [
        {"role": "system", "content": "You are helpful."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call.2", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call.2", "content": "[error] no clock here"},
        {"role": "assistant", "content": " It is sunny."},
        {"role": "user", "content": "And search for SSE"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "search", "arguments": '{"q": "ss'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": f"[error] {NO_RESULT}"},
        {"role": "user", "content": "Never mind."},
    ]


def test_responses_and_the_agents_sdk_get_function_call_items() -> None:
    from agents.items import TResponseInputItem
    from openai.types.responses import EasyInputMessageParam, ResponseFunctionToolCallParam, ResponseInputItemParam
    from openai.types.responses.response_input_item_param import FunctionCallOutput

    out = responses_input(CONVERSATION)
    by_type = {"function_call": ResponseFunctionToolCallParam, "function_call_output": FunctionCallOutput}
    valid_each(out, lambda item: by_type.get(item.get("type", ""), EasyInputMessageParam))
    assert TResponseInputItem == ResponseInputItemParam  # the Agents SDK's run input is the Responses input
    assert agents_input(CONVERSATION) == out
    assert out[2:8] == [
        {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "call.2", "name": "clock", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call.2", "output": "[error] no clock here"},
        {"role": "assistant", "content": " It is sunny."},
    ]
    assert out[-2] == {"type": "function_call_output", "call_id": "call_9", "output": f"[error] {NO_RESULT}"}


def test_anthropic_gets_tool_use_and_tool_result_blocks_in_alternating_turns() -> None:
    from anthropic.types import TextBlockParam, ToolResultBlockParam, ToolUseBlockParam

    system, turns = anthropic_turns(CONVERSATION)
    blocks = {"text": TextBlockParam, "tool_use": ToolUseBlockParam, "tool_result": ToolResultBlockParam}
    for turn in turns:
        assert set(turn) == {"role", "content"}
        if not isinstance(turn["content"], str):
            valid_each(list(turn["content"]), lambda block: blocks[block["type"]])
    assert system == ["Be brief."]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "clock", "input": {}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "no clock here", "is_error": True},
    ]
    assert turns[3]["content"] == " It is sunny."
    # The cut-short arguments are kept as text; the unanswered call is answered with an error; the question after
    # it joins the results' turn (the API wants the results first).
    assert turns[5]["content"] == [
        {"type": "tool_use", "id": "call_9", "name": "search", "input": {"arguments": '{"q": "ss'}}
    ]
    assert turns[6]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_9", "content": NO_RESULT, "is_error": True},
        {"type": "text", "text": "Never mind."},
    ]


def test_anthropic_turns_of_text_only_are_strings_as_before() -> None:
    system, turns = anthropic_turns(
        [Message("assistant", "hello first"), Message("user", "a"), Message("tool", "b"), Message("assistant", "c")]
    )
    assert (system, turns) == (
        [],
        [{"role": "user", "content": "a\n\n[tool output]\nb"}, {"role": "assistant", "content": "c"}],
    )


def test_a_result_whose_call_was_dropped_reaches_anthropic_as_text() -> None:
    first = Message("assistant", "", (ToolCallPart("c", "f", "{}"), ToolResultPart("c", "42")))
    _, turns = anthropic_turns([first, Message("user", "so?")])
    assert turns == [{"role": "user", "content": "[tool output]\n42\n\nso?"}]


def test_a_model_of_text_only_reads_the_tool_turns_as_text() -> None:
    [q, answer] = plain_messages([Message("user", "q"), ANSWER])
    assert q == Message("user", "q")
    assert answer.role == "assistant"
    assert answer.content == (
        "Let me look.\n\n"
        '[tool call call_1] weather({"city": "Paris"})\n\n[tool call call.2] clock({})\n\n'
        "[tool result call_1]\nsunny\n\n[tool result call.2]\n[error] no clock here\n\n It is sunny."
    )


@pytest.mark.parametrize("provider", ["openai_chat", "openai_responses", "anthropic"])
def test_each_backends_request_carries_the_tool_turns(provider: str) -> None:
    from tokenrelay.backends.anthropic import AnthropicBackend
    from tokenrelay.backends.openai_chat import OpenAIChatBackend
    from tokenrelay.backends.openai_responses import OpenAIResponsesBackend

    url, key = "http://127.0.0.1:9", "sk-test"
    if provider == "openai_chat":
        chat = OpenAIChatBackend(model="m", base_url=f"{url}/v1", api_key=key).params(CONVERSATION, GenerateOptions())
        assert chat["messages"] == chat_completion_messages(CONVERSATION)
    elif provider == "openai_responses":
        backend = OpenAIResponsesBackend(model="m", base_url=f"{url}/v1", api_key=key)
        assert backend.params(CONVERSATION, GenerateOptions())["input"] == responses_input(CONVERSATION)
    else:
        params = AnthropicBackend(model="m", base_url=url, api_key=key).params(CONVERSATION, GenerateOptions())
        assert (params["system"], params["messages"]) == ("Be brief.", anthropic_turns(CONVERSATION)[1])
