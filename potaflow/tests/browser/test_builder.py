"""The member pages in a real browser, with the real worker: sign up through the API, sign in,
build webhook → filter → http.request without typing JSON, test, activate, fire, watch,
break, fix and replay with the current version; a viewer reads only; an outsider gets 404s."""

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from accounts import services
from accounts.models import Invitation, User
from testing.network import Reply, worker_network_guard_env
from testing.worker import wait_for_run
from workflows.models import Run, Workflow

from .conftest import ARTIFACTS

DOCS = Path(__file__).resolve().parents[3] / "docs"
PASSWORD = "correct-horse-battery-42"
SAMPLE = {"email": "ann@example.com", "amount": 42}


@pytest.fixture
def celery_worker_env():
    env = worker_network_guard_env()
    env["POTAFLOW_ALLOW_PRIVATE_DESTINATIONS"] = "127.0.0.1"
    return env


def call(url: str, body: dict | None = None, token: str | None = None, method: str = "POST") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local live server
        return response.status, json.loads(response.read() or b"null")


def register(base: str, email: str, organization: str) -> None:
    status, _ = call(f"{base}/api/auth/register/", {"email": email, "password": PASSWORD, "organization": organization})
    assert status == 202  # the same answer whether or not the email exists (no account enumeration)
    # The address is confirmed by the mailed link (test_accounts.py follows it); here it is taken as read.
    services.email_mark_verified(user=User.objects.get(email=email))


def sign_in(page, base: str, email: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})  # the width the pages are made for
    page.goto(f"{base}/app/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/app/workflows/**")


def keep(shot_path: Path, name: str) -> None:
    """Screenshots shown in the README live in docs/."""
    shutil.copyfile(shot_path, DOCS / f"{name}.png")


def fits(page) -> None:
    """Nothing scrolls sideways at 1,280 px."""
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280, page.url


