"""Sign-up, JWT login/refresh/logout and /api/me/, through the real HTTP stack."""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import links, services
from accounts.api import REGISTERED
from accounts.models import Membership, Organization, Role, TokenFamily, User

from .conftest import client_for, make_user

pytestmark = pytest.mark.django_db

STRONG = "correct-horse-battery-staple-42"


def register(api, email="alice@example.com", password=STRONG, organization="Alice Co"):
    return api.post(
        "/api/auth/register/", {"email": email, "password": password, "organization": organization}, format="json"
    )


def login(api, email="alice@example.com", password=STRONG):
    return api.post("/api/auth/token/", {"email": email, "password": password}, format="json")


def test_register_then_token_then_me(api):
    response = register(api)
    assert response.status_code == 202, response.json()
    assert response.json() == {"detail": REGISTERED}
    organization = Organization.objects.get()
    assert (organization.name, organization.slug) == ("Alice Co", "alice-co")

    # Not before the address is confirmed (the link the worker mails; accounts.links).
    assert login(api).status_code == 401
    user = User.objects.get()
    assert services.email_verify(user=user, token="not-the-token") is False
    assert services.email_verify(user=user, token=links.verification_tokens.make_token(user)) is True

    tokens = login(api)
    assert tokens.status_code == 200, tokens.json()
    assert set(tokens.json()) == {"access", "refresh"}

    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.json()['access']}")
    me = api.get("/api/me/")
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["memberships"] == [
        {
            "id": Membership.objects.get().pk,
            "role": "owner",
            "organization": {"id": organization.pk, "name": "Alice Co", "slug": "alice-co"},
        }
    ]


def test_registering_the_same_organization_name_twice_gives_distinct_slugs(api):
    assert register(api, email="a@example.com", organization="Same Name").status_code == 202
    assert register(api, email="b@example.com", organization="Same Name").status_code == 202
    slugs = sorted(Organization.objects.values_list("slug", flat=True))
    assert slugs[0] == "same-name"
    assert slugs[1].startswith("same-name-") and len(set(slugs)) == 2


def test_registering_an_existing_email_answers_exactly_like_a_new_one(api):
    """The defect: a registered email got a 400 naming it, a new one a 201 (account enumeration)."""
    new = register(api)
    services.email_mark_verified(user=User.objects.get())  # a confirmed account (an unconfirmed one: test_invitations)
    existing = register(api, email="ALICE@Example.com", password="another-horse-battery-staple-43", organization="O")
    assert (existing.status_code, existing.json()) == (new.status_code, new.json()) == (202, {"detail": REGISTERED})
    assert set(existing.headers) == set(new.headers)
    # Nothing changed for the existing account: one user, one organization, the first password.
    assert User.objects.count() == 1 and Organization.objects.count() == 1
    assert login(api).status_code == 200


def test_a_weak_password_is_refused_alike_for_new_and_existing_emails(api):
    assert register(api).status_code == 202
    for email in ("alice@example.com", "someone-new@example.com"):
        response = register(api, email=email, password="password")
        assert response.status_code == 400
        assert response.json()["errors"] == {"password": ["This password is too common."]}


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("password", "This password is too common."),
        ("83749261530", "This password is entirely numeric."),
        ("xK9#q", "This password is too short. It must contain at least 8 characters."),
        ("alice@example.com", "The password is too similar to the email."),
    ],
)
def test_weak_password_is_a_400_naming_the_rule(api, password, rule):
    response = register(api, password=password)
    assert response.status_code == 400
    body = response.json()
    assert rule in body["errors"]["password"]
    assert body["detail"].startswith("password: ")
    assert not User.objects.exists()


