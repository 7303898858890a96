"""``POST /hooks/<token>``: the webhook trigger (the view only translates).

The token (43 random URL-safe characters) is the capability; an unknown token
or an inactive workflow is a 404. Order of checks: workflow (404) -> rate
limit (429 with Retry-After, ``workflows.intake.ratelimit``) -> size (413, from
Content-Length and from the bytes actually read; chunked bodies are read
within the limit or refused with 411, ``workflows.intake.lookup``) -> signature when
the workflow has a secret (401 naming the failed check,
``workflows.intake.signatures``) -> body parsing (400) -> idempotency (200 with the
original run) -> ``run_accept`` (400 when a value cannot be stored: NUL,
lone surrogates; NaN/Infinity and absurd nesting are already refused by the
parser) -> 202 ``{"run_id": ...}`` once the run is committed.

Files (``workflows.files``): a ``multipart/form-data`` request's files, and
the whole body when the workflow keeps binary bodies as files
(``webhook_body_as_file``), are streamed to the file storage a chunk at a time
(``files.uploads``; the web server's front received the body whole first),
after the request's size and the organization's quota were checked from
``Content-Length`` (413 naming the setting); the run's
payload holds ``files.<field>`` references. A refused or failed request
keeps none of its files; a repeated one keeps the first delivery's. A signed
workflow's body is read whole first (its signature needs it), within the
webhook limit.

Idempotency: for a workflow that verifies signatures the key is the signed
delivery id (or a digest of the signed message), never an unsigned header,
so a captured message replayed with a fresh ``Idempotency-Key`` is the same
event. Without a secret, ``Idempotency-Key`` (or ``webhook-id``) names it.
Stored headers and query parameters are redacted (``core.redaction``)
after the signature was checked on the raw request. ``metrics.observe_intake``
counts each refusal by the status it got and times accepted answers
(``/metrics``: a refused event leaves no row to count later).
"""

import base64
import contextlib
import hashlib
import hmac
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import transaction
from django.http import HttpRequest, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import redaction
from core.errors import error_response
from core.request_body import body_expired
from integrations import storable

from .. import samples
from ..files import services as file_services
from ..files import uploads as file_uploads
from ..files.services import FileRefused
from ..files.uploads import StoredUpload
from ..models import RunTrigger, Workflow, WorkflowVersion
from ..ops import metrics
from ..services import PayloadInvalid, run_accept, run_payload
from . import lookup as intake
from . import ratelimit, signatures

MAX_IDEMPOTENCY_KEY = 255


def _error(status: int, detail: str) -> JsonResponse:
    return error_response(detail, status)


@csrf_exempt
@require_POST
@metrics.observe_intake
def hook(request: HttpRequest, token: str) -> JsonResponse:
    target = intake.webhook_target(token)
    if target is None:
        return _error(404, "No active webhook workflow has this URL.")
    workflow, version = target

    decision = ratelimit.take(workflow.pk)
    if not decision.allowed and decision.limit is not None:  # a refusal always names its limit
        response = _error(
            429,
            f"Too many events for this workflow (at most {decision.limit.burst} per "
            f"{decision.limit.window_seconds:g} s): not accepted, retry after {decision.retry_after} s.",
        )
        response["Retry-After"] = str(decision.retry_after)
        return response

    uploads = None
    if _is_multipart(request) or _body_is_a_file(request, workflow):
        try:
            uploads = file_uploads.install(request, workflow.organization_id)  # Content-Length checked, reserved
        except FileRefused as exc:
            return _error(exc.status, exc.message)
    try:
        return _accept(request, workflow, version, uploads)
    except BaseException:
        if uploads is not None:
            uploads.discard()  # a refused or failed event keeps none of its files
        raise


