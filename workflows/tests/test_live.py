"""The live run view: session-authenticated, organization-scoped, and its JSON says when to stop polling."""

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.models import User
from workflows.models import RunStatus, StepRunStatus, TriggerType
from workflows.services import run_accept, workflow_create

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.body.n }}"}}},
    {"key": "done", "action_type": "transform", "config": {"value": "{{ steps.shape.output.n }}"}},
]


@pytest.fixture
def run(org):
    wf = workflow_create(organization=org, name="Live <b>wf</b>", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    # The test's transaction is never committed, so nothing is dispatched: the rows stay as we set them.
    run, _ = run_accept(workflow=wf, trigger="webhook", payload={"body": {"n": 1}})
    return run


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def live_urls(run):
    return f"/runs/{run.pk}/live", f"/runs/{run.pk}/live.json"


def test_a_member_sees_the_page_with_every_step_and_a_polling_script(viewer, run):
    page, state_url = live_urls(run)
    # A member's live view is the member pages' (their layout, links they may follow), not the admin's.
    redirected = logged_in(viewer).get(page)
    assert redirected.status_code == 302 and redirected["Location"] == f"/app/runs/{run.pk}/live/"
    response = logged_in(viewer).get(redirected["Location"])
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="pf-step-0"' in html and 'id="pf-step-1"' in html
    assert state_url in html and "workflows/live.js" in html
    assert "/admin/" not in html and 'href="/app/runs/' in html
    # The workflow name is escaped, not injected.
    assert "Live &lt;b&gt;wf&lt;/b&gt;" in html and "<b>wf</b>" not in html
    assert "no-store" in response["Cache-Control"]  # member pages are never cached (webtier)


def test_the_state_follows_the_database_and_says_when_it_is_final(viewer, run):
    client = logged_in(viewer)
    _, state_url = live_urls(run)
    state = client.get(state_url).json()
    assert state["status"] == "queued" and state["finished"] is False
    assert [(s["key"], s["status"], s["attempts"]) for s in state["steps"]] == [
        ("shape", "pending", 0),
        ("done", "pending", 0),
    ]

    first = run.step_runs.get(position=0)
    first.status, first.attempts, first.error = StepRunStatus.RETRYING, 2, "HTTP 503 from the peer"
    first.next_attempt_at = timezone.now()
    first.save()
    state = client.get(state_url).json()
    assert state["finished"] is False
    assert state["steps"][0]["status"] == "retrying" and state["steps"][0]["attempts"] == 2
    assert state["steps"][0]["error"] == "HTTP 503 from the peer" and state["steps"][0]["next_attempt_at"]

    run.step_runs.update(status=StepRunStatus.SUCCEEDED, output={"ok": True}, duration_ms=12)
    run.status, run.started_at, run.finished_at = RunStatus.SUCCEEDED, timezone.now(), timezone.now()
    run.save()
    state = client.get(state_url).json()
    assert state["status"] == "succeeded" and state["finished"] is True
    assert all(s["status"] == "succeeded" and s["output"] == {"ok": True} for s in state["steps"])
    assert state["steps"][0]["duration_ms"] == 12


def test_another_organizations_run_is_404(outsider, run):
    client = logged_in(outsider)
    page, state_url = live_urls(run)
    assert client.get(page).status_code == 404
    response = client.get(state_url)
    assert response.status_code == 404 and response.json() == {
        "detail": "No run with this id in your organizations.",
        "errors": {},
    }


def test_a_superuser_sees_any_run(run):
    root = User.objects.create_superuser(email="root@example.com", password="pw-long-enough-123")
    page, state_url = live_urls(run)
    assert logged_in(root).get(page).status_code == 200
    assert logged_in(root).get(state_url).json()["id"] == str(run.pk)


def test_anonymous_visitors_are_sent_to_log_in_and_the_json_is_401(run):
    page, state_url = live_urls(run)
    response = Client().get(page)
    assert response.status_code == 302 and response["Location"].startswith("/app/login/")
    response = Client().get(state_url)
    assert response.status_code == 401 and "detail" in response.json()


def test_the_page_knows_to_stop_and_where_to_log_in_again(viewer, run):
    html = logged_in(viewer).get(f"/app/runs/{run.pk}/live/").content.decode()
    assert f'id="pf-login-link" href="/app/login/?next=/app/runs/{run.pk}/live/"' in html
    assert '<p id="pf-access-lost" class="pf-error" hidden>' in html
    # 401, 403 and 404 stop the polling (the browser test watches it happen): the page's script says so.
    script = (Path(settings.BASE_DIR) / "workflows" / "static" / "workflows" / "live.js").read_text()
    assert "if (ACCESS_LOST[response.status]) { stop(response.status); return null; }" in script
    for status in ("401:", "403:", "404:"):
        assert status in script


def test_an_expired_session_gets_a_401_in_the_error_shape_not_a_login_page(viewer, run):
    client = logged_in(viewer)
    _, state_url = live_urls(run)
    assert client.get(state_url).status_code == 200
    client.logout()
    response = client.get(state_url)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided.", "errors": {}}


def test_a_malformed_or_unknown_run_id_is_404(viewer):
    client = logged_in(viewer)
    assert client.get("/runs/not-a-uuid/live").status_code == 404
    assert client.get("/runs/00000000-0000-0000-0000-000000000000/live.json").status_code == 404
