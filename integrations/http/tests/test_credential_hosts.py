"""A credential says where it may be sent (``allowed_hosts``): an editor cannot point a
step carrying it at a server of their choosing and read it back."""

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Membership, Role, User
from integrations.crypto import encrypt_json
from integrations.errors import PermanentError
from integrations.http import credential_hosts
from integrations.http.action import HttpRequest
from integrations.models import Credential
from integrations.services import credential_create, credential_reveal
from integrations.tests.support import make_ctx
from testing.network import Reply

pytestmark = pytest.mark.django_db


def member(organization, role, email):
    user = User.objects.create_user(email=email, password="pw-long-enough-123")
    Membership.objects.create(user=user, organization=organization, role=role)
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def bearer(organization):
    return credential_create(
        organization=organization,
        name="crm",
        kind="http_bearer",
        secret={"token": "owner-only-token", "allowed_hosts": "api.crm.example, https://hooks.example.com/v1/"},
    )


def test_an_editor_cannot_save_a_step_sending_the_credential_to_an_echo_server(organization, bearer, http_server):
    """The reported attack: the token would come back in the echo server's answer."""
    editor = member(organization, Role.EDITOR, "ed@example.com")
    steps = [{"key": "leak", "action_type": "http.request", "credential": bearer.pk,
              "config": {"method": "POST", "url": f"{http_server.url}/echo"}}]  # fmt: skip
    response = editor.post("/api/workflows/", {"name": "Leak", "steps": steps}, format="json")
    assert response.status_code == 400
    (message,) = response.json()["errors"]["steps[0].config.url"]
    assert "may not be sent to 127.0.0.1" in message
    assert "allowed_hosts rule (api.crm.example, https://hooks.example.com/v1/)" in message


def test_a_templated_url_outside_the_rule_fails_before_sending(allow_loopback, http_server, bearer):
    """The URL is known only once rendered: refused at run time, permanently, and nothing is sent."""
    http_server.route("POST", "/echo", Reply(200, {"echo": "whatever was sent"}))
    ctx = make_ctx(credential=credential_reveal(bearer), kind="http_bearer")
    with pytest.raises(PermanentError) as refused:
        HttpRequest().run({"method": "POST", "url": f"{http_server.url}/echo"}, ctx)
    assert "may not be sent to 127.0.0.1" in str(refused.value) and "nothing was sent" in str(refused.value)
    assert "allowed_hosts rule (api.crm.example" in str(refused.value)
    assert http_server.requests == []


def test_a_url_inside_the_rule_gets_the_credential(allow_loopback, http_server, organization):
    cred = credential_create(
        organization=organization,
        name="local",
        kind="http_header",
        secret={"header_name": "X-Api-Key", "value": "k-1", "allowed_hosts": [f"{http_server.url}/api/"]},
    )
    http_server.route("GET", "/api/items", Reply(200, {"ok": True}))
    out = HttpRequest().run(
        {"url": f"{http_server.url}/api/items"}, make_ctx(credential=credential_reveal(cred), kind="http_header")
    )
    assert out["status"] == 200 and http_server.requests[0].headers["x-api-key"] == "k-1"
    with pytest.raises(PermanentError, match="outside its allowed_hosts rule"):
        HttpRequest().run(
            {"url": f"{http_server.url}/api/../admin"},
            make_ctx(credential=credential_reveal(cred), kind="http_header"),
        )
    assert len(http_server.requests) == 1


def test_a_redirect_outside_the_rule_drops_the_credential(allow_loopback, http_server, organization):
    cred = credential_create(
        organization=organization,
        name="local",
        kind="http_bearer",
        secret={"token": "tk", "allowed_hosts": [f"{http_server.url}/api/"]},
    )
    http_server.route("GET", "/api/start", Reply(302, "", {"Location": "/elsewhere"}))
    http_server.route("GET", "/elsewhere", Reply(200, {"done": True}))
    HttpRequest().run(
        {"url": f"{http_server.url}/api/start"}, make_ctx(credential=credential_reveal(cred), kind="http_bearer")
    )
    first, second = http_server.requests
    assert first.headers["authorization"] == "Bearer tk" and "authorization" not in second.headers


