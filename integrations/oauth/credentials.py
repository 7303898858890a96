"""The generic connection kind ``oauth2``: any OAuth 2.0 provider, for ``http.request``.

An admin registers PotaFlow as a client at the provider (redirect URL
``<POTAFLOW_BASE_URL>/oauth/callback/``), creates the credential with the
client's id and secret, the two endpoints, the scopes and the hosts the
access token may be sent to (``allowed_hosts``, the rule of every HTTP
credential), then connects it. ``http.request`` sends
``Authorization: Bearer <access token>``.
"""

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from integrations import net
from integrations.base import Field, KindSpec
from integrations.http.credentials import ALLOWED_HOSTS

from .providers import ConnectionSpec, ProviderConfig, redirect_uri

AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def clean_url(value: object) -> str:
    """An absolute http(s) URL without user info or fragment; ``ValueError`` saying what is wrong."""
    if not isinstance(value, str):
        raise ValueError("must be a URL")
    url = value.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.fragment:
        raise ValueError("must not carry user info or a #fragment")
    _refuse_private_literal(parts.hostname)
    return url


def _refuse_private_literal(host: str) -> None:
    """An IP literal that is not public (10.x, 169.254.169.254, ::1...) is refused when saved, unless allowed.

    A host name is checked when it is used (``integrations.guarded_requests``: every request of the
    OAuth client resolves and checks it), as for every destination.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    try:
        net.check_address(address, host=host)
    except net.BlockedDestination:
        raise ValueError(
            f"points at {host}, which is not a public address (an operator may allow it with "
            "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS)"
        ) from None


def clean_scopes(value: object) -> list[str]:
    """Scopes from a list or a space/comma-separated string (at least one)."""
    if isinstance(value, str):
        scopes = [s for s in re.split(r"[\s,]+", value) if s]
    elif isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        scopes = [s.strip() for s in value if s.strip()]
    else:
        raise ValueError("must be a list of scopes")
    if not scopes:
        raise ValueError("must name at least one scope")
    if any(len(s) > 200 or not s.isprintable() for s in scopes):
        raise ValueError("holds a scope that is not printable text of at most 200 characters")
    return list(dict.fromkeys(scopes))


def _optional_url(value: object) -> str:
    return "" if value in (None, "") else clean_url(value)


def _config(fields: Mapping[str, Any]) -> ProviderConfig:
    return ProviderConfig(
        label="",  # the credential's name: ``ConnectionSpec.label_for``
        client_id=fields["client_id"],
        client_secret=fields["client_secret"],
        authorize_url=fields["authorize_url"],
        token_url=fields["token_url"],
        scopes=tuple(fields["scopes"]),
        revoke_url=fields.get("revocation_url") or "",
        auth_method=fields.get("auth_method") or AUTH_METHODS[0],
        api_urls=tuple(fields.get("allowed_hosts") or ()),
    )


def _bearer(cred: Mapping[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {cred['access_token']}"}


OAUTH2 = KindSpec(
    "oauth2",
    "OAuth 2.0 connection",
    (
        Field("client_id", help="The client id the provider gave PotaFlow."),
        Field("client_secret", secret=True, help="The client secret the provider gave PotaFlow."),
        Field("authorize_url", coerce=clean_url, help="The provider's authorization endpoint."),
        Field("token_url", coerce=clean_url, help="The provider's token endpoint."),
        Field("scopes", type="list", coerce=clean_scopes, help="Scopes to ask for, comma-separated."),
        ALLOWED_HOSTS,
        Field(
            "auth_method",
            type="choice",
            choices=AUTH_METHODS,
            default=AUTH_METHODS[0],
            required=False,
            help="How PotaFlow authenticates at the token endpoint: HTTP Basic or in the form body.",
        ),
        Field(
            "revocation_url",
            required=False,
            default="",
            coerce=_optional_url,
            help="The provider's revocation endpoint (RFC 7009), used on Disconnect; optional.",
        ),
    ),
    help="Register PotaFlow at the provider with the redirect URL shown here, then Connect.",
    auth_headers=_bearer,
    connection=ConnectionSpec(
        label=None, config=_config, bound_fields=("client_id", "authorize_url", "token_url", "revocation_url")
    ),
)

__all__ = ["OAUTH2", "clean_scopes", "clean_url", "redirect_uri"]
