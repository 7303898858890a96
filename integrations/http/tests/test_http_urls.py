"""Malformed ``http.request`` URLs are a 400 naming the field, never a 500."""

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, Role, User
from integrations.errors import PermanentError
from integrations.http.action import HttpRequest
from integrations.tests.support import make_ctx

pytestmark = pytest.mark.django_db


@pytest.fixture
def editor_client(organization):
    user = User.objects.create_user(email="editor@example.com", password="pw-long-enough-123")
    Membership.objects.create(user=user, organization=organization, role=Role.EDITOR)
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize(
    "bad_url",
    [
        "http://[",
        "http://[::1",
        "http://[::ffff:127.1]:8520/",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "https://",
    ],
)
def test_a_malformed_url_is_400_naming_the_field(editor_client, bad_url):
    steps = [{"key": "call", "action_type": "http.request", "config": {"url": bad_url}}]
    response = editor_client.post("/api/workflows/", {"name": "X", "steps": steps}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert "steps[0].config.url" in body["errors"], body
    assert "url" in body["detail"]


def test_a_templated_url_is_checked_when_rendered(editor_client):
    """A URL built from a template is validated at run time; saving it is fine."""
    steps = [{"key": "call", "action_type": "http.request", "config": {"url": "{{ trigger.body.url }}"}}]
    response = editor_client.post("/api/workflows/", {"name": "X", "steps": steps}, format="json")
    assert response.status_code == 201, response.content


def test_a_malformed_rendered_url_fails_the_step_permanently():
    for bad in ("http://[", "http://[::ffff:127.1]:8520/"):
        with pytest.raises(PermanentError, match="invalid URL"):
            HttpRequest().run({"url": bad}, make_ctx())
