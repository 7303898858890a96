"""What the webhook view needs before an event becomes a run: the workflow and
the definition it executes, and the body, read within its limit whatever its framing.

Kept out of the view so each rule has one place and its own tests:

- ``webhook_target``: the active webhook workflow of a token and its current
  ``WorkflowVersion`` in **one** query (the workflow row joined to its current
  version's id), the version's definition from the per-process cache
  (``workflows.execution.definitions``); the workflow row itself is read on
  every event, so disabling a workflow, rotating its token, deleting it or
  saving a new version takes effect at the next event. It is written as SQL
  because building the same two ORM queries cost more CPU than everything
  else the webhook does (bench/README.md, "intake").
- ``read_body``: a ``Content-Length`` body is read as Django reads it; a
  ``Transfer-Encoding: chunked`` body (no ``Content-Length``) is read from the
  server's de-chunked ``wsgi.input`` — only when the server says the stream
  ends with the body (``wsgi.input_terminated``, set by gunicorn), and never
  past ``limit`` + 1 bytes, so a 10 MB chunked body costs at most the limit in
  memory. A server that cannot frame such a body gets a 411: the event is
  refused, never accepted with a silently dropped body.
"""

from __future__ import annotations

import functools
from io import BytesIO
from typing import cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest

from ..execution.definitions import definitions
from ..models import TriggerType, Workflow, WorkflowVersion
from .signatures import SIGNING_FIELDS

READ_CHUNK = 64 * 1024
# What the webhook view and run_accept read of a workflow; the other fields stay deferred
# (loaded on access), so a value that needs a database-specific conversion is never read raw.
WEBHOOK_FIELDS = frozenset(
    {"id", "organization_id", "name", "is_active", "trigger_type", "webhook_token", "version", "webhook_secret"}
    | {"listening_until"}  # "listen for a test event": an inactive workflow's next event is captured (samples)
    | {"webhook_body_as_file"}
    | set(SIGNING_FIELDS)
)


@functools.cache
def _lookup_sql() -> tuple[str, list[str]]:
    workflow = Workflow._meta
    version = WorkflowVersion._meta
    q = connection.ops.quote_name
    selected = [f for f in workflow.concrete_fields if f.attname in WEBHOOK_FIELDS]
    fields = [f.attname for f in selected]
    columns = ", ".join(f"w.{q(cast(str, f.column))}" for f in selected)  # a concrete field has its column
    sql = (
        f"SELECT {columns}, v.{q('id')}"  # noqa: S608 - names from the models; values are parameters
        f" FROM {q(workflow.db_table)} w LEFT JOIN {q(version.db_table)} v"
        f" ON v.{q('workflow_id')} = w.{q('id')} AND v.{q('number')} = w.{q('version')}"
        f" WHERE w.{q('webhook_token')} = %s AND w.{q('trigger_type')} = %s"
        f" AND (w.{q('is_active')} = %s OR w.{q('listening_until')} IS NOT NULL)"
    )
    return sql, fields


def webhook_target(token: str) -> tuple[Workflow, WorkflowVersion | None] | None:
    """The active webhook workflow of ``token`` and its current version, or None (a 404).

    An inactive workflow that is listening for a test event is found too: the
    view captures its event as a sample or answers 404 (``workflows.samples``).

    The version is None when the workflow's current version has no row (a
    workflow saved before versions were stored): ``run_accept`` creates it.
    """
    sql, fields = _lookup_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [token, TriggerType.WEBHOOK, True])
        row = cursor.fetchone()
    if row is None:
        return None
    workflow = Workflow.from_db(connection.alias, fields, row[: len(fields)])
    version_id = row[len(fields)]
    if version_id is None:
        return workflow, None
    # The version's other fields stay deferred: run_accept reads its id, number and definition.
    version = WorkflowVersion.from_db(
        connection.alias,
        ["id", "workflow_id", "number", "definition"],
        (version_id, workflow.pk, workflow.version, definitions.get(version_id)),
    )
    return workflow, version


class IntakeRefused(Exception):  # noqa: N818 - a refusal, named after what the sender sees
    """The request is refused before a run exists; ``status`` is the HTTP answer."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BodyTooLarge(IntakeRefused):
    status = 413


class LengthRequired(IntakeRefused):
    status = 411


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes, or ``IntakeRefused`` (400/411/413)."""
    declared_header = request.META.get("CONTENT_LENGTH") or ""
    transfer_encoding = request.META.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
    if transfer_encoding and not declared_header:
        return _read_unsized(request, limit, transfer_encoding)
    try:
        declared = int(declared_header or 0)
    except ValueError:
        raise IntakeRefused("Content-Length header is not a number.") from None
    if declared > limit:
        raise BodyTooLarge(f"Body too large: {declared} bytes declared, the limit is {limit} bytes.")
    try:
        body = request.body
    except RequestDataTooBig:
        raise BodyTooLarge(f"Body too large: the limit is {limit} bytes.") from None
    if len(body) > limit:
        raise BodyTooLarge(f"Body too large: {len(body)} bytes, the limit is {limit} bytes.")
    return body


def _read_unsized(request: HttpRequest, limit: int, transfer_encoding: str) -> bytes:
    # request.META is the WSGI environ itself (django.core.handlers.wsgi.WSGIRequest).
    if not request.META.get("wsgi.input_terminated"):
        # The server hands the raw stream over without saying where the body ends
        # (Django's runserver): reading it could block or swallow chunk framing.
        raise LengthRequired(
            f"Transfer-Encoding: {transfer_encoding} is not supported by this server: "
            "send the body with a Content-Length header."
        )
    stream = request.META["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while True:
        piece = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
        if size > limit:
            raise BodyTooLarge(f"Body too large: more than {limit} bytes (chunked), the limit is {limit} bytes.")
    body = b"".join(parts)
    # Django sized its own stream from the (absent) Content-Length: give it the bytes
    # read, exactly as HttpRequest.body stores them, so form and multipart parsing see them.
    request._body = body
    request._stream = BytesIO(body)
    request.META["CONTENT_LENGTH"] = str(len(body))
    return body


def largest_webhook_request() -> tuple[int, str]:
    """The most a webhook request may carry, files included, and the setting that says so.

    The web server's front (``potaflow.web_worker``) refuses a larger body before any thread
    reads it; the view then applies the limit of what the request is (a body within
    ``POTAFLOW_WEBHOOK_MAX_BYTES``, files within the ``POTAFLOW_UPLOAD_*`` limits).
    """
    upload, webhook = settings.POTAFLOW_UPLOAD_REQUEST_MAX_BYTES, settings.POTAFLOW_WEBHOOK_MAX_BYTES
    return (
        (upload, "POTAFLOW_UPLOAD_REQUEST_MAX_BYTES") if upload > webhook else (webhook, "POTAFLOW_WEBHOOK_MAX_BYTES")
    )


def body_deadline(content_length: int | None, *, webhook: bool) -> tuple[float, str]:
    """Seconds a client has to send a request body once its headers are in, and the setting.

    A webhook's body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a file upload and gets
    ``POTAFLOW_UPLOAD_BODY_TIMEOUT``; every other body (chunked ones too)
    ``POTAFLOW_WEB_BODY_TIMEOUT``. The web server's front and the webhook view both ask here.
    """
    if webhook and content_length is not None and content_length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return float(settings.POTAFLOW_UPLOAD_BODY_TIMEOUT), "POTAFLOW_UPLOAD_BODY_TIMEOUT"
    return float(settings.POTAFLOW_WEB_BODY_TIMEOUT), "POTAFLOW_WEB_BODY_TIMEOUT"
