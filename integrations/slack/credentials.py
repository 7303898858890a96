"""The Slack credential kinds: a bot token typed in (``slack_bot_token``) or connected
through Slack's OAuth v2 (``slack_oauth``); either is sent only to ``POTAFLOW_SLACK_API_URL``.
"""

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from integrations.base import Field, KindSpec
from integrations.oauth.providers import ConnectionSpec, ProviderConfig, require_app_credentials

SLACK_BOT_TOKEN = KindSpec(
    "slack_bot_token",
    "Slack bot token",
    (Field("token", secret=True, help="A bot token, xoxb-..."),),
)


def _oauth_config(fields: Mapping[str, Any]) -> ProviderConfig:
    client_id, client_secret = settings.POTAFLOW_SLACK_CLIENT_ID, settings.POTAFLOW_SLACK_CLIENT_SECRET
    require_app_credentials(
        "Slack", client_id, client_secret, "POTAFLOW_SLACK_CLIENT_ID", "POTAFLOW_SLACK_CLIENT_SECRET"
    )
    api = settings.POTAFLOW_SLACK_API_URL.rstrip("/") + "/"
    return ProviderConfig(
        label="Slack",
        client_id=client_id,
        client_secret=client_secret,
        authorize_url=settings.POTAFLOW_SLACK_OAUTH_AUTHORIZE_URL,
        token_url=api + "oauth.v2.access",  # code and refresh_token grants (token rotation)
        revoke_url=api + "auth.revoke",
        revoke_hint="access_token",
        scopes=tuple(settings.POTAFLOW_SLACK_OAUTH_SCOPES),
        scope_separator=",",  # Slack's authorize URL takes comma-separated bot scopes
        auth_method="client_secret_post",
        account_from_token=_team_name,
        # Slack answers 200 {"ok": false, "error": ...}; these say the refresh token is gone.
        dead_grant_errors=frozenset({"invalid_grant", "invalid_refresh_token", "token_revoked", "invalid_client_id"}),
        api_urls=(api,),
    )


def _team_name(token: Mapping[str, Any]) -> str:
    team = token.get("team")
    return str(team.get("name") or team.get("id") or "") if isinstance(team, dict) else ""


SLACK_OAUTH = KindSpec(
    "slack_oauth",
    "Slack (connected)",
    (),
    help="Connect Slack: a workspace admin allows PotaFlow's Slack app; its bot token is stored.",
    connection=ConnectionSpec(
        label="Slack",
        config=_oauth_config,
        help="In the Slack app's settings, under OAuth & Permissions, add this Redirect URL; "
        "bot token scopes: chat:write, chat:write.public.",
    ),
)
