"""The admin's "New from template": list, pick credentials, create an inactive workflow through the service."""

import pytest
from django.test import Client

from accounts.models import Role, User
from integrations.services import credential_create
from workflows.models import Workflow
from workflows.tests.conftest import make_user

pytestmark = pytest.mark.django_db


def staff(org, role, email):
    user = make_user(org, role, email)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


def test_an_editor_creates_a_workflow_from_a_template_with_a_chosen_credential(org, other_org, fernet_keys):
    mine = credential_create(organization=org, name="bot", kind="slack_bot_token", secret={"token": "xoxb-1"})
    credential_create(organization=other_org, name="theirs", kind="slack_bot_token", secret={"token": "xoxb-2"})
    client = staff(org, Role.EDITOR, "ed@example.com")
    listing = client.get("/admin/workflows/workflow/")
    assert b'id="pf-new-from-template"' in listing.content
    page = client.get("/admin/workflows/workflow/templates/")
    assert page.status_code == 200
    for title in ("Webhook → Slack message", "GitHub push → Slack", "Webhook → Google Sheets row"):
        assert title in page.content.decode()
    form = client.get("/admin/workflows/workflow/templates/github-push-slack/")
    assert "Acme: bot" in form.content.decode() and "theirs" not in form.content.decode()

    response = client.post(
        "/admin/workflows/workflow/templates/github-push-slack/",
        {"organization": org.pk, "name": "Pushes", "credential_0": mine.pk},
    )
    workflow = Workflow.objects.get(name="Pushes")
    assert response.status_code == 302 and response["Location"].endswith(f"/workflow/{workflow.pk}/change/")
    assert workflow.is_active is False and workflow.signature_scheme == "github"
    assert workflow.steps.get(key="notify").credential_id == mine.pk


def test_a_missing_credential_is_named_on_the_page_and_nothing_is_created(org):
    client = staff(org, Role.EDITOR, "ed@example.com")
    response = client.post("/admin/workflows/workflow/templates/webhook-slack/", {"organization": org.pk, "name": "S"})
    assert response.status_code == 200
    assert "steps[0].credential: No slack_bot_token credential named" in response.content.decode()
    assert not Workflow.objects.exists()


def test_viewers_cannot_create_from_templates(org):
    client = staff(org, Role.VIEWER, "v@example.com")
    assert b"pf-new-from-template" not in client.get("/admin/workflows/workflow/").content
    assert client.get("/admin/workflows/workflow/templates/").status_code == 403
    assert client.post("/admin/workflows/workflow/templates/webhook-filter-forward/", {}).status_code == 403
    assert client.get("/admin/workflows/workflow/templates/nope/").status_code in (403, 404)
