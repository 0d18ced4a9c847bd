"""A conversation's tool turns, in each provider's own request form.

An answer stored with its parts says, in order, what the model wrote, which tools it called (id, name, arguments)
and what they returned. A follow-up hands that back to the model as the provider expects it:

- Chat Completions: an ``assistant`` message with ``tool_calls``, then one ``tool`` message per call
  (:func:`chat_completion_messages`);
- Responses: ``function_call`` and ``function_call_output`` items (:func:`responses_input`);
- Anthropic Messages: ``tool_use`` blocks in the assistant turn, ``tool_result`` blocks in the user turn after it
  (:func:`anthropic_turns`);
- the Agents SDK: its input items, which are the Responses items (:func:`agents_input`);
- a model that takes text only (the local one): the turns as text (:func:`plain_messages`).

Every provider refuses a call left without its result, so a call that never got one (the run was stopped, or the
model asked for a tool nothing ran) is answered with an error result saying so. Reasoning is not sent back:
providers either refuse it or want their own signed form of it. A ``tool`` message without parts (an output with no
call to tie it to) is passed on as the user's text, labelled, rather than refused by the provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tokenrelay.messages import Message, TextPart, ToolCallPart, ToolResultPart

if TYPE_CHECKING:
    from anthropic.types import (
        MessageParam,
        TextBlockParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
    )
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionMessageFunctionToolCallParam,
        ChatCompletionMessageParam,
    )
    from openai.types.responses import ResponseInputItemParam

    AnthropicBlock = TextBlockParam | ToolUseBlockParam | ToolResultBlockParam

__all__ = [
    "NO_RESULT",
    "TextRole",
    "agents_input",
    "anthropic_turns",
    "chat_completion_messages",
    "plain_messages",
    "responses_input",
    "text_turn",
    "text_turns",
    "tool_steps",
]

TextRole = Literal["system", "user", "assistant"]

NO_RESULT = "no result: the tool call did not complete"
"""The output given to the model for a call that never got a result."""


def text_turn(message: Message) -> tuple[TextRole, str]:
    """``message`` as a role and a text that every provider takes: a tool's output becomes labelled user text."""
    if message.role == "tool":
        return "user", f"[tool output]\n{message.content}"
    return message.role, message.content


