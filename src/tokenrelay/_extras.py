"""Optional dependencies (the package's extras): one error for every one that is missing, naming its install line.

``pip install tokenrelay`` serves the synthetic backend with the in-memory store and a SQLite history. Everything
else comes with an extra: ``local`` (llama-cpp-python and the default model), ``openai``, ``anthropic``, ``agents``
(openai-agents and mcp), ``redis`` (``--store redis``) and ``postgres`` (asyncpg, for a ``postgresql://``
history). Whoever finds one missing raises :class:`MissingExtraError`, which says what needs it and the exact
``pip install`` line that fixes it.
"""

from __future__ import annotations

import importlib

from tokenrelay.errors import BackendError, ConfigError

__all__ = ["MissingExtraError", "install_line", "missing_extra", "require"]


def install_line(extra: str) -> str:
    """The command that installs ``extra``."""
    return f"pip install 'tokenrelay[{extra}]'"


class MissingExtraError(ConfigError, BackendError):
    """An optional dependency is not installed.

    A :class:`~tokenrelay.errors.ConfigError` (``serve`` prints it as one line and exits) and a
    :class:`~tokenrelay.errors.BackendError` with the code ``missing_extra`` (a backend that finds it out while
    it runs reports it in the stream).
    """

    def __init__(self, what: str, package: str, extra: str, *, detail: str = "", hint: str = "") -> None:
        self.what = what
        self.package = package
        self.extra = extra
        self.install = install_line(extra)
        why = f"which cannot be imported ({detail})" if detail else "which is not installed"
        BackendError.__init__(self, "missing_extra", f"{what} needs {package}, {why}: {self.install}{hint}")


def missing_extra(
    what: str,
    package: str,
    extra: str,
    *,
    module: str | None = None,
    cause: ImportError | None = None,
    hint: str = "",
) -> MissingExtraError:
    """The error for ``package`` (importable as ``module``, from ``extra``) missing, as ``what`` found out.

    ``cause`` is the ImportError seen: when it is about another module (an installed package whose own dependency
    is missing), its text is kept, so that the real culprit shows.
    """
    top = (module or package.replace("-", "_")).split(".")[0]
    detail = ""
    if cause is not None and cause.name is not None and cause.name.split(".")[0] != top:
        detail = str(cause)
    return MissingExtraError(what, package, extra, detail=detail, hint=hint)


def require(module: str, what: str, *, extra: str, package: str | None = None) -> None:
    """Import ``module`` (to check that it is there), or raise :class:`MissingExtraError`."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(what, package or module, extra, module=module, cause=exc) from None
