from django.db import models


class CredentialKind(models.TextChoices):
    HTTP_BEARER = "http_bearer", "HTTP bearer token"
    HTTP_BASIC = "http_basic", "HTTP basic auth"
    HTTP_HEADER = "http_header", "HTTP header"
    SLACK_BOT_TOKEN = "slack_bot_token", "Slack bot token"
    SMTP = "smtp", "SMTP server"
    SENDGRID_API_KEY = "sendgrid_api_key", "SendGrid API key"
    GOOGLE_SERVICE_ACCOUNT = "google_service_account", "Google service account"


class Credential(models.Model):
    """A secret an action uses. ``secret_ciphertext`` is Fernet-encrypted JSON;
    ``public_data`` holds the non-secret fields that may be shown (host, username...).
    """

    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=CredentialKind.choices)
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
