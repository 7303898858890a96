"""The one redaction module: what never reaches a log line or a stored payload.

Logs. A webhook URL ``/hooks/<token>`` is its workflow's capability, and a
query such as ``?token=`` or ``?api_key=`` carries a secret: whoever reads the
logs could use them. ``redact_url_text`` masks both; ``RedactingFilter``
applies it to Django's request loggers (``Unauthorized: /hooks/<token>``) and
``potaflow.gunicorn_logging.RedactingLogger`` to gunicorn's access log.

Stored payloads. A run's payload is readable by every viewer of the
organization and shown in the admin: an ``Authorization`` header or a
``?token=`` that a sender put on a webhook would be handed to all of them.
Values of the names listed in ``POTAFLOW_REDACT_HEADERS`` /
``POTAFLOW_REDACT_QUERY`` (case-insensitive; each setting replaces its default
list, see settings.py) are stored as ``[redacted]``. Signatures are verified
on the raw request before anything is redacted.

One marker (``REDACTED``) and one list of sensitive query names serve both.
"""

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings

HOOK_PATH = re.compile(r"(/hooks/)[^/?#\s\"']+")
QUERY_PAIR = re.compile(r"([?&;]|^)([^&=;\s?#\"']+)=([^&;\s#\"']*)")
REDACTED = "[redacted]"


def sensitive_query_names() -> frozenset[str]:
    """``POTAFLOW_REDACT_QUERY`` lower-cased (empty when Django is not configured)."""
    if not settings.configured:
        return frozenset()
    return frozenset(n.strip().lower() for n in settings.POTAFLOW_REDACT_QUERY if n.strip())


def redact_url_text(text: str, query_names: frozenset[str] | None = None) -> str:
    """Mask ``/hooks/<token>`` and the values of sensitive ``name=value`` pairs in a URL or log line."""
    names = sensitive_query_names() if query_names is None else query_names
    text = HOOK_PATH.sub(r"\1" + REDACTED, text)

    def pair(match: re.Match) -> str:
        if unquote_plus(match.group(2)).strip().lower() in names:
            return f"{match.group(1)}{match.group(2)}={REDACTED}"
        return match.group(0)

    return QUERY_PAIR.sub(pair, text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites the record's message with ``redact_url_text``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url_text(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def sensitive_header_names() -> frozenset[str]:
    """Header names (lower case) whose values are stored as ``[redacted]``."""
    return frozenset(name.strip().lower() for name in settings.POTAFLOW_REDACT_HEADERS if name and name.strip())


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased header names; sensitive values replaced."""
    names = sensitive_header_names()
    return {name.lower(): (REDACTED if name.lower() in names else value) for name, value in headers.items()}


def redact_query(query: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters as parsed (a value or a list of values); sensitive ones replaced."""
    names = sensitive_query_names()
    return {
        name: (([REDACTED] * len(value) if isinstance(value, list) else REDACTED) if name.lower() in names else value)
        for name, value in query.items()
    }
