"""Connect and Disconnect: the authorization-code flow with ``state`` and PKCE (S256).

``connect_start`` records a ``PendingAuthorization`` (the ``state`` hashed,
the PKCE verifier encrypted) bound to the user, the organization and the
provider, and returns the provider's consent URL. ``connect_finish`` takes
the provider's redirect back (``/oauth/callback/``): the state must be known,
unused, unexpired and the signed-in user's own, the user still an admin of
that organization, the provider must have said yes and the code must be
exchanged; only then is anything saved. Any failure raises ``ConnectRefused``
with the sentence the page shows, and nothing is stored. The state is spent
by the first callback that presents it, whatever follows.
"""

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Organization, Role, User
from accounts.selectors import organization_ids_for
from integrations.crypto import decrypt_json, encrypt_json
from integrations.models import Credential
from integrations.services import credential_create, credential_reveal

from . import client
from .models import Connection, PendingAuthorization
from .providers import NotConfigured
from .tokens import connection_spec, connection_store, granted_scopes, provider_config, stored_tokens


class ConnectRefused(Exception):  # noqa: N818 - a refusal shown to the user as it is
    """The sentence the credentials page shows; nothing was saved."""


@dataclass(frozen=True)
class Connected:
    credential: Credential
    account: str
    reconnected: bool


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def connect_start(*, user: User, organization: Organization, kind: str, credential: Credential | None = None) -> str:
    """The provider's consent URL for a new connection of ``kind`` or for (re)connecting ``credential``.

    The caller has checked that ``user`` is an admin of ``organization`` (and
    that ``credential`` belongs to it). Raises ``ConnectRefused`` for a kind
    that is not a connection or a provider staff have not set up.
    """
    spec = connection_spec(kind)
    if spec is None:
        raise ConnectRefused(f"A {kind} credential is typed in, not connected.")
    revealed = credential_reveal(credential) if credential is not None else {}
    try:
        config = provider_config(kind, credential.name if credential else (spec.label or kind), revealed)
    except NotConfigured as exc:
        raise ConnectRefused(str(exc)) from None
    state, verifier = secrets.token_urlsafe(32), client.new_verifier()
    now = timezone.now()
    with transaction.atomic():
        PendingAuthorization.objects.filter(expires_at__lte=now).delete()
        keep = max(settings.POTAFLOW_OAUTH_MAX_PENDING - 1, 0)
        older = (
            PendingAuthorization.objects.filter(user=user)
            .order_by("-created_at", "-pk")
            .values_list("pk", flat=True)[keep:]
        )
        PendingAuthorization.objects.filter(pk__in=list(older)).delete()
        PendingAuthorization.objects.create(
            state_hash=_hash(state),
            user=user,
            organization=organization,
            kind=kind,
            credential=credential,
            verifier_ciphertext=encrypt_json({"verifier": verifier}),
            expires_at=now + timedelta(seconds=settings.POTAFLOW_OAUTH_STATE_SECONDS),
        )
    return client.authorization_url(config, state, verifier)


def _spend(user: User, state: str) -> PendingAuthorization:
    """The pending authorization of ``state``, deleted (single use) if it is the user's own."""
    with transaction.atomic():
        pending = (
            PendingAuthorization.objects.select_for_update(of=("self",))
            .select_related("organization", "credential")
            .filter(state_hash=_hash(state))
            .first()
        )
        if pending is None:
            raise ConnectRefused(
                "This connection attempt is unknown, was already used, or was replaced by newer ones "
                f"(at most {settings.POTAFLOW_OAUTH_MAX_PENDING} at once, POTAFLOW_OAUTH_MAX_PENDING): "
                "nothing was saved. Start again with Connect."
            )
        if pending.user_id != user.pk:
            # Left in place: its owner may still finish it; this session cannot.
            raise ConnectRefused(
                "This connection attempt was started by another user or in another organization's session: "
                "nothing was saved."
            )
        pending.delete()
    if pending.expires_at <= timezone.now():
        raise ConnectRefused(
            f"This connection attempt expired (after {settings.POTAFLOW_OAUTH_STATE_SECONDS} s, "
            "POTAFLOW_OAUTH_STATE_SECONDS): nothing was saved. Start again with Connect."
        )
    if not organization_ids_for(user, minimum_role=Role.ADMIN).filter(organization_id=pending.organization_id).exists():
        raise ConnectRefused(f"You are no longer an admin of {pending.organization.name}: nothing was saved.")
    return pending


