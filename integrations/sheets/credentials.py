"""The Google credential kinds: a service account's JSON key (its address is shown, to share
sheets with), or a Google account connected through OAuth 2.0 (``google_oauth``: offline
access to the Sheets scope, PKCE S256).
"""

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from integrations.base import Field, KindSpec
from integrations.oauth.providers import ConnectionSpec, ProviderConfig, require_app_credentials

SHEETS_SCOPE = "https://www.googleapis.com/auth/spreadsheets"


def _service_account_key(public: dict[str, Any], secret: dict[str, Any]) -> dict[str, str]:
    key = secret.get("key")
    if key is None:
        return {}
    if key.get("type") != "service_account":
        return {"key": 'key.type must be "service_account" (download a service-account JSON key).'}
    for required in ("client_email", "private_key"):
        if not isinstance(key.get(required), str) or not key.get(required):
            return {"key": f"key.{required} is missing from the service-account JSON key."}
    if "BEGIN PRIVATE KEY" not in key["private_key"] and "BEGIN RSA PRIVATE KEY" not in key["private_key"]:
        return {"key": "key.private_key is not a PEM private key."}
    return {}


def _client_email(public: dict[str, Any], secret: dict[str, Any]) -> dict[str, Any]:
    # Shown so users know which address to share a spreadsheet with.
    return {"client_email": secret["key"]["client_email"]}


GOOGLE_SERVICE_ACCOUNT = KindSpec(
    "google_service_account",
    "Google service account",
    (Field("key", secret=True, type="json", help="The service account's JSON key file."),),
    extra_checks=(_service_account_key,),
    derived_public=_client_email,
)


def _oauth_config(fields: Mapping[str, Any]) -> ProviderConfig:
    client_id, client_secret = settings.POTAFLOW_GOOGLE_CLIENT_ID, settings.POTAFLOW_GOOGLE_CLIENT_SECRET
    require_app_credentials(
        "Google", client_id, client_secret, "POTAFLOW_GOOGLE_CLIENT_ID", "POTAFLOW_GOOGLE_CLIENT_SECRET"
    )
    return ProviderConfig(
        label="Google",
        client_id=client_id,
        client_secret=client_secret,
        authorize_url=settings.POTAFLOW_GOOGLE_OAUTH_AUTHORIZE_URL,
        token_url=settings.POTAFLOW_GOOGLE_OAUTH_TOKEN_URL,
        revoke_url=settings.POTAFLOW_GOOGLE_OAUTH_REVOKE_URL,
        scopes=("openid", "email", SHEETS_SCOPE),
        # offline: a refresh token; consent: a new one on every (re)connect, even when access was granted before.
        authorize_params={"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"},
        auth_method="client_secret_post",
        userinfo_url=settings.POTAFLOW_GOOGLE_USERINFO_URL,
        api_urls=(settings.POTAFLOW_GOOGLE_SHEETS_API_URL, settings.POTAFLOW_GOOGLE_DRIVE_API_URL),
    )


GOOGLE_OAUTH = KindSpec(
    "google_oauth",
    "Google (connected)",
    (),
    help="Connect Google: you sign in with Google and allow PotaFlow to edit your spreadsheets.",
    connection=ConnectionSpec(
        label="Google",
        config=_oauth_config,
        help="In Google Cloud console, APIs & Services > Credentials, an OAuth client of type Web application "
        "with this Authorized redirect URI; OAuth consent screen scopes: openid, email, "
        ".../auth/spreadsheets; publish the app (in Testing, Google expires refresh tokens after 7 days).",
    ),
)
