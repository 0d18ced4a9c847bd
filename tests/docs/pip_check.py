"""What ``pip`` is inside a docs example: ``pip install 'tokenrelay[extra,…]'`` is checked, not run.

The docs test must not install anything (and a ``tokenrelay`` fetched from an index would replace the checkout
under test), so this stands in for ``pip``: it succeeds when every named extra exists and all of its requirements
are already installed in this environment, and refuses every other pip command with the reason.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_SPEC = re.compile(r"^tokenrelay\[(?P<extras>[a-z0-9_,-]+)\]$")


def missing(extras: list[str]) -> list[str]:
    """The problems with installing ``tokenrelay[extras]`` here: unknown extras, requirements not installed."""
    dist = metadata.distribution("tokenrelay")
    known = {canonicalize_name(name) for name in dist.metadata.get_all("Provides-Extra") or []}
    problems = [f"tokenrelay has no extra {extra!r}" for extra in extras if canonicalize_name(extra) not in known]
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or not any(req.marker.evaluate({"extra": extra}) for extra in extras):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name} is not installed")
            continue
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name} {version} does not satisfy {req}")
    return problems


def main(argv: list[str]) -> int:
    specs = [arg for arg in argv[1:] if not arg.startswith("-")]
    if argv[:1] != ["install"] or not specs or not all(_SPEC.match(spec) for spec in specs):
        print(f"docs test: `pip {' '.join(argv)}` is not run by the docs test; skip its block", file=sys.stderr)
        return 2
    extras = [extra for spec in specs for extra in _SPEC.match(spec)["extras"].split(",")]  # type: ignore[index]
    problems = missing(extras)
    for problem in problems:
        print(f"docs test: pip install {' '.join(specs)}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
