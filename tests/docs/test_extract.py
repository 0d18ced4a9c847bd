"""The docs test's own rules: which blocks it finds, which lines start servers, and that a broken example fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.docs.extract import (
    blocks_of,
    console_script,
    literal_ports,
    shell_script,
    starts_server,
    substitute_ports,
)

PREAMBLE = Path(__file__).with_name("preamble.sh").read_text(encoding="utf-8")


def test_blocks_are_found_with_their_tag_line_and_section(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n## Part\n\n```python\nprint(1)\n```\n\n- item:\n  ```sh\n  echo hi\n  ```\n\n```text\nx\n```\n"
    )
    blocks = blocks_of(doc, tmp_path)
    assert [(b.line, b.tag, b.code, b.section, b.runnable) for b in blocks] == [
        (5, "python", "print(1)\n", "Part", True),
        (10, "sh", "echo hi\n", "Part", True),
        (14, "text", "x\n", "Part", False),
    ]
    assert blocks[0].name == "doc.md:5"


def test_an_unclosed_block_is_an_error(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("text\n```sh\necho never closed\n")
    with pytest.raises(ValueError, match=r"doc.md:2: the code block opened here is never closed"):
        blocks_of(doc, tmp_path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("tokenrelay serve", True),
        (".venv/bin/tokenrelay serve --port 8001   # instance B", True),
        ("""TOKENRELAY_AUTH_TOKENS='{"a b": "c"}' tokenrelay serve""", True),
        ("make run     # the chat", True),
        ("tokenrelay serve --help", False),
        ("tokenrelay chat 'hi'", False),
        ("# tokenrelay serve", False),
        ("make test", False),
    ],
)
def test_server_lines(line: str, expected: bool) -> None:
    assert starts_server(line) is expected


def test_literal_ports_are_swapped() -> None:
    code = "curl http://127.0.0.1:8000/x localhost:8001 --port 8000 --base-url http://localhost:8080/v1 PORT=8000"
    assert literal_ports(code) == [8000, 8001]
    assert substitute_ports(code, {8000: 5000, 8001: 5001}) == (
        "curl http://127.0.0.1:5000/x localhost:5001 --port 5000 --base-url http://localhost:8080/v1 PORT=5000"
    )


def run_script(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "DOCS_TMP": str(tmp_path), "DOCS_PIDFILE": str(tmp_path / "pids")}
    env["DOCS_SERVER_TIMEOUT"] = "5"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-s"], input=PREAMBLE + script, env=env, capture_output=True, text=True, timeout=30
    )


def test_console_output_is_compared(tmp_path: Path) -> None:
    good = console_script("$ echo 'run q2Vt [x] ended'\nrun … [x] ended\n")
    assert run_script(good, tmp_path).returncode == 0
    bad = run_script(console_script("$ echo something else\nrun … ended\n"), tmp_path)
    assert bad.returncode == 1
    assert "`echo something else` printed" in bad.stderr


def test_a_failing_line_fails_the_block(tmp_path: Path) -> None:
    assert run_script(shell_script("false\necho after\n", iter([1])), tmp_path).returncode == 1
    assert run_script(shell_script("echo $UNSET_VARIABLE\n", iter([1])), tmp_path).returncode != 0


def test_a_server_that_exits_fails_the_block_and_names_its_port(tmp_path: Path) -> None:
    # "tokenrelay" here is a stand-in that exits at once, the way a bad configuration stops serve.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tokenrelay").write_text("#!/bin/sh\necho 'tokenrelay: error: bad flag' >&2\nexit 2\n")
    (fake / "tokenrelay").chmod(0o755)
    script = shell_script(f"{fake}/tokenrelay serve --port 1\necho reached\n", iter([2]))
    result = run_script(script, tmp_path)
    assert result.returncode == 1
    assert "the server meant for port 1 exited" in result.stderr
    assert "reached" not in result.stdout
    assert "bad flag" in (tmp_path / "server-1.log").read_text()
