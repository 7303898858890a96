"""The Google credential kind: a service account's JSON key (its address is shown, to share sheets with)."""

from typing import Any

from integrations.base import Field, KindSpec


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
