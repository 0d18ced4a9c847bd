"""Fenced code blocks of README.md and docs/*.md, and the shell scripts the docs test runs them as.

Pure text work (no I/O but reading the files), so the rules below are unit-tested on their own.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON_TAGS = frozenset({"python", "py"})
SHELL_TAGS = frozenset({"bash", "sh", "shell"})
CONSOLE_TAGS = frozenset({"console"})
RUNNABLE_TAGS = PYTHON_TAGS | SHELL_TAGS | CONSOLE_TAGS

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
# A literal port in a snippet: "127.0.0.1:8000", "localhost:8001", "--port 8000", "PORT=8000".
_PORT = re.compile(r"(?P<pre>(?:127\.0\.0\.1|localhost|0\.0\.0\.0):|--port[ =]|\bPORT=)(?P<port>800\d)\b")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block: the file (relative to the repository), the line of its opening fence, its tag, its text
    (dedented to its fence) and the heading it sits under."""

    path: str
    line: int
    tag: str
    code: str
    section: str

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.tag in RUNNABLE_TAGS


def blocks_of(path: Path, root: Path = ROOT) -> list[Block]:
    """Every fenced block of a Markdown file, in order; an unclosed fence is an error, never a silent skip."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            if lines[i].startswith("#"):
                section = lines[i].lstrip("#").strip()
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        tag = match["info"].split()[0].lower() if match["info"].strip() else ""
        end = i + 1
        while end < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[end]):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: the code block opened here is never closed")
        body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]]
        found.append(Block(str(path.relative_to(root)), i + 1, tag, "\n".join(body) + "\n", section))
        i = end + 1
    return found


def all_blocks(root: Path = ROOT) -> list[Block]:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [block for path in files for block in blocks_of(path, root)]


def logical_lines(code: str) -> list[str]:
    """Shell lines with their backslash continuations joined (the newlines kept)."""
    out: list[str] = []
    pending = ""
    for line in code.splitlines():
        pending += line
        if line.endswith("\\"):
            pending += "\n"
            continue
        out.append(pending)
        pending = ""
    if pending:
        out.append(pending)
    return out


def starts_server(line: str) -> bool:
    """``make run`` or ``tokenrelay serve ...`` (not ``--help``), possibly after ``NAME=value`` assignments."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # not a whole command (an unclosed quote): nothing to start
        return False
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    if "--help" in words or len(words) < 2:
        return False
    return words[:2] == ["make", "run"] or (words[0].split("/")[-1] == "tokenrelay" and words[1] == "serve")


def literal_ports(code: str) -> list[int]:
    return sorted({int(m["port"]) for m in _PORT.finditer(code)})


def substitute_ports(code: str, ports: dict[int, int]) -> str:
    """Replace each literal port of ``ports`` (8000, 8001…) by the port the test serves it on."""

    def swap(match: re.Match[str]) -> str:
        port = int(match["port"])
        return f"{match['pre']}{ports.get(port, port)}"

    return _PORT.sub(swap, code)


def server_port(line: str) -> int | None:
    """The port a server line names (``--port N``), or None for the default one."""
    match = re.search(r"--port[ =](\d+)", line)
    return int(match.group(1)) if match else None


def shell_script(code: str, default_ports: Iterator[int]) -> str:
    """A shell block as the script the test runs: server lines go to the background, each on the port it names or
    else on the next of ``default_ports`` (the first being the block's 8000), so alternatives can start together;
    the next command waits until every server started so far answers ``/api/health``. ``_docs_serve`` and
    ``_docs_ready`` come from the preamble."""
    out: list[str] = []
    waiting = False
    for line in logical_lines(code):
        if starts_server(line):
            port = server_port(line) or next(default_ports)
            out.append(f"_docs_serve {port} <<'DOCS_SERVER_EOF'\nexport TOKENRELAY_PORT={port} PORT={port}")
            out.append(f"{line}\nDOCS_SERVER_EOF")
            waiting = True
        elif line.strip() and not line.strip().startswith("#"):
            if waiting:
                out.append("_docs_ready")
                waiting = False
            out.append(line)
        else:
            out.append(line)
    if waiting:
        out.append("_docs_ready")
    return "\n".join(out) + "\n"


def console_script(code: str) -> str:
    """A console block (``$ command`` lines, each followed by the output it must print; ``…`` stands for any
    text) as a shell script that runs each command and checks its output."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"console block: output before any '$ ' command: {line!r}")
    out = ["export DOCS_CURL_ANY_STATUS=1  # the output is checked, whatever the status"]
    for command, expected in steps:
        text = "\n".join(expected).strip()
        pattern = "".join("*" if ch == "…" else "\\" + ch if ch in "*?[]\\" else ch for ch in text)
        out.append(f"_docs_out=$({command})")
        out.append(f'_docs_check {shlex.quote(command)} "$_docs_out" {shlex.quote(pattern)}')
    return "\n".join(out) + "\n"
