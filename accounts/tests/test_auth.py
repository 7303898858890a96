"""Sign-up, JWT login/refresh/logout and /api/me/, through the real HTTP stack."""

import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Membership, Organization, Role, User

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
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["user"]["email"] == "alice@example.com"
    assert body["organization"]["name"] == "Alice Co"
    assert body["organization"]["slug"] == "alice-co"

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
            "organization": {"id": body["organization"]["id"], "name": "Alice Co", "slug": "alice-co"},
        }
    ]


def test_registering_the_same_organization_name_twice_gives_distinct_slugs(api):
    assert register(api, email="a@example.com", organization="Same Name").status_code == 201
    assert register(api, email="b@example.com", organization="Same Name").status_code == 201
    slugs = sorted(Organization.objects.values_list("slug", flat=True))
    assert slugs[0] == "same-name"
    assert slugs[1].startswith("same-name-") and len(set(slugs)) == 2


def test_duplicate_email_is_a_400_whatever_its_case(api):
    assert register(api).status_code == 201
    response = register(api, email="ALICE@Example.com", organization="Other")
    assert response.status_code == 400
    assert response.json()["errors"]["email"] == ["A user with this email already exists."]
    assert User.objects.count() == 1 and Organization.objects.count() == 1


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
    assert register(api).status_code == 201
    assert User.objects.get().password.startswith("argon2")


def test_wrong_password_is_401(api):
    assert register(api).status_code == 201
    response = login(api, password="not-the-password-at-all")
    assert response.status_code == 401
    assert response.json() == {"detail": "No active account found with the given credentials"}


def test_login_ignores_the_email_case(api):
    assert register(api).status_code == 201
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

    reused = api.post("/api/auth/token/refresh/", {"refresh": first}, format="json")
    assert reused.status_code == 401
    assert reused.json()["detail"] == "Token is blacklisted"
    # The new one still works (once).
    assert api.post("/api/auth/token/refresh/", {"refresh": second}, format="json").status_code == 200


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
