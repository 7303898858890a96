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
import hashlib
import hmac
import json
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import redaction
from integrations import storable

from ..models import RunTrigger
from ..ops import metrics
from ..services import PayloadInvalid, run_accept, run_payload
from . import lookup as intake
from . import ratelimit, signatures

MAX_IDEMPOTENCY_KEY = 255


def _error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


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

    try:
        body = intake.read_body(request, settings.POTAFLOW_WEBHOOK_MAX_BYTES)
    except intake.IntakeRefused as exc:
        return _error(exc.status, exc.message)

    signed_key = None
    if workflow.webhook_secret:
        try:
            signed_key = signatures.verify(signatures.Signing.of(workflow), request.headers, body)
        except signatures.SignatureInvalid as exc:
            return _error(401, f"Invalid webhook signature ({workflow.signature_scheme}): {exc.message}.")

    try:
        parsed, content_type = parse_body(request, body)
    except ValueError as exc:
        return _error(400, str(exc))

    key = signed_key or request.headers.get("Idempotency-Key") or request.headers.get("webhook-id") or None
    if key and len(key) > MAX_IDEMPOTENCY_KEY:
        return _error(400, f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters.")

    payload = run_payload(
        body=parsed,
        method=request.method,
        headers=redaction.redact_headers(request.headers),
        query=redaction.redact_query(_query(request.GET)),
        content_type=content_type,
    )
    try:
        run, created = run_accept(
            workflow=workflow, trigger=RunTrigger.WEBHOOK, payload=payload, idempotency_key=key, version=version
        )
    except PayloadInvalid as exc:
        return _error(400, f"The request cannot be stored: {exc.message}")
    if not created:
        return JsonResponse({"run_id": str(run.pk), "duplicate": True}, status=200)
    return JsonResponse({"run_id": str(run.pk)}, status=202)


def parse_body(request: HttpRequest, body: bytes) -> tuple[Any, str]:
    """JSON, form or raw: what a template sees as ``trigger.body``."""
    content_type = (request.content_type or "").lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        if not body.strip():
            return None, content_type
        try:
            return storable.loads(body.decode(request.encoding or "utf-8")), content_type
        except UnicodeDecodeError:
            raise ValueError("Malformed JSON body: it is not valid UTF-8.") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"Malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
        except (ValueError, LookupError) as exc:  # NaN/Infinity, too deep, too many digits, unknown charset
            raise ValueError(f"Malformed JSON body: {exc}.") from None
    if content_type == "application/x-www-form-urlencoded":
        return _query(QueryDict(body, encoding=request.encoding or "utf-8")), content_type
    if content_type == "multipart/form-data":
        fields = _query(request.POST)
        # One file per field name here (MultiValueDict.items() gives the last of each).
        files = {
            name: {"name": f.name, "size": f.size} for name, f in request.FILES.items() if isinstance(f, UploadedFile)
        }
        return {**fields, **({"_files": files} if files else {})}, content_type
    try:
        return body.decode(request.encoding or "utf-8"), content_type
    except (UnicodeDecodeError, LookupError):  # not text in its charset, or an unknown charset
        return {"base64": base64.b64encode(body).decode()}, content_type


def _query(data: QueryDict) -> dict[str, Any]:
    return {key: values[0] if len(values) == 1 else values for key, values in data.lists()}


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """A Standard Webhooks ``webhook-signature`` value (for client examples; tests sign with the
    ``standardwebhooks`` package)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signatures.secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
