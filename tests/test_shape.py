"""The code's shape, checked: small modules, functions that fit on a screen, no import cycles inside the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tokenrelay"
WEB = ROOT / "web" / "src"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _python_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def _web_modules() -> list[Path]:
    return sorted(p for p in WEB.rglob("*") if p.suffix in {".ts", ".tsx"})


@pytest.mark.parametrize("path", _python_modules() + _web_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_MODULE_LINES})"


@pytest.mark.parametrize("path", _python_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_fit_on_a_screen(path: Path) -> None:
    tree = ast.parse(path.read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(ROOT)}: {', '.join(long)}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """The package's modules this one imports at import time (not under ``TYPE_CHECKING``, not inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tokenrelay"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("tokenrelay"):
                found.add(base)
    return found


def test_no_import_cycles() -> None:
    modules = {_module_name(p): p for p in _python_modules()}
    graph = {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ re-exporting its own modules is not a cycle through it.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (name.startswith(m + ".") and modules[m].name == "__init__.py")}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in seen and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        seen[node] = 2
        return None

    for name in sorted(graph):
        if name not in seen and (cycle := visit(name)):
            pytest.fail("import cycle: " + " -> ".join(cycle))
