"""/api/credentials/ (admins and owners; secrets never returned) and /api/actions/."""

import json

import pytest

from accounts.models import Membership, Role
from integrations.models import Credential
from integrations.services import credential_create, credential_reveal

pytestmark = pytest.mark.django_db

URL = "/api/credentials/"
SMTP = {"host": "smtp.acme.test", "port": 2525, "username": "mailer", "password": "hunter2-top-secret",
        "security": "starttls", "from_email": "robot@acme.test"}  # fmt: skip


def create(world, persona="admin", **body):
    payload = {"organization": world.acme.pk, "name": "Mail", "kind": "smtp", "secret": SMTP} | body
    return world.client(persona).post(URL, payload, format="json")


@pytest.mark.parametrize("persona", ["owner", "admin"])
def test_admins_and_owners_create_and_the_secret_never_comes_back(world, persona):
    response = create(world, persona)
    assert response.status_code == 201, response.content
    body = response.json()
    assert "hunter2" not in response.content.decode()
    assert "secret" not in body
    assert body["public"] == {"host": "smtp.acme.test", "port": 2525, "username": "mailer", "security": "starttls",
                              "from_email": "robot@acme.test"}  # fmt: skip
    assert body["secret_set"] == {"password": True}
    for path in (URL, f"{URL}{body['id']}/"):
        shown = world.client(persona).get(path)
        assert shown.status_code == 200
        assert "hunter2" not in shown.content.decode()
    assert credential_reveal(Credential.objects.get(pk=body["id"]))["password"] == "hunter2-top-secret"


@pytest.mark.parametrize("persona", ["editor", "viewer"])
def test_editors_and_viewers_cannot_create_or_read(world, persona):
    assert create(world, persona).status_code == 400  # acme is not an organization they administer
    cred = credential_create(
        organization=world.acme,
        name="T",
        kind="http_bearer",
        secret={"token": "t", "allowed_hosts": ["api.example.com"]},
    )
    assert world.client(persona).get(URL).json()["results"] == []
    assert world.client(persona).get(f"{URL}{cred.pk}/").status_code == 403
    assert world.client(persona).delete(f"{URL}{cred.pk}/").status_code == 403


def test_another_organizations_credential_is_a_404(world):
    cred = credential_create(
        organization=world.acme,
        name="T",
        kind="http_bearer",
        secret={"token": "t", "allowed_hosts": ["api.example.com"]},
    )
    outsider = world.client("outsider")
    assert outsider.get(f"{URL}{cred.pk}/").status_code == 404
    assert outsider.patch(f"{URL}{cred.pk}/", {"name": "x"}, format="json").status_code == 404
    assert outsider.get(URL).json()["results"] == []
    secret = {"token": "t", "allowed_hosts": ["api.example.com"]}
    response = outsider.post(URL, {"organization": world.acme.pk, "name": "x", "kind": "http_bearer",
                                   "secret": secret}, format="json")  # fmt: skip
    assert response.status_code == 400
    assert "organization" in response.json()["errors"]


def test_a_missing_field_is_a_400_naming_it(world):
    response = create(world, secret={"host": "smtp.acme.test", "from_email": "robot@acme.test", "username": "u"})
    assert response.status_code == 400
    body = response.json()
    assert body["errors"] == {"secret": {"password": ["username and password go together: set both or neither."]}}
    assert "password" in body["detail"]
    response = create(world, kind="http_bearer", secret={})
    assert response.json()["errors"]["secret"] == {
        "token": ["token is required for a http_bearer credential."],
        "allowed_hosts": ["allowed_hosts is required for a http_bearer credential."],
    }
    response = create(world, kind="telnet")
    assert response.status_code == 400
    assert "kind" in response.json()["errors"]


def test_a_duplicate_name_is_a_400_on_name(world):
    assert create(world).status_code == 201
    response = create(world)
    assert response.status_code == 400
    assert "name" in response.json()["errors"]


def test_the_organization_defaults_to_the_only_one_administered(world):
    secret = {"token": "t", "allowed_hosts": ["api.example.com"]}
    response = world.client("admin").post(URL, {"name": "T", "kind": "http_bearer", "secret": secret}, format="json")
    assert response.status_code == 201
    assert response.json()["organization"] == world.acme.pk


def test_patch_changes_fields_and_keeps_omitted_secrets(world):
    cred_id = create(world).json()["id"]
    response = world.client("admin").patch(f"{URL}{cred_id}/", {"name": "Mail 2", "secret": {"port": 465,
                                           "security": "ssl"}}, format="json")  # fmt: skip
    assert response.status_code == 200, response.content
    assert response.json()["public"]["security"] == "ssl"
    revealed = credential_reveal(Credential.objects.get(pk=cred_id))
    assert revealed["password"] == "hunter2-top-secret"
    assert revealed["port"] == 465
    response = world.client("admin").patch(f"{URL}{cred_id}/", {"kind": "http_bearer"}, format="json")
    assert response.status_code == 400
    assert "kind" in response.json()["errors"]


def test_delete(world):
    cred_id = create(world).json()["id"]
    assert world.client("owner").delete(f"{URL}{cred_id}/").status_code == 204
    assert not Credential.objects.filter(pk=cred_id).exists()


def test_the_action_catalogue_lists_every_action_with_schema_and_credential_kind(world):
    response = world.client("viewer").get("/api/actions/")
    assert response.status_code == 200
    actions = {a["name"]: a for a in response.json()["actions"]}
    assert {"http.request", "slack.message", "email.send", "sheets.append_row", "custom", "filter",
            "transform"} <= set(actions)  # fmt: skip
    assert actions["slack.message"]["credential_kind"] == ["slack_bot_token", "slack_oauth"]
    assert "oauth2" in actions["http.request"]["credential_kind"]
    assert actions["email.send"]["credential_kind"] == ["smtp", "sendgrid_api_key"]
    assert actions["http.request"]["config_schema"]["required"] == ["url"]
    kinds = response.json()["credential_kinds"]
    assert kinds["smtp"]["secret"] == ["password"]
    assert kinds["google_service_account"]["secret"] == ["key"]
    json.dumps(response.json())


def test_the_action_catalogue_needs_a_login(db, client):
    assert client.get("/api/actions/").status_code == 401


def test_an_update_cannot_move_the_credential_or_change_its_kind(world):
    cred = create(world).json()
    Membership.objects.create(user=world.users["owner"], organization=world.globex, role=Role.OWNER)
    client = world.client("owner")
    response = client.patch(f"{URL}{cred['id']}/", {"organization": world.globex.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"organization": ["A credential cannot move to another organization."]}
    response = client.patch(f"{URL}{cred['id']}/", {"kind": "http_bearer"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"kind": ["The kind of a credential cannot change; create a new one."]}
    assert Credential.objects.get(pk=cred["id"]).kind == "smtp"
