"""Logs: one JSON object per line (``--log-format json``), and one line per run as it ends.

A JSON record has ``ts`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; a record that concerns a run has
its ``run_id``, ``user_id`` and ``conversation_id``: from the record's ``extra=`` when it gives them, else from the
run whose task logged it (:data:`~tokenrelay.runs.observer.current_run`). The access log's records also carry
``client``, ``method``, ``path`` and ``status``; an exception, its traceback as ``exc``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from tokenrelay.runs.observer import NO_WATCH, RunWatch, current_run

if TYPE_CHECKING:
    from tokenrelay.runs.base import Transcript
    from tokenrelay.stores.base import RunInfo

__all__ = ["RUN_FIELDS", "JSONFormatter", "RunLog", "configure_json_logs", "uvicorn_log_config"]

RUN_FIELDS = ("run_id", "user_id", "conversation_id")
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")

runs_log = logging.getLogger("tokenrelay.runs")


class JSONFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module's docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        given = {name: getattr(record, name) for name in RUN_FIELDS if getattr(record, name, None) is not None}
        if given:
            out.update(given)
        else:
            info = current_run.get()
            if info is not None:
                out.update(run_id=info.run_id, user_id=info.user_id, conversation_id=info.conversation_id)
        fields = getattr(record, "fields", None)  # structured extras: extra={"fields": {...}}
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            out.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


def uvicorn_log_config(log_format: str, level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config`` for ``log_format``: its own default for ``text``; for ``json``, every logger (the
    root, uvicorn's, the access log) writes JSON lines to stderr at ``level``."""
    if log_format == "text":
        from uvicorn.config import LOGGING_CONFIG

        return LOGGING_CONFIG
    if log_format != "json":
        raise ValueError(f"log_format: must be text or json, not {log_format!r}")
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    quiet = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JSONFormatter}},
        "handlers": {"json": handler},
        "root": {"handlers": ["json"], "level": level.upper()},
        "loggers": {"uvicorn": quiet, "uvicorn.error": quiet, "uvicorn.access": quiet},
    }


def configure_json_logs(level: str = "info") -> None:
    """Send every log record to stderr as a JSON line (what ``tokenrelay serve --log-format json`` does first)."""
    import logging.config

    logging.config.dictConfig(uvicorn_log_config("json", level))


class RunLog:
    """A run observer that logs one line as each run ends (``tokenrelay.runs``, INFO): how it ended, how long it
    took, its time to first token and its token counts, as ``fields`` for the JSON format."""

    def run_started(self, info: RunInfo) -> RunWatch:
        if not runs_log.isEnabledFor(logging.INFO):
            return NO_WATCH
        return _RunLine(info.run_id)


class _RunLine(RunWatch):
    __slots__ = ("first_token_s", "run_id", "started", "upstream_s")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.started = time.monotonic()
        self.first_token_s: float | None = None
        self.upstream_s: float | None = None

    def first_token(self) -> None:
        self.first_token_s = round(time.monotonic() - self.started, 4)

    def upstream_responded(self, seconds: float) -> None:
        self.upstream_s = round(seconds, 4)

    def ended(self, transcript: Transcript, *, lost: bool, paused: bool = False) -> None:
        reason = "lost" if lost else "paused" if paused else transcript.reason
        fields: dict[str, Any] = {
            "reason": reason,
            "duration_s": round(time.monotonic() - self.started, 4),
            "time_to_first_token_s": self.first_token_s,
        }
        if self.upstream_s is not None:
            fields["upstream_time_to_first_byte_s"] = self.upstream_s
        if transcript.usage is not None:
            fields["input_tokens"] = transcript.usage.input_tokens
            fields["output_tokens"] = transcript.usage.output_tokens
        if transcript.error is not None and reason == "error":
            fields["error_code"] = transcript.error.code
        runs_log.info("run %s ended: %s", self.run_id, reason, extra={"fields": fields})
