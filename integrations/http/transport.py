"""How ``http.request`` sends and reads: urllib3 over ``pools`` (connections pinned to checked addresses).

The action (``action.py``) decides what to send and follows redirects; this
module makes each request and turns the answer into the step's output or an
error (``integrations.errors`` decides which answers are transient).
"""

import json
import math
import time
import urllib.parse
from typing import Any

import urllib3
from django.conf import settings

from integrations import errors, net
from integrations.errors import PermanentError, RetryableError
from integrations.file_access import FileAccess
from integrations.storable import storable

from . import pools


def max_body_bytes() -> int:
    return int(getattr(settings, "POTAFLOW_STEP_OUTPUT_MAX_BYTES", 64 * 1024))


def refused(exc: net.BlockedDestination) -> str:
    """The error of a step whose destination the guard refused (the run's, and the test's preview of it)."""
    return f"{exc}; nothing was sent"


def destination_refusal(url: str, allow: net.AllowList | None = None) -> str | None:
    """What a real run would answer for ``url``'s destination if the guard refuses it (None: allowed,
    or not known yet — a name that does not resolve now may resolve when the run comes)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return None
    if not host:
        return None
    try:
        net.pinned_address(host, port, allow=net.current_allow_list() if allow is None else allow)
    except net.BlockedDestination as exc:
        return refused(exc)
    except net.ResolutionError:
        return None
    return None


def send(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    deadline: float,
    allow: net.AllowList,
) -> urllib3.BaseHTTPResponse:
    """Send one request (no redirect followed) to the checked address, over a pooled connection."""
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
        raise PermanentError(refused(exc)) from None
    except net.ResolutionError as exc:
        raise errors.from_resolution(str(exc), temporary=exc.temporary) from None

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RetryableError("timed out (the step's time ran out while following redirects)")
    timeout = urllib3.Timeout(connect=remaining, read=remaining)
    host_header = parts.netloc.rsplit("@", 1)[-1]
    pool = pools.pool_for(scheme, host, port, address)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    send_headers = {"Host": host_header, "User-Agent": "PotaFlow/1.0", **headers}
    try:
        return pool.urlopen(
            method, target, body=body, headers=send_headers, redirect=False, retries=False,
            preload_content=False, assert_same_host=False, timeout=timeout,
        )  # fmt: skip
    except urllib3.exceptions.NewConnectionError as exc:  # (a subclass of ConnectTimeoutError)
        raise RetryableError(f"connection error calling {url}: {exc}") from None
    except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
        raise RetryableError(f"timed out after {timeout.connect_timeout:.1f}s calling {url}: {exc}") from None
    except urllib3.exceptions.SSLError as exc:
        raise PermanentError(f"TLS error calling {url}: {exc}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise RetryableError(f"connection error calling {url}: {exc}") from None


def result(
    response: urllib3.BaseHTTPResponse,
    url: str,
    redirects: list[str],
    expected: list[int] | None,
) -> dict[str, Any]:
    """The step's output from a final answer (capped, storable); an error when it is not a success."""
    limit = max_body_bytes()
    try:
        raw = response.read(limit + 1, decode_content=True)
        if len(raw) > limit:
            response.close()  # the rest stays unread: the connection cannot carry another request
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        response.close()
        raise RetryableError(f"timed out reading the response from {url}: {exc}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        response.close()
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
    if errors.is_retryable_status(status):
        raise errors.from_status(
            status,
            f"HTTP {status} from {url}: {snippet}",
            retry_after=errors.parse_retry_after(headers.get("retry-after")),
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


def save_as_file(
    response: urllib3.BaseHTTPResponse,
    url: str,
    redirects: list[str],
    expected: list[int] | None,
    files: FileAccess,
    name: str,
) -> dict[str, Any]:
    """A successful answer's body kept as a file of the run, streamed within POTAFLOW_UPLOAD_MAX_BYTES;
    the output carries its reference instead of the body. An unsuccessful one fails as ``result`` says."""
    status = response.status
    if not (status in expected if expected else 200 <= status < 400):
        return result(response, url, redirects, expected)
    headers = {key.lower(): ", ".join(response.headers.getlist(key)) for key in response.headers}
    content_type = headers.get("content-type", "")
    try:
        info = files.create(
            name=name or _download_name(headers.get("content-disposition", ""), url),
            content_type=content_type,
            chunks=response.stream(64 * 1024, decode_content=True),
            limit=settings.POTAFLOW_UPLOAD_MAX_BYTES,
            setting="POTAFLOW_UPLOAD_MAX_BYTES",
        )
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        response.close()
        raise RetryableError(f"timed out reading the response from {url}: {exc}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        response.close()
        raise RetryableError(f"connection error reading the response from {url}: {exc}") from None
    except BaseException:
        response.close()  # refused mid-body (too large): the rest stays unread, the connection is not reused
        raise
    finally:
        response.release_conn()
    output: dict[str, Any] = {"status": status, "headers": storable(headers), "file": info.as_ref(), "url": url}
    if redirects:
        output["redirects"] = redirects
    return output


def _download_name(disposition: str, url: str) -> str:
    """The name a server suggests (Content-Disposition), else the URL's last path segment."""
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value.strip('"'):
            return value.strip('"')
    last = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return last or "download"
