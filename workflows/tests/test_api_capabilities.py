"""The webhook URL is the capability to trigger runs: only editors and above see it in the API."""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Membership, Role
from workflows.models import TriggerType
from workflows.services import workflow_create

from .conftest import make_user

pytestmark = pytest.mark.django_db

STEPS = [{"key": "shape", "action_type": "transform", "config": {"value": 1}}]


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def hooked(org):
    return workflow_create(organization=org, name="Hooked", trigger_type=TriggerType.WEBHOOK, steps=STEPS)


def test_a_viewer_never_sees_the_webhook_url(viewer, hooked):
    """The defect: viewers read webhook_url, i.e. could trigger runs they may not start themselves."""
    client = api_for(viewer)
    listed = client.get("/api/workflows/").json()["results"]
    detail = client.get(f"/api/workflows/{hooked.pk}/").json()
    assert [w["webhook_url"] for w in listed] == [None]
    assert detail["webhook_url"] is None
    assert hooked.webhook_token not in str(listed) + str(detail)


@pytest.mark.parametrize("role", [Role.EDITOR, Role.ADMIN, Role.OWNER])
def test_editors_and_above_see_it(org, hooked, role):
    user = make_user(org, role, f"{role}@example.com")
    body = api_for(user).get(f"/api/workflows/{hooked.pk}/").json()
    assert body["webhook_url"].endswith(f"/hooks/{hooked.webhook_token}")


def test_the_role_counts_per_organization(org, other_org, viewer, hooked):
    # An editor elsewhere is still only a viewer here.
    Membership.objects.create(user=viewer, organization=other_org, role=Role.EDITOR)
    theirs = workflow_create(organization=other_org, name="Theirs", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    urls = {w["name"]: w["webhook_url"] for w in api_for(viewer).get("/api/workflows/").json()["results"]}
    assert urls["Hooked"] is None
    assert urls["Theirs"].endswith(f"/hooks/{theirs.webhook_token}")
