"""The e-mail credential kinds: an SMTP server (pinned to the checked address) and a SendGrid API key."""

from typing import Any

from integrations.base import Field, KindSpec

SMTP_SECURITY = ("none", "starttls", "ssl")


def _smtp_auth_pair(public: dict[str, Any], secret: dict[str, Any]) -> dict[str, str]:
    if bool(public.get("username")) != bool(secret.get("password")):
        missing = "password" if public.get("username") else "username"
        return {missing: "username and password go together: set both or neither."}
    return {}


SMTP = KindSpec(
    "smtp",
    "SMTP server",
    (
        Field("host"),
        Field("port", type="integer", default=587),
        Field("username", required=False, default=""),
        Field("password", secret=True, required=False, default=""),
        Field("security", type="choice", choices=SMTP_SECURITY, default="starttls"),
        Field("from_email", type="email", help="Default From address."),
    ),
    extra_checks=(_smtp_auth_pair,),
)
SENDGRID_API_KEY = KindSpec(
    "sendgrid_api_key",
    "SendGrid API key",
    (
        Field("api_key", secret=True),
        Field("from_email", type="email", required=False, default="", help="Default From address."),
    ),
)
