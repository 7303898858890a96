"""The tokens a step uses: refreshed so that none is ever lost, or the connection marked *needs reconnect*.

``open_connection`` gives an action its ``TokenSource`` (``integrations.base``):
the stored access token, refreshed first when it expires within
``POTAFLOW_OAUTH_REFRESH_MARGIN_SECONDS`` (proactive). An action whose call is
refused as unauthorized asks ``refreshed_after(token)`` once (reactive).

Every refresh is **single-flight** (``_refresh``): the connection's row is
locked ``FOR UPDATE`` from reading the refresh token to committing the new
pair, so of twenty steps finding the token expired one refreshes and the
others, let in after its commit, read the new token (they re-read the row and
see that it changed). The new pair is committed **before** it is used; a
provider that sends no new refresh token keeps the old one. Only when the
provider refuses the refresh token itself (``invalid_grant`` or the
provider's own code for it), read under the lock, is the connection marked
``needs_reconnect``: steps then fail at once with "reconnect <provider> in
Credentials" (a ``PermanentError``: no retries), the pages say so and a
replay that needs it is refused until an admin reconnects (same id).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.redaction import REDACTED
from integrations.credential_kinds import spec_for
from integrations.crypto import decrypt_json, encrypt_json
from integrations.errors import PermanentError, RetryableError

from . import client
from .models import Connection, ConnectionStatus
from .providers import ConnectionSpec, NotConfigured, ProviderConfig

logger = logging.getLogger(__name__)


def connection_spec(kind: str) -> ConnectionSpec | None:
    """The provider of a connection kind; None for a credential typed in."""
    spec = spec_for(kind).connection
    return spec if isinstance(spec, ConnectionSpec) else None


def is_connection_kind(kind: str) -> bool:
    return connection_spec(kind) is not None


def provider_config(kind: str, name: str, revealed: Mapping[str, Any]) -> ProviderConfig:
    """The provider config of a connection; ``NotConfigured`` when staff have not set the app credentials."""
    spec = connection_spec(kind)
    if spec is None:
        raise ValueError(f"{kind} is not a connection kind")
    return replace(spec.config(revealed), label=spec.label_for(name))


def reconnect_message(label: str, problem: str = "") -> str:
    """What a step using a dead connection fails with (the one wording, for steps, pages and replays)."""
    because = f" ({problem})" if problem else ""
    return f"the {label} connection can no longer be used{because}: reconnect {label} in Credentials"


def _expiring(expires_at: datetime | None) -> bool:
    if expires_at is None:
        return False
    return expires_at <= timezone.now() + timedelta(seconds=settings.POTAFLOW_OAUTH_REFRESH_MARGIN_SECONDS)


def _expires_at(answer: Mapping[str, Any]) -> datetime | None:
    try:
        seconds = int(answer["expires_in"])
    except (KeyError, TypeError, ValueError):
        return None
    return timezone.now() + timedelta(seconds=max(seconds, 0))


def granted_scopes(answer: Mapping[str, Any], asked: tuple[str, ...]) -> list[str]:
    """The scopes the provider says it granted (space- or comma-separated), else those asked for."""
    scope = answer.get("scope")
    if isinstance(scope, str) and scope.strip():
        return [s for s in scope.replace(",", " ").split() if s]
    return list(asked)


def _stored(answer: Mapping[str, Any], previous_refresh: str = "") -> dict[str, str]:
    return {
        "access_token": str(answer["access_token"]),
        "refresh_token": str(answer.get("refresh_token") or previous_refresh or ""),
        "token_type": str(answer.get("token_type") or "Bearer"),
    }


# -- writes of the Connect flow ---------------------------------------------------------
def connection_store(*, credential_id: int, answer: Mapping[str, Any], account: str, scopes: list[str]) -> Connection:
    """Store the tokens of a (re)connect: the connection is ``connected`` again under the same id."""
    with transaction.atomic():
        row = Connection.objects.select_for_update().filter(pk=credential_id).first()
        if row is None:
            row = Connection(credential_id=credential_id)
        row.token_ciphertext = encrypt_json(_stored(answer))
        row.status = ConnectionStatus.CONNECTED
        row.expires_at = _expires_at(answer)
        row.scopes = scopes
        row.account = account
        row.connected_at = timezone.now()
        row.refreshed_at = None
        row.problem = ""
        row.save()
    return row


def stored_tokens(row: Connection) -> dict[str, str]:
    """The decrypted tokens of a connection row (for revocation and the action's token; never shown)."""
    return {k: str(v) for k, v in decrypt_json(row.token_ciphertext).items()}


# -- what a step uses -------------------------------------------------------------------
@dataclass
class ConnectionToken:
    """An action's ``TokenSource``: the current access token and the reactive refresh.

    ``issued`` lists every access token handed out and ``refresh_tokens`` those
    read, for the scrubber of what is stored.
    """

    credential_id: int
    label: str
    config: ProviderConfig
    timeout: float
    account: str = ""
    issued: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)

    @property
    def access_token(self) -> str:
        return self.issued[-1]

    def refreshed_after(self, rejected: str) -> str:
        tokens = _refresh(self.credential_id, self.config, self.label, self.timeout, rejected=rejected)
        self.issued.append(tokens["access_token"])
        self.refresh_tokens.append(tokens["refresh_token"])
        return tokens["access_token"]

    def secret_values(self) -> list[str]:
        return [t for t in (*self.issued, *self.refresh_tokens) if t]


