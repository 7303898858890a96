"""The tokens in e-mailed links: e-mail verification, password reset, invitations.

- Verification and reset: Django's ``PasswordResetTokenGenerator`` (an HMAC of
  the user's state with ``SECRET_KEY``, valid ``PASSWORD_RESET_TIMEOUT``). The
  verification token hashes ``email_verified_at`` in, so it works once; the
  reset token hashes the password, so it works once too.
- Invitations: the invitation's random UUID signed with ``SECRET_KEY``
  (``django.core.signing``). The database keeps only the UUID, which alone opens
  nothing; single use, expiry and revocation are the row's state.

Nothing secret goes through the broker: the worker builds these links itself
from ids (``accounts.tasks``). The paths are written out rather than reversed: the
worker never loads the URL configuration (and the admin with it); a test holds
them equal to the member pages' URLs.
"""

from django.contrib.auth.tokens import PasswordResetTokenGenerator, default_token_generator
from django.core import signing
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode

from .models import Invitation, User

INVITATION_SALT = "potaflow.invitation"


class VerificationTokenGenerator(PasswordResetTokenGenerator):
    key_salt = "potaflow.accounts.links.VerificationTokenGenerator"

    def _make_hash_value(self, user: User, timestamp: int) -> str:
        # The password hash is in: a sign-up again with the address (a new password) voids older links.
        return f"{user.pk}{user.email}{user.email_verified_at}{user.password}{timestamp}"


verification_tokens = VerificationTokenGenerator()
reset_tokens = default_token_generator


def uid_of(user: User) -> str:
    return urlsafe_base64_encode(force_bytes(user.pk))


def user_of(uidb64: str) -> User | None:
    try:
        pk = int(urlsafe_base64_decode(uidb64).decode())
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError):
        return None
    return User.objects.filter(pk=pk).first()


def verification_path(user: User) -> str:
    return f"/app/verify/{uid_of(user)}/{verification_tokens.make_token(user)}/"


def reset_path(user: User) -> str:
    return f"/app/password-reset/{uid_of(user)}/{reset_tokens.make_token(user)}/"


def invitation_token(invitation: Invitation) -> str:
    return signing.dumps(str(invitation.token), salt=INVITATION_SALT, compress=False)


def invitation_path(invitation: Invitation) -> str:
    return f"/app/invitations/{invitation_token(invitation)}/"


def invitation_of(token: str) -> Invitation | None:
    """The invitation a link names (any state), or None for a forged or mangled link."""
    try:
        value = signing.loads(token, salt=INVITATION_SALT)
    except signing.BadSignature:
        return None
    return Invitation.objects.select_related("organization").filter(token=value).first()
