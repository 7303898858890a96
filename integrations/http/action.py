"""``http.request``: call any HTTP(S) endpoint, behind the SSRF guard.

The request goes through urllib3 directly so that the connection is made to
the address ``integrations.net`` checked (no second DNS lookup), with the
original host name in the ``Host`` header and for TLS (SNI + certificate
check), over a kept-alive connection of ``pools``. Redirects are followed
here, hop by hop, each hop checked again.
"""

import json
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import urllib3
from django.conf import settings

from core import redaction
from integrations import net
from integrations.base import PREVIEW_MASK, Action, ActionContext, PreviewCredential, is_single_expression, preview_row
from integrations.errors import ConfigError, PermanentError
from integrations.oauth.credentials import OAUTH2
from integrations.storable import JSONValue
from integrations.template_syntax import is_template

from . import credential_hosts, transport
from .credentials import KINDS

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

_scalar = {"type": ["string", "number", "boolean"]}
_FILE_REF = {"type": ["object", "string"], "description": "A file reference"}


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable for a request (None when it is fine).

    ``urlsplit`` raises ``ValueError`` on an unbalanced or invalid ``[IPv6]``
    host and ``.port`` on a bad port: reported as a message, never a 500.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "contains whitespace or control characters"
    return None


class HttpRequest(Action):
    name = "http.request"
    title = "HTTP request"
    description = (
        "Send an HTTP request and return status, headers and body (JSON parsed when JSON). "
        "Private, loopback and link-local destinations are refused unless allow-listed."
    )
    credential_kind = (*(spec.kind for spec in KINDS), OAUTH2.kind)
    credential_required = False
    config_schema = {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "method": {"type": "string", "enum": METHODS, "default": "GET"},
            "url": {"type": "string", "minLength": 1},
            "query": {"type": "object", "additionalProperties": _scalar},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body_type": {"type": "string", "enum": ["json", "form", "raw", "multipart", "file"], "default": "json"},
            "body": {
                "description": "JSON value (json), object of scalars (form, multipart fields), string (raw), "
                "or a file reference (file: the file's bytes are the body)"
            },
            "files": {
                "type": "object",
                "additionalProperties": _FILE_REF,
                "description": "multipart: form field -> file reference ({{ trigger.files.<field> }})",
            },
            "save_response_as_file": {
                "type": ["boolean", "string"],
                "description": "Keep the response body as a file of the run (true, or the file's name); "
                "the output's file is its reference. At most POTAFLOW_UPLOAD_MAX_BYTES.",
            },
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
            "expected_status": {
                "type": "array",
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                "minItems": 1,
            },
            "follow_redirects": {"type": "boolean", "default": True},
            "idempotency_header": {
                "type": "string",
                "default": "Idempotency-Key",
                "pattern": "^[A-Za-z0-9-]*$",
                "description": "Header carrying the step's idempotency key (the same on every retry of "
                "this step in this run, new on a replay); empty to send none.",
            },
        },
    }
    # Methods that HTTP itself defines as idempotent (RFC 9110 §9.2.2).
    IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")

    def repeat_is_safe(self, config: Mapping[str, Any]) -> bool:
        """Safe when the destination can drop the repeat (idempotency key) or the method is idempotent."""
        method = str(config.get("method") or "GET").upper()
        return bool(idempotency_header(config)) or method in self.IDEMPOTENT_METHODS

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue]:
        parts = urllib.parse.urlsplit(str(config.get("url", "")))
        return {
            "method": str(config.get("method", "GET")).upper(),
            "url": urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", "")),
            "query_keys": sorted({*urllib.parse.parse_qs(parts.query), *(config.get("query") or {})}),
        }

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        """The request as it would go out: method and full URL, headers (secrets masked, the
        credential's header shown masked), the body as encoded, and what the guard would refuse."""
        url = str(config.get("url", ""))
        problem = url_problem(url)
        full_url = url if problem else with_query(url, config.get("query") or {})
        sensitive = redaction.sensitive_header_names()
        headers: dict[str, JSONValue] = {
            str(k): (PREVIEW_MASK if str(k).lower() in sensitive else str(v))
            for k, v in (config.get("headers") or {}).items()
        }
        key_header = idempotency_header(config)
        if key_header:
            headers[key_header] = "potaflow-<run>-<step> (the same on every retry)"
        notes: list[JSONValue] = []
        if credential is not None:
            public = credential.public_data or {}
            if credential.kind in ("http_bearer", OAUTH2.kind):  # oauth2: the connection's access token
                headers["Authorization"] = f"Bearer {PREVIEW_MASK}"
            elif credential.kind == "http_basic":
                headers["Authorization"] = f"Basic {PREVIEW_MASK} ({public.get('username', '')})"
            elif credential.kind == "http_header":
                headers[str(public.get("header_name") or "X-Credential")] = PREVIEW_MASK
            if not problem:
                try:
                    credential_hosts.check(public.get("allowed_hosts"), full_url)
                except credential_hosts.NotAllowed as exc:
                    notes.append(f"would be refused: {exc}")
        body = config.get("body")
        body_type = config.get("body_type", "json")
        if body is not None and not any(str(k).lower() == "content-type" for k in headers):
            headers["Content-Type"] = {
                "form": "application/x-www-form-urlencoded",
                "raw": "text/plain; charset=utf-8",
            }.get(body_type, "application/json")
        body_text: str | None
        if body is not None and body_type == "form" and isinstance(body, dict):
            body_text = urllib.parse.urlencode(body, doseq=True)
        elif body is not None and body_type == "raw" and isinstance(body, str):
            body_text = body
        elif body is not None:
            body_text = json.dumps(body, indent=2, ensure_ascii=False)
        else:
            body_text = None
        if problem:
            notes.append(f"the URL {problem}")
        method = str(config.get("method", "GET")).upper()
        return {
            "kind": "http",
            "method": method,
            "url": full_url,
            "headers": headers,
            "body": body_text,
            "notes": notes,
            "request": f"{method} {full_url}",
            "rows": [preview_row("Headers", headers)],
        }

    def validate_config(self, config: Any) -> None:
        super().validate_config(config)
        url = config.get("url", "")
        if not is_template(url):
            problem = url_problem(url)
            if problem:
                raise ConfigError(f"config.url: {problem}", field="config.url")
        body_type = config.get("body_type", "json")
        body = config.get("body")
        if body is not None and not is_single_expression(body):
            if body_type == "form" and not isinstance(body, dict):
                raise ConfigError("config.body: a form body must be an object", field="config.body")
            if body_type == "raw" and not isinstance(body, str):
                raise ConfigError("config.body: a raw body must be a string", field="config.body")
            if body_type == "multipart" and not isinstance(body, dict):
                raise ConfigError("config.body: multipart fields must be an object", field="config.body")
        if body_type == "file" and body is None:
            raise ConfigError("config.body: body_type file needs a file reference in body", field="config.body")
        if config.get("files") and body_type != "multipart":
            raise ConfigError("config.files: files are sent with body_type multipart", field="config.files")

    def validate_credential_use(self, config: Any, credential_public: Mapping[str, Any]) -> None:
        """A static URL outside the credential's ``allowed_hosts`` is refused when the step is saved."""
        if not credential_public.get("allowed_hosts"):
            raise ConfigError(
                "the credential has no allowed_hosts (it predates the rule): an admin must set the hosts "
                "it may be sent to before a step can use it",
                field="credential",
            )
        url = config.get("url", "") if isinstance(config, dict) else ""
        if not url or is_template(url) or url_problem(url):
            return  # templated: checked once rendered, before anything is sent
        try:
            credential_hosts.check(credential_public.get("allowed_hosts"), url)
        except credential_hosts.NotAllowed as exc:
            raise ConfigError(f"config.url: {exc}", field="config.url") from None

    # -- run ---------------------------------------------------------------
    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        method = config.get("method", "GET").upper()
        problem = url_problem(config["url"])
        if problem:
            raise PermanentError(f"invalid URL {config['url']!r}: {problem}")
        timeout = float(config.get("timeout") or ctx.timeout_seconds)
        url = with_query(config["url"], config.get("query") or {})
        headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        key_header = idempotency_header(config)
        if key_header and ctx.idempotency_key:
            headers[key_header] = ctx.idempotency_key
        auth_headers = _auth_headers(ctx)
        if ctx.credential:
            try:  # before anything is sent: the rendered URL must be one the credential may go to
                credential_hosts.check(ctx.credential.get("allowed_hosts"), url)
            except credential_hosts.NotAllowed as exc:
                raise PermanentError(f"{exc}; nothing was sent") from None
        body = _encode_body(config, headers, ctx)
        deadline = time.monotonic() + timeout
        response, final_url, redirects = self._send(method, url, headers, body, auth_headers, deadline, config, ctx)
        if response.status == 401 and ctx.connection is not None and auth_headers and final_url == url:
            # The connection's token was refused: refresh once (single-flight) and send once more.
            response.drain_conn()
            response.release_conn()
            token = ctx.connection.refreshed_after(ctx.connection.access_token)
            auth_headers = _auth_headers(ctx, access_token=token)
            response, final_url, redirects = self._send(method, url, headers, body, auth_headers, deadline, config, ctx)
        save_as = config.get("save_response_as_file")
        if save_as and ctx.files is not None:
            name = save_as if isinstance(save_as, str) else ""
            return transport.save_as_file(
                response, final_url, redirects, config.get("expected_status"), ctx.files, name
            )
        return transport.result(response, final_url, redirects, config.get("expected_status"))

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        auth_headers: dict[str, str],
        deadline: float,
        config: dict[str, Any],
        ctx: ActionContext,
    ) -> tuple[Any, str, list[str]]:
        """Send, following redirects hop by hop (each checked); the final answer, its URL and the hops."""
        follow = config.get("follow_redirects", True)
        allow = net.current_allow_list()
        redirects: list[str] = []
        while True:
            response = transport.send(method, url, {**headers, **auth_headers}, body, deadline, allow)
            location = response.headers.get("Location")
            if follow and response.status in REDIRECT_STATUSES and location:
                response.drain_conn()
                response.release_conn()
                if len(redirects) >= net.MAX_REDIRECTS:
                    raise PermanentError(f"too many redirects (more than {net.MAX_REDIRECTS}); last to {location}")
                next_url = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(next_url).scheme.lower() not in ("http", "https"):
                    raise PermanentError(f"redirect to a non-HTTP URL refused: {next_url}")
                if _origin(next_url) != _origin(url) or not _credential_allows(ctx, next_url):
                    auth_headers = {}  # never hand credentials to another origin, nor outside allowed_hosts
                if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                redirects.append(next_url)
                url = next_url
                continue
            return response, url, redirects


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or ""), parts.port


