"""Account operations: the only place that writes users, organizations and memberships.

Membership rules (the API, the admin and management commands all go through here):

- owners and admins manage members; editors and viewers may only look;
- only an owner may grant the owner role, or change or remove an owner's membership;
- an organization always keeps at least one owner (the last one can be neither
  demoted nor removed);
- anyone may leave an organization (remove their own membership), subject to
  the last-owner rule.

Errors are Django's own: ``PermissionDenied`` (the actor's role is too low) and
``ValidationError`` (the request itself is impossible, e.g. the last owner).
"""

import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.text import slugify
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from .models import Invitation, Membership, Organization, Role, TokenFamily, User, normalize_email

logger = logging.getLogger(__name__)
MANAGER_ROLES = (Role.ADMIN, Role.OWNER)
LAST_OWNER_MESSAGE = "An organization must keep at least one owner; make someone else owner first."


def _unique_slug(name: str) -> str:
    base = slugify(name)[:140] or "org"
    slug = base
    while Organization.objects.filter(slug=slug).exists():
        slug = f"{base}-{get_random_string(6, allowed_chars='abcdefghijklmnopqrstuvwxyz0123456789')}"
    return slug


def organization_create(*, name: str, owner: User) -> Organization:
    """Create an organization with ``owner`` as its first owner, and a unique slug."""
    name = name.strip()
    if not name:
        raise ValidationError({"organization": ["An organization name is required."]})
    for _attempt in range(5):
        try:
            with transaction.atomic():
                organization = Organization.objects.create(name=name, slug=_unique_slug(name))
                Membership.objects.create(user=owner, organization=organization, role=Role.OWNER)
                return organization
        except IntegrityError:
            # Another request took the same slug between the check and the insert: try again.
            continue
    raise ValidationError({"organization": ["Could not allocate a unique slug; please try again."]})


SIGNUP_CLOSED = {
    "invite": "Sign-up on this server is by invitation only: ask an organization's admin to invite you.",
    "closed": "Sign-up is closed on this server: ask its operator for an account.",
}


def signup_policy() -> str:
    """``open``, ``invite`` or ``closed`` (``POTAFLOW_SIGNUP``)."""
    return str(settings.POTAFLOW_SIGNUP)


def signup_check() -> None:
    """Raise ``PermissionDenied`` naming the policy unless anyone may create an account."""
    policy = signup_policy()
    if policy != "open":
        raise PermissionDenied(SIGNUP_CLOSED[policy] + " (POTAFLOW_SIGNUP=" + policy + ")")


@transaction.atomic
def user_register(*, email: str, password: str, organization_name: str) -> tuple[User, Organization] | None:
    """Sign-up: a new, unverified user and an organization they own; ``None`` when the email is already registered.

    The caller must answer both cases alike (no account enumeration), so the
    taken-email path validates the password the same way and spends the same
    Argon2 time before returning. Django's password validators run against the
    would-be user, so the "too similar to the email" rule applies too. Either
    way one message goes to the address after commit (by the worker): a
    verification link for a new account, "you already have an account" for a
    known one. The account cannot sign in before its address is verified.
    """
    signup_check()
    email = normalize_email(email)
    try:
        validate_password(password, user=User(email=email))
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from exc
    account_mail_later("signup", email)
    existing = User.objects.filter(email__iexact=email).first()
    if existing is not None:
        if existing.email_verified_at is None and existing.is_active:
            # Nobody has proved this address yet: the latest sign-up's password is the one its new link
            # confirms, and the older links stop working (the verification token hashes the password).
            # Whoever signed up first with someone else's address cannot keep the account.
            existing.set_password(password)
            existing.save(update_fields=["password"])
        else:
            make_password(password)  # the time a new account's hashing takes
        return None
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password, email_verified_at=None)
    except IntegrityError:  # a concurrent registration with the same email won
        return None
    organization = organization_create(name=organization_name, owner=user)
    return user, organization


def account_mail_later(kind: str, ref: str | int) -> None:
    """Have the worker send an account message once the transaction commits (``accounts.tasks``)."""
    # Deferred: tasks imports this module (a cycle at import time).
    from .tasks import send_account_mail

    transaction.on_commit(lambda: _enqueue(send_account_mail, kind, str(ref)))


def _enqueue(task: Any, kind: str, ref: str) -> None:
    try:
        task.delay(kind, ref)
    except Exception:  # noqa: BLE001 - a broker that is down: the request itself succeeded
        logger.exception("could not queue the %s message (%s); the broker is unavailable", kind, ref)


