"""The run page draws the flow with each box coloured by its outcome, live while the run goes."""

import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError

from accounts.models import Membership, Organization, Role, User
from workflows.services import start_manual_run, workflow_create

from .a11y import serious_violations

DOCS = Path(__file__).resolve().parents[3] / "docs"
PASSWORD = "run-flow-pass-123!"


@pytest.fixture
def editor(transactional_db):
    org = Organization.objects.create(name="Analytical Engines", slug="engines")
    user = User.objects.create_user(email="ed@engines.test", password=PASSWORD)
    Membership.objects.create(user=user, organization=org, role=Role.EDITOR)
    return org


def sign_in(page, base: str, email: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/app/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/app/workflows/**")


def statuses(page) -> tuple:
    return tuple(
        page.locator(f'#pf-run-flow [data-step-key="{key}"]').get_attribute("data-status")
        for key in ("fetch", "shape", "store")
    )


def test_a_live_run_turns_green_box_by_box(celery_worker, live_server, page, editor, tmp_path, shot):
    def slow(key: str, seconds: float) -> dict:
        return {
            "key": key,
            "action_type": "custom",
            "config": {"handler": "test.slow", "input": {"log": str(tmp_path / key), "seconds": seconds}},
        }

    workflow = workflow_create(
        organization=editor, name="Nightly sync", steps=[slow("fetch", 1.5), slow("shape", 1.5), slow("store", 1.5)]
    )
    sign_in(page, live_server.url, "ed@engines.test")
    run = start_manual_run(workflow=workflow, body={})
    page.goto(f"{live_server.url}/app/runs/{run.pk}/")
    page.wait_for_selector("#pf-run[data-drawn]")
    seen = []
    deadline = time.monotonic() + 30
    mid_shot = False
    while time.monotonic() < deadline:
        try:
            now = statuses(page)
        except PlaywrightError:  # noqa: S112 - the page reloads itself once the run is final: read again
            continue
        if not seen or seen[-1] != now:
            seen.append(now)
        if now[0] == "succeeded" and now[2] != "succeeded" and not mid_shot:
            shutil.copyfile(shot(page, "run-flow-live"), DOCS / "run-flow-live.png")
            mid_shot = True
        if now == ("succeeded", "succeeded", "succeeded"):
            break
        page.wait_for_timeout(100)
    # In place, box by box: each turned green after the one before it and while the later ones had not.
    greens = [tuple(s == "succeeded" for s in snapshot) for snapshot in seen]
    assert (True, False, False) in greens and (True, True, False) in greens, seen
    assert greens.index((True, False, False)) < greens.index((True, True, False))
    assert any(s[1] == "running" for s in seen) or any(s[2] == "running" for s in seen), seen
    page.wait_for_selector('#pf-run[data-finished="true"]')
    assert statuses(page) == ("succeeded", "succeeded", "succeeded")
    assert page.locator('#pf-run-flow [data-step-key="trigger"]').count() == 1
    assert page.locator("#pf-run-flow .pf-selected").count() == 0  # nothing is "being edited" on a run
    # A box opens its step's attempts.
    page.locator('#pf-run-flow [data-step-key="shape"] .pf-node-main').click()
    assert page.evaluate("document.activeElement.dataset.key") == "shape"
    assert serious_violations(page) == []
