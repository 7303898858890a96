"""The live run view in a real browser: steps update in place, with no reload, until the run is final."""

import json
import urllib.request

import pytest

from accounts.models import Membership, Organization, Role, User
from testing.worker import wait_for_run
from workflows.models import Run, StepRun, TriggerType
from workflows.services import workflow_create, workflow_current_version

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
                # ~3 s between attempts: each attempt count stays on the page for
                # several 1 s polls, so watching it progress cannot miss a state.
                "max_retries": 2,
                "backoff_seconds": 3,
                "backoff_max_seconds": 3,
            },
            {"key": "never", "action_type": "transform", "config": {"value": 1}},
        ],
    )
    admin_login(page, live_server, user.email)
    run_id = post_json(f"{live_server.url}/hooks/{wf.webhook_token}", {"n": 7})["run_id"]
    page.goto(f"{live_server.url}/runs/{run_id}/live")
    # The page was loaded once; everything below arrives through polling. Record
    # every (status, attempts) the flaky step's row shows, as it is redrawn.
    page.evaluate(
        """() => {
        window.pfSeen = [];
        const row = document.getElementById("pf-step-1");
        const note = () => {
            const seen = [row.querySelector(".pf-step-status [data-status]").dataset.status,
                          row.querySelector(".pf-step-attempts").textContent];
            const last = window.pfSeen[window.pfSeen.length - 1];
            if (!last || last[0] !== seen[0] || last[1] !== seen[1]) window.pfSeen.push(seen);
        };
        note();
        new MutationObserver(note).observe(row, {subtree: true, childList: true, characterData: true});
    }"""
    )
    wait_for_run(run_id, {"failed"}, timeout=40, worker=celery_worker)
    page.wait_for_selector('#pf-run-status[data-status="failed"]', timeout=10_000)
    seen = page.evaluate("window.pfSeen")
    assert ["retrying", "1"] in seen and ["retrying", "2"] in seen, seen
    assert seen[-1] == ["failed", "3"], seen
    attempts = [int(a) for _, a in seen]
    assert attempts == sorted(attempts), seen
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


def test_the_live_view_stops_and_offers_to_log_in_when_the_session_ends(live_server, page, acme):
    org, user = acme
    wf = workflow_create(
        organization=org,
        name="Waiting",
        trigger_type=TriggerType.MANUAL,
        steps=[{"key": "shape", "action_type": "transform", "config": {"value": 1}}],
    )
    # A run that stays queued: written directly, so nothing is sent to a broker.
    run = Run.objects.create(
        workflow=wf, workflow_version=wf.version, version=workflow_current_version(wf), trigger="manual"
    )
    StepRun.objects.create(run=run, position=0, key="shape", action_type="transform")
    admin_login(page, live_server, user.email)
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "live.json" in request.url else None)
    page.goto(f"{live_server.url}/runs/{run.pk}/live")
    page.wait_for_function("() => document.getElementById('pf-poll-note').textContent === 'Updating live…'")
    page.wait_for_timeout(1500)
    assert len(polls) >= 1  # it is polling

    page.context.clear_cookies()  # the session is gone, as after it expired
    page.wait_for_selector("#pf-access-lost:visible", timeout=5_000)
    assert "your session has ended" in page.locator("#pf-access-lost").inner_text()
    assert page.locator("#pf-poll-note").inner_text() == "Not updating (HTTP 401)."
    href = page.locator("#pf-login-link").get_attribute("href")
    assert href == f"/app/login/?next=/runs/{run.pk}/live"
    stopped_at = len(polls)
    page.wait_for_timeout(3000)
    assert len(polls) == stopped_at  # no retrying forever
    page.click("#pf-login-link")
    page.wait_for_selector("#id_username")
