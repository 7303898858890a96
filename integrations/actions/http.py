"""``http.request``: call any HTTP(S) endpoint, behind the SSRF guard.

The request goes through urllib3 directly so that the connection is made to
the address ``integrations.net`` checked (no second DNS lookup), with the
original host name in the ``Host`` header and for TLS (SNI + certificate
check). Redirects are followed here, hop by hop, each hop checked again.
"""

import email.utils
import json
import math
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import urllib3
from django.conf import settings

from integrations import credential_hosts, net
from integrations.errors import ConfigError, PermanentError, RetryableError
from integrations.storable import storable

from .base import Action, ActionContext, _is_single_expression

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

_scalar = {"type": ["string", "number", "boolean"]}


def max_body_bytes() -> int:
    return int(getattr(settings, "POTAFLOW_STEP_OUTPUT_MAX_BYTES", 64 * 1024))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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
    credential_kind = ("http_bearer", "http_basic", "http_header")
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
            "body_type": {"type": "string", "enum": ["json", "form", "raw"], "default": "json"},
            "body": {"description": "JSON value (json), object of scalars (form) or string (raw)"},
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

    def repeat_is_safe(self, config: Any) -> bool:
        """Safe when the destination can drop the repeat (idempotency key) or the method is idempotent."""
        method = str(config.get("method") or "GET").upper()
        return bool(_idempotency_header(config)) or method in self.IDEMPOTENT_METHODS

    def request_summary(self, config: dict[str, Any]) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(str(config.get("url", "")))
        return {
            "method": str(config.get("method", "GET")).upper(),
            "url": urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", "")),
            "query_keys": sorted({*urllib.parse.parse_qs(parts.query), *(config.get("query") or {})}),
        }

    def validate_config(self, config: Any) -> None:
        super().validate_config(config)
        url = config.get("url", "")
        if "{{" not in url and "{%" not in url:
            problem = url_problem(url)
            if problem:
                raise ConfigError(f"config.url: {problem}", field="config.url")
        body_type = config.get("body_type", "json")
        body = config.get("body")
        if body is not None and not _is_single_expression(body):
            if body_type == "form" and not isinstance(body, dict):
                raise ConfigError("config.body: a form body must be an object", field="config.body")
            if body_type == "raw" and not isinstance(body, str):
                raise ConfigError("config.body: a raw body must be a string", field="config.body")

    def validate_credential_use(self, config: Any, credential_public: Mapping[str, Any]) -> None:
        """A static URL outside the credential's ``allowed_hosts`` is refused when the step is saved."""
        if not credential_public.get("allowed_hosts"):
            raise ConfigError(
                "the credential has no allowed_hosts (it predates the rule): an admin must set the hosts "
                "it may be sent to before a step can use it",
                field="credential",
            )
        url = config.get("url", "") if isinstance(config, dict) else ""
        if not url or "{{" in url or "{%" in url or url_problem(url):
            return  # templated: checked once rendered, before anything is sent
        try:
            credential_hosts.check(credential_public.get("allowed_hosts"), url)
        except credential_hosts.NotAllowed as exc:
            raise ConfigError(f"config.url: {exc}", field="config.url") from None

    # -- run ---------------------------------------------------------------
    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        method = config.get("method", "GET").upper()
        problem = url_problem(config["url"])
        if problem:
            raise PermanentError(f"invalid URL {config['url']!r}: {problem}")
        timeout = float(config.get("timeout") or ctx.timeout_seconds)
        url = _with_query(config["url"], config.get("query") or {})
        headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        key_header = _idempotency_header(config)
        if key_header and ctx.idempotency_key:
            headers[key_header] = ctx.idempotency_key
        auth_headers = _auth_headers(ctx)
        if ctx.credential:
            try:  # before anything is sent: the rendered URL must be one the credential may go to
                credential_hosts.check(ctx.credential.get("allowed_hosts"), url)
            except credential_hosts.NotAllowed as exc:
                raise PermanentError(f"{exc}; nothing was sent") from None
        body = _encode_body(config, headers)
        follow = config.get("follow_redirects", True)
        deadline = time.monotonic() + timeout
        allow = net.current_allow_list()
        redirects: list[str] = []

        while True:
            response = self._send(method, url, {**headers, **auth_headers}, body, deadline, allow)
            location = response.headers.get("Location")
            if follow and response.status in REDIRECT_STATUSES and location:
                response.drain_conn()
                response.release_conn()
                if len(redirects) >= MAX_REDIRECTS:
                    raise PermanentError(f"too many redirects (more than {MAX_REDIRECTS}); last to {location}")
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
            return self._result(response, url, redirects, config.get("expected_status"))

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        deadline: float,
        allow: net.AllowList,
    ) -> urllib3.BaseHTTPResponse:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise PermanentError(f"url must be http:// or https://, got {url!r}")
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise PermanentError(f"invalid URL {url!r}: {exc}") from None
        if not host:
            raise PermanentError(f"invalid URL {url!r}: no host")
        port = port or (443 if scheme == "https" else 80)
        try:
            address = net.pinned_address(host, port, allow=allow)
        except net.BlockedDestination as exc:
            raise PermanentError(f"{exc}; nothing was sent") from None
        except net.ResolutionError as exc:
            if exc.temporary:
                raise RetryableError(str(exc)) from None
            raise PermanentError(str(exc)) from None

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RetryableError("timed out (the step's time ran out while following redirects)")
        timeout = urllib3.Timeout(connect=remaining, read=remaining)
        host_header = parts.netloc.rsplit("@", 1)[-1]
        if scheme == "https":
            pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                str(address), port, timeout=timeout, server_hostname=host, assert_hostname=host,
                cert_reqs="CERT_REQUIRED", retries=False, maxsize=1,
            )  # fmt: skip
        else:
            pool = urllib3.HTTPConnectionPool(str(address), port, timeout=timeout, retries=False, maxsize=1)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        send_headers = {"Host": host_header, "User-Agent": "PotaFlow/1.0", **headers}
        try:
            return pool.urlopen(
                method, target, body=body, headers=send_headers, redirect=False, retries=False,
                preload_content=False, assert_same_host=False,
            )  # fmt: skip
        except urllib3.exceptions.NewConnectionError as exc:  # (a subclass of ConnectTimeoutError)
            raise RetryableError(f"connection error calling {url}: {exc}") from None
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
            raise RetryableError(f"timed out after {timeout.connect_timeout:.1f}s calling {url}: {exc}") from None
        except urllib3.exceptions.SSLError as exc:
            raise PermanentError(f"TLS error calling {url}: {exc}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableError(f"connection error calling {url}: {exc}") from None

    def _result(
        self,
        response: urllib3.BaseHTTPResponse,
        url: str,
        redirects: list[str],
        expected: list[int] | None,
    ) -> dict[str, Any]:
        limit = max_body_bytes()
        try:
            raw = response.read(limit + 1, decode_content=True)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise RetryableError(f"timed out reading the response from {url}: {exc}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableError(f"connection error reading the response from {url}: {exc}") from None
        finally:
            response.release_conn()
        truncated = len(raw) > limit
        raw = raw[:limit]
        status = response.status
        headers = {name.lower(): ", ".join(response.headers.getlist(name)) for name in response.headers}
        content_type = headers.get("content-type", "")
        text = storable(decode_text(raw, content_type))
        body: Any = text
        if not truncated and ("json" in content_type.split(";")[0]) and text.strip():
            body = parse_json(text, default=text)
        output = {"status": status, "headers": storable(headers), "body": body, "url": url}
        if redirects:
            output["redirects"] = redirects
        if truncated:
            output["body_truncated"] = True

        ok = status in expected if expected else 200 <= status < 400
        if ok:
            return output
        snippet = text[:300]
        if status == 429 or status >= 500:
            raise RetryableError(
                f"HTTP {status} from {url}: {snippet}",
                retry_after=parse_retry_after(headers.get("retry-after")),
                status=status,
            )
        if expected:
            raise PermanentError(
                f"HTTP {status} from {url} is not one of the expected {expected}: {snippet}", status=status
            )
        raise PermanentError(f"HTTP {status} from {url}: {snippet}", status=status)


def decode_text(raw: bytes, content_type: str) -> str:
    """Decode with the declared charset; UTF-8 when it is unknown or not a text encoding."""
    try:
        return raw.decode(_charset(content_type), errors="replace")
    except (LookupError, UnicodeError):  # "x-unknown", "base64", "idna", "punycode"...
        return raw.decode("utf-8", errors="replace")


def _finite_or_text(literal: str) -> float | str:
    number = float(literal)
    return number if math.isfinite(number) else literal  # 1e400 overflows to inf


def parse_json(text: str, *, default: Any) -> Any:
    """JSON as storable values: NaN/Infinity (and overflowing numbers) stay strings; ``default``
    when it is not JSON or nests deeper than the parser allows."""
    try:
        return storable(json.loads(text, parse_constant=str, parse_float=_finite_or_text))
    except (ValueError, RecursionError):
        return default


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return "utf-8"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or ""), parts.port


def _with_query(url: str, query: dict[str, Any]) -> str:
    if not query:
        return url
    parts = urllib.parse.urlsplit(url)
    extra = urllib.parse.urlencode(
        {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items()}, doseq=True
    )
    merged = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=merged))


def _idempotency_header(config: Any) -> str:
    value = config.get("idempotency_header", "Idempotency-Key")
    return value.strip() if isinstance(value, str) else ""


def _credential_allows(ctx: ActionContext, url: str) -> bool:
    try:
        credential_hosts.check((ctx.credential or {}).get("allowed_hosts"), url)
    except credential_hosts.NotAllowed:
        return False
    return True


def _auth_headers(ctx: ActionContext) -> dict[str, str]:
    cred, kind = ctx.credential, ctx.credential_kind
    if not cred:
        return {}
    if kind == "http_bearer":
        return {"Authorization": f"Bearer {cred['token']}"}
    if kind == "http_basic":
        return {
            "Authorization": urllib3.util.make_headers(basic_auth=f"{cred['username']}:{cred['password']}")[
                "authorization"
            ]
        }
    if kind == "http_header":
        return {cred["header_name"]: cred["value"]}
    raise PermanentError(f"http.request cannot use a {kind} credential")


def _encode_body(config: dict[str, Any], headers: dict[str, str]) -> bytes | None:
    if "body" not in config or config["body"] is None:
        return None
    body, body_type = config["body"], config.get("body_type", "json")
    has_type = any(k.lower() == "content-type" for k in headers)
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