def labelled(page) -> None:
    """Every visible form control has an accessible name (a label or aria-label)."""
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !(e.tagName === 'BUTTON' && e.textContent.trim()))
            .map(e => e.outerHTML.slice(0, 120))"""
    )
    assert unnamed == [], unnamed


def add_step(page, action: str) -> None:
    """ "+ Add a step", then the action in the searchable list (action_picker.js)."""
    page.get_by_role("button", name="+ Add a step").click()
    page.locator(f'.pf-action-choice[data-action="{action}"]').click()


def pick(page, field, path: str) -> None:
    """Open the data picker beside ``field`` and choose ``path`` in its tree."""
    field.locator("xpath=ancestor::div[contains(@class,'pf-templated')][1]").get_by_role(
        "button", name="Insert data"
    ).click()
    page.locator(f'.pf-picker button.pf-pick[data-path="{path}"]').click()


@pytest.fixture
def team(live_server, transactional_db):
    """Signed up through the API: Ada (owner), Ed (made editor by Ada), Vic (viewer), Olga (another company)."""
    base = live_server.url
    register(base, "ada@engines.test", "Analytical Engines")
    register(base, "ed@engines.test", "Ed's own")
    register(base, "vic@engines.test", "Vic's own")
    register(base, "olga@elsewhere.test", "Elsewhere")
    _, tokens = call(f"{base}/api/auth/token/", {"email": "ada@engines.test", "password": PASSWORD})
    _, organizations = call(f"{base}/api/organizations/", token=tokens["access"], method="GET")
    listed = organizations["results"] if isinstance(organizations, dict) else organizations
    (org_id,) = [o["id"] for o in listed if o["name"] == "Analytical Engines"]
    for email, role in (("ed@engines.test", "editor"), ("vic@engines.test", "viewer")):
        status, _ = call(
            f"{base}/api/organizations/{org_id}/members/", {"email": email, "role": role}, tokens["access"]
        )
        assert status == 201
    return {"org_id": org_id}


def test_an_editor_builds_tests_runs_breaks_fixes_and_replays(
    celery_worker, live_server, browser, page, team, http_server, settings, shot
):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    http_server.route("POST", "/contacts", Reply(201, {"id": 7}))
    http_server.route("POST", "/broken", Reply(503, "down for maintenance"))
    base = live_server.url

    # Ed signed up through the API; he signs in and switches to the organization he edits.
    sign_in(page, base, "ed@engines.test")
    page.get_by_label("Organization").select_option(str(team["org_id"]))
    page.get_by_role("button", name="Switch").click()  # choosing alone does not navigate (keyboard users)
    page.wait_for_url(f"**/app/workflows/?org={team['org_id']}")
    assert page.locator(".pf-role").inner_text() == "Editor"
    page.get_by_role("link", name="New workflow").click()
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    page.get_by_role("button", name="Form").click()  # the form editor (remembered in this browser)
    # Every action list of the page follows the picker's one order: a step for the error path
    # starts as an HTTP request, not as a Python handler only a developer can install.
    error_path = page.get_by_label("New step in the error path")
    assert error_path.input_value() == "http.request"
    actions = error_path.locator('optgroup[label="Actions"] option').evaluate_all("os => os.map(o => o.value)")
    assert actions[0] == "http.request" and actions[-1] == "custom", actions

    # Build webhook → filter → http.request with forms and the data picker: no JSON typed.
    page.get_by_label("Workflow name").fill("New signups to the CRM")
    page.get_by_label("A web request arrives (webhook)").check()
    page.get_by_label("Sample trigger body (JSON)").fill(json.dumps(SAMPLE))  # sample data, not the definition
    add_step(page, "filter")
    condition = page.locator('[data-path="steps[0].config.condition"]')  # the condition builder
    condition.get_by_label("Field of condition 1").fill("trigger.body.amount")
    condition.get_by_label("Operator of condition 1").select_option("gt")
    condition.get_by_label("Value of condition 1").fill("10")
    assert condition.locator(".pf-cond-expression").inner_text() == "trigger.body.amount > 10"
    add_step(page, "http.request")
    card = page.locator(".pf-step").nth(1)
    card.locator('[data-path="steps[1].config.method"]').select_option("POST")
    card.locator('[data-path="steps[1].config.url"]').fill(f"{http_server.url}/contacts")
    card.get_by_role("button", name="Add body field").click()
    card.get_by_label("Body 1 name", exact=True).fill("email")
    value = card.get_by_label("Body 1 value", exact=True)
    pick(page, value, "trigger.body.email")
    assert value.input_value() == "{{ trigger.body.email }}"
    value.press("Tab")
    page.wait_for_timeout(300)
    assert card.locator(".pf-inline-check").first.inner_text() == ""  # the template checks out
    # the picker, open, for the screenshot in docs/
    pick_button = value.locator("xpath=ancestor::div[contains(@class,'pf-templated')][1]").get_by_role(
        "button", name="Insert data"
    )
    pick_button.click()
    page.wait_for_selector(".pf-picker")
    keep(shot(page, "builder-data-picker"), "builder-data-picker")
    page.keyboard.press("Escape")
    assert page.locator(".pf-picker").count() == 0

    labelled(page)
    fits(page)
    # A template is checked when its field loses focus, by the validator saving uses.
    url = card.locator('[data-path="steps[1].config.url"]')
    url.fill("https://crm.example.com/{{ steps.nope.output }}")
    url.press("Tab")
    check = card.locator(".pf-inline-check").first
    check.wait_for()
    assert "references step 'nope'" in check.inner_text()
    assert url.get_attribute("aria-invalid") == "true"

    # Reorder with the keyboard, duplicate and remove.
    page.get_by_role("button", name="Move step 2 up").focus()
    page.keyboard.press("Enter")
    assert page.locator(".pf-step").evaluate_all("cards => cards.map(c => c.dataset.key)") == ["http_request", "filter"]
    # focus followed the step to the top, where only "down" still moves it
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Move step 1 down"
    page.keyboard.press("Enter")
    assert page.locator(".pf-step").evaluate_all("cards => cards.map(c => c.dataset.key)") == ["filter", "http_request"]
    # ... and by dragging a card's handle onto another card.
    page.locator(".pf-step").nth(1).locator(".pf-drag").drag_to(page.locator(".pf-step").nth(0))
    assert page.locator(".pf-step").evaluate_all("cards => cards.map(c => c.dataset.key)") == ["http_request", "filter"]
    # (Playwright's Chromium starts only one HTML drag per page here; the way back is the keyboard.)
    page.get_by_role("button", name="Move step 2 up").click()
    assert page.locator(".pf-step").evaluate_all("cards => cards.map(c => c.dataset.key)") == ["filter", "http_request"]
    page.get_by_role("button", name="Duplicate step 2").click()
    assert page.locator(".pf-step").evaluate_all("cards => cards.map(c => c.dataset.key)") == [
        "filter",
        "http_request",
        "http_request_2",
    ]
    page.get_by_role("button", name="Remove step 3").click()
    assert page.locator(".pf-step").count() == 2

    # The server's validation names the field; the page shows it there.
    url.fill("ftp://crm.example.com/contacts")
    page.get_by_role("button", name="Save").click()
    slot = page.locator('[data-error-for="steps[1].config.url"]')
    slot.wait_for()
    assert "http:// or https://" in slot.inner_text()
    assert url.get_attribute("aria-invalid") == "true"
    assert "steps[1].config.url" in page.locator("#pf-error-summary").inner_text()
    assert not Workflow.objects.exists()
    url.fill(f"{http_server.url}/contacts")

    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/app/workflows/*/?saved=1")
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    workflow = Workflow.objects.get(name="New signups to the CRM")
    assert not workflow.is_active and workflow.trigger_type == "webhook"
    assert [(s.key, s.action_type) for s in workflow.steps.all()] == [
        ("filter", "filter"),
        ("http_request", "http.request"),
    ]
    assert workflow.steps.get(key="http_request").config == {
        "method": "POST",
        "url": f"{http_server.url}/contacts",
        "body": {"email": "{{ trigger.body.email }}"},
    }

    # Test with the sample: the filter runs, the request is shown, nothing is sent.
    page.get_by_label("Sample trigger body (JSON)").fill(json.dumps(SAMPLE))
    page.get_by_role("button", name="Test with sample data").click()
    page.wait_for_selector("#pf-builder[data-tested]")
    result = page.locator('.pf-test-step[data-key="http_request"]')
    assert result.get_attribute("data-status") == "preview"
    assert result.locator(".pf-would-request").inner_text() == f"POST {http_server.url}/contacts"
    assert json.loads(result.locator(".pf-would-body").inner_text()) == {"email": "ann@example.com"}
    assert page.locator('.pf-test-step[data-key="filter"]').get_attribute("data-status") == "ok"
    assert http_server.requests == []
    fits(page)
    keep(shot(page, "builder-test-result"), "builder-test-result")
    # The test's outputs feed the data picker, which works from the keyboard.
    value = page.locator(".pf-step").nth(1).get_by_label("Body 1 value", exact=True)
    value.focus()
    value.press("End")
    page.keyboard.press("Tab")  # to "Insert data"
    page.keyboard.press("Enter")
    passed = page.locator('.pf-picker button.pf-pick[data-path="steps.filter.output.passed"]')
    assert passed.is_visible()
    passed.focus()
    page.keyboard.press("Enter")
    assert value.input_value() == "{{ trigger.body.email }}{{ steps.filter.output.passed }}"
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Body 1 value"
    value.fill("{{ trigger.body.email }}")

    # Activate, save, fire it with an HTTP client, watch it live.
    page.get_by_label("Active").check()
    page.get_by_role("button", name="Save").click()
    # Switching it on is not a new version of its steps (issue 21): still version 1.
    page.wait_for_selector('#pf-builder[data-saved="1"]')
    assert "nothing changed" in page.locator("#pf-save-status").inner_text()
    keep(shot(page, "builder"), "builder")
    webhook_url = page.locator("#pf-webhook-url").input_value()
    status, body = call(webhook_url, SAMPLE)
    assert status == 202
    page.goto(f"{base}/app/runs/{body['run_id']}/")
    page.wait_for_selector('#pf-run-status[data-status="succeeded"]', timeout=30_000)
    assert len(http_server.requests) == 1 and json.loads(http_server.requests[0].body) == {"email": "ann@example.com"}

    # Break the URL (a 503, retried once), see the failure with each attempt.
    page.goto(f"{base}/app/workflows/{workflow.pk}/")
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    card = page.locator(".pf-step").nth(1)
    card.locator('[data-path="steps[1].config.url"]').fill(f"{http_server.url}/broken")
    card.get_by_text("Advanced: retries, timeout, unknown outcomes").click()
    card.get_by_label("Retries after a failure").fill("1")
    card.get_by_label("First wait between retries (s)").fill("0.5")
    card.get_by_label("Longest wait (s)").fill("0.5")
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector('#pf-builder[data-saved="2"]')
    _, body = call(webhook_url, {"email": "bob@example.com", "amount": 99})
    broken_run = body["run_id"]
    wait_for_run(broken_run, {"failed"}, timeout=40, worker=celery_worker)
    page.goto(f"{base}/app/runs/{broken_run}/")
    page.wait_for_selector('#pf-run-status[data-status="failed"]')
    assert "failed at step http_request" in page.locator("#pf-run-summary").inner_text()
    attempts = page.locator("#pf-step-1 .pf-attempt")
    assert attempts.count() == 2
    assert "HTTP 503" in attempts.nth(0).inner_text() and "HTTP 503" in attempts.nth(1).inner_text()
    assert page.locator("#pf-dead").inner_text() == "dead letter"
    page.get_by_role("link", name="Live view").click()
    page.wait_for_selector('#pf-run-status[data-status="failed"]')
    assert page.locator("#pf-replay").is_visible()  # the live view offers the replay too

    # Fix it, then replay with the current version from the failed run's page.
    page.goto(f"{base}/app/workflows/{workflow.pk}/")
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    page.locator('[data-path="steps[1].config.url"]').fill(f"{http_server.url}/contacts")
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector('#pf-builder[data-saved="3"]')
    page.goto(f"{base}/app/runs/{broken_run}/")
    keep(shot(page, "run-page-failed"), "run-page-failed")
    page.get_by_role("button", name="Replay with the current version (version 3)").click()
    page.wait_for_selector('#pf-run-status[data-status="succeeded"]', timeout=30_000)
    replay = Run.objects.get(replay_of_id=broken_run)
    assert page.url.endswith(f"/app/runs/{replay.pk}/") and replay.workflow_version == 3
    assert json.loads(http_server.requests[-1].body) == {"email": "bob@example.com"}
    assert http_server.requests[-1].path == "/contacts"
    page.goto(f"{base}/app/runs/{broken_run}/")
    assert "replayed → run" in page.locator("#pf-replays").inner_text()
    fits(page)

    # The lists: last run, 24 h counts, replayed dead letters.
    page.get_by_role("link", name="Runs", exact=True).click()
    rows = page.locator("#pf-runs tbody tr")
    assert rows.count() == 3
    assert (
        f"replayed → run {str(replay.pk)[:8]}" in rows.nth(1).inner_text() and "dead letter" in rows.nth(1).inner_text()
    )
    fits(page)
    shot(page, "run-list")
    page.get_by_role("link", name="Workflows", exact=True).click()
    row = page.locator("#pf-workflows tbody tr").first
    assert row.locator(".pf-status-succeeded").count() == 1
    assert row.locator("td").nth(4).inner_text() == "3" and row.locator("td").nth(5).inner_text() == "1 failed"
    fits(page)
    keep(shot(page, "workflow-list"), "workflow-list")


def test_a_viewer_sees_everything_and_changes_nothing_and_an_outsider_gets_404(live_server, browser, page, team, shot):
    from accounts.models import Organization
    from workflows.services import run_accept, workflow_create

    base = live_server.url
    workflow = workflow_create(
        organization=Organization.objects.get(pk=team["org_id"]),
        name="Nightly export",
        trigger_type="schedule",
        schedule="0 2 * * 1-5",
        timezone="Europe/Paris",
        steps=[{"key": "shape", "action_type": "transform", "config": {"value": {"n": 1}}}],
    )
    run, _ = run_accept(workflow=workflow, trigger="manual", payload={"body": {}})

    sign_in(page, base, "vic@engines.test")
    page.goto(f"{base}/app/workflows/?org={team['org_id']}")
    assert page.locator(".pf-role").inner_text() == "Viewer"
    assert page.get_by_role("link", name="Nightly export").is_visible()
    assert page.get_by_role("link", name="New workflow").count() == 0
    assert page.locator(".pf-switch").count() == 0  # the active state is shown, not switchable
    page.get_by_role("link", name="Nightly export").click()
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    assert page.locator("#pf-readonly-note").is_visible()
    assert page.get_by_role("button", name="Save").count() == 0
    assert page.get_by_role("button", name="+ Add a step").count() == 0
    assert page.get_by_role("button", name="Insert data").count() == 0
    assert page.get_by_label("Workflow name").is_disabled()
    assert page.locator('#pf-flow [data-step-key="shape"]').count() == 1  # the flow, without "+" or tools
    assert page.locator("#pf-flow .pf-insert, #pf-flow .pf-node-tools").count() == 0
    page.get_by_role("button", name="Form").click()
    assert page.locator('[data-path="steps[0].key"]').is_disabled()
    assert page.locator("li.pf-step").count() >= 1
    assert page.get_by_role("button", name="Edit as JSON").count() == 0  # no control that edits (issue 17)
    page.get_by_role("button", name="JSON", exact=True).click()
    assert page.locator("#pf-json").get_attribute("readonly") is not None
    assert page.get_by_role("button", name="Apply JSON").count() == 0
    page.get_by_role("button", name="Form").click()
    labelled(page)
    fits(page)
    page.wait_for_selector(".pf-cron-description")
    assert "02:00" in page.locator(".pf-cron-description").inner_text()
    assert page.locator("#pf-cron-preview li").count() == 3
    # what the server says when a viewer tries anyway
    csrf = page.locator("#pf-csrf input").input_value()
    for url in (f"/app/workflows/{workflow.pk}/active/", f"/api/workflows/{workflow.pk}/test/"):
        assert page.request.post(f"{base}{url}", headers={"X-CSRFToken": csrf}).status == 403
    patch = page.request.patch(
        f"{base}/api/workflows/{workflow.pk}/", data={"name": "x"}, headers={"X-CSRFToken": csrf}
    )
    assert patch.status == 403
    workflow.refresh_from_db()
    assert workflow.name == "Nightly export"

    # Olga belongs to another organization: every builder and run URL is a 404 for her.
    page.context.clear_cookies()
    sign_in(page, base, "olga@elsewhere.test")
    csrf = page.locator("form[action='/app/logout/'] input[name=csrfmiddlewaretoken]").input_value()
    for url in (
        f"/app/workflows/{workflow.pk}/",
        f"/app/runs/{run.pk}/",
        f"/runs/{run.pk}/live",
        f"/api/workflows/{workflow.pk}/",
    ):
        assert page.request.get(f"{base}{url}").status == 404, url
    for url in (
        f"/app/workflows/{workflow.pk}/active/",
        f"/app/workflows/{workflow.pk}/versions/1/restore/",
        f"/app/runs/{run.pk}/replay/",
        f"/api/workflows/{workflow.pk}/test/",
    ):
        assert page.request.post(f"{base}{url}", headers={"X-CSRFToken": csrf}).status == 404, url
    assert "Nightly export" not in page.locator("main").inner_text()
    assert ARTIFACTS.exists()


def test_an_owner_manages_members_and_credentials_and_the_picker_lists_only_the_right_kind(
    live_server, browser, page, team, settings, shot
):
    from testing.worker import TEST_FERNET_KEY

    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]
    base = live_server.url
    sign_in(page, base, "ada@engines.test")  # signed up through the API: an owner, not staff
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Invite by e-mail").fill("olga@elsewhere.test")
    page.get_by_label("as", exact=True).select_option("editor")
    page.get_by_role("button", name="Send invitation").click()
    assert "Invitation sent to olga@elsewhere.test as editor" in page.locator(".pf-messages").inner_text()
    # Olga accepts through her mailed link (test_accounts.py follows one in a browser).
    services.invitation_accept(
        invitation=Invitation.objects.get(email="olga@elsewhere.test"),
        user=User.objects.get(email="olga@elsewhere.test"),
    )
    page.reload()
    page.get_by_label("Role of olga@elsewhere.test").select_option("viewer")
    page.locator('tr[data-member="olga@elsewhere.test"]').get_by_role("button", name="Change role").click()
    assert page.locator('tr[data-member="olga@elsewhere.test"] td').nth(1).inner_text() == "Viewer"
    labelled(page)
    fits(page)

    page.get_by_role("link", name="Credentials").click()
    page.get_by_label("New credential of kind").select_option("http_bearer")
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Name").fill("CRM token")
    page.get_by_label("Token").fill("s3cret-bearer-token")
    page.get_by_role("button", name="Create credential").click()
    assert "allowed_hosts is required" in page.locator(".pf-field-error").inner_text()
    page.get_by_label("Token").fill("s3cret-bearer-token")  # secrets are never sent back to the page
    page.get_by_label("Allowed hosts").fill("crm.example.com")
    page.get_by_role("button", name="Create credential").click()
    row = page.locator("#pf-credentials tbody tr").first
    assert "CRM token" in row.inner_text() and "crm.example.com" in row.inner_text()
    assert "token: set" in row.inner_text() and "s3cret" not in page.content()
    labelled(page)
    fits(page)
    shot(page, "credentials")

    page.get_by_role("link", name="Workflows", exact=True).click()
    page.get_by_role("link", name="New workflow").click()
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    page.get_by_role("button", name="Form").click()
    add_step(page, "slack.message")
    slack = page.locator(".pf-step").nth(0).get_by_label("Credential")
    assert slack.locator("option").all_inner_texts() == ["Choose a credential"]  # no Slack token here
    add_step(page, "http.request")
    http = page.locator(".pf-step").nth(1).get_by_label("Credential")
    assert http.locator("option").all_inner_texts() == ["No credential", "CRM token (http_bearer)"]
    # A manual workflow with that credential, run with the sample body; then as a webhook, its URL rotated.
    page.get_by_label("Workflow name").fill("Push to CRM")
    page.get_by_role("button", name="Remove step 1").click()
    page.locator('[data-path="steps[0].config.url"]').fill("https://crm.example.com/contacts")
    http = page.locator(".pf-step").nth(0).get_by_label("Credential")
    http.select_option(label="CRM token (http_bearer)")
    page.get_by_label("Someone presses Run now (manual)").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/app/workflows/*/?saved=1")
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    workflow = Workflow.objects.get(name="Push to CRM")
    assert workflow.trigger_type == "manual" and workflow.steps.get().credential.name == "CRM token"
    page.get_by_label("Sample trigger body (JSON)").fill('{"n": 1}')
    page.get_by_role("button", name="Run now with the sample body").click()
    page.wait_for_url("**/app/runs/*/")
    run = Run.objects.get(workflow=workflow)
    assert page.url.endswith(f"/app/runs/{run.pk}/") and run.trigger == "manual" and run.payload["body"] == {"n": 1}

    page.goto(f"{base}/app/workflows/{workflow.pk}/")
    page.wait_for_selector('#pf-builder[data-ready="true"]')
    page.get_by_label("A web request arrives (webhook)").check()
    page.get_by_label("Active").check()  # so a 404 below is the rotation, not an inactive workflow
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector('#pf-builder[data-saved="2"]')
    old_url = page.locator("#pf-webhook-url").input_value()
    rotate = page.get_by_role("button", name="Rotate URL")
    rotate.click()
    assert "Really rotate?" in page.locator("#pf-rotate").inner_text()  # asks once more
    page.locator("#pf-rotate").click()
    page.wait_for_function(f"() => document.getElementById('pf-webhook-url').value !== {json.dumps(old_url)}")
    new_url = page.locator("#pf-webhook-url").input_value()
    workflow.refresh_from_db()
    assert new_url.endswith(f"/hooks/{workflow.webhook_token}") and old_url != new_url and workflow.is_active
    assert page.request.post(old_url, data={}).status == 404