def email_verify(*, user: User, token: str) -> bool:
    """Mark the address verified when ``token`` is the one we mailed it (works once)."""
    # Deferred: links imports the models of this app only, but keeps this module light for the worker.
    from .links import verification_tokens

    if user.email_verified_at is not None:
        return True
    if not verification_tokens.check_token(user, token):
        return False
    email_mark_verified(user=user)
    return True


def email_mark_verified(*, user: User) -> None:
    """The owner of the address proved it (a verification or reset link, an accepted invitation)."""
    if user.email_verified_at is None:
        user.email_verified_at = timezone.now()
        User.objects.filter(pk=user.pk, email_verified_at__isnull=True).update(email_verified_at=user.email_verified_at)


def password_reset_request(*, email: str) -> None:
    """Mail a reset link if an account has this address; the caller answers the same either way."""
    account_mail_later("reset", normalize_email(email))


# ---------------------------------------------------------------------------
# Invitations: by e-mail, single use, expiring, revocable
# ---------------------------------------------------------------------------
class InvitationUnusable(ValidationError):  # noqa: N818 - reads as a state, part of the API
    """The link's invitation cannot be used (accepted, revoked, expired, or for another address)."""


def invitation_create(*, actor: User, organization: Organization, email: str, role: str) -> Invitation:
    """Invite ``email`` (with or without an account) into ``organization`` with ``role``; the mail goes after commit.

    The role rules are the membership rules (admins and owners invite; only an
    owner invites an owner). Inviting an address again replaces its pending
    invitation (the old link stops working). At most
    ``POTAFLOW_MAX_PENDING_INVITATIONS`` pending invitations per organization.
    """
    membership_check(actor=actor, organization=organization, current_role=None, new_role=role)
    email = normalize_email(email)
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": ["Enter a valid e-mail address."]}) from None
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise ValidationError({"email": ["This address already belongs to a member of the organization."]})
    now = timezone.now()
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=organization.pk).first()  # one inviter at a time
        pending = Invitation.objects.filter(
            organization=organization, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
        )
        pending.filter(email=email).update(revoked_at=now)
        limit = settings.POTAFLOW_MAX_PENDING_INVITATIONS
        if pending.exclude(email=email).count() >= limit:
            raise ValidationError(
                {
                    "email": [
                        f"This organization has {limit} pending invitations, the most it may have "
                        "(POTAFLOW_MAX_PENDING_INVITATIONS): revoke some or wait for them to be accepted."
                    ]
                }
            )
        invitation = Invitation.objects.create(
            organization=organization,
            email=email,
            role=role,
            invited_by=actor,
            created_at=now,
            expires_at=now + timedelta(days=settings.POTAFLOW_INVITATION_DAYS),
        )
        account_mail_later("invitation", invitation.pk)
    return invitation


def invitation_revoke(*, actor: User, invitation: Invitation) -> Invitation:
    """Revoke a pending invitation (admins and owners; an owner invitation: owners)."""
    membership_check(actor=actor, organization=invitation.organization, current_role=None, new_role=invitation.role)
    if invitation.state == "pending":
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
    return invitation


def invitation_check(invitation: Invitation | None) -> Invitation:
    """The invitation if it can still be accepted, else ``InvitationUnusable`` saying why."""
    if invitation is None:
        raise InvitationUnusable("This invitation link is not valid (it may have been copied incompletely).")
    state = invitation.state
    if state == "accepted":
        raise InvitationUnusable("This invitation was already used. Sign in with the account that accepted it.")
    if state == "revoked":
        raise InvitationUnusable("This invitation was withdrawn. Ask the organization's admin for a new one.")
    if state == "expired":
        raise InvitationUnusable(
            f"This invitation expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC "
            f"(invitations last {settings.POTAFLOW_INVITATION_DAYS} days, POTAFLOW_INVITATION_DAYS). "
            "Ask the organization's admin for a new one."
        )
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User) -> Membership:
    """``user`` (signed in, with the invited address) joins with the invitation's role; the link is used up."""
    locked = Invitation.objects.select_for_update().select_related("organization").get(pk=invitation.pk)
    invitation_check(locked)
    if normalize_email(user.email) != locked.email:
        raise InvitationUnusable(
            f"This invitation is for {locked.email}; you are signed in as {user.email}. "
            "Sign out and open the link again."
        )
    membership = Membership.objects.filter(user=user, organization=locked.organization).first()
    if membership is None:
        membership = Membership.objects.create(user=user, organization=locked.organization, role=locked.role)
    locked.accepted_at = timezone.now()
    locked.accepted_by = user
    locked.save(update_fields=["accepted_at", "accepted_by"])
    email_mark_verified(user=user)  # the link came to this address
    return membership


