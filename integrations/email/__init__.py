"""``email.send``: over the organization's SMTP server or SendGrid, chosen by the credential."""

from .action import SendEmail
from .credentials import SENDGRID_API_KEY, SMTP

ACTIONS = (SendEmail,)
CREDENTIAL_KINDS = (SMTP, SENDGRID_API_KEY)
