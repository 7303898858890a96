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

The OAuth redirect back (``/oauth/callback/?code=...&state=...``, see
``integrations.oauth``) carries an authorization code and the state of a
Connect: both are masked in logs whatever ``POTAFLOW_REDACT_QUERY`` holds (an
operator's list replaces the defaults, and ``state`` is a common word elsewhere).

A list entry is a name, a pattern (``*-token``, ``*secret*``: ``fnmatch``,
case-insensitive) or an exemption (``!idempotency-key``: never redacted,
whatever pattern matches it). The defaults and their sources are in
settings.py (``POTAFLOW_REDACT_HEADERS`` / ``POTAFLOW_REDACT_QUERY``).

Every field of a log record passes through ``redact_record`` (the message,
its arguments, ``extra=`` fields such as Django's ``request``, whose repr
holds the path, the exception and stack text), on every handler: Django's,
the worker's and gunicorn's (``potaflow.gunicorn_logging``).
"""

import fnmatch
import functools
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings

HOOK_PATH = re.compile(r"(/hooks/)[^/?#\s\"']+")
# A signed download link (workflows.files.links) is a capability too: the file id stays, the signature goes.
FILE_LINK_PATH = re.compile(r"(/files/[0-9a-fA-F-]{32,36})(?:[.:]|%3A)[^/?#\s\"']*", re.IGNORECASE)
QUERY_PAIR = re.compile(r"([?&;]|^)([^&=;\s?#\"']+)=([^&;\s#\"']*)")
REDACTED = "[redacted]"
OAUTH_CALLBACK_PATH = "/oauth/callback/"
OAUTH_CALLBACK_QUERY = frozenset({"code", "state"})
# The callback's query percent-encoded inside another URL's parameter: the sign-in page's
# ``?next=/oauth/callback/%3Fcode%3D...`` when a session ended during the consent.
ENCODED_CALLBACK_QUERY = re.compile(r"(oauth(?:/|%2F)callback(?:/|%2F)?%3F)[^&\s#\"']*", re.IGNORECASE)


class SensitiveNames:
    """Names that match an entry of a redaction list (names, ``fnmatch`` patterns, ``!`` exemptions)."""

    def __init__(self, entries: Iterable[str]) -> None:
        cleaned = [e.strip().lower() for e in entries if e and e.strip()]
        self.exempt = frozenset(e[1:].strip() for e in cleaned if e.startswith("!"))
        kept = [e for e in cleaned if not e.startswith("!")]
        self.names = frozenset(e for e in kept if not any(c in e for c in "*?["))
        self.patterns = tuple(e for e in kept if any(c in e for c in "*?["))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - instances live as long as their (cached) settings
    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.strip().lower()
        if key in self.exempt:
            return False
        return key in self.names or any(fnmatch.fnmatchcase(key, p) for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.names or self.patterns)

    def __or__(self, more: Iterable[str]) -> "SensitiveNames":
        """These names and ``more`` (the OAuth callback's, for its path)."""
        combined = SensitiveNames(())
        combined.exempt, combined.patterns = self.exempt, self.patterns
        combined.names = self.names | frozenset(n.lower() for n in more)
        return combined


@functools.lru_cache(maxsize=16)
def _sensitive(entries: tuple[str, ...]) -> SensitiveNames:
    return SensitiveNames(entries)


def sensitive_query_names() -> SensitiveNames:
    """``POTAFLOW_REDACT_QUERY`` as a matcher (matches nothing when Django is not configured)."""
    if not settings.configured:
        return _sensitive(())
    return _sensitive(tuple(settings.POTAFLOW_REDACT_QUERY))


def query_names_for_path(
    path: str | None, query_names: "SensitiveNames | frozenset[str] | None" = None
) -> "SensitiveNames | frozenset[str]":
    """The query names masked for a request to ``path``: the sensitive ones, and the OAuth callback's."""
    names = sensitive_query_names() if query_names is None else query_names
    return names | OAUTH_CALLBACK_QUERY if (path or "").startswith(OAUTH_CALLBACK_PATH) else names


def redact_url_text(text: str, query_names: SensitiveNames | frozenset[str] | None = None) -> str:
    """Mask ``/hooks/<token>``, the signature of ``/files/<file id>...`` download links and the values of
    sensitive ``name=value`` pairs in a URL or log line."""
    names = sensitive_query_names() if query_names is None else query_names
    if OAUTH_CALLBACK_PATH in text:
        names = names | OAUTH_CALLBACK_QUERY
    text = ENCODED_CALLBACK_QUERY.sub(r"\1" + REDACTED, text)
    text = HOOK_PATH.sub(r"\1" + REDACTED, text)
    text = FILE_LINK_PATH.sub(r"\1" + REDACTED, text)

    def pair(match: re.Match) -> str:
        if unquote_plus(match.group(2)).strip().lower() in names:
            return f"{match.group(1)}{match.group(2)}={REDACTED}"
        return match.group(0)

    return QUERY_PAIR.sub(pair, text)


# Attributes every LogRecord has: the others came from ``extra=`` (Django's ``request``, ``status_code``...).
_STANDARD_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_PLAIN_TYPES = (int, float, bool, type(None))


def _redacted_value(value: Any) -> Any:
    """A field as it may be written: numbers kept, anything else its text, redacted."""
    if isinstance(value, _PLAIN_TYPES):
        return value
    return redact_url_text(value if isinstance(value, str) else str(value))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact every field of ``record`` in place: message and arguments, ``extra=`` fields, exception and stack."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed call: keep what it said, redacted
        message = f"{record.msg} {record.args}"
    record.msg, record.args = redact_url_text(message), ()
    for key, value in list(record.__dict__.items()):
        if key in _STANDARD_RECORD_FIELDS or key.startswith("_") or key in ("potaflow_context", "log_context"):
            continue
        record.__dict__[key] = _redacted_value(value)
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_url_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_url_text(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every field of a record (``redact_record``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def sensitive_header_names() -> SensitiveNames:
    """``POTAFLOW_REDACT_HEADERS`` as a matcher: header names whose values are stored as ``[redacted]``."""
    return _sensitive(tuple(settings.POTAFLOW_REDACT_HEADERS))


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