def text_turns(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The conversation as ``{"role", "content"}`` messages (OpenAI's shape), a tool's output as user text."""
    return [{"role": role, "content": content} for role, content in map(text_turn, messages)]


@dataclass(slots=True)
class Say:
    """What the model wrote, and the calls it made after it."""

    text: str
    calls: list[ToolCallPart] = field(default_factory=list)


@dataclass(slots=True)
class Results:
    """The results of the calls of the :class:`Say` before it, one per call and in its order."""

    results: list[ToolResultPart]


def _result_text(result: ToolResultPart) -> str:
    # Chat Completions and Responses have no error flag on a tool's output: the text says it.
    return f"[error] {result.output}" if result.is_error else result.output


class _Steps:
    """An answer's parts cut into steps: text and calls, then those calls' results, then more text..."""

    def __init__(self) -> None:
        self.out: list[Say | Results] = []
        self.text: list[str] = []
        self.calls: list[ToolCallPart] = []
        self.results: dict[str, ToolResultPart] = {}

    def flush(self) -> None:
        if self.calls:
            self.out.append(Say("".join(self.text), self.calls))
            self.out.append(
                Results([self.results.get(c.call_id) or ToolResultPart(c.call_id, NO_RESULT, True) for c in self.calls])
            )
        elif self.text and any(self.text):
            self.out.append(Say("".join(self.text)))
        self.text, self.calls, self.results = [], [], {}

    def add_text(self, text: str) -> None:
        if self.results:  # the model goes on after its tools answered: a new step
            self.flush()
        self.text.append(text)

    def add_call(self, call: ToolCallPart) -> None:
        if self.results:
            self.flush()
        self.calls.append(call)

    def add_result(self, result: ToolResultPart) -> None:
        if any(c.call_id == result.call_id for c in self.calls):
            self.results.setdefault(result.call_id, result)
        else:  # a result with no call to tie it to: the model still learns what the tool said
            self.add_text(f"\n[tool output]\n{_result_text(result)}\n")


def tool_steps(message: Message) -> list[Say | Results]:
    """An assistant message as steps: every :class:`Say` with calls is followed by their :class:`Results`."""
    if not message.parts:
        return [Say(message.content)] if message.content else []
    steps = _Steps()
    for part in message.parts:
        if isinstance(part, TextPart):
            steps.add_text(part.text)
        elif isinstance(part, ToolCallPart):
            steps.add_call(part)
        elif isinstance(part, ToolResultPart):
            steps.add_result(part)
    steps.flush()
    return steps.out


def _has_tools(message: Message) -> bool:
    return message.role == "assistant" and any(isinstance(p, ToolCallPart | ToolResultPart) for p in message.parts)


def _arguments(call: ToolCallPart) -> str:
    return call.arguments or "{}"


# Chat Completions.


def _chat_text(role: TextRole, content: str) -> ChatCompletionMessageParam:
    if role == "system":
        return {"role": "system", "content": content}
    if role == "assistant":
        return {"role": "assistant", "content": content}
    return {"role": "user", "content": content}


def _chat_steps(message: Message) -> list[ChatCompletionMessageParam]:
    out: list[ChatCompletionMessageParam] = []
    for step in tool_steps(message):
        if isinstance(step, Results):
            out.extend({"role": "tool", "tool_call_id": r.call_id, "content": _result_text(r)} for r in step.results)
            continue
        said: ChatCompletionAssistantMessageParam = {"role": "assistant", "content": step.text or None}
        if step.calls:
            calls: list[ChatCompletionMessageFunctionToolCallParam] = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c)}}
                for c in step.calls
            ]
            said["tool_calls"] = calls
        out.append(said)
    return out


def chat_completion_messages(
    messages: Sequence[Message], system_prompt: str | None = None
) -> list[ChatCompletionMessageParam]:
    """The conversation as Chat Completions messages, the system prompt first, tool turns as tool messages."""
    out: list[ChatCompletionMessageParam] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for message in messages:
        out.extend(_chat_steps(message) if _has_tools(message) else [_chat_text(*text_turn(message))])
    return out


# Responses, and the Agents SDK (whose input items are the Responses ones).


def _responses_steps(message: Message) -> list[ResponseInputItemParam]:
    out: list[ResponseInputItemParam] = []
    for step in tool_steps(message):
        if isinstance(step, Results):
            out.extend(
                {"type": "function_call_output", "call_id": r.call_id, "output": _result_text(r)} for r in step.results
            )
            continue
        if step.text:
            out.append({"role": "assistant", "content": step.text})
        out.extend(
            {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": _arguments(c)}
            for c in step.calls
        )
    return out


def responses_input(messages: Sequence[Message]) -> list[ResponseInputItemParam]:
    """The conversation as Responses input items: messages, and ``function_call`` / ``function_call_output``."""
    out: list[ResponseInputItemParam] = []
    for message in messages:
        if _has_tools(message):
            out.extend(_responses_steps(message))
        else:
            role, content = text_turn(message)
            out.append({"role": role, "content": content})
    return out


def agents_input(messages: Sequence[Message]) -> list[ResponseInputItemParam]:
    """The conversation as the Agents SDK's run input (``TResponseInputItem`` is the Responses input item)."""
    return responses_input(messages)


# Anthropic Messages.

_TOOL_USE_ID = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_use_id(call_id: str) -> str:
    """An id Anthropic takes (``^[a-zA-Z0-9_-]+$``): a call made through another provider may not be one."""
    return _TOOL_USE_ID.sub("_", call_id) or "call"


def _tool_input(call: ToolCallPart) -> dict[str, object]:
    """A call's arguments as the object ``tool_use`` wants; arguments that are not one (cut short) kept as text."""
    try:
        value = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        return {"arguments": call.arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _anthropic_blocks(message: Message) -> list[tuple[Literal["user", "assistant"], list[AnthropicBlock]]]:
    out: list[tuple[Literal["user", "assistant"], list[AnthropicBlock]]] = []
    for step in tool_steps(message):
        if isinstance(step, Results):
            results: list[AnthropicBlock] = []
            for r in step.results:
                block: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": _tool_use_id(r.call_id)}
                if r.output:  # an empty text block is refused; an absent content is an empty result
                    block["content"] = r.output
                if r.is_error:
                    block["is_error"] = True
                results.append(block)
            out.append(("user", results))
            continue
        said: list[AnthropicBlock] = [{"type": "text", "text": step.text}] if step.text else []
        said.extend(
            {"type": "tool_use", "id": _tool_use_id(c.call_id), "name": c.name or "tool", "input": _tool_input(c)}
            for c in step.calls
        )
        if said:
            out.append(("assistant", said))
    return out


def _anthropic_content(blocks: list[AnthropicBlock]) -> str | list[AnthropicBlock]:
    # Text alone is sent as a string, as it always was; blocks only where there is a tool turn.
    if all(b["type"] == "text" for b in blocks):
        return "\n\n".join(b["text"] for b in blocks if b["type"] == "text")
    return blocks


def anthropic_turns(messages: Sequence[Message]) -> tuple[list[str], list[MessageParam]]:
    """System texts apart, and turns that alternate user/assistant starting with the user, as the API requires.

    Consecutive turns of one role are joined; ``tool`` text counts as the user's; an assistant turn before any user
    turn has nothing to answer and is dropped (and a result of a call it made becomes text).
    """
    system: list[str] = []
    turns: list[tuple[Literal["user", "assistant"], list[AnthropicBlock]]] = []
    called: set[str] = set()
    for message in messages:
        if _has_tools(message):
            pieces = _anthropic_blocks(message)
        else:
            role, content = text_turn(message)
            if role == "system":
                system.append(content)
                continue
            pieces = [(role, [{"type": "text", "text": content}])] if content else []
        for role, blocks in pieces:
            if not turns and role == "assistant":
                continue
            blocks = [_answerable(b, called) for b in blocks]
            called.update(b["id"] for b in blocks if b["type"] == "tool_use")
            if turns and turns[-1][0] == role:
                turns[-1][1].extend(blocks)
            else:
                turns.append((role, blocks))
    return system, [_anthropic_turn(role, _anthropic_content(blocks)) for role, blocks in turns]


def _anthropic_turn(role: Literal["user", "assistant"], content: str | list[AnthropicBlock]) -> MessageParam:
    if role == "assistant":
        return {"role": "assistant", "content": content}
    return {"role": "user", "content": content}


def _answerable(block: AnthropicBlock, called: set[str]) -> AnthropicBlock:
    """``block``, or a result whose call was dropped as text (a result must answer a ``tool_use`` before it)."""
    if block["type"] != "tool_result" or block["tool_use_id"] in called:
        return block
    output = block.get("content", "")
    return {"type": "text", "text": f"[tool output]\n{output if isinstance(output, str) else ''}"}


# Text only.


def plain_messages(messages: Sequence[Message]) -> list[Message]:
    """The conversation for a model that takes text only: each tool turn written into the answer's text."""
    out: list[Message] = []
    for message in messages:
        if not _has_tools(message):
            out.append(message)
            continue
        lines: list[str] = []
        for step in tool_steps(message):
            if isinstance(step, Results):
                lines.extend(f"[tool result {r.call_id}]\n{_result_text(r)}" for r in step.results)
                continue
            if step.text:
                lines.append(step.text)
            lines.extend(f"[tool call {c.call_id}] {c.name}({_arguments(c)})" for c in step.calls)
        out.append(Message(message.role, "\n\n".join(lines)))
    return out