def _accept(
    request: HttpRequest,
    workflow: Workflow,
    version: WorkflowVersion | None,
    uploads: file_uploads.StorageUploadHandler | None,
) -> JsonResponse:
    # Unsigned multipart with a Content-Length streams its files to storage while it is parsed;
    # anything else is read first (within POTAFLOW_WEBHOOK_MAX_BYTES), a signature needing the whole body.
    body = b""
    raw_file = uploads is not None and not _is_multipart(request)
    if uploads is None or workflow.webhook_secret or not request.META.get("CONTENT_LENGTH"):
        try:
            body = intake.read_body(request, settings.POTAFLOW_WEBHOOK_MAX_BYTES)
        except intake.IntakeRefused as exc:
            return _refuse(uploads, exc.status, exc.message)
        if body_expired(request.META):
            return _refuse(uploads, 408, _expired_message(request))

    signed_key = None
    if workflow.webhook_secret:
        try:
            signed_key = signatures.verify(signatures.Signing.of(workflow), request.headers, body)
        except signatures.SignatureInvalid as exc:
            return _refuse(uploads, 401, f"Invalid webhook signature ({workflow.signature_scheme}): {exc.message}.")

    try:
        if raw_file and uploads is not None:
            parsed, content_type = None, (request.content_type or "").lower()
            files = {"body": file_services.info_of(uploads.receive_body(request, body)).as_ref()}
        else:
            parsed, content_type, files = parse_body(request, body)
    except FileRefused as exc:
        return _refuse(uploads, exc.status, exc.message)
    except RequestDataTooBig:
        return _refuse(uploads, 413, f"The form fields are over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes "
                                     "(POTAFLOW_MAX_BODY_BYTES).")  # fmt: skip
    except (TooManyFieldsSent, TooManyFilesSent, MultiPartParserError) as exc:
        return _refuse(uploads, 400, f"Unreadable multipart body: {exc}")
    except ValueError as exc:
        return _refuse(uploads, 400, str(exc))
    except OSError as exc:  # the file storage failed mid-upload (disk full, S3 unreachable)
        return _refuse(uploads, 503, f"The file storage could not take the upload: {exc}. Retry later.")
    if body_expired(request.META):  # the body was cut at its deadline: what arrived is not the event
        return _refuse(uploads, 408, _expired_message(request))
    if uploads is not None and uploads.interrupted is not None:
        cut = f"The body ended in the middle of file {uploads.interrupted!r} (before its closing boundary"
        return _refuse(uploads, 400, f"{cut}, or before its Content-Length): nothing was kept.")

    key = signed_key or request.headers.get("Idempotency-Key") or request.headers.get("webhook-id") or None
    if key and len(key) > MAX_IDEMPOTENCY_KEY:
        return _refuse(uploads, 400, f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters.")

    extra: dict[str, Any] = {"files": files} if uploads is not None else {}
    payload = run_payload(
        body=parsed,
        method=request.method,
        headers=redaction.redact_headers(request.headers),
        query=redaction.redact_query(_query(request.GET)),
        content_type=content_type,
        **extra,
    )
    if workflow.listening_until is not None:
        try:
            sample = samples.capture(workflow=workflow, payload=payload)
        except storable.NotStorable as exc:
            return _refuse(uploads, 400, f"The request cannot be stored: {exc}.")
        if sample is not None:
            if uploads is not None:
                uploads.discard()  # a sample keeps what its files were (names, sizes), not their bytes
            return JsonResponse(
                {"captured": True, "sample": sample.name, "detail": "Kept as a test sample for the builder; not run."},
                status=202,
            )
        if not workflow.is_active:
            return _refuse(uploads, 404, "No active webhook workflow has this URL.")
    try:
        # With files: the run and their attachment to it commit together (plain events: one statement, no BEGIN).
        with transaction.atomic() if uploads is not None else contextlib.nullcontext():
            run, created = run_accept(
                workflow=workflow, trigger=RunTrigger.WEBHOOK, payload=payload, idempotency_key=key, version=version
            )
            if created and uploads is not None:
                file_services.attach(uploads.rows(), run)
                uploads.release()
    except PayloadInvalid as exc:
        return _refuse(uploads, 400, f"The request cannot be stored: {exc.message}")
    if not created:
        if uploads is not None:
            uploads.discard()  # the event was accepted before, with its own files
        return JsonResponse({"run_id": str(run.pk), "duplicate": True}, status=200)
    return JsonResponse({"run_id": str(run.pk)}, status=202)


def _expired_message(request: HttpRequest) -> str:
    length = request.META.get("CONTENT_LENGTH")
    limit, setting = intake.body_deadline(int(length) if length else None, webhook=True)
    return f"Request body not received within {limit:g} seconds ({setting}): nothing was kept."


def _refuse(uploads: file_uploads.StorageUploadHandler | None, status: int, detail: str) -> JsonResponse:
    if uploads is not None:
        uploads.discard()
    return _error(status, detail)


def _is_multipart(request: HttpRequest) -> bool:
    return (request.content_type or "").lower() == "multipart/form-data"


def _body_is_a_file(request: HttpRequest, workflow: Workflow) -> bool:
    """The workflow keeps binary bodies as files, and this one is neither JSON, a form nor text."""
    if not workflow.webhook_body_as_file:
        return False
    content_type = (request.content_type or "").lower()
    structured = content_type in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
    return not (structured or content_type.endswith("+json") or content_type.startswith("text/"))


def parse_body(request: HttpRequest, body: bytes) -> tuple[Any, str, dict[str, Any]]:
    """JSON, form or raw: what a template sees as ``trigger.body``; and ``trigger.files`` (multipart)."""
    content_type = (request.content_type or "").lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        if not body.strip():
            return None, content_type, {}
        try:
            return storable.loads(body.decode(request.encoding or "utf-8")), content_type, {}
        except UnicodeDecodeError:
            raise ValueError("Malformed JSON body: it is not valid UTF-8.") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"Malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
        except (ValueError, LookupError) as exc:  # NaN/Infinity, too deep, too many digits, unknown charset
            raise ValueError(f"Malformed JSON body: {exc}.") from None
    if content_type == "application/x-www-form-urlencoded":
        return _query(QueryDict(body, encoding=request.encoding or "utf-8")), content_type, {}
    if content_type == "multipart/form-data":
        fields = _query(request.POST)  # the upload handler streams the files to storage meanwhile
        files: dict[str, Any] = {}
        for name, uploaded in request.FILES.lists():
            refs = [file_services.info_of(f.row).as_ref() for f in uploaded if isinstance(f, StoredUpload)]
            if refs:
                files[name] = refs[0] if len(refs) == 1 else refs
        return fields, content_type, files
    try:
        return body.decode(request.encoding or "utf-8"), content_type, {}
    except (UnicodeDecodeError, LookupError):  # not text in its charset, or an unknown charset
        return {"base64": base64.b64encode(body).decode()}, content_type, {}


def _query(data: QueryDict) -> dict[str, Any]:
    return {key: values[0] if len(values) == 1 else values for key, values in data.lists()}


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """A Standard Webhooks ``webhook-signature`` value (for client examples; tests sign with the
    ``standardwebhooks`` package)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signatures.secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
