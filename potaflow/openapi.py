"""OpenAPI post-processing: what drf-spectacular cannot see on its own.

- The one error shape (``potaflow.api``) as an ``Error`` component, attached to
  every 4xx answer of every API operation, and the 4xx answers every operation
  can give (401 for a missing/expired token, 403 for a role too low, 404 for an
  id outside your organizations, 400 for bad input).
- ``POST /hooks/{token}``: the webhook trigger is a plain Django view (it must
  read the raw body to verify signatures), so it is described here by hand.
- The authentication flow, in the API description.

Listed in ``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``.
"""

import copy
from typing import Any

AUTH_FLOW = """

## Authentication

1. `POST /api/auth/token/` with `{"email": ..., "password": ...}` answers an
   `access` token (short-lived) and a `refresh` token.
2. Send `Authorization: Bearer <access>` with every API request.
3. When the access token expires (401), `POST /api/auth/token/refresh/` with
   `{"refresh": ...}`: you get a new pair; the old refresh token is blacklisted
   (refresh tokens rotate, a reused one is refused).
4. `POST /api/auth/logout/` with `{"refresh": ...}` blacklists it.

A browser session from the admin login (`/admin/login/`) also authenticates
API calls (with the CSRF token for unsafe methods).

## Errors

Every error answers `{"detail": "<one sentence>", "errors": {"<field>": ["..."]}}`
(`errors` only for 400). Another organization's ids answer 404, never 403.

## Lists

List endpoints are paginated (`?page=`, answers `count`/`next`/`previous`/`results`),
filter on the fields each one documents and sort with `?ordering=<field>` (`-` for descending).

## Webhooks

`POST /hooks/{token}` starts a run of a webhook workflow; the token is in the
workflow's `webhook_url`. It needs no API token: the unguessable URL, and the
signature when the workflow has a secret, are the authorization.
"""

ERROR_SCHEMA = {
    "type": "object",
    "description": "The one error shape of the API.",
    "properties": {
        "detail": {"type": "string", "description": "One readable sentence."},
        "errors": {
            "type": "object",
            "description": "Field (or path such as steps[0].config.url) -> messages; {} when no field is at fault.",
            "additionalProperties": {},
        },
    },
    "required": ["detail", "errors"],
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_DESCRIPTIONS = {
    "400": "Invalid input: `errors` names each offending field.",
    "401": "Not authenticated: missing, invalid or expired token.",
    "403": "Authenticated, but your role in the organization does not allow this.",
    "404": "No such object in your organizations (or, for a list, no such page).",
    "413": "Body too large.",
    "429": "Too many attempts; retry later.",
}
HTTP_METHODS = {"get", "put", "patch", "post", "delete"}

WEBHOOK_OPERATION: dict[str, Any] = {
    "operationId": "webhook_trigger",
    "summary": "Trigger a webhook workflow",
    "description": (
        "Starts a run of the active webhook workflow whose URL holds `token`, and answers "
        "once the run is recorded. The body may be JSON, a form or anything else (kept as "
        "text); templates see it as `trigger.body`, with `trigger.headers`, `trigger.query` "
        "and `trigger.method` (sensitive headers and query values stored as `[redacted]`). "
        "When the workflow has a secret, the request must be signed as its `signature_scheme` says: "
        "`standard` (Standard Webhooks: `webhook-id`, `webhook-timestamp` within 5 minutes, "
        '`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`), `github` '
        "(`X-Hub-Signature-256: sha256=<hex>`), `stripe` (`Stripe-Signature: t=...,v1=...`, 5 minutes), "
        "`slack` (`X-Slack-Signature: v0=...` with `X-Slack-Request-Timestamp`) or `hmac` (the "
        "workflow's header, SHA-256/SHA-1, hex/base64, optional prefix); the current and the previous "
        "secret are both accepted. A repeated `Idempotency-Key` (or `webhook-id`) returns the original "
        "run instead of starting a second one; for a signed workflow the signed delivery id (or a "
        "digest of the signed message) is the key and the header is ignored. Chunked bodies are read "
        "within the size limit. Each workflow accepts at most `POTAFLOW_WEBHOOK_RATE` events (429 "
        "with `Retry-After` beyond it)."
    ),
    "tags": ["webhooks"],
    "security": [{}],
    "parameters": [
        {
            "in": "path",
            "name": "token",
            "required": True,
            "schema": {"type": "string"},
            "description": "The workflow's webhook token (from its webhook_url).",
        },
        {"in": "header", "name": "Idempotency-Key", "required": False, "schema": {"type": "string", "maxLength": 255}},
        {"in": "header", "name": "webhook-id", "required": False, "schema": {"type": "string"}},
        {"in": "header", "name": "webhook-timestamp", "required": False, "schema": {"type": "string"}},
        {"in": "header", "name": "webhook-signature", "required": False, "schema": {"type": "string"}},
        {"in": "header", "name": "X-Hub-Signature-256", "required": False, "schema": {"type": "string"}},
        {"in": "header", "name": "Stripe-Signature", "required": False, "schema": {"type": "string"}},
        {"in": "header", "name": "X-Slack-Signature", "required": False, "schema": {"type": "string"}},
        {"in": "header", "name": "X-Slack-Request-Timestamp", "required": False, "schema": {"type": "string"}},
    ],
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": {}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": {}}},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    "responses": {
        "202": {
            "description": "Run accepted and recorded; it executes in the background.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookAccepted"}}},
        },
        "200": {
            "description": "Duplicate delivery (same idempotency key): the original run.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookAccepted"}}},
        },
        "400": {"description": "Unreadable body or header."},
        "401": {"description": "Missing or invalid signature (workflows with a secret); names the failed check."},
        "404": {"description": "No active webhook workflow has this URL."},
        "411": {"description": "A chunked body this server cannot frame: send a Content-Length."},
        "413": {"description": "Body too large (POTAFLOW_WEBHOOK_MAX_BYTES)."},
        "429": {
            "description": "Over the workflow's rate (POTAFLOW_WEBHOOK_RATE): not accepted, retry later.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
        },
    },
}

