"""The OAuth 2.0 protocol, all of it Authlib's (``OAuth2Session``), behind the SSRF guard.

Authorization URL with ``state`` and PKCE (S256), the authorization-code
exchange, the refresh-token grant, revocation (RFC 7009) and the account's
name. Every request goes through ``integrations.guarded_requests`` (the
token URL of an ``oauth2`` credential is typed by an admin), and answers are
sorted here into two errors:

- ``GrantRefused``: the provider answered with an OAuth error (``invalid_grant``,
  Slack's ``{"ok": false, "error": ...}``, ``access_denied``...); ``error`` is its code.
- ``ProviderUnreachable``: no usable answer (network, 5xx, 429, a body that is not a
  token); ``retryable`` says whether trying later may help.

Neither message ever holds a token: they quote the provider's error code and
description only.
"""

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests

from integrations import guarded_requests, net

from .providers import ProviderConfig, redirect_uri

if TYPE_CHECKING:
    from authlib.integrations.requests_client import OAuth2Session


class GrantRefused(Exception):  # noqa: N818 - the provider's refusal, as it names it
    def __init__(self, label: str, error: str, description: str = "") -> None:
        self.error = str(error)[:100]
        self.description = str(description or "")[:300]
        detail = f": {self.description}" if self.description else ""
        super().__init__(f"{label} answered {self.error}{detail}")


class ProviderUnreachable(Exception):  # noqa: N818
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def new_verifier() -> str:
    """A PKCE code verifier (RFC 7636 §4.1: 43-128 characters of the unreserved set)."""
    return secrets.token_urlsafe(48)  # 64 characters


def _session(config: ProviderConfig, timeout: float) -> "OAuth2Session":
    # deferred: keeps idle memory down (Authlib, ~12 MiB, loads only in a process that connects or refreshes)
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(
        client_id=config.client_id,
        client_secret=config.client_secret,
        token_endpoint_auth_method=config.auth_method,
        revocation_endpoint_auth_method=config.auth_method,
        redirect_uri=redirect_uri(),
        code_challenge_method="S256",
        default_timeout=timeout,
    )
    guarded_requests.guarded_session(session=session)
    # An OAuth endpoint that redirects is not followed: a 307/308 would carry the form body (the
    # refresh token, the code, the client secret) to wherever it points, beyond the configured URL.
    session.max_redirects = 0
    return session


def authorization_url(config: ProviderConfig, state: str, verifier: str) -> str:
    """Where the browser goes to consent: client id, scopes, ``state``, ``redirect_uri`` and the S256 challenge."""
    session = _session(config, 10.0)
    url, _ = session.create_authorization_url(
        config.authorize_url,
        state=state,
        code_verifier=verifier,
        scope=config.scope_separator.join(config.scopes),
        **config.authorize_params,
    )
    return str(url)


def _call(config: ProviderConfig, what: str, call: Callable[[], Any]) -> dict[str, Any]:
    # deferred: as in _session (already loaded by then)
    from authlib.integrations.requests_client import OAuthError

    try:
        token = call()
    except OAuthError as exc:
        raise GrantRefused(config.label, exc.error or "error", exc.description or "") from None
    except net.BlockedDestination as exc:
        raise ProviderUnreachable(f"{what} at {config.label}: {exc}; nothing was sent", retryable=False) from None
    except net.ResolutionError as exc:
        raise ProviderUnreachable(f"{what} at {config.label}: {exc}", retryable=exc.temporary) from None
    except requests.TooManyRedirects:
        raise ProviderUnreachable(
            f"{what} at {config.label}: the endpoint answered with a redirect, which is not followed "
            "(tokens and the client secret go only to the configured URL); nothing more was sent",
            retryable=False,
        ) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise ProviderUnreachable(f"{what} at {config.label}: HTTP {status}", retryable=True) from None
    except (requests.RequestException, ValueError) as exc:
        # ValueError: Authlib's "Token endpoint response is not a JSON object"
        raise ProviderUnreachable(f"{what} at {config.label}: {type(exc).__name__}: {exc}") from None
    if not isinstance(token, Mapping) or not token.get("access_token"):
        raise ProviderUnreachable(f"{what} at {config.label}: the answer has no access_token")
    return dict(token)


def exchange_code(config: ProviderConfig, code: str, verifier: str, timeout: float = 15.0) -> dict[str, Any]:
    """The authorization-code grant with the PKCE verifier; the provider's token answer."""
    session = _session(config, timeout)
    return _call(
        config,
        "the authorization-code exchange",
        lambda: session.fetch_token(
            config.token_url, grant_type="authorization_code", code=code, code_verifier=verifier
        ),
    )


def refresh(config: ProviderConfig, refresh_token: str, timeout: float = 15.0) -> dict[str, Any]:
    """The refresh-token grant; the answer keeps the old refresh token when the provider sent none."""
    session = _session(config, timeout)
    return _call(
        config, "the token refresh", lambda: session.refresh_token(config.token_url, refresh_token=refresh_token)
    )


def revoke(config: ProviderConfig, token: str, hint: str, timeout: float = 10.0) -> bool:
    """Revoke ``token`` at the provider (RFC 7009); whether it said yes. Never raises for the provider's sake."""
    if not config.revoke_url:
        return False
    # deferred: as in _session
    from authlib.integrations.requests_client import OAuthError

    session = _session(config, timeout)
    try:
        response = session.revoke_token(config.revoke_url, token=token, token_type_hint=hint)
    except (requests.RequestException, net.BlockedDestination, net.ResolutionError, OAuthError):
        return False
    if response.status_code != 200:
        return False
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("ok") is False)  # Slack: 200 {"ok": false}


def account_name(config: ProviderConfig, token: Mapping[str, Any], timeout: float = 10.0) -> str:
    """The workspace or account the token belongs to, shown on the credentials page ("" if unknown)."""
    if config.account_from_token is not None:
        return config.account_from_token(token)[:200]
    if not config.userinfo_url:
        return ""
    # deferred: as in _session
    from authlib.integrations.requests_client import OAuthError

    session = _session(config, timeout)
    session.token = dict(token)
    try:
        response = session.get(config.userinfo_url)
        info = response.json() if response.status_code == 200 else {}
    except (requests.RequestException, net.BlockedDestination, net.ResolutionError, OAuthError, ValueError):
        return ""
    if not isinstance(info, dict):
        return ""
    return str(info.get("email") or info.get("name") or info.get("sub") or "")[:200]