@transaction.atomic
def invitation_signup(*, invitation: Invitation, password: str, full_name: str = "") -> tuple[User, Membership]:
    """A new account for the invited address (verified: the link proves it), joined to the organization.

    Allowed under ``POTAFLOW_SIGNUP=open`` and ``invite``; ``closed`` lets only existing accounts accept.
    """
    if signup_policy() == "closed":
        raise PermissionDenied(SIGNUP_CLOSED["closed"] + " (POTAFLOW_SIGNUP=closed)")
    locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
    invitation_check(locked)
    if User.objects.filter(email__iexact=locked.email).exists():
        raise InvitationUnusable(f"{locked.email} already has an account: sign in to accept the invitation.")
    try:
        validate_password(password, user=User(email=locked.email))
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from exc
    user = User.objects.create_user(email=locked.email, password=password, full_name=full_name.strip()[:150])
    return user, invitation_accept(invitation=locked, user=user)


def invitations_pending(organization: Organization) -> Any:
    """Pending invitations, newest first (expired and used ones are history)."""
    return Invitation.objects.filter(
        organization=organization, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).order_by("-created_at")


# ---------------------------------------------------------------------------
# Memberships
# ---------------------------------------------------------------------------
def _actor_membership(*, actor: User, organization: Organization) -> Membership:
    membership = Membership.objects.filter(user=actor, organization=organization).first()
    if membership is None:
        raise PermissionDenied("You are not a member of this organization.")
    return membership


def membership_check(
    *, actor: User, organization: Organization, current_role: str | None, new_role: str | None
) -> None:
    """Raise unless ``actor`` may move a membership from ``current_role`` to ``new_role``.

    ``current_role=None`` is an invitation, ``new_role=None`` a removal. Superusers
    may do anything the last-owner rule allows. Shared by the API and the admin.
    """
    if new_role is not None and new_role not in Role.values:
        raise ValidationError({"role": [f"Unknown role {new_role!r}; choose one of {', '.join(Role.values)}."]})
    if actor.is_superuser:
        return
    role = _actor_membership(actor=actor, organization=organization).role
    if role not in MANAGER_ROLES:
        raise PermissionDenied("Only owners and admins can manage members.")
    if Role.OWNER in (current_role, new_role) and role != Role.OWNER:
        raise PermissionDenied("Only an owner can grant the owner role or change an owner's membership.")


