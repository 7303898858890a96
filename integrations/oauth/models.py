"""A connection's tokens (``Connection``) and the Connects in progress (``PendingAuthorization``).

Loaded through ``integrations.models`` (the ``integrations`` app's models module).
"""

from django.conf import settings
from django.db import models


class ConnectionStatus(models.TextChoices):
    NOT_CONNECTED = "not_connected", "Not connected"
    CONNECTED = "connected", "Connected"
    NEEDS_RECONNECT = "needs_reconnect", "Needs reconnect"


class Connection(models.Model):
    """The OAuth tokens of a connection credential (one row per credential, same id for life).

    ``token_ciphertext`` is Fernet-encrypted JSON (``access_token``,
    ``refresh_token``, ``token_type``) with the credentials' keys. The row is
    the lock of the single-flight refresh (``integrations.oauth.tokens``):
    whoever refreshes holds it ``FOR UPDATE`` from reading the refresh token
    to storing the new pair. No row: not connected yet.
    """

    credential = models.OneToOneField(
        "integrations.Credential", on_delete=models.CASCADE, primary_key=True, related_name="connection"
    )
    status = models.CharField(max_length=20, choices=ConnectionStatus.choices, default=ConnectionStatus.CONNECTED)
    token_ciphertext = models.TextField(editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=list, blank=True)
    account = models.CharField(max_length=200, blank=True, help_text="The workspace or account connected.")
    connected_at = models.DateTimeField()
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_count = models.PositiveIntegerField(default=0)
    problem = models.TextField(blank=True, help_text="Why it needs reconnecting (the provider's answer).")

    class Meta:
        db_table = "integrations_connection"

    def __str__(self) -> str:
        return f"{self.credential_id}: {self.status}"


class PendingAuthorization(models.Model):
    """A Connect in progress: its ``state`` (stored hashed), bound to a user, an organization and a
    provider (a kind, and the credential when reconnecting); single use, expiring
    (``POTAFLOW_OAUTH_STATE_SECONDS``). ``verifier_ciphertext``: the PKCE code verifier, encrypted."""

    state_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32)
    credential = models.ForeignKey("integrations.Credential", null=True, on_delete=models.CASCADE, related_name="+")
    verifier_ciphertext = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "integrations_pending_authorization"
        indexes = [models.Index(fields=["user", "created_at"], name="pending_auth_user_created")]

    def __str__(self) -> str:
        return f"{self.kind} for user {self.user_id} until {self.expires_at:%Y-%m-%d %H:%M}"