def with_query(url: str, query: dict[str, Any]) -> str:
    if not query:
        return url
    parts = urllib.parse.urlsplit(url)
    extra = urllib.parse.urlencode(
        {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items()}, doseq=True
    )
    merged = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=merged))


def idempotency_header(config: Any) -> str:
    """The header that carries the step's idempotency key ("" for none)."""
    value = config.get("idempotency_header", "Idempotency-Key")
    return value.strip() if isinstance(value, str) else ""


def _credential_allows(ctx: ActionContext, url: str) -> bool:
    try:
        credential_hosts.check((ctx.credential or {}).get("allowed_hosts"), url)
    except credential_hosts.NotAllowed:
        return False
    return True


_AUTH_HEADERS = {spec.kind: spec.auth_headers for spec in (*KINDS, OAUTH2)}


def _auth_headers(ctx: ActionContext, *, access_token: str | None = None) -> dict[str, str]:
    cred, kind = ctx.credential, ctx.credential_kind
    if not cred:
        return {}
    auth_headers = _AUTH_HEADERS.get(kind or "")
    if auth_headers is None:
        raise PermanentError(f"http.request cannot use a {kind} credential")
    return auth_headers({**cred, "access_token": access_token} if access_token else cred)


def _encode_body(config: dict[str, Any], headers: dict[str, str], ctx: ActionContext) -> bytes | None:
    body_type = config.get("body_type", "json")
    has_type = any(k.lower() == "content-type" for k in headers)
    if body_type in ("multipart", "file"):
        return _file_body(config, headers, ctx, has_type)
    if "body" not in config or config["body"] is None:
        return None
    body = config["body"]
    if body_type == "form":
        if not isinstance(body, dict):
            raise PermanentError("config.body: a form body must be an object")
        if not has_type:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return urllib.parse.urlencode(body, doseq=True).encode()
    if body_type == "raw":
        if not has_type:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        return body.encode() if isinstance(body, str) else json.dumps(body).encode()
    if not has_type:
        headers["Content-Type"] = "application/json"
    return json.dumps(body).encode()


