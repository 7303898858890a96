"""Personas for permission tests: one organization with each role, and an outsider in another."""

from dataclasses import dataclass

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Membership, Organization, Role, User

PERSONAS = ("owner", "admin", "editor", "viewer", "outsider")


@pytest.fixture(autouse=True)
def _fresh_throttle_counters():
    # Throttle counters live in the (shared) cache; each test starts at zero.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def make_user(email: str, *, password: str | None = None, **extra) -> User:
    """A user; without a password it is unusable, which skips the (deliberately slow) Argon2 hashing."""
    return User.objects.create_user(email=email, password=password, **extra)


def client_for(user: User) -> APIClient:
    """An API client authenticated with a real access token for ``user``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@dataclass
class World:
    acme: Organization
    globex: Organization
    users: dict[str, User]
    memberships: dict[str, Membership]
    outsider_membership: Membership

    def client(self, persona: str) -> APIClient:
        return client_for(self.users[persona])


@pytest.fixture
def world(db) -> World:
    acme = Organization.objects.create(name="Acme", slug="acme")
    globex = Organization.objects.create(name="Globex", slug="globex")
    users = {name: make_user(f"{name}@example.com") for name in PERSONAS}
    memberships = {
        name: Membership.objects.create(user=users[name], organization=acme, role=Role(name))
        for name in ("owner", "admin", "editor", "viewer")
    }
    outsider_membership = Membership.objects.create(user=users["outsider"], organization=globex, role=Role.OWNER)
    return World(acme, globex, users, memberships, outsider_membership)
