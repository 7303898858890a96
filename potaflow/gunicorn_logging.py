"""gunicorn's own logs: capabilities masked, and JSON lines when the rest is.

``RedactingLogger`` writes ``/hooks/[redacted]`` instead of a webhook token
and ``[redacted]`` for the values of sensitive query parameters
(``POTAFLOW_REDACT_QUERY``), in every atom an access-log format may use that
holds a URL (request line, path, query, referer). With ``LOG_FORMAT=json``
(the default when ``DEBUG`` is off, as in settings) its error and access
lines are JSON objects like every other PotaFlow line
(``core.structured_logging``); an access line also carries ``method``,
``path``, ``status`` and ``duration_ms``. Wired by ``logger_class`` in gunicorn.conf.py, which the Procfile, the
Dockerfile and compose use.
"""

import logging
import os
from collections.abc import Mapping
from typing import Any

from gunicorn.glogging import Logger

from core.redaction import RedactingFilter, query_names_for_path, redact_url_text
from core.structured_logging import JsonFormatter


def log_format(environ: Mapping[str, str] | None = None) -> str:
    """``LOG_FORMAT``, or its default as settings derive it (json unless DEBUG is on)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    explicit = (env.get("LOG_FORMAT") or "").strip().lower()
    if explicit:
        return explicit
    debug = (env.get("DEBUG") or "true").strip().lower() in ("1", "true", "yes", "on", "y")
    return "plain" if debug else "json"


class AccessJsonFormatter(JsonFormatter):
    """JSON access lines with the request's facts as fields (atoms already redacted)."""

    def format(self, record: logging.LogRecord) -> str:
        atoms = record.args if isinstance(record.args, dict) else {}
        if atoms:
            record.method = atoms.get("m")
            record.path = atoms.get("U")
            record.status = atoms.get("s")
            try:
                record.duration_ms = round(int(atoms.get("D", 0)) / 1000, 3)
            except (TypeError, ValueError):
                record.duration_ms = None
        return super().format(record)


class RedactingLogger(Logger):
    """gunicorn's logger with webhook tokens and secret query values masked in the access log."""

    URL_ATOMS = ("r", "U", "q", "f", "{referer}i")

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # Error lines ("Invalid request from ...", tracebacks) may name a URL: every field redacted, in
        # both formats. Access lines are built from atoms redacted already (``atoms``).
        for handler in self.error_log.handlers:
            handler.addFilter(RedactingFilter())
        if log_format() != "json":
            return
        for log, formatter in ((self.error_log, JsonFormatter("web")), (self.access_log, AccessJsonFormatter("web"))):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(formatter)

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        # The query atom ("q") has no path: the OAuth callback's code and state are known by "U".
        names = query_names_for_path(atoms.get("U") if isinstance(atoms.get("U"), str) else None)
        for key in self.URL_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_url_text(atoms[key], names)
        return atoms
