"""``POST /hooks/<token>``: the webhook trigger.

The token (43 random URL-safe characters) is the capability; an unknown token
or an inactive workflow is a 404. Order of checks: workflow (404) -> size
(413, from Content-Length and from the bytes actually read) -> signature when
the workflow has a secret (401) -> body parsing (400) -> idempotency (200 with
the original run) -> ``run_accept`` (400 when a value cannot be stored: NUL,
lone surrogates; NaN/Infinity and absurd nesting are already refused by the
parser) -> 202 ``{"run_id": ...}`` once the run is committed.

Signatures follow Standard Webhooks (https://www.standardwebhooks.com/): the
sender puts ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
(several space-separated signatures allowed). A secret written ``whsec_<base64>``
is base64-decoded; any other secret is used as UTF-8 bytes.
"""

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import intake, storable
from .models import RunTrigger, TriggerType, Workflow
from .services import PayloadInvalid, run_accept

SIGNATURE_TOLERANCE_SECONDS = 300
REDACTED_HEADERS = {"authorization", "proxy-authorization", "cookie", "webhook-signature", "x-hub-signature-256"}
MAX_IDEMPOTENCY_KEY = 255


def _error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


@csrf_exempt
@require_POST
def hook(request: HttpRequest, token: str) -> JsonResponse:
    workflow = Workflow.objects.filter(webhook_token=token, is_active=True, trigger_type=TriggerType.WEBHOOK).first()
    if workflow is None:
        return _error(404, "No active webhook workflow has this URL.")

    try:
        body = intake.read_body(request, settings.POTAFLOW_WEBHOOK_MAX_BYTES)
    except intake.IntakeRefused as exc:
        return _error(exc.status, exc.message)

    if workflow.webhook_secret:
        problem = verify_signature(workflow.webhook_secret, request.headers, body)
        if problem:
            return _error(401, f"Invalid webhook signature: {problem}.")

    try:
        parsed, content_type = parse_body(request, body)
    except ValueError as exc:
        return _error(400, str(exc))

    key = request.headers.get("Idempotency-Key") or request.headers.get("webhook-id") or None
    if key and len(key) > MAX_IDEMPOTENCY_KEY:
        return _error(400, f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters.")

    payload = {
        "method": request.method,
        "headers": _headers(request),
        "query": _query(request.GET),
        "content_type": content_type,
        "body": parsed,
    }
    try:
        run, created = run_accept(workflow=workflow, trigger=RunTrigger.WEBHOOK, payload=payload, idempotency_key=key)
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
        files = {name: {"name": f.name, "size": f.size} for name, f in request.FILES.items()}
        return {**fields, **({"_files": files} if files else {})}, content_type
    try:
        return body.decode(request.encoding or "utf-8"), content_type
    except (UnicodeDecodeError, LookupError):  # not text in its charset, or an unknown charset
        return {"base64": base64.b64encode(body).decode()}, content_type


def _query(data: QueryDict) -> dict[str, Any]:
    return {key: values[0] if len(values) == 1 else values for key, values in data.lists()}


def _headers(request: HttpRequest) -> dict[str, str]:
    return {
        name.lower(): ("[redacted]" if name.lower() in REDACTED_HEADERS else value)
        for name, value in request.headers.items()
    }


def _secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` value for a body (used by tests and client examples)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(secret: str, headers: Any, body: bytes) -> str | None:
    """None when valid, else what is wrong (never which signature was expected)."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return "webhook-id, webhook-timestamp and webhook-signature headers are required"
    try:
        ts = int(timestamp)
    except ValueError:
        return "webhook-timestamp is not a Unix timestamp"
    if abs(time.time() - ts) > SIGNATURE_TOLERANCE_SECONDS:
        return f"webhook-timestamp is more than {SIGNATURE_TOLERANCE_SECONDS} s away from the server time"
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return None
    return "no v1 signature matches the body"
