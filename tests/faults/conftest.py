"""What the fault-injection tests share: the figures the suite reports at the end (every test file adds to them).
Their redis-server of their own is ``tests/conftest.py``'s ``own_redis``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest


@dataclass
class Figures:
    """What the suite tried and found, printed at the end of the session."""

    faults: dict[str, int] = field(default_factory=dict)
    runs_checked: int = 0
    viewers_checked: int = 0
    answers_lost: int = 0
    unsaved_reported: int = 0  # answers the history could not take, each told to its viewers ("saved": false)

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1


FIGURES = Figures()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES.faults:
        return
    tried = ", ".join(f"{kind} {n}" for kind, n in sorted(FIGURES.faults.items()))
    terminalreporter.write_line(
        f"faults tried: {sum(FIGURES.faults.values())} ({tried}); runs checked: {FIGURES.runs_checked}; "
        f"viewers checked: {FIGURES.viewers_checked}; answers lost: {FIGURES.answers_lost}; "
        f"unsaved and reported so: {FIGURES.unsaved_reported}"
    )
