"""Signed, expiring download links for files (``GET /files/<token>``).

The token signs the file's id and its organization's with ``SECRET_KEY``
(``django.core.signing``, its own salt, a constant-time comparison) and a
timestamp; it is refused once older than ``POTAFLOW_FILE_LINK_SECONDS``, and
once the file is not that organization's any more (the organization was
deleted: its files wait for the pruner, unreachable). Access logs show only
the file id of a link, never its signature (``core.redaction``). Like an S3 presigned URL it is a capability:
whoever holds it may download until it expires, so the API hands it only to
members of the file's organization (``GET /api/runs/<id>/``), and it is short-lived.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import signing
from django.urls import reverse

from ..models import FileState, RunFile

SALT = "potaflow.files.download"


class LinkRefused(Exception):  # noqa: N818 - a refusal, named after what the holder sees
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def token_for(row: RunFile) -> str:
    """``<file id>.<organization id>:<timestamp>:<signature>``."""
    return signing.TimestampSigner(salt=SALT).sign(f"{row.pk}.{row.organization_id}")


def download_url(row: RunFile, request: Any = None) -> str:
    path = reverse("workflows:file-download", kwargs={"token": token_for(row)})
    return request.build_absolute_uri(path) if request is not None else settings.POTAFLOW_BASE_URL.rstrip("/") + path


def resolve(token: str) -> RunFile:
    """The file a valid, unexpired link names; ``LinkRefused`` (410 expired, 404 otherwise)."""
    lifetime = settings.POTAFLOW_FILE_LINK_SECONDS
    try:
        file_pk = signing.TimestampSigner(salt=SALT).unsign(token, max_age=lifetime)
    except signing.SignatureExpired:
        raise LinkRefused(
            f"This download link has expired (links last {lifetime} s, POTAFLOW_FILE_LINK_SECONDS): "
            "ask the API for the run again to get a new one.",
            410,
        ) from None
    except signing.BadSignature:
        raise LinkRefused("No such file.", 404) from None
    file_pk, _, organization = file_pk.partition(".")
    row = None
    if organization.isdigit():  # a link made before links named their organization has none: refused
        row = RunFile.objects.filter(pk=file_pk, state=FileState.READY, organization_id=int(organization)).first()
    if row is None:
        raise LinkRefused("No such file (it was deleted with its run).", 404)
    return row
