"""Which request headers and query parameters never reach a stored payload.

A run's payload is readable by every viewer of the organization and shown in
the admin: an ``Authorization`` header or a ``?token=`` that a sender put on a
webhook would be handed to all of them. Values of the names listed in
``POTAFLOW_REDACT_HEADERS`` / ``POTAFLOW_REDACT_QUERY`` (case-insensitive;
each setting replaces its default list, see
settings.py) are stored as ``[redacted]``.
Signatures are verified on the raw request before anything is redacted.
"""

from collections.abc import Mapping
from typing import Any

from django.conf import settings

# One marker and one list of sensitive query names for logs and stored payloads alike.
from potaflow.log_redaction import REDACTED, sensitive_query_names

__all__ = ["REDACTED", "redact_headers", "redact_query", "sensitive_header_names", "sensitive_query_names"]


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