@pytest.mark.parametrize(
    ("entries", "url", "allowed"),
    [
        (["api.example.com"], "https://api.example.com/x", True),
        (["api.example.com"], "http://api.example.com:8080/x", True),
        (["api.example.com"], "https://api.example.com.evil.test/", False),
        (["api.example.com"], "https://evil.test/?next=api.example.com", False),
        (["*.example.com"], "https://eu.api.example.com/", True),
        (["*.example.com"], "https://example.com/", False),
        (["https://api.example.com/v1/"], "https://api.example.com/v1/orders", True),
        (["https://api.example.com/v1"], "https://api.example.com/v10", False),
        (["https://api.example.com/v1/"], "http://api.example.com/v1/orders", False),
        (["https://api.example.com/v1/"], "https://api.example.com:8443/v1/orders", False),
        (["https://api.example.com/v1/"], "https://api.example.com/v1/%2e%2e/admin", False),
        (["API.Example.com."], "https://api.example.com/", True),
    ],
)
def test_rule_matching(entries, url, allowed):
    if allowed:
        credential_hosts.check(entries, url)
    else:
        with pytest.raises(credential_hosts.NotAllowed):
            credential_hosts.check(entries, url)


def test_allowed_hosts_is_required_and_validated_for_http_kinds(organization):
    with pytest.raises(ValidationError) as missing:
        credential_create(organization=organization, name="a", kind="http_bearer", secret={"token": "t"})
    assert "allowed_hosts is required" in str(missing.value.message_dict["allowed_hosts"])
    for bad in ("ftp://files.example.com/", "https://api.example.com/?q=1", "exa mple..com", "host:8080", ""):
        with pytest.raises(ValidationError) as invalid:
            credential_create(
                organization=organization, name="b", kind="http_bearer", secret={"token": "t", "allowed_hosts": [bad]}
            )
        assert "allowed_hosts" in invalid.value.message_dict
    # Slack, SendGrid, Google and SMTP credentials are only ever sent to their service: no rule to set.
    slack = credential_create(organization=organization, name="s", kind="slack_bot_token", secret={"token": "xoxb-1"})
    assert "allowed_hosts" not in slack.public_data


def test_a_credential_from_before_the_rule_is_refused_until_an_admin_sets_it(organization, http_server):
    """Existing credentials have no allowed_hosts: refused at save and at run time, saying why."""
    legacy = Credential.objects.create(
        organization=organization, name="old", kind="http_bearer", secret_ciphertext=encrypt_json({"token": "t"})
    )
    editor = member(organization, Role.EDITOR, "ed@example.com")
    steps = [{"key": "call", "action_type": "http.request", "credential": legacy.pk,
              "config": {"url": "{{ trigger.body.url }}"}}]  # fmt: skip
    response = editor.post("/api/workflows/", {"name": "Old", "steps": steps}, format="json")
    assert response.status_code == 400
    assert "an admin must set the hosts" in response.json()["errors"]["steps[0].credential"][0]
    with pytest.raises(PermanentError, match="has no allowed_hosts"):
        HttpRequest().run(
            {"url": f"{http_server.url}/x"}, make_ctx(credential=credential_reveal(legacy), kind="http_bearer")
        )
    assert http_server.requests == []
    admin = member(organization, Role.ADMIN, "admin@example.com")
    patched = admin.patch(
        f"/api/credentials/{legacy.pk}/", {"secret": {"allowed_hosts": ["api.example.com"]}}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["public"]["allowed_hosts"] == ["api.example.com"]
    assert credential_reveal(Credential.objects.get(pk=legacy.pk))["token"] == "t"


def test_the_admin_form_takes_allowed_hosts_as_text(organization):
    user = User.objects.create_user(email="admin@example.com", password="pw-long-enough-123", is_staff=True)
    Membership.objects.create(user=user, organization=organization, role=Role.ADMIN)
    client = Client()
    client.force_login(user)
    form = {"organization": organization.pk, "name": "CRM", "kind": "http_bearer", "http_bearer__token": "tk"}
    missing = client.post("/admin/integrations/credential/add/", form)
    assert missing.status_code == 200 and "http_bearer__allowed_hosts" in missing.context["adminform"].form.errors
    hosts = "api.crm.example,\nhttps://hooks.example.com/v1/"
    response = client.post("/admin/integrations/credential/add/", {**form, "http_bearer__allowed_hosts": hosts})
    assert response.status_code == 302
    cred = Credential.objects.get(name="CRM")
    assert cred.public_data["allowed_hosts"] == ["api.crm.example", "https://hooks.example.com/v1/"]
    page = client.get(f"/admin/integrations/credential/{cred.pk}/change/").content.decode()
    assert "api.crm.example, https://hooks.example.com/v1/" in page