def open_connection(
    *, credential_id: int, kind: str, name: str, revealed: Mapping[str, Any], timeout: float
) -> ConnectionToken:
    """The connection's token for a step, refreshed first when it is about to expire.

    Raises ``PermanentError`` when it is not connected or needs reconnecting
    (no retry can help), ``RetryableError`` when the provider could not be
    reached for a needed refresh.
    """
    spec = connection_spec(kind)
    label = spec.label_for(name) if spec else name
    try:
        config = provider_config(kind, name, revealed)
    except NotConfigured as exc:
        raise PermanentError(str(exc)) from None
    row = Connection.objects.filter(pk=credential_id).first()
    if row is None or row.status == ConnectionStatus.NOT_CONNECTED:
        raise PermanentError(f"{label} is not connected yet: connect {label} in Credentials")
    if row.status == ConnectionStatus.NEEDS_RECONNECT:
        raise PermanentError(reconnect_message(label, row.problem))
    tokens = stored_tokens(row)
    if _expiring(row.expires_at):
        tokens = _refresh(credential_id, config, label, timeout, rejected=None)
    return ConnectionToken(
        credential_id=credential_id,
        label=label,
        config=config,
        timeout=timeout,
        account=row.account,
        issued=[tokens["access_token"]],
        refresh_tokens=[tokens["refresh_token"]],
    )


def _masked(text: str, tokens: Mapping[str, str]) -> str:
    """``text`` (a provider's answer quoted in an error) without any of ``tokens``: a provider may echo them."""
    for value in sorted((v for v in tokens.values() if len(v) >= 8), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def _refresh(
    credential_id: int, config: ProviderConfig, label: str, timeout: float, *, rejected: str | None
) -> dict[str, str]:
    """Single-flight refresh under the row lock; the tokens to use, committed before they are returned.

    ``rejected``: the access token the provider just refused (reactive), or
    None (proactive: the stored one is about to expire). Either way, a row that
    changed while this process waited for the lock means another one
    refreshed: its token is used, no second refresh is made.
    """
    dead = ""
    with transaction.atomic():
        row = Connection.objects.select_for_update().filter(pk=credential_id).first()
        if row is None:
            raise PermanentError(f"{label} is not connected (it was disconnected): connect {label} in Credentials")
        if row.status == ConnectionStatus.NEEDS_RECONNECT:
            raise PermanentError(reconnect_message(label, row.problem))
        tokens = stored_tokens(row)
        if rejected is None and not _expiring(row.expires_at):
            return tokens  # refreshed by another process while this one waited
        if rejected is not None and tokens["access_token"] != rejected:
            return tokens  # idem
        if not tokens.get("refresh_token"):
            dead = f"{label} refused the token and gave no refresh token"
        else:
            try:
                answer = client.refresh(config, tokens["refresh_token"], timeout)
            except client.GrantRefused as exc:
                if exc.error not in config.dead_grant_errors:
                    raise PermanentError(f"refreshing the {label} token failed: {_masked(str(exc), tokens)}") from None
                dead = _masked(str(exc), tokens)
            except client.ProviderUnreachable as exc:
                error = RetryableError if exc.retryable else PermanentError
                raise error(f"refreshing the {label} token failed: {_masked(str(exc), tokens)}") from None
            else:
                tokens = _stored(answer, tokens["refresh_token"])
                row.token_ciphertext = encrypt_json(tokens)
                row.expires_at = _expires_at(answer)
                row.refreshed_at = timezone.now()
                row.refresh_count += 1
                if answer.get("scope"):
                    row.scopes = granted_scopes(answer, tuple(row.scopes))
                row.save(update_fields=["token_ciphertext", "expires_at", "refreshed_at", "refresh_count", "scopes"])
        if dead:
            row.status = ConnectionStatus.NEEDS_RECONNECT
            row.problem = dead[:500]
            row.save(update_fields=["status", "problem"])
    if dead:
        logger.warning("connection %s needs reconnecting: %s", credential_id, dead)
        raise PermanentError(reconnect_message(label, dead))
    logger.info("connection %s: access token refreshed", credential_id)
    return tokens