def test_missing_fields_are_named(api):
    response = api.post("/api/auth/register/", {"email": "not-an-email"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"email", "password", "organization"}


def test_stored_password_hash_is_argon2(api):
    assert register(api).status_code == 202
    assert User.objects.get().password.startswith("argon2")


def test_wrong_password_is_401(api):
    assert register(api).status_code == 202
    response = login(api, password="not-the-password-at-all")
    assert response.status_code == 401
    assert response.json() == {"detail": "No active account found with the given credentials", "errors": {}}


def test_login_ignores_the_email_case(api):
    assert register(api).status_code == 202
    services.email_mark_verified(user=User.objects.get())
    assert login(api, email="  Alice@EXAMPLE.com").status_code == 200


def test_inactive_user_cannot_log_in(api):
    make_user("bob@example.com", password=STRONG, is_active=False)
    assert login(api, email="bob@example.com").status_code == 401


def test_refresh_rotates_and_reusing_the_old_token_is_401(api):
    make_user("alice@example.com", password=STRONG)
    first = login(api).json()["refresh"]

    rotated = api.post("/api/auth/token/refresh/", {"refresh": first}, format="json")
    assert rotated.status_code == 200, rotated.json()
    second = rotated.json()["refresh"]
    assert second != first and rotated.json()["access"]

    # The new one works (once).
    third = api.post("/api/auth/token/refresh/", {"refresh": second}, format="json")
    assert third.status_code == 200
    assert api.post("/api/auth/token/refresh/", {"refresh": second}, format="json").status_code == 401


def refresh(api, token):
    return api.post("/api/auth/token/refresh/", {"refresh": token}, format="json")


def me(access):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/me/")


def test_reusing_a_rotated_refresh_token_revokes_every_token_of_that_login(api):
    """The defect: reusing a rotated token was a 401, but the token issued from it kept working."""
    make_user("alice@example.com", password=STRONG)
    first = login(api).json()["refresh"]
    second = refresh(api, first).json()
    third = refresh(api, second["refresh"]).json()
    other_login = login(api).json()  # another device: its own family

    reused = refresh(api, first)  # the thief (or the victim) replays an old token
    assert reused.status_code == 401
    assert reused.json()["detail"] == "Token is blacklisted"

    assert refresh(api, third["refresh"]).status_code == 401  # the newest descendant is revoked
    assert refresh(api, third["refresh"]).json()["detail"] == "Token has been revoked"
    assert me(third["access"]).status_code == 401  # and so is its access token
    # The other login is untouched.
    assert me(other_login["access"]).status_code == 200
    assert refresh(api, other_login["refresh"]).status_code == 200
    assert TokenFamily.objects.get(revoked_at__isnull=False).revoked_reason == "reuse"


def test_a_password_change_revokes_all_refresh_tokens_of_the_user(api):
    user = make_user("alice@example.com", password=STRONG)
    phone, laptop = login(api).json(), login(api).json()
    legacy = str(RefreshToken.for_user(user))  # issued before token families existed
    bob = make_user("bob@example.com", password=STRONG)
    bobs = login(api, email="bob@example.com").json()

    user.set_password("another-horse-battery-staple-43")
    user.save()

    for tokens in (phone, laptop):
        assert refresh(api, tokens["refresh"]).status_code == 401
        assert me(tokens["access"]).status_code == 401
    assert refresh(api, legacy).status_code == 401
    assert refresh(api, bobs["refresh"]).status_code == 200, bob
    # A fresh login with the new password works.
    assert login(api, password="another-horse-battery-staple-43").status_code == 200


def test_an_unchanged_password_save_revokes_nothing(api):
    user = make_user("alice@example.com", password=STRONG)
    tokens = login(api).json()
    user.full_name = "Alice"
    user.save()
    assert refresh(api, tokens["refresh"]).status_code == 200


def test_logout_ends_the_login_including_its_access_token(api):
    make_user("alice@example.com", password=STRONG)
    tokens = login(api).json()
    assert me(tokens["access"]).status_code == 200
    assert api.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json").status_code == 204
    assert me(tokens["access"]).status_code == 401


def test_expired_tokens_and_families_are_flushed_by_a_beat_task(api, settings):
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    from accounts.tasks import flush_expired_tokens

    schedule = settings.CELERY_BEAT_SCHEDULE["potaflow-flush-expired-tokens"]
    assert schedule == {"task": "accounts.flush_expired_tokens", "schedule": 3600.0}

    make_user("alice@example.com", password=STRONG)
    old, current = login(api).json(), login(api).json()
    assert refresh(api, old["refresh"]).status_code == 200  # blacklists the first token of `old`
    long_ago = timezone.now() - timedelta(days=30)
    old_family = TokenFamily.objects.order_by("created_at").first()
    TokenFamily.objects.filter(pk=old_family.pk).update(last_rotated_at=long_ago)
    OutstandingToken.objects.filter(pk__in=[t.pk for t in OutstandingToken.objects.order_by("pk")[:1]]).update(
        expires_at=long_ago
    )

    assert flush_expired_tokens.apply().get() == {"tokens": 2, "families": 1}  # token + its blacklist row
    assert OutstandingToken.objects.count() == 2
    assert not TokenFamily.objects.filter(pk=old_family.pk).exists()
    assert refresh(api, current["refresh"]).status_code == 200


def test_logout_blacklists_the_refresh_token(api):
    make_user("alice@example.com", password=STRONG)
    refresh = login(api).json()["refresh"]

    assert api.post("/api/auth/logout/", {"refresh": refresh}, format="json").status_code == 204
    assert api.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json").status_code == 401
    assert api.post("/api/auth/logout/", {"refresh": refresh}, format="json").status_code == 401


def test_logout_with_garbage_or_an_access_token_is_401(api):
    user = make_user("alice@example.com")
    access = str(RefreshToken.for_user(user).access_token)
    for token in ("garbage", access):
        response = api.post("/api/auth/logout/", {"refresh": token}, format="json")
        assert response.status_code == 401, token
        assert "detail" in response.json()


def test_refresh_token_of_a_deleted_user_is_401(api):
    user = make_user("gone@example.com")
    refresh = str(RefreshToken.for_user(user))
    user.delete()
    assert api.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json").status_code == 401


def test_me_needs_a_valid_access_token(api):
    assert api.get("/api/me/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert api.get("/api/me/").status_code == 401


def test_me_lists_every_membership_with_its_role(world):
    world.memberships["editor"].user  # noqa: B018 - fixture sanity
    Membership.objects.create(user=world.users["editor"], organization=world.globex, role=Role.VIEWER)
    body = client_for(world.users["editor"]).get("/api/me/").json()
    assert [(m["organization"]["name"], m["role"]) for m in body["memberships"]] == [
        ("Acme", "editor"),
        ("Globex", "viewer"),
    ]
    assert body["memberships"][0]["organization"]["id"] == world.acme.pk


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_uses_of_one_refresh_token_cannot_both_succeed():
    """Rotation locks the token's family: the loser of the race is a replay and revokes the family."""
    import threading

    from django.db import connection

    make_user("alice@example.com", password=STRONG)
    token = login(APIClient()).json()["refresh"]
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def use() -> None:
        try:
            barrier.wait()
            answers.append(refresh(APIClient(), token).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [200, 401]
    assert TokenFamily.objects.get().revoked_at is not None
