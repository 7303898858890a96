"""Credential writes and the one read that decrypts (``credential_reveal``)."""

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from accounts.models import Organization

from .credential_kinds import clean_fields, spec_for
from .crypto import decrypt_json, encrypt_json, rotate
from .models import Connection, Credential, PendingAuthorization
from .oauth.tokens import ConnectionToken, connection_spec, is_connection_kind, open_connection


class CredentialInvalid(ValidationError):  # noqa: N818 - reads as a state, part of the API
    """A credential refused: one of its kind's fields, or the credential itself (name, kind, organization).

    ``message_dict`` is flat, keyed by the offending field, as the forms show
    it. ``api_errors`` names them as the API does: the kind's fields sit under
    ``secret`` (the API takes them there) and the one cross-field rule, the
    unique name per organization, is the ``name`` field's error.
    """

    def __init__(self, errors: dict[str, Any], *, kind_fields: bool = False) -> None:
        super().__init__(errors)
        self.kind_fields = kind_fields

    @property
    def api_errors(self) -> dict[str, Any]:
        errors = self.message_dict
        if self.kind_fields:
            return {"secret": errors}
        return {("name" if key == NON_FIELD_ERRORS else key): value for key, value in errors.items()}


def _clean_fields(
    kind: str, data: dict[str, Any], **existing: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return clean_fields(kind, data, **existing)
    except ValidationError as exc:
        # A refusal of the whole field set ("secret") or of the kind is about the credential, not one kind field.
        raise CredentialInvalid(exc.error_dict, kind_fields=not {"secret", "kind"} & exc.error_dict.keys()) from exc


def _save(credential: Credential) -> Credential:
    try:
        credential.full_clean(exclude=["secret_ciphertext"])
    except ValidationError as exc:
        raise CredentialInvalid(exc.error_dict) from exc
    credential.save()
    return credential


def credential_create(
    *,
    organization: Organization,
    name: str,
    kind: str,
    secret: dict[str, Any],
) -> Credential:
    """Validate the kind's fields, encrypt the secret ones and store the credential.

    ``secret`` holds all of the kind's fields (secret and public alike, as the
    API accepts them); invalid input raises ``CredentialInvalid`` keyed by field.
    """
    public, secret_fields = _clean_fields(kind, secret)
    credential = Credential(
        organization=organization,
        name=name,
        kind=kind,
        public_data=public,
        secret_ciphertext=encrypt_json(secret_fields),
    )
    return _save(credential)


def credential_update(
    *,
    credential: Credential,
    name: str | None = None,
    secret: dict[str, Any] | None = None,
    organization: Organization | None = None,
    kind: str | None = None,
) -> Credential:
    """Rename and/or change fields; omitted fields (secret ones included) keep their value.

    ``organization`` and ``kind`` may be given only as they are: a credential
    never moves to another organization (its workflows would use a foreign
    secret) and never changes kind (its fields would no longer fit).
    """
    if organization is not None and organization != credential.organization:
        raise CredentialInvalid({"organization": ["A credential cannot move to another organization."]})
    if kind is not None and kind != credential.kind:
        raise CredentialInvalid({"kind": ["The kind of a credential cannot change; create a new one."]})
    if name is not None:
        credential.name = name
    if secret is not None:
        public, secret_fields = _clean_fields(
            credential.kind,
            secret,
            existing_public=credential.public_data,
            existing_secret=decrypt_json(credential.secret_ciphertext),
        )
        credential_refuse_rebinding(credential, public)
        credential.public_data = public
        credential.secret_ciphertext = encrypt_json(secret_fields)
    return _save(credential)


def credential_refuse_rebinding(credential: Credential, public: dict[str, Any]) -> None:
    """Refuse new values for a connected credential's ``bound_fields`` (its client id and endpoints).

    Its tokens were issued to that client by that provider: with another token
    or revocation URL the next refresh or Disconnect would hand the refresh
    token and the client secret to whoever answers there. Disconnect first
    (the tokens are revoked and forgotten), change the fields, Connect again.
    Raises ``CredentialInvalid`` keyed by field (the API, the member form and the admin show it).
    """
    spec = connection_spec(credential.kind)
    if spec is None or not spec.bound_fields or credential.pk is None:
        return
    changed = [f for f in spec.bound_fields if (public.get(f) or "") != (credential.public_data.get(f) or "")]
    if not changed or not Connection.objects.filter(pk=credential.pk).exists():
        return
    label = spec.label_for(credential.name)
    raise CredentialInvalid(
        {
            name: [
                f"cannot change while {label} is connected: its tokens were issued to this client by this "
                f"provider. Disconnect it first, then change {name} and Connect again."
            ]
            for name in changed
        },
        kind_fields=True,
    )


def credential_reveal(credential: Credential) -> dict[str, Any]:
    """The credential's fields in clear (public merged with decrypted secret ones).

    Callers: the engine, to fill ``ActionContext.credential`` just before an
    action runs; a workflow's test run (``workflows.dry_run``), for the one
    step it sends or the steps without side effects; the admin's credential
    form, to validate a change against the stored secret fields. Nothing it
    returns may be stored or logged.
    """
    return {**credential.public_data, **decrypt_json(credential.secret_ciphertext)}


def credential_secret_values(credential: Credential, revealed: dict[str, Any]) -> list[str]:
    """Every secret string of a revealed credential, as it may come back from a destination.

    The engine scrubs these from whatever it stores (outputs, errors, attempt
    records): a destination that echoes its request must not leak them.
    Includes the exact header values the kind sends (``KindSpec.sent_secrets``:
    e.g. Basic auth's encoded pair), so the two cannot disagree.
    """
    values: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            values.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    spec = spec_for(credential.kind)
    for name in spec.secret_fields:
        collect(revealed.get(name))
    collect(spec.sent_secrets(revealed))
    return sorted(set(values), key=len, reverse=True)


@dataclass
class StepCredential:
    """A credential as one step uses it: its fields in clear and, for a connection, its token source.

    ``fields`` of a connection hold its public fields, ``access_token`` (the
    current one) and ``account`` (the name shown for it). ``secret_values()`` is what the engine scrubs from whatever it
    stores, tokens obtained by a refresh during the step included.
    """

    fields: dict[str, Any]
    kind: str
    connection: ConnectionToken | None = None
    _secrets: list[str] = field(default_factory=list)

    def secret_values(self) -> list[str]:
        values = [*self._secrets, *(self.connection.secret_values() if self.connection else ())]
        return sorted(set(values), key=len, reverse=True)


def credential_for_step(credential: Credential, *, timeout: float) -> StepCredential:
    """What a step's action receives for ``credential`` (the engine and a test run's sent step).

    A connection's token is refreshed first when it is about to expire; a
    connection that is not connected or needs reconnecting raises
    ``PermanentError`` naming what to do ("reconnect Slack in Credentials").
    """
    revealed = credential_reveal(credential)
    secrets = credential_secret_values(credential, revealed)
    if not is_connection_kind(credential.kind):
        return StepCredential(fields=revealed, kind=credential.kind, _secrets=secrets)
    connection = open_connection(
        credential_id=credential.pk, kind=credential.kind, name=credential.name, revealed=revealed, timeout=timeout
    )
    fields = {**revealed, "access_token": connection.access_token, "account": connection.account}
    return StepCredential(fields=fields, kind=credential.kind, connection=connection, _secrets=secrets)


def credential_secret_markers(credential: Credential) -> dict[str, bool]:
    """Which secret fields hold a value, without revealing them (for the API and admin)."""
    secret = decrypt_json(credential.secret_ciphertext)
    return {name: bool(secret.get(name)) for name in spec_for(credential.kind).secret_fields}


def credentials_rotate_keys(*, batch_size: int = 500) -> int:
    """Re-encrypt every credential with the first configured key; returns how many were rewritten.

    A connection's tokens are rewritten with it, and so are the PKCE verifiers of
    Connects in progress. Each row is locked while it is rewritten so a
    concurrent update (a refresh) is not lost.
    """
    count = 0
    ids = list(Credential.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), batch_size):
        with transaction.atomic():
            for credential in Credential.objects.select_for_update().filter(pk__in=ids[start : start + batch_size]):
                new = rotate(credential.secret_ciphertext)
                Credential.objects.filter(pk=credential.pk).update(secret_ciphertext=new)
                count += 1
            for row in Connection.objects.select_for_update().filter(pk__in=ids[start : start + batch_size]):
                Connection.objects.filter(pk=row.pk).update(token_ciphertext=rotate(row.token_ciphertext))
    with transaction.atomic():
        for pending in PendingAuthorization.objects.select_for_update():
            PendingAuthorization.objects.filter(pk=pending.pk).update(
                verifier_ciphertext=rotate(pending.verifier_ciphertext)
            )
    return count