def connect_finish(*, user: User, params: Mapping[str, str]) -> Connected:
    """Finish a Connect from the provider's redirect (its query parameters); ``ConnectRefused`` otherwise."""
    state = params.get("state") or ""
    if not state:
        raise ConnectRefused("The provider's answer has no state: nothing was saved. Start again with Connect.")
    pending = _spend(user, state)
    spec = connection_spec(pending.kind)
    credential = pending.credential
    name = credential.name if credential is not None else ((spec.label if spec else None) or pending.kind)
    try:
        config = provider_config(pending.kind, name, credential_reveal(credential) if credential else {})
    except NotConfigured as exc:
        raise ConnectRefused(str(exc)) from None
    error = params.get("error")
    if error:
        if error == "access_denied":
            raise ConnectRefused(f"{config.label} was not connected: access was not allowed. Nothing was saved.")
        detail = (params.get("error_description") or "")[:200]
        raise ConnectRefused(
            f"{config.label} answered {error[:100]}{': ' + detail if detail else ''}. Nothing was saved."
        )
    code = params.get("code") or ""
    if not code:
        raise ConnectRefused(f"{config.label}'s answer has no authorization code: nothing was saved.")
    verifier = decrypt_json(pending.verifier_ciphertext)["verifier"]
    try:
        answer = client.exchange_code(config, code, verifier)
    except (client.GrantRefused, client.ProviderUnreachable) as exc:
        raise ConnectRefused(f"{config.label} was not connected: {exc}. Nothing was saved.") from None
    account = client.account_name(config, answer)
    scopes = granted_scopes(answer, config.scopes)
    with transaction.atomic():
        reconnected = credential is not None
        if credential is None:
            credential = credential_create(
                organization=pending.organization,
                name=_free_name(pending.organization_id, f"{config.label} {account}".strip()),
                kind=pending.kind,
                secret={},
            )
        connection_store(credential_id=credential.pk, answer=answer, account=account, scopes=scopes)
    return Connected(credential=credential, account=account, reconnected=reconnected)


def _free_name(organization_id: int, wanted: str) -> str:
    base = wanted[:90] or "Connection"
    taken = set(
        Credential.objects.filter(organization_id=organization_id, name__startswith=base).values_list("name", flat=True)
    )
    if base not in taken:
        return base
    return next(f"{base} ({n})" for n in range(2, len(taken) + 3) if f"{base} ({n})" not in taken)


def connection_disconnect(credential: Credential) -> bool:
    """Revoke the tokens at the provider where it can (best effort), then forget them.

    The credential stays (not connected, same id: Connect brings it back
    without editing workflows). Returns whether the provider confirmed the
    revocation.
    """
    row = Connection.objects.filter(pk=credential.pk).first()
    if row is None:
        return False
    revoked = False
    try:
        config = provider_config(credential.kind, credential.name, credential_reveal(credential))
    except NotConfigured:
        config = None
    if config is not None:
        tokens = stored_tokens(row)
        hint = config.revoke_hint if tokens.get(config.revoke_hint) else "access_token"
        revoked = client.revoke(config, tokens[hint], hint)
    Connection.objects.filter(pk=credential.pk).delete()
    return revoked


def credential_delete(credential: Credential) -> None:
    """Delete a credential; a connection's tokens are revoked at the provider first (best effort)."""
    if connection_spec(credential.kind) is not None:
        connection_disconnect(credential)
    credential.delete()
