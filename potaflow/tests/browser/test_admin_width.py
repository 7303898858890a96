"""The staff admin's tables and forms fit 1,280 px: nothing scrolls sideways (issue 21)."""

from accounts.models import Membership, Organization, Role, User
from workflows import services
from workflows.models import TriggerType

from .conftest import PASSWORD, admin_login


def test_admin_pages_fit_1280_px(page, live_server, shot):
    admin = User.objects.create_superuser(email="root@example.com", password=PASSWORD)
    org = Organization.objects.create(name="A rather long organization name for the tables", slug="acme")
    Membership.objects.create(user=admin, organization=org, role=Role.OWNER)
    workflow = services.workflow_create(
        organization=org,
        name="Forward every signup to the CRM, then tell the team about it",
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {"key": "shape_the_contact", "action_type": "transform", "config": {"value": {"email": "x"}}},
            {
                "key": "post",
                "action_type": "http.request",
                "config": {"method": "POST", "url": "https://example.com/x"},
            },
        ],
    )
    services.start_manual_run(workflow=workflow, body={"a": 1})
    page.set_viewport_size({"width": 1280, "height": 900})
    admin_login(page, live_server, "root@example.com")
    pages = [
        "/admin/workflows/workflow/",
        f"/admin/workflows/workflow/{workflow.pk}/change/",
        "/admin/workflows/run/",
        "/admin/integrations/credential/",
        "/admin/accounts/user/",
        "/admin/accounts/membership/",
    ]
    widths = {}
    for path in pages:
        page.goto(live_server.url + path)
        widths[path] = page.evaluate(
            """() => Math.max(document.documentElement.scrollWidth,
                ...[...document.querySelectorAll('#changelist .results, .inline-group')].map(e => e.scrollWidth))"""
        )
    shot(page, "admin-users")
    page.goto(live_server.url + f"/admin/workflows/workflow/{workflow.pk}/change/")
    shot(page, "admin-workflow-change")
    assert all(width <= 1280 for width in widths.values()), widths
