"""Credential admin: admins/owners of the organization only; secrets write-only."""

import pytest
from django.test import Client

from accounts.models import User
from integrations.models import Credential
from integrations.services import credential_create, credential_reveal

pytestmark = pytest.mark.django_db

ADD = "/admin/integrations/credential/add/"


@pytest.fixture
def staff(world):
    User.objects.filter(email__in=["admin@example.com", "editor@example.com", "outsider@example.com"]).update(
        is_staff=True
    )
    return world


def login(email: str) -> Client:
    client = Client()
    client.force_login(User.objects.get(email=email))
    return client


def test_an_admin_adds_a_credential_through_the_form(staff):
    response = login("admin@example.com").post(
        ADD,
        {"organization": staff.acme.pk, "name": "Bot", "kind": "slack_bot_token",
         "slack_bot_token__token": "xoxb-from-admin"},
    )  # fmt: skip
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    cred = Credential.objects.get(name="Bot")
    assert credential_reveal(cred) == {"token": "xoxb-from-admin"}


def test_the_form_names_a_missing_field(staff):
    response = login("admin@example.com").post(
        ADD, {"organization": staff.acme.pk, "name": "Mail", "kind": "smtp", "smtp__host": "smtp.acme.test"}
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "smtp__from_email" in errors


def test_the_change_page_never_shows_the_secret_and_empty_keeps_it(staff):
    secret = {"username": "ada", "password": "pw-very-secret", "allowed_hosts": ["api.example.com"]}
    cred = credential_create(organization=staff.acme, name="Basic", kind="http_basic", secret=secret)
    client = login("admin@example.com")
    page = client.get(f"/admin/integrations/credential/{cred.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "pw-very-secret" not in html
    assert "password: set" in html
    assert "ada" in html
    response = client.post(
        f"/admin/integrations/credential/{cred.pk}/change/",
        {"name": "Basic", "http_basic__username": "grace", "http_basic__password": ""},
    )
    assert response.status_code == 302
    cred.refresh_from_db()
    assert credential_reveal(cred) == {
        "username": "grace",
        "password": "pw-very-secret",
        "allowed_hosts": ["api.example.com"],
    }


def test_editors_and_other_organizations_do_not_see_credentials(staff):
    cred = credential_create(
        organization=staff.acme,
        name="T",
        kind="http_bearer",
        secret={"token": "t", "allowed_hosts": ["api.example.com"]},
    )
    assert login("editor@example.com").get("/admin/integrations/credential/").status_code == 403
    assert login("outsider@example.com").get(f"/admin/integrations/credential/{cred.pk}/change/").status_code == 404
    listing = login("admin@example.com").get("/admin/integrations/credential/")
    assert list(listing.context["cl"].result_list) == [cred]
