"""Validation of a credential's fields, the same for services, the API and the admin.

Each integration declares its kinds (``integrations/<name>/credentials.py``,
a ``KindSpec`` each); ``KINDS`` collects them from the registry. A ``secret``
field is encrypted at rest and never shown again, the others are stored in
``Credential.public_data`` and may be displayed. ``clean_fields`` is the one
validator, so every entry point reports the same message naming the field.
"""

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from . import registry
from .base import Field, KindSpec

__all__ = ["KINDS", "Field", "KindSpec", "clean_fields", "spec_for"]

KINDS: dict[str, KindSpec] = registry.credential_kinds()


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
    if f.coerce is not None:
        return f.coerce(value)
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
    if spec.derived_public is not None:
        public.update(spec.derived_public(public, secret))
    return public, secret
