"""The credential kinds ``http.request`` sends: their fields and how each authenticates a request.

Each names the hosts it may be sent to (``allowed_hosts``, see ``credential_hosts``).
"""

import base64
from collections.abc import Mapping
from typing import Any

from integrations.base import Field, KindSpec

from . import credential_hosts

ALLOWED_HOSTS = Field(
    "allowed_hosts",
    type="hosts",
    coerce=credential_hosts.clean,
    help="Where this credential may be sent: hosts (api.example.com, *.example.com) or URL prefixes "
    "(https://api.example.com/v1/), comma-separated. A step calling any other URL fails before sending.",
)


def _bearer(cred: Mapping[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {cred['token']}"}


def _basic(cred: Mapping[str, Any]) -> dict[str, str]:
    pair = f"{cred['username']}:{cred['password']}".encode("latin-1")  # the encoding urllib3 and requests use
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def _header(cred: Mapping[str, Any]) -> dict[str, str]:
    return {cred["header_name"]: cred["value"]}


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
