from django.db import models

from . import registry

# Every credential kind the integrations declare (``integrations/<name>/credentials.py``),
# e.g. ``CredentialKind.SMTP == "smtp"``. The values are stored: never rename one.
# The stubs type only the one-argument form of the functional API (members are known only at run time).
CredentialKind = models.TextChoices(  # type: ignore[call-overload]
    "CredentialKind", [(kind.upper(), (kind, label)) for kind, label in registry.credential_kind_choices()]
)


class Credential(models.Model):
    """A secret an action uses. ``secret_ciphertext`` is Fernet-encrypted JSON;
    ``public_data`` holds the non-secret fields that may be shown (host, username...).
    """

    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=registry.credential_kind_choices)
    secret_ciphertext = models.TextField(editable=False)
    public_data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="unique_credential_name_per_org"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


# Connections' tables live with their machinery (integrations/oauth); imported here so the app loads them.
from .oauth.models import Connection, ConnectionStatus, PendingAuthorization  # noqa: E402

__all__ = ["Connection", "ConnectionStatus", "Credential", "CredentialKind", "PendingAuthorization"]
