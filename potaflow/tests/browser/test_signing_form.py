"""The workflow page shows the generic HMAC options only for the hmac signature scheme."""

import pytest

from accounts.models import Membership, Organization, Role, User
from workflows.services import workflow_create

from .conftest import PASSWORD, admin_login


@pytest.fixture
def editor(transactional_db):
    org = Organization.objects.create(name="Acme", slug="acme")
    user = User.objects.create_user(email="ed@acme.test", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=user, organization=org, role=Role.EDITOR)
    return org, user


def test_the_hmac_options_appear_only_for_the_hmac_scheme(live_server, page, editor, shot):
    org, user = editor
    wf = workflow_create(organization=org, name="Signed", trigger_type="webhook")
    admin_login(page, live_server, user.email)
    page.goto(f"{live_server.url}/admin/workflows/workflow/{wf.pk}/change/")
    page.wait_for_selector("#id_signature_scheme")
    assert page.locator(".field-webhook_secret_previous").is_visible()
    assert not page.locator(".field-hmac_header").is_visible()
    page.select_option("#id_signature_scheme", "hmac")
    assert page.locator(".field-hmac_header").is_visible() and page.locator(".field-hmac_encoding").is_visible()
    shot(page, "workflow-signing-hmac")
    page.select_option("#id_trigger_type", "schedule")
    assert not page.locator(".field-hmac_header").is_visible()
    assert not page.locator(".field-signature_scheme").is_visible()
