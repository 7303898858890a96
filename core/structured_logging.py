"""Log lines a machine can read, each knowing which run and step it is about.

``LOG_FORMAT=json`` (the default when ``DEBUG`` is off) makes every process
type — web, worker, beat — write one JSON object per line on stderr:
``ts``, ``level``, ``logger``, ``message``, ``process`` (``web``, ``worker``,
``beat`` or the management command), ``pid``, the exception when there is
one, anything passed with ``extra=``, and the fields of the current *log
context*. ``LOG_FORMAT=plain`` (the default in development) writes the same
facts as one readable line.

The log context is how the engine labels its lines without every log call
repeating them: ``engine.run_step`` opens ``log_context(run_id=..., step=...)``
around a step and ``bind`` adds what becomes known while claiming it
(``attempt``, ``workflow_id``, ``organization_id``). ``ContextFilter`` copies
the context onto each record, so lines from ``workflows.execution.recording``, the
actions and the libraries they call carry it too. It lives in a
``ContextVar``: each thread (and each asyncio task) has its own, so one
step's labels never leak onto another's lines.

Secrets stay out: both formatters pass every record through
``core.redaction.redact_record`` (the message, ``extra=`` fields such as
Django's ``request``, exception and stack text) before writing it, and the
handlers run ``RedactingFilter`` as well.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from .redaction import redact_record, redact_url_text

# The engine's labels, in the order they are written; all present (maybe null) on engine lines.
ENGINE_FIELDS = ("run_id", "step", "attempt", "workflow_id", "organization_id")

_context: ContextVar[dict[str, Any] | None] = ContextVar("potaflow_log_context", default=None)

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "log_context", "potaflow_context"}
)


@contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Label every log line written inside the block (nested blocks add to the outer labels)."""
    current = {**(_context.get() or {}), **fields}
    token = _context.set(current)
    try:
        yield current
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add labels to the innermost ``log_context`` (they end with it); no-op outside one."""
    current = _context.get()
    if current is not None:
        current.update(fields)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def process_type(argv: list[str] | None = None) -> str:
    """``web``, ``worker``, ``beat``, or the management command: which process wrote a line."""
    argv = sys.argv if argv is None else argv
    program = argv[0] if argv else ""  # a path: .../bin/celery, or .../celery/__main__.py under python -m
    if "gunicorn" in program:
        return "web"
    if "celery" in program:
        return next((kind for kind in ("worker", "beat") if kind in argv[1:]), "celery")
    if os.path.basename(program) == "manage.py" and len(argv) > 1:
        return "web" if argv[1] == "runserver" else argv[1]
    return os.path.basename(program) or "python"


class ContextFilter(logging.Filter):
    """Copy the current log context onto the record (``record.potaflow_context``, ``record.log_context``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        record.potaflow_context = dict(context)
        record.log_context = (" [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]") if context else ""
        return True


class PlainFormatter(logging.Formatter):
    """The development format, with the log context at the end of the line when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s%(log_context)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "log_context"):  # a handler without ContextFilter
            record.log_context = ""
        redact_record(record)  # whatever filters the handler has: no field is written unredacted
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the fields."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process = process or process_type()

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)  # whatever filters the handler has: no field is written unredacted
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
            "pid": record.process,
        }
        context = getattr(record, "potaflow_context", None)
        if context is None:
            context = _context.get() or {}
        entry.update(context)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                # Django's request loggers pass the request itself (``<WSGIRequest: GET '/hooks/<token>'>``).
                entry[key] = value if isinstance(value, int | float | bool | None) else redact_url_text(str(value))
        if record.exc_info:
            entry["exception"] = redact_url_text(record.exc_text or self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
