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
"""

import logging
import re
from collections.abc import Mapping
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


def sensitive_query_names() -> frozenset[str]:
    """``POTAFLOW_REDACT_QUERY`` lower-cased (empty when Django is not configured)."""
    if not settings.configured:
        return frozenset()
    return frozenset(n.strip().lower() for n in settings.POTAFLOW_REDACT_QUERY if n.strip())


def query_names_for_path(path: str | None, query_names: frozenset[str] | None = None) -> frozenset[str]:
    """The query names masked for a request to ``path``: the sensitive ones, and the OAuth callback's."""
    names = sensitive_query_names() if query_names is None else query_names
    return names | OAUTH_CALLBACK_QUERY if (path or "").startswith(OAUTH_CALLBACK_PATH) else names


def redact_url_text(text: str, query_names: frozenset[str] | None = None) -> str:
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
