"""The credential kinds ``http.request`` sends: their fields and how each authenticates a request.

Each names the hosts it may be sent to (``allowed_hosts``, see ``credential_hosts``).
"""

import base64
from collections.abc import Mapping
from typing import Any

from integrations.base import Field, KindSpec
from integrations.errors import PermanentError

from . import credential_hosts

ALLOWED_HOSTS = Field(
    "allowed_hosts",
    type="hosts",
    coerce=credential_hosts.clean,
    help="Where this credential may be sent: hosts (api.example.com, *.example.com) or URL prefixes "
    "(https://api.example.com/v1/), comma-separated. A step calling any other URL fails before sending.",
)


def _header_value(value: str, field: str) -> str:
    """A value sent as it is in a header: HTTP/1.1 sends header values as latin-1 (http.client encodes them so)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise PermanentError(
            f"the credential's {field} has characters an HTTP header cannot carry (only ISO-8859-1 is sent as is)"
        ) from None
    return value


def _bearer(cred: Mapping[str, Any]) -> dict[str, str]:
    return {"Authorization": "Bearer " + _header_value(cred["token"], "token")}


def _basic(cred: Mapping[str, Any]) -> dict[str, str]:
    text = f"{cred['username']}:{cred['password']}"
    try:
        pair = text.encode("latin-1")  # the encoding urllib3 and requests use
    except UnicodeEncodeError:
        pair = text.encode()  # beyond latin-1: UTF-8, as RFC 7617's charset="UTF-8" says
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def _header(cred: Mapping[str, Any]) -> dict[str, str]:
    return {_header_value(cred["header_name"], "header_name"): _header_value(cred["value"], "value")}


HTTP_BEARER = KindSpec(
    "http_bearer",
    "HTTP bearer token",
    (Field("token", secret=True, help="Sent as Authorization: Bearer <token>."), ALLOWED_HOSTS),
    auth_headers=_bearer,
)
HTTP_BASIC = KindSpec(
    "http_basic",
    "HTTP basic auth",
    (Field("username"), Field("password", secret=True), ALLOWED_HOSTS),
    auth_headers=_basic,
)
HTTP_HEADER = KindSpec(
    "http_header",
    "HTTP header",
    (Field("header_name", help="e.g. X-API-Key"), Field("value", secret=True), ALLOWED_HOSTS),
    auth_headers=_header,
)
KINDS = (HTTP_BEARER, HTTP_BASIC, HTTP_HEADER)
