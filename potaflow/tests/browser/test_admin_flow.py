"""The "done when" path in a real browser: build a webhook -> HTTP workflow in the admin,
copy its URL, fire it, watch it succeed live. And a viewer gets no save button."""

import json
import urllib.request

import pytest

from accounts.models import Membership, Organization, Role, User
from potaflow.testing.network import Reply
from potaflow.testing.worker import wait_for_run
from workflows.models import Run, Workflow

from .conftest import PASSWORD, admin_login


@pytest.fixture
def celery_worker_env():
    return {"POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1"}


@pytest.fixture
def acme(transactional_db, settings):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    org = Organization.objects.create(name="Acme", slug="acme")
    users = {}
    for role in (Role.EDITOR, Role.VIEWER):
        user = User.objects.create_user(email=f"{role}@acme.test", password=PASSWORD, is_staff=True)
        Membership.objects.create(user=user, organization=org, role=role)
        users[role] = user
    return org, users


def fill_step(page, index: int, key: str, action: str, config: dict) -> None:
    page.fill(f"[name=steps-{index}-key]", key)
    page.select_option(f"[name=steps-{index}-action_type]", action)
    page.fill(f"[name=steps-{index}-config]", json.dumps(config))


def test_an_editor_builds_fires_and_watches_a_webhook_workflow(
    celery_worker, live_server, page, acme, http_server, shot
):
    org, users = acme
    http_server.route("POST", "/crm", Reply(status=201, body={"id": "crm-7"}))
    admin_login(page, live_server, users[Role.EDITOR].email)

    page.goto(f"{live_server.url}/admin/workflows/workflow/add/")
    page.select_option("#id_organization", str(org.pk))
    page.fill("#id_name", "New signups to the CRM")
    page.select_option("#id_trigger_type", "webhook")
    assert page.locator(".field-schedule").is_hidden()  # only the webhook trigger's fields
    fill_step(page, 0, "shape", "transform", {"value": {"email": "{{ trigger.body.email }}"}})
    page.click(".add-row a")
    fill_step(
        page,
        1,
        "crm",
        "http.request",
        {"method": "POST", "url": f"{http_server.url}/crm", "body": {"contact": "{{ steps.shape.output.email }}"}},
    )
    assert "Schema of http.request" in page.locator("#steps-1 .pf-schema-help summary").inner_text()
    shot(page, "admin-workflow-form")
    page.click("input[name=_continue]")
    page.wait_for_selector("#pf-webhook-url")
    assert page.locator(".errornote").count() == 0

    page.click("#pf-copy-webhook")
    page.wait_for_selector("#pf-copy-status:has-text('Copied.')")
    url = page.evaluate("navigator.clipboard.readText()")
    workflow = Workflow.objects.get(name="New signups to the CRM")
    assert url == f"{live_server.url}/hooks/{workflow.webhook_token}"
    assert [s.key for s in workflow.steps.order_by("position")] == ["shape", "crm"]
    shot(page, "admin-workflow-saved")

    request = urllib.request.Request(
        url, data=b'{"email": "ada@example.com"}', headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local live server
        assert response.status == 202
        run_id = json.loads(response.read())["run_id"]

    page.goto(f"{live_server.url}/runs/{run_id}/live")
    page.wait_for_selector('#pf-run-status[data-status="succeeded"]', timeout=30_000)
    for position in (0, 1):
        assert page.locator(f'#pf-step-{position} [data-status="succeeded"]').count() == 1
    assert page.locator("#pf-poll-note").inner_text() == "This run is final."
    page.click("#pf-step-1 .pf-json-output summary")
    assert "crm-7" in page.locator("#pf-step-1 .pf-json-output pre").inner_text()
    shot(page, "live-view-succeeded")
    assert wait_for_run(run_id, {"succeeded"}, timeout=5).status == "succeeded"
    assert json.loads(http_server.requests[-1].body) == {"contact": "ada@example.com"}

    page.goto(f"{live_server.url}/admin/workflows/run/")
    assert page.locator('[data-status="succeeded"]').count() >= 1
    shot(page, "admin-run-list")
    assert Run.objects.filter(workflow=workflow).count() == 1


def test_a_viewer_has_no_save_button(live_server, page, acme):
    org, users = acme
    from workflows.services import workflow_create

    wf = workflow_create(organization=org, name="Read only", trigger_type="webhook")
    admin_login(page, live_server, users[Role.VIEWER].email)
    page.goto(f"{live_server.url}/admin/workflows/workflow/{wf.pk}/change/")
    page.wait_for_selector("#pf-webhook-url")
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("#pf-run-now").count() == 0
