"""The account messages: verification, "you already have an account", password reset, invitation.

Built by the worker from ids and addresses (``accounts.tasks.send_account_mail``),
so links — which are secrets — never travel through the broker. For an address
without an account a reset request sends nothing, but costs the web request
the same as one with an account (it only queues this task).
"""

from django.conf import settings

from . import links, mail
from .models import Invitation, User, normalize_email

SITE = "PotaFlow"


def send_account_mail(kind: str, ref: str) -> str:
    """Send the ``kind`` message for ``ref`` (an address or an invitation id); returns what was done."""
    if kind == "signup":
        return _signup(normalize_email(ref))
    if kind == "reset":
        return _reset(normalize_email(ref))
    if kind == "invitation":
        return _invitation(int(ref))
    raise ValueError(f"unknown account mail kind {kind!r}")


def _hours() -> int:
    return int(settings.PASSWORD_RESET_TIMEOUT // 3600)


def _signup(email: str) -> str:
    user = User.objects.filter(email__iexact=email).first()
    if user is None or not user.is_active:
        return "nothing: no active account"
    if user.email_verified_at is None:
        link = mail.absolute_url(links.verification_path(user))
        mail.send(
            to=[user.email],
            subject=f"Confirm your e-mail address for {SITE}",
            text=(
                f"Welcome to {SITE}.\n\nTo finish creating your account, confirm that this address is yours:\n\n"
                f"{link}\n\nThe link works once, for {_hours()} hours. If you did not sign up, ignore this message: "
                "the account stays unusable.\n"
            ),
        )
        return "verification sent"
    mail.send(
        to=[user.email],
        subject=f"You already have a {SITE} account",
        text=(
            f"Someone (probably you) tried to sign up to {SITE} with this address, which already has an account.\n\n"
            f"Sign in: {mail.absolute_url('/app/login/')}\n"
            f"Forgot your password? {mail.absolute_url('/app/password-reset/')}\n\n"
            "If it was not you, nothing changed and you can ignore this message.\n"
        ),
    )
    return "already-registered notice sent"


def _reset(email: str) -> str:
    user = User.objects.filter(email__iexact=email, is_active=True).first()
    if user is None or not user.has_usable_password():
        return "nothing: no account with a password"
    link = mail.absolute_url(links.reset_path(user))
    mail.send(
        to=[user.email],
        subject=f"Reset your {SITE} password",
        text=(
            f"Someone (probably you) asked to reset the password of your {SITE} account.\n\n"
            f"Choose a new password here:\n\n{link}\n\nThe link works once, for {_hours()} hours. "
            "If you did not ask, ignore this message: your password stays as it is.\n"
        ),
    )
    return "reset link sent"


def _invitation(invitation_id: int) -> str:
    invitation = Invitation.objects.select_related("organization", "invited_by").filter(pk=invitation_id).first()
    if invitation is None or invitation.state != "pending":
        return "nothing: invitation no longer pending"
    inviter = invitation.invited_by.email if invitation.invited_by else "An administrator"
    link = mail.absolute_url(links.invitation_path(invitation))
    mail.send(
        to=[invitation.email],
        subject=f"{inviter} invites you to {invitation.organization.name} on {SITE}",
        text=(
            f"{inviter} invites you to join the organization “{invitation.organization.name}” on {SITE} "
            f"as {invitation.get_role_display().lower()}.\n\nAccept the invitation:\n\n{link}\n\n"
            f"The link works once, until {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
            "If you do not know this organization, ignore this message.\n"
        ),
    )
    return "invitation sent"