def _file_body(config: dict[str, Any], headers: dict[str, str], ctx: ActionContext, has_type: bool) -> bytes:
    """A file as the raw body (``file``) or as multipart parts (``multipart``), read within
    POTAFLOW_SEND_FILE_MAX_BYTES (all files together)."""
    if ctx.files is None:
        raise PermanentError("this step runs without access to files")
    budget = settings.POTAFLOW_SEND_FILE_MAX_BYTES
    if config.get("body_type") == "file":
        info, data = ctx.files.read(config.get("body"), field="config.body", limit=budget,
                                    setting="POTAFLOW_SEND_FILE_MAX_BYTES")  # fmt: skip
        if not has_type:
            headers["Content-Type"] = info.content_type or "application/octet-stream"
        return data
    fields: list[tuple[str, Any]] = []
    for name, value in (config.get("body") or {}).items():
        fields.append((str(name), value if isinstance(value, str) else json.dumps(value)))
    for name, ref in (config.get("files") or {}).items():
        info, data = ctx.files.read(ref, field=f"config.files.{name}", limit=budget,
                                    setting="POTAFLOW_SEND_FILE_MAX_BYTES")  # fmt: skip
        budget -= len(data)
        fields.append((str(name), (info.name, data, info.content_type or "application/octet-stream")))
    encoded, content_type = urllib3.encode_multipart_formdata(fields)
    for key in [key for key in headers if key.lower() == "content-type"]:
        del headers[key]  # the boundary is ours: a Content-Type set in headers is replaced
    headers["Content-Type"] = content_type
    return encoded
