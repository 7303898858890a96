"""Invitations by e-mail: single use, expiry, revocation, the role rules, the API; and the account messages."""

from datetime import timedelta

import pytest
from django.core import mail as outbox
from django.utils import timezone

from accounts import account_mail, links, services
from accounts.models import Invitation, Membership, Role, User

from .conftest import make_user

pytestmark = pytest.mark.django_db

STRONG = "correct-horse-battery-staple-42"


def invitations_url(world) -> str:
    return f"/api/organizations/{world.acme.pk}/invitations/"


def invite(world, email="newcomer@example.com", role="viewer", persona="owner"):
    return services.invitation_create(actor=world.users[persona], organization=world.acme, email=email, role=role)


def test_an_invitation_creates_the_account_once_and_its_link_is_then_used_up(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        invitation = invite(world, email="Newcomer@Example.com")
    assert invitation.email == "newcomer@example.com" and len(callbacks) == 1  # the mail, after commit
    assert account_mail.send_account_mail("invitation", str(invitation.pk)) == "invitation sent"
    (message,) = outbox.outbox
    assert message.to == ["newcomer@example.com"] and "Acme" in message.subject
    token = links.invitation_token(invitation)
    assert links.invitation_path(invitation) in message.body
    assert links.invitation_of(token) == invitation

    user, membership = services.invitation_signup(invitation=invitation, password=STRONG, full_name="New Comer")
    assert (membership.organization, membership.role, user.email) == (world.acme, Role.VIEWER, "newcomer@example.com")
    assert user.email_verified_at is not None  # the link proved the address
    # Used once: a second acceptance of the same link, by anyone, is refused and changes nothing.
    with pytest.raises(services.InvitationUnusable, match="already used"):
        services.invitation_signup(invitation=Invitation.objects.get(), password=STRONG)
    with pytest.raises(services.InvitationUnusable, match="already used"):
        services.invitation_accept(invitation=Invitation.objects.get(), user=user)
    assert Membership.objects.filter(user=user).count() == 1
    # No more mail for an invitation that is no longer pending.
    assert account_mail.send_account_mail("invitation", str(invitation.pk)).startswith("nothing")


def test_an_expired_invitation_names_the_limit_and_its_setting(world, settings):
    settings.POTAFLOW_INVITATION_DAYS = 3
    invitation = invite(world)
    assert invitation.expires_at - invitation.created_at == timedelta(days=3)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    invitation.refresh_from_db()
    assert invitation.state == "expired"
    with pytest.raises(services.InvitationUnusable, match="POTAFLOW_INVITATION_DAYS"):
        services.invitation_signup(invitation=invitation, password=STRONG)
    assert not User.objects.filter(email="newcomer@example.com").exists()


def test_revoked_and_replaced_invitations_stop_working(world):
    first = invite(world)
    second = invite(world, role="editor")  # inviting again replaces the pending one
    first.refresh_from_db()
    assert (first.state, second.state) == ("revoked", "pending")
    with pytest.raises(services.InvitationUnusable, match="withdrawn"):
        services.invitation_signup(invitation=first, password=STRONG)
    services.invitation_revoke(actor=world.users["admin"], invitation=second)
    second.refresh_from_db()
    assert second.state == "revoked"
    assert list(services.invitations_pending(world.acme)) == []


def test_a_forged_or_mangled_link_finds_nothing(world):
    invitation = invite(world)
    token = links.invitation_token(invitation)
    assert links.invitation_of(token[:-2] + "xx") is None
    assert links.invitation_of(str(invitation.token)) is None  # the bare UUID (what the database holds) opens nothing


def test_only_the_invited_address_may_accept(world):
    invitation = invite(world, email="carol@example.com")
    mallory = make_user("mallory@example.com")
    with pytest.raises(services.InvitationUnusable, match="for carol@example.com"):
        services.invitation_accept(invitation=invitation, user=mallory)
    carol = make_user("carol@example.com")
    membership = services.invitation_accept(invitation=invitation, user=carol)
    assert membership.role == Role.VIEWER


def test_role_rules_and_the_pending_limit(world, settings):
    from django.core.exceptions import PermissionDenied, ValidationError  # noqa: PLC0415 - only these tests

    with pytest.raises(PermissionDenied):
        invite(world, persona="editor")
    with pytest.raises(PermissionDenied):
        invite(world, role="owner", persona="admin")
    with pytest.raises(ValidationError, match="already belongs to a member"):
        invite(world, email="viewer@example.com")
    settings.POTAFLOW_MAX_PENDING_INVITATIONS = 2
    invite(world, email="a@example.com")
    invite(world, email="b@example.com")
    invite(world, email="b@example.com")  # a replacement is not one more
    with pytest.raises(ValidationError, match="POTAFLOW_MAX_PENDING_INVITATIONS"):
        invite(world, email="c@example.com")


def test_invitations_api(world):
    owner, viewer, outsider = world.client("owner"), world.client("viewer"), world.client("outsider")
    created = owner.post(invitations_url(world), {"email": "dave@example.com", "role": "editor"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["state"] == "pending" and created.json()["invited_by"] == "owner@example.com"
    assert [i["email"] for i in owner.get(invitations_url(world)).json()["results"]] == ["dave@example.com"]
    assert viewer.get(invitations_url(world)).status_code == 403
    assert viewer.post(invitations_url(world), {"email": "x@example.com"}, format="json").status_code == 403
    assert outsider.get(invitations_url(world)).status_code == 404
    bad = owner.post(invitations_url(world), {"email": "not-an-address", "role": "viewer"}, format="json")
    assert bad.status_code == 400 and "email" in bad.json()["errors"]
    pk = created.json()["id"]
    assert outsider.delete(f"{invitations_url(world)}{pk}/").status_code == 404
    assert owner.delete(f"{invitations_url(world)}{pk}/").status_code == 204
    assert Invitation.objects.get(pk=pk).state == "revoked"


def test_account_messages_verify_reset_and_already_registered(settings):
    services.user_register(email="erin@example.com", password=STRONG, organization_name="Erin")
    user = User.objects.get(email="erin@example.com")
    assert user.email_verified_at is None
    assert account_mail.send_account_mail("signup", "erin@example.com") == "verification sent"
    assert links.verification_path(user) in outbox.outbox[-1].body
    assert outbox.outbox[-1].from_email == settings.POTAFLOW_EMAIL_FROM
    services.email_mark_verified(user=user)
    assert account_mail.send_account_mail("signup", "ERIN@example.com") == "already-registered notice sent"
    assert "already has an account" in outbox.outbox[-1].body
    assert account_mail.send_account_mail("reset", "erin@example.com") == "reset link sent"
    assert "/app/password-reset/" in outbox.outbox[-1].body
    assert account_mail.send_account_mail("reset", "nobody@example.com").startswith("nothing")
    assert len(outbox.outbox) == 3


def test_sign_up_follows_the_policy(settings, api):
    settings.POTAFLOW_SIGNUP = "invite"
    response = api.post(
        "/api/auth/register/", {"email": "f@example.com", "password": STRONG, "organization": "F"}, format="json"
    )
    assert response.status_code == 403 and "POTAFLOW_SIGNUP=invite" in response.json()["detail"]
    assert not User.objects.exists()


def test_mailed_paths_are_the_member_pages_urls(world):
    """The worker writes the paths out (it never loads the URLconf): they must stay the pages' own."""
    from django.urls import resolve  # noqa: PLC0415 - only this test

    from workflows import notices  # noqa: PLC0415 - only this test

    user = world.users["viewer"]
    assert resolve(links.verification_path(user)).url_name == "verify-email"
    assert resolve(links.reset_path(user)).url_name == "password-reset-confirm"
    assert resolve(links.invitation_path(invite(world))).url_name == "invitation"
    assert resolve(notices.RUN_PAGE.format("6f1c2b8e-0000-4000-8000-000000000000")).url_name == "run"
    assert resolve(notices.RUN_LIST).url_name == "runs"


def test_signing_up_again_with_an_unconfirmed_address_takes_it_back_from_the_first_signer():
    """Pre-hijacking: Mallory signs up with Erin's address first; Erin's own sign-up wins, Mallory's link dies."""
    services.user_register(email="erin@example.com", password="mallory-horse-battery-1", organization_name="M")
    user = User.objects.get()
    mallorys_link = links.verification_tokens.make_token(user)
    services.user_register(email="erin@example.com", password=STRONG, organization_name="Erin")
    user.refresh_from_db()
    assert user.check_password(STRONG) and not user.check_password("mallory-horse-battery-1")
    assert services.email_verify(user=user, token=mallorys_link) is False
    assert services.email_verify(user=user, token=links.verification_tokens.make_token(user)) is True
    # Once confirmed, a sign-up with the address changes nothing.
    services.user_register(email="erin@example.com", password="another-horse-battery-2", organization_name="X")
    user.refresh_from_db()
    assert user.check_password(STRONG)


def test_a_user_an_operator_adds_in_the_admin_can_sign_in(client):
    """Self sign-ups confirm their address by mail; an operator creating a user vouches for it."""
    root = User.objects.create_superuser(email="root@example.com", password=STRONG)
    client.force_login(root)
    response = client.post(
        "/admin/accounts/user/add/",
        {"email": "Gina@Example.com", "usable_password": "true", "password1": STRONG, "password2": STRONG},
    )
    assert response.status_code == 302, response.content[:500]
    gina = User.objects.get(email="gina@example.com")
    assert gina.email_verified_at is not None
    client.logout()
    assert client.login(email="gina@example.com", password=STRONG)