def _ensure_another_owner(membership: Membership) -> None:
    # Lock the owner rows so two concurrent demotions cannot both pass the check.
    owners = list(
        Membership.objects.select_for_update()
        .filter(organization_id=membership.organization_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    if owners == [membership.pk]:
        raise ValidationError({"role": [LAST_OWNER_MESSAGE]}, code="last_owner")


def membership_invitee(*, organization: Organization, email: str) -> User:
    """The active user ``email`` names, provided they are not a member of ``organization`` yet."""
    user = User.objects.filter(email__iexact=normalize_email(email), is_active=True).first()
    if user is None:
        raise ValidationError(
            {
                "email": [
                    "No active user with this email: invite them by e-mail instead (an invitation creates the account)."
                ]
            }
        )
    if Membership.objects.filter(user=user, organization=organization).exists():
        raise ValidationError({"email": ["This user is already a member of the organization."]})
    return user


def membership_check_keeps_owner(*, membership: Membership, new_role: str | None) -> None:
    """Raise if moving ``membership`` to ``new_role`` (None: removal) would leave no owner.

    An unlocked pre-check for forms; the services repeat it under a row lock.
    """
    if membership.role != Role.OWNER or new_role == Role.OWNER:
        return
    others = Membership.objects.filter(organization_id=membership.organization_id, role=Role.OWNER)
    if not others.exclude(pk=membership.pk).exists():
        raise ValidationError({"role": [LAST_OWNER_MESSAGE]}, code="last_owner")


@transaction.atomic
def membership_invite(*, actor: User, organization: Organization, email: str, role: str) -> Membership:
    """Add an existing user (found by email) to ``organization`` with ``role``."""
    membership_check(actor=actor, organization=organization, current_role=None, new_role=role)
    user = membership_invitee(organization=organization, email=email)
    try:
        with transaction.atomic():
            return Membership.objects.create(user=user, organization=organization, role=role)
    except IntegrityError as exc:
        raise ValidationError({"email": ["This user is already a member of the organization."]}) from exc


@transaction.atomic
def membership_change_role(*, actor: User, membership: Membership, role: str) -> Membership:
    """Give ``membership`` a new role, keeping at least one owner."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    membership_check(actor=actor, organization=membership.organization, current_role=membership.role, new_role=role)
    if membership.role == role:
        return membership
    if membership.role == Role.OWNER:
        _ensure_another_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, actor: User, membership: Membership) -> None:
    """Remove a member (or let a member leave), keeping at least one owner."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.user_id != actor.pk:
        membership_check(actor=actor, organization=membership.organization, current_role=membership.role, new_role=None)
    if membership.role == Role.OWNER:
        _ensure_another_owner(membership)
    membership.delete()


def organization_rename(*, organization: Organization, name: str) -> Organization:
    """Rename; the slug stays, so links and references keep working."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": ["An organization name is required."]})
    organization.name = name
    organization.save(update_fields=["name"])
    return organization


# ---------------------------------------------------------------------------
# JWT token families (accounts.tokens)
# ---------------------------------------------------------------------------
def token_family_start(*, user: User) -> str:
    """A new family for a login; returns its id (the ``fam`` claim)."""
    return TokenFamily.objects.create(id=uuid.uuid4().hex, user=user).pk


def token_family_rotated(*, family: str) -> None:
    """A family's token was rotated: it lives on for another refresh lifetime."""
    TokenFamily.objects.filter(pk=family).update(last_rotated_at=timezone.now())


def token_family_revoke(*, family: str, reason: str) -> int:
    """Revoke one family: none of its refresh or access tokens is accepted any more."""
    return TokenFamily.objects.filter(pk=family, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason
    )


def user_tokens_revoke(*, user: User, reason: str) -> None:
    """Every refresh token of ``user`` stops working (a password change): families and the blacklist."""
    TokenFamily.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason
    )
    outstanding = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )


def tokens_flush_expired() -> dict[str, int]:
    """Delete expired outstanding tokens (with their blacklist rows) and families no token can belong to."""
    now = timezone.now()
    tokens, _ = OutstandingToken.objects.filter(expires_at__lte=now).delete()
    lifetime = jwt_settings.REFRESH_TOKEN_LIFETIME
    families, _ = TokenFamily.objects.filter(last_rotated_at__lte=now - lifetime).delete()
    return {"tokens": tokens, "families": families}


@dataclass(frozen=True)
class AdminEnsured:
    """What ``admin_ensure`` did, for the ``ensure_admin`` command to say.

    ``outcome``: ``created`` (with ``generated_password`` when none was given),
    ``other_superuser`` (no password given and another superuser exists: that
    one is the admin), ``exists`` (password unchanged), ``password_updated``.
    """

    user: User
    outcome: str
    email: str  # the requested admin address, normalized
    generated_password: str | None = None
    weak_password: list[str] = field(default_factory=list)
    organization: Organization | None = None


@transaction.atomic
def admin_ensure(*, email: str, password: str, organization_name: str = "Default") -> AdminEnsured:
    """The admin user of a first ``make run``: created, or its password kept in line with ``password``.

    A password given by the operator is only warned about when weak
    (``weak_password``), never refused. A superuser without an organization gets
    one (``organization_name``, as owner) so the organization-scoped admin and API work.
    """
    email = normalize_email(email)
    user = User.objects.filter(email__iexact=email).first()
    generated = None
    weak: list[str] = []
    if user is None:
        existing = User.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None and not password:
            user, outcome = existing, "other_superuser"
        else:
            generated = None if password else secrets.token_urlsafe(15)
            weak = [] if generated else _password_weaknesses(email=email, password=password)
            user = User.objects.create_superuser(email=email, password=password or generated)
            outcome = "created"
    elif password and not user.check_password(password):
        weak = _password_weaknesses(email=user.email, password=password)
        user.set_password(password)
        user.save(update_fields=["password"])
        outcome = "password_updated"
    else:
        outcome = "exists"
    organization = None
    if user.is_superuser and not Membership.objects.filter(user=user).exists():
        organization = organization_create(name=organization_name, owner=user)
    return AdminEnsured(user, outcome, email, generated, weak, organization)


def _password_weaknesses(*, email: str, password: str) -> list[str]:
    try:
        validate_password(password, user=User(email=email))
    except ValidationError as exc:
        return list(exc.messages)
    return []
