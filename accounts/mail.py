"""System e-mail: what PotaFlow itself sends (account links, invitations, failure notices).

Not the ``email.send`` action (a workflow's step, with the organization's own
credential): this is the operator's mail, configured once by ``EMAIL_URL``
(``smtp://user:pass@host:port``, ``consolemail://``, ``filemail://<folder>``;
default: files in ``$POTAFLOW_VAR_DIR/mail``) and sent from
``POTAFLOW_EMAIL_FROM`` with Django's mail backends. Messages are plain text
and are sent by the worker (``accounts.tasks``), never from a web thread: a
slow mail server holds no request, and a sign-up for a known address costs the
web process the same as one for a new address.

Links in messages are built from ``POTAFLOW_BASE_URL`` — never from a request's
``Host`` header, which a sender could choose to make a reset link point to their
own site.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage, get_connection


@dataclass(frozen=True)
class Destination:
    """Where the configured backend puts messages, in words a sign-up page may show."""

    kind: str  # "smtp", "file", "console" or "other"
    where: str  # "" for smtp: a real inbox, nothing to say


def destination() -> Destination:
    """What the pages say after sending: only the development backends are described (a folder, a log)."""
    backend = settings.EMAIL_BACKEND
    if backend.endswith("filebased.EmailBackend"):
        return Destination("file", f"a file in {settings.EMAIL_FILE_PATH} on the server (EMAIL_URL=filemail://…)")
    if backend.endswith("console.EmailBackend"):
        return Destination("console", "the worker's log on the server (EMAIL_URL=consolemail://)")
    if backend.endswith("smtp.EmailBackend"):
        return Destination("smtp", "")
    return Destination("other", "")


def absolute_url(path: str) -> str:
    """``path`` on the public origin (``POTAFLOW_BASE_URL``)."""
    return settings.POTAFLOW_BASE_URL.rstrip("/") + path


def send(*, to: Sequence[str], subject: str, text: str) -> int:
    """Send one plain-text message to ``to`` (each sees only themselves when several: one message each)."""
    connection = get_connection(fail_silently=False)
    messages = [
        EmailMessage(
            subject=subject, body=text, from_email=settings.POTAFLOW_EMAIL_FROM, to=[address], connection=connection
        )
        for address in dict.fromkeys(to)
    ]
    return connection.send_messages(messages) or 0
