"""The "done when" path in a real browser: build a webhook -> HTTP workflow in the admin,
copy its URL, fire it, watch it succeed live. A viewer gets no save button; the
trigger's and the credential kind's fields are the only ones shown."""

import json
import urllib.request

import pytest

from accounts.models import Membership, Organization, Role, User
from testing.network import Reply
from testing.worker import wait_for_run
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
    for role in (Role.ADMIN, Role.EDITOR, Role.VIEWER):
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
    # The peer takes 3 s, so the live page opens on a run still in progress.
    http_server.route("POST", "/crm", Reply(status=201, body={"id": "crm-7"}, delay=3))
    admin_login(page, live_server, users[Role.EDITOR].email)

    page.goto(f"{live_server.url}/admin/workflows/workflow/add/")
    page.select_option("#id_organization", str(org.pk))
    page.fill("#id_name", "New signups to the CRM")
    webhook_rows = [".field-webhook_link", ".field-webhook_secret_status", ".field-webhook_secret"]
    webhook_rows.append(".field-remove_webhook_secret")
    schedule_rows = [".field-schedule", ".field-schedule_preview", ".field-timezone"]
    for trigger, shown, hidden in (
        ("schedule", schedule_rows, webhook_rows),
        ("manual", [], webhook_rows + schedule_rows),
        ("webhook", webhook_rows, schedule_rows),
    ):
        page.select_option("#id_trigger_type", trigger)
        for row in shown:
            assert page.locator(row).is_visible(), (trigger, row)
        for row in hidden:
            assert page.locator(row).is_hidden(), (trigger, row)
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
    first_paint = json.loads(page.locator("#pf-initial-state").text_content())
    assert first_paint["finished"] is False and first_paint["steps"][1]["status"] != "succeeded"
    assert page.locator("#pf-poll-note").inner_text() == "Updating live…"
    page.evaluate("window.pfSamePage = true")  # gone if anything reloaded the page
    page.wait_for_selector('#pf-run-status[data-status="succeeded"]', timeout=30_000)
    assert page.evaluate("window.pfSamePage") is True
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
    page.click("#toggle-nav-sidebar")  # room for every column in the screenshot
    shot(page, "admin-run-list")
    assert Run.objects.filter(workflow=workflow).count() == 1


def test_a_viewer_has_no_save_button(live_server, page, acme):
    org, users = acme
    from workflows.services import workflow_create

    wf = workflow_create(organization=org, name="Read only", trigger_type="webhook")
    admin_login(page, live_server, users[Role.VIEWER].email)
    page.goto(f"{live_server.url}/admin/workflows/workflow/{wf.pk}/change/")
    page.wait_for_selector(".field-webhook_secret_status")
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("#pf-run-now").count() == 0
    # The webhook URL is the capability to trigger runs: editors and above only.
    assert page.locator("#pf-webhook-url").count() == 0


def test_the_credential_page_shows_only_the_chosen_kinds_fields(live_server, page, acme):
    _org, users = acme
    admin_login(page, live_server, users[Role.ADMIN].email)
    page.goto(f"{live_server.url}/admin/integrations/credential/add/")
    assert page.locator("fieldset.pf-kind:visible").count() == 0  # no kind chosen yet
    for kind, labels in (("http_bearer", ["token"]), ("http_basic", ["username", "password"]), ("smtp", ["host"])):
        page.select_option("#id_kind", kind)
        assert page.locator("fieldset.pf-kind:visible").count() == 1
        assert page.locator(f"fieldset.pf-kind-{kind}").is_visible()
        for label in labels:
            assert page.locator(f"fieldset.pf-kind label:visible:text-is('{label}:')").count() == 1, (kind, label)
    page.select_option("#id_kind", "http_bearer")
    assert "Sent as Authorization: Bearer <token>." in page.locator("fieldset.pf-kind-http_bearer").inner_text()
