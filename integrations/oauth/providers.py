"""What a connection kind says about its OAuth 2.0 provider (``KindSpec.connection``).

A ``ConnectionSpec`` turns a credential's revealed fields into a
``ProviderConfig``: the app credentials (client id and secret), the
endpoints, the scopes, how the client authenticates at the token endpoint
and how the account's name is learned. Slack's and Google's come from
settings set once by staff (``integrations/slack/oauth.py``,
``integrations/sheets/oauth.py``); the generic ``oauth2`` kind's from the
credential's own fields (``integrations/oauth/credentials.py``).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

# Every provider's answer for a grant that is gone (RFC 6749 §5.2): reconnecting is the only way out.
DEAD_GRANT_ERRORS = frozenset({"invalid_grant"})


class NotConfigured(Exception):  # noqa: N818 - a state, named as users see it
    """The provider's app credentials are not set; the message names the settings."""


@dataclass(frozen=True)
class ProviderConfig:
    """Everything the OAuth client needs for one connection (never stored as such, never shown)."""

    label: str
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    revoke_url: str = ""
    # Which token Disconnect revokes: the refresh token ends the whole grant (RFC 7009 §2.1);
    # Slack's auth.revoke takes the access token.
    revoke_hint: str = "refresh_token"
    scope_separator: str = " "
    auth_method: str = "client_secret_basic"  # or client_secret_post (RFC 7591 names)
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    # How the account's name is learned: from the token answer (Slack's team), else the userinfo endpoint.
    account_from_token: Callable[[Mapping[str, Any]], str] | None = None
    userinfo_url: str = ""
    # Error codes of the token endpoint meaning the refresh token is dead (besides invalid_grant).
    dead_grant_errors: frozenset[str] = DEAD_GRANT_ERRORS
    # Hosts (and URL prefixes) the access token may be sent to, for the message of a refusal.
    api_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConnectionSpec:
    """A kind's provider: ``label`` ("Slack"; None: the credential's own name) and its config."""

    label: str | None
    config: Callable[[Mapping[str, Any]], ProviderConfig]
    # Shown next to Connect: what the admin registers at the provider (scopes, where).
    help: str = ""
    # The credential's fields naming who issued its tokens and to which client (the generic kind's
    # client id and endpoints): they cannot change while it is connected, or the refresh token and
    # the client secret would go to an endpoint that did not issue them.
    bound_fields: tuple[str, ...] = ()

    def label_for(self, credential_name: str) -> str:
        return self.label or f"“{credential_name}”"


def redirect_uri() -> str:
    """Where every provider sends the user back: ``<POTAFLOW_BASE_URL>/oauth/callback/``.

    Derived from the configured public origin, never from the request, so it
    is the registered one behind a TLS-terminating proxy too.
    """
    return str(settings.POTAFLOW_BASE_URL).rstrip("/") + "/oauth/callback/"


def require_app_credentials(
    label: str, client_id: str, client_secret: str, id_setting: str, secret_setting: str
) -> None:
    """Raise ``NotConfigured`` naming the settings when staff have not set the app credentials."""
    missing = [name for name, value in ((id_setting, client_id), (secret_setting, client_secret)) if not value]
    if missing:
        raise NotConfigured(
            f"{label} is not set up on this PotaFlow yet: staff must set {' and '.join(missing)} "
            f"(the {label} app's credentials; README “Connecting Slack and Google”)."
        )
