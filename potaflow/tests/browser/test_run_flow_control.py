"""Runs of flow-control workflows (issue 19) on the run page, with the real worker: the path taken,
a loop with a failed iteration opened item by item, and an approval given and refused by a member
while a viewer sees the wait but cannot decide."""

import shutil
from pathlib import Path

import pytest

from accounts.models import Membership, Organization, Role, User
from integrations.registry import all_actions
from testing.worker import wait_for_run
from workflows.services import start_manual_run, workflow_create

from .a11y import serious_violations

DOCS = Path(__file__).resolve().parents[3] / "docs"
PASSWORD = "run-flow-pass-123!"

pytestmark = pytest.mark.skipif(
    "for_each" not in all_actions(), reason="needs the flow-control engine of issue 19 (branch, for_each, wait)"
)


@pytest.fixture
def org(transactional_db):
    org = Organization.objects.create(name="Analytical Engines", slug="engines")
    for email, role in (("ed@engines.test", Role.EDITOR), ("vic@engines.test", Role.VIEWER)):
        user = User.objects.create_user(email=email, password=PASSWORD)
        Membership.objects.create(user=user, organization=org, role=role)
    return org


def sign_in(page, base: str, email: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/app/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/app/workflows/**")


def box(page, key: str):
    return page.locator(f'#pf-run-flow [data-step-key="{key}"]')


def test_the_view_of_a_run_with_a_failed_iteration(celery_worker, live_server, page, org, shot):
    lines = {
        "key": "lines",
        "action_type": "for_each",
        "config": {
            "items": "{{ trigger.body.lines }}",
            "on_item_failure": "continue",
            "steps": [
                {"key": "ratio", "action_type": "transform", "max_retries": 0,
                 "config": {"value": {"per": "{{ 10 // item.n }}"}}},
            ],
        },
    }  # fmt: skip
    workflow = workflow_create(
        organization=org,
        name="Order lines",
        steps=[
            {
                "key": "route",
                "action_type": "branch",
                "config": {
                    "paths": [{"name": "order", "when": "{{ trigger.body.kind == 'order' }}", "steps": [lines]}],
                    "otherwise": [{"key": "ignore", "action_type": "stop", "config": {"status": "filtered"}}],
                },
            },
        ],
    )
    run = start_manual_run(workflow=workflow, body={"kind": "order", "lines": [{"n": 1}, {"n": 0}, {"n": 2}, {"n": 5}]})
    wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker)
    sign_in(page, live_server.url, "ed@engines.test")
    page.goto(f"{live_server.url}/app/runs/{run.pk}/")
    page.wait_for_selector("#pf-run[data-drawn]")
    assert box(page, "route").get_attribute("data-status") == "succeeded"
    assert "pf-taken" in page.locator('[data-path="route/order"]').get_attribute("class")
    assert "pf-not-taken" in page.locator('[data-path="route/otherwise"]').get_attribute("class")
    assert box(page, "ignore").get_attribute("data-status") == "not_taken"
    assert "4 of 4 items, 1 failed" in box(page, "lines").inner_text()
    assert box(page, "ratio").get_attribute("data-status") == "failed"  # the worst of its iterations
    items = page.locator("#pf-run-flow .pf-iteration")
    assert items.all_inner_texts() == ["0", "1", "2", "3"]
    assert page.locator("#pf-run-flow .pf-iteration-failed").all_inner_texts() == ["1"]
    assert serious_violations(page) == []
    shutil.copyfile(shot(page, "run-flow-iteration"), DOCS / "run-flow-iteration.png")
    # Open the failed item: only its step instances are listed, with the error.
    page.get_by_role("button", name="Open item 1 of lines (failed)").click()
    shown = page.locator(".pf-steprun:not([hidden])")
    assert shown.evaluate_all("cs => cs.map(c => c.dataset.path)") == ["lines[1]/ratio"]
    assert shown.first.get_attribute("data-status") == "failed"
    assert page.evaluate("document.activeElement.dataset.path") == "lines[1]/ratio"
    page.get_by_role("button", name="Show all steps").click()
    assert page.locator(".pf-steprun:not([hidden])").count() > 4


def test_a_member_approves_and_refuses_and_a_viewer_cannot(celery_worker, live_server, page, browser, org, shot):
    workflow = workflow_create(
        organization=org,
        name="Refunds",
        steps=[
            {"key": "approve", "action_type": "wait", "config": {"kind": "approval", "timeout_seconds": 3600}},
            {
                "key": "decide",
                "action_type": "branch",
                "config": {
                    "paths": [
                        {
                            "name": "yes",
                            "when": "{{ steps.approve.output.approved }}",
                            "steps": [{"key": "pay", "action_type": "transform", "config": {"value": {"paid": True}}}],
                        }
                    ],
                    "otherwise": [
                        {
                            "key": "refused",
                            "action_type": "stop",
                            "config": {"status": "filtered", "message": "refused"},
                        }
                    ],
                },
            },
        ],
    )
    runs = [start_manual_run(workflow=workflow, body={"amount": n}) for n in (10, 20, 30)]
    for run in runs:
        wait_for_run(run.pk, {"waiting"}, timeout=60, worker=celery_worker)
    base = live_server.url

    # A viewer sees the wait and who may decide, without buttons; the API refuses them too.
    viewer = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base)
    viewer_page = viewer.new_page()
    sign_in(viewer_page, base, "vic@engines.test")
    viewer_page.goto(f"{base}/app/runs/{runs[2].pk}/")
    viewer_page.wait_for_selector("#pf-run[data-drawn]")
    approvals = viewer_page.locator("#pf-approvals")
    assert "ed@engines.test" in approvals.inner_text() and "vic@engines.test" not in approvals.inner_text()
    assert approvals.get_by_role("button").count() == 0
    status = viewer_page.evaluate(
        """async (run) => (await fetch(`/api/runs/${run}/approve/`, {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json',
                      'X-CSRFToken': document.querySelector('input[name=csrfmiddlewaretoken]').value},
            body: JSON.stringify({step: 'approve', approved: true})})).status""",
        str(runs[2].pk),
    )
    assert status == 403
    viewer.close()

    # The editor approves the first run: it goes on along "yes" and pays.
    sign_in(page, base, "ed@engines.test")
    page.goto(f"{base}/app/runs/{runs[0].pk}/")
    page.wait_for_selector("#pf-run[data-drawn]")
    assert box(page, "approve").get_attribute("data-status") == "waiting"
    assert serious_violations(page) == []
    shutil.copyfile(shot(page, "run-waiting-approval"), DOCS / "run-waiting-approval.png")
    page.get_by_role("button", name="Approve approve").click()
    page.wait_for_selector('#pf-run[data-finished="true"]', timeout=30_000)  # the page follows the run
    assert page.locator("#pf-run-status").inner_text() == "succeeded"
    assert box(page, "approve").get_attribute("data-status") == "succeeded"
    assert box(page, "pay").get_attribute("data-status") == "succeeded"
    assert "pf-taken" in page.locator('[data-path="decide/yes"]').get_attribute("class")

    # ... and refuses the second: the otherwise path ends it as filtered.
    page.goto(f"{base}/app/runs/{runs[1].pk}/")
    page.wait_for_selector("#pf-run[data-drawn]")
    page.get_by_role("button", name="Refuse approve").click()
    page.wait_for_selector('#pf-run[data-finished="true"]', timeout=30_000)
    assert page.locator("#pf-run-status").inner_text() == "filtered"
    assert box(page, "pay").get_attribute("data-status") == "not_taken"
    assert box(page, "refused").get_attribute("data-status") == "succeeded"
    assert "pf-taken" in page.locator('[data-path="decide/otherwise"]').get_attribute("class")
