"""The live run view in a real browser: steps update in place, with no reload, until the run is final."""

import json
import urllib.request

import pytest

from accounts.models import Membership, Organization, Role, User
from potaflow.testing.worker import wait_for_run
from workflows.models import Run, TriggerType
from workflows.services import workflow_create

from .conftest import PASSWORD, admin_login


@pytest.fixture
def acme(transactional_db):
    org = Organization.objects.create(name="Acme", slug="acme")
    user = User.objects.create_user(email="ed@acme.test", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=user, organization=org, role=Role.EDITOR)
    return org, user


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local live server
        assert response.status == 202
        return json.loads(response.read())


def test_a_failing_step_shows_its_error_and_attempts_live(celery_worker, live_server, page, acme, tmp_path, shot):
    org, user = acme
    log = tmp_path / "calls.jsonl"
    wf = workflow_create(
        organization=org,
        name="Flaky then broken",
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.body.n }}"}}},
            {
                "key": "flaky",
                "action_type": "custom",
                "config": {"handler": "test.flaky", "input": {"log": str(log), "fail_times": 5}},
                "max_retries": 2,
                "backoff_seconds": 0.5,
                "backoff_max_seconds": 1,
            },
            {"key": "never", "action_type": "transform", "config": {"value": 1}},
        ],
    )
    admin_login(page, live_server, user.email)
    run_id = post_json(f"{live_server.url}/hooks/{wf.webhook_token}", {"n": 7})["run_id"]
    page.goto(f"{live_server.url}/runs/{run_id}/live")
    # The page was loaded once; everything below arrives through polling.
    page.wait_for_selector('#pf-step-1 .pf-step-status [data-status="retrying"]', timeout=20_000)
    wait_for_run(run_id, {"failed"}, timeout=30, worker=celery_worker)
    page.wait_for_selector('#pf-run-status[data-status="failed"]', timeout=10_000)
    flaky = page.locator("#pf-step-1")
    assert flaky.locator('[data-status="failed"]').count() == 1
    assert flaky.locator(".pf-step-attempts").inner_text() == "3"
    assert "flaky: call 3 fails" in flaky.locator(".pf-error").inner_text()
    assert "gave up after 3 attempts" in flaky.locator(".pf-error").inner_text()
    assert page.locator('#pf-step-2 [data-status="skipped"]').count() == 1
    assert page.locator('#pf-step-0 [data-status="succeeded"]').count() == 1
    assert page.locator("#pf-poll-note").inner_text() == "This run is final."
    assert Run.objects.get(pk=run_id).dead_lettered
    shot(page, "live-view-failed-step")
