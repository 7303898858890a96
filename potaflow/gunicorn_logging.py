"""gunicorn's access log without capabilities in it.

A webhook URL ``/hooks/<token>`` is the workflow's capability: whoever reads
the access log could post events. ``RedactingLogger`` writes ``/hooks/[redacted]``
instead, and replaces the values of sensitive query parameters
(``POTAFLOW_REDACT_QUERY``, e.g. ``?token=``, ``?api_key=``) with
``[redacted]``, in every atom a log format may use (request line, path, query,
referer). Wired with ``--logger-class potaflow.gunicorn_logging.RedactingLogger``
(see the Procfile); a gunicorn config file may set ``logger_class`` to it instead.
"""

import re
from typing import Any
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

HOOK_PATH = re.compile(r"(/hooks/)[^/?#\s\"]+")
REDACTED = "[redacted]"


def _sensitive_query_names() -> frozenset[str]:
    from workflows.redaction import sensitive_query_names  # Django settings are loaded in the worker

    return sensitive_query_names()


def redact_url_text(text: str, query_names: frozenset[str]) -> str:
    """Mask ``/hooks/<token>`` and sensitive ``name=value`` pairs in a URL (or request line)."""
    text = HOOK_PATH.sub(r"\1" + REDACTED, text)

    def pair(match: re.Match) -> str:
        name = unquote_plus(match.group(2)).strip().lower()
        return f"{match.group(1)}{match.group(2)}={REDACTED}" if name in query_names else match.group(0)

    return re.sub(r"([?&;]|^)([^&=;\s?#]+)=([^&;\s#]*)", pair, text)


class RedactingLogger(Logger):
    """gunicorn's logger with webhook tokens and secret query values masked in the access log."""

    URL_ATOMS = ("r", "U", "q", "f")

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        names = _sensitive_query_names()
        for key in self.URL_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_url_text(atoms[key], names)
        if isinstance(atoms.get("{referer}i"), str):
            atoms["{referer}i"] = redact_url_text(atoms["{referer}i"], names)
        return atoms
