"""What each credential kind holds, and the validation of its fields.

Every kind lists its fields; a ``secret`` field is encrypted at rest and never
shown again, the others are stored in ``Credential.public_data`` and may be
displayed. ``clean_fields`` is the one validator used by services, the API
and the admin, so every entry point reports the same message naming the field.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from . import credential_hosts
from .models import CredentialKind

SMTP_SECURITY = ("none", "starttls", "ssl")


@dataclass(frozen=True)
class Field:
    name: str
    secret: bool = False
    required: bool = True
    type: str = "string"  # string | integer | email | choice | json | hosts
    choices: tuple[str, ...] = ()
    default: Any = None
    help: str = ""


@dataclass(frozen=True)
class KindSpec:
    kind: str
    fields: tuple[Field, ...]
    help: str = ""
    extra_checks: tuple = field(default=())

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    @property
    def public_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if not f.secret)


def _smtp_auth_pair(public: dict, secret: dict) -> dict[str, str]:
    if bool(public.get("username")) != bool(secret.get("password")):
        missing = "password" if public.get("username") else "username"
        return {missing: "username and password go together: set both or neither."}
    return {}


def _service_account_key(public: dict, secret: dict) -> dict[str, str]:
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


ALLOWED_HOSTS = Field(
    "allowed_hosts",
    type="hosts",
    help="Where this credential may be sent: hosts (api.example.com, *.example.com) or URL prefixes "
    "(https://api.example.com/v1/), comma-separated. A step calling any other URL fails before sending.",
)

KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            CredentialKind.HTTP_BEARER,
            (Field("token", secret=True, help="Sent as Authorization: Bearer <token>."), ALLOWED_HOSTS),
        ),
        KindSpec(
            CredentialKind.HTTP_BASIC,
            (Field("username"), Field("password", secret=True), ALLOWED_HOSTS),
        ),
        KindSpec(
            CredentialKind.HTTP_HEADER,
            (
                Field("header_name", help="e.g. X-API-Key"),
                Field("value", secret=True),
                ALLOWED_HOSTS,
            ),
        ),
        KindSpec(
            CredentialKind.SLACK_BOT_TOKEN,
            (Field("token", secret=True, help="A bot token, xoxb-..."),),
        ),
        KindSpec(
            CredentialKind.SMTP,
            (
                Field("host"),
                Field("port", type="integer", default=587),
                Field("username", required=False, default=""),
                Field("password", secret=True, required=False, default=""),
                Field("security", type="choice", choices=SMTP_SECURITY, default="starttls"),
                Field("from_email", type="email", help="Default From address."),
            ),
            extra_checks=(_smtp_auth_pair,),
        ),
        KindSpec(
            CredentialKind.SENDGRID_API_KEY,
            (
                Field("api_key", secret=True),
                Field("from_email", type="email", required=False, default="", help="Default From address."),
            ),
        ),
        KindSpec(
            CredentialKind.GOOGLE_SERVICE_ACCOUNT,
            (Field("key", secret=True, type="json", help="The service account's JSON key file."),),
            extra_checks=(_service_account_key,),
        ),
    )
}


def spec_for(kind: str) -> KindSpec:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValidationError(
            {"kind": f"unknown credential kind {kind!r}; one of: {', '.join(KINDS)}."}, code="invalid"
        ) from None


def _coerce(f: Field, value: Any) -> Any:
    if f.type == "integer":
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError("must be an integer") from None
        if not 1 <= number <= 65535:
            raise ValueError("must be between 1 and 65535")
        return number
    if f.type == "hosts":
        return credential_hosts.clean(value)
    if f.type == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = value.strip()
    if f.type == "choice" and value not in f.choices:
        raise ValueError(f"must be one of: {', '.join(f.choices)}")
    if f.type == "email" and value:
        try:
            validate_email(value)
        except ValidationError:
            raise ValueError("must be an email address") from None
    return value


def clean_fields(
    kind: str,
    data: dict[str, Any],
    *,
    existing_public: dict[str, Any] | None = None,
    existing_secret: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``data`` for ``kind`` and split it into (public, secret).

    On update, pass the stored values: a field left out keeps its value, so a
    secret never has to be typed again to change a public field. Raises a
    ``ValidationError`` whose message dict is keyed by the offending field.
    """
    spec = spec_for(kind)
    if not isinstance(data, dict):
        raise ValidationError({"secret": "must be an object with the fields of the credential kind."})
    known = {f.name for f in spec.fields}
    errors: dict[str, str] = {}
    for name in data:
        if name not in known:
            errors[name] = f"unknown field for a {kind} credential (fields: {', '.join(sorted(known))})."
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for f in spec.fields:
        stored = (existing_secret if f.secret else existing_public) or {}
        if f.name in data and data[f.name] not in (None, ""):
            try:
                value = _coerce(f, data[f.name])
            except ValueError as exc:
                errors[f.name] = f"{f.name} {exc}."
                continue
        elif f.name in stored:
            value = stored[f.name]
        elif f.required and f.default is None:
            errors[f.name] = f"{f.name} is required for a {kind} credential."
            continue
        else:
            value = f.default
        (secret if f.secret else public)[f.name] = value
    if not errors:
        for check in spec.extra_checks:
            errors.update(check(public, secret))
    if errors:
        raise ValidationError(errors)
    if kind == CredentialKind.GOOGLE_SERVICE_ACCOUNT:
        # Shown so users know which address to share a spreadsheet with.
        public["client_email"] = secret["key"]["client_email"]
    return public, secret
