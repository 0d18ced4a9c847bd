"""The remote backends' warm-up at start (``backends/_warm.py``): the SDK's first-request work done in-process, with
no request reaching the upstream and nothing counted."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from asyncio.subprocess import PIPE

import pytest

from tests.backends.replay import ReplayServer

SCRIPT = """
import asyncio, sys
from tokenrelay.backends.{module} import {cls}
backend = {cls}(model="m", base_url="{url}", api_key="k")
lazy = [m for m in sys.modules if "{lazy}" and m.startswith("{lazy}")]
asyncio.run(backend.start())
print(lazy == [], any(m.startswith("{lazy}") for m in sys.modules), backend.stats.as_dict()["streams_started"],
      backend._client is None)
"""


@pytest.mark.parametrize(
    ("module", "cls", "lazy", "path"),
    [
        ("openai_chat", "OpenAIChatBackend", "openai.resources.chat.completions", "/v1"),
        ("openai_responses", "OpenAIResponsesBackend", "openai.resources.responses", "/v1"),
        # the Anthropic SDK imports its resources up front: only its validators are left to the first request
        ("anthropic", "AnthropicBackend", "", ""),
    ],
)
async def test_start_does_the_first_request_work_without_the_upstream(
    module: str, cls: str, lazy: str, path: str
) -> None:
    async with ReplayServer() as server:
        code = textwrap.dedent(SCRIPT).format(module=module, cls=cls, lazy=lazy, url=f"{server.url}{path}")
        # the server keeps serving meanwhile: a request that reached it would be answered and recorded
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=PIPE, stderr=PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        # not imported before start, imported by it; no stream counted, no client kept, nothing sent upstream
        assert out.decode().split() == ["True", "True", "0", "True"], err.decode()
        assert server.requests == []