WEBHOOK_ACCEPTED_SCHEMA = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string", "format": "uuid"},
        "duplicate": {"type": "boolean", "description": "Present (true) on a duplicate delivery."},
    },
    "required": ["run_id"],
}


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing hook (signature fixed by drf-spectacular)."""
    info = result.setdefault("info", {})
    if AUTH_FLOW.strip() not in info.get("description", ""):
        info["description"] = info.get("description", "") + AUTH_FLOW
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = copy.deepcopy(ERROR_SCHEMA)
    components["WebhookAccepted"] = copy.deepcopy(WEBHOOK_ACCEPTED_SCHEMA)

    paths = result.setdefault("paths", {})
    for path, item in paths.items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                _document_errors(path, method, operation)
    webhook = copy.deepcopy(WEBHOOK_OPERATION)
    for response in webhook["responses"].values():
        if "content" not in response:
            response["content"] = {"application/json": {"schema": dict(ERROR_REF)}}
    paths["/hooks/{token}"] = {"post": webhook}
    return result


def _document_errors(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    params = operation.get("parameters", [])
    anonymous = {} in operation.get("security", [{}])
    wanted = ["401"]  # a bad token is refused even where anonymous calls are allowed
    if "requestBody" in operation or any(p.get("in") == "query" for p in params):
        wanted.append("400")
    if not anonymous:
        wanted.append("403")
    if "{" in path or any(p.get("name") == "page" for p in params):
        wanted.append("404")  # an id outside your organizations, or a page past the end
    if path.startswith("/api/auth/"):
        wanted.append("429")  # the auth endpoints are throttled (POTAFLOW_AUTH_THROTTLE_RATE)
    for code in wanted:
        responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code]})
    for code, response in responses.items():
        if code.startswith("4") and "content" not in response:
            response["content"] = {"application/json": {"schema": dict(ERROR_REF)}}
