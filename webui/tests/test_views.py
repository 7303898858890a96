"""The member pages through Django's test client: sign-in for every member, roles, 404 across organizations."""

import json
import re

import pytest
from django.test import Client

from accounts.models import Membership, Organization, Role, User
from workflows.models import Run, RunStatus, StepAttempt, StepRun, StepRunStatus, TriggerType
from workflows.services import run_accept, workflow_create

pytestmark = pytest.mark.django_db
PASSWORD = "pw-long-enough-123"


@pytest.fixture
def org():
    return Organization.objects.create(name="Acme", slug="acme")


def member(org, role, email):
    user = User.objects.create_user(email=email, password=PASSWORD)
    Membership.objects.create(user=user, organization=org, role=role)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def editor(org):
    return member(org, Role.EDITOR, "ed@acme.test")


@pytest.fixture
def viewer(org):
    return member(org, Role.VIEWER, "vi@acme.test")


@pytest.fixture
def outsider():
    return member(Organization.objects.create(name="Other", slug="other"), Role.OWNER, "out@other.test")


@pytest.fixture
def workflow(org):
    return workflow_create(
        organization=org,
        name="Signups to CRM",
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"email": "{{ trigger.body.email }}"}}},
            {
                "key": "crm",
                "action_type": "http.request",
                "config": {"method": "POST", "url": "https://crm.example.com/c"},
            },
        ],
    )


@pytest.fixture
def failed_run(workflow):
    run, _ = run_accept(workflow=workflow, trigger="webhook", payload={"body": {"email": "a@b.c"}})
    StepRun.objects.filter(run=run, position=0).update(status=StepRunStatus.SUCCEEDED, output={"email": "a@b.c"})
    step = StepRun.objects.get(run=run, position=1)
    StepRun.objects.filter(pk=step.pk).update(status=StepRunStatus.FAILED, error="HTTP 404 from crm", attempts=2)
    for number, outcome in ((1, "retryable_error"), (2, "permanent_error")):
        StepAttempt.objects.create(
            step_run=step, number=number, outcome=outcome, started_at=run.created_at, error=f"boom {number}"
        )
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, dead_lettered=True)
    run.refresh_from_db()
    return run


def test_a_member_who_is_not_staff_signs_in_with_the_api_password(org, client):
    user = User.objects.create_user(email="ann@acme.test", password=PASSWORD)
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    assert client.get("/app/workflows/").status_code == 302  # to the sign-in page
    assert client.get("/app/workflows/")["Location"].startswith("/app/login/")
    bad = client.post("/app/login/", {"username": "ann@acme.test", "password": "wrong"})
    assert bad.status_code == 200 and "did not match" in bad.content.decode()
    good = client.post("/app/login/", {"username": "ann@acme.test", "password": PASSWORD})
    assert good.status_code == 302 and good["Location"] == "/app/workflows/"
    assert client.get("/app/workflows/").status_code == 200
    assert client.get("/admin/").status_code == 302  # the admin stays staff-only


def test_the_workflow_list_shows_trigger_last_run_and_24h_counts_and_searches(editor, workflow, failed_run):
    html = editor.get("/app/workflows/").content.decode()
    assert "Signups to CRM" in html and "Webhook" in html
    assert 'class="pf-badge pf-status-failed"' in html and "1 failed" in html
    assert 'aria-checked="true"' in html  # the active switch
    assert "Signups" not in editor.get("/app/workflows/?q=nothing-like-it").content.decode().split("<main")[1]


def test_editors_switch_a_workflow_off_and_viewers_cannot(editor, viewer, workflow):
    assert viewer.post(f"/app/workflows/{workflow.pk}/active/", {"active": "0"}).status_code == 403
    workflow.refresh_from_db()
    assert workflow.is_active
    response = editor.post(f"/app/workflows/{workflow.pk}/active/", {"active": "0"})
    assert response.status_code == 302
    workflow.refresh_from_db()
    assert not workflow.is_active and workflow.version == 1  # on/off is no new version of the steps (issue 21)


def builder_data(html: str) -> dict:
    match = re.search(r'<script id="pf-builder-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_the_builder_page_carries_the_definition_actions_and_role(editor, viewer, workflow, failed_run):
    data = builder_data(editor.get(f"/app/workflows/{workflow.pk}/").content.decode())
    assert data["can_edit"] is True
    assert [s["key"] for s in data["workflow"]["steps"]] == ["shape", "crm"]
    assert data["actions"]["http.request"]["config_schema"]["required"] == ["url"]
    assert data["sample"]["trigger"]["body"] == {"email": "a@b.c"}
    assert data["sample"]["outputs"] == {"shape": {"email": "a@b.c"}}
    assert data["workflow"]["webhook_url"].endswith(f"/hooks/{workflow.webhook_token}")
    html = viewer.get(f"/app/workflows/{workflow.pk}/").content.decode()
    assert builder_data(html)["can_edit"] is False
    assert 'id="pf-save"' not in html and "viewer" in html
    # no inline script or style in the page: a strict CSP (script-src 'self') works
    assert not re.search(r"<script(?![^>]*(src=|application/json))", html)
    assert "style=" not in html


def test_new_workflow_page_is_for_editors(editor, viewer):
    assert editor.get("/app/workflows/new/").status_code == 200
    assert viewer.get("/app/workflows/new/").status_code == 403


def test_the_run_page_puts_errors_first_with_every_attempt_and_offers_both_replays(editor, viewer, failed_run):
    html = editor.get(f"/app/runs/{failed_run.pk}/").content.decode()
    assert html.index("What went wrong") < html.index("Steps</h2>")
    assert "failed at step <strong>crm</strong>" in html and "after 2 attempts" in html
    assert "boom 1" in html and "boom 2" in html and "Retryable error" in html
    assert 'value="current"' in html and 'value="original"' in html
    assert 'value="current"' not in viewer.get(f"/app/runs/{failed_run.pk}/").content.decode()


def test_replay_from_the_run_page_with_the_current_version(editor, viewer, workflow, failed_run):
    from workflows.services import workflow_update

    workflow_update(
        workflow=workflow,
        steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"email": "{{ trigger.body.email }}"}}},
            {"key": "crm", "action_type": "http.request", "config": {"url": "https://crm.example.com/fixed"}},
        ],
    )
    assert viewer.post(f"/app/runs/{failed_run.pk}/replay/", {"version": "current"}).status_code == 403
    response = editor.post(f"/app/runs/{failed_run.pk}/replay/", {"version": "current"})
    replay = Run.objects.get(replay_of=failed_run)
    assert response.status_code == 302 and response["Location"] == f"/app/runs/{replay.pk}/"
    assert replay.workflow_version == 2
    assert replay.definition["steps"][1]["config"]["url"] == "https://crm.example.com/fixed"
    html = editor.get(f"/app/runs/{failed_run.pk}/").content.decode()
    assert "replayed →" in html and f"/app/runs/{replay.pk}/" in html
    runs = editor.get("/app/runs/").content.decode()
    assert re.search(rf'replayed → <a href="/app/runs/{replay.pk}/">run {str(replay.pk)[:8]}</a>', runs)
    assert "dead letter" in runs


def test_restore_a_version_from_the_builder(editor, viewer, workflow, failed_run):
    from workflows.services import workflow_update

    workflow_update(workflow=workflow, steps=[{"key": "only", "action_type": "transform", "config": {"value": 1}}])
    assert viewer.post(f"/app/workflows/{workflow.pk}/versions/1/restore/").status_code == 403
    response = editor.post(f"/app/workflows/{workflow.pk}/versions/1/restore/")
    assert response.status_code == 302
    assert list(workflow.steps.values_list("key", flat=True)) == ["shape", "crm"]


def test_schedule_preview_says_the_cron_in_words_with_the_next_firings(editor):
    ok = editor.get("/app/schedule-preview/", {"cron": "0 9 * * 1", "tz": "Europe/Paris"}).json()
    assert ok["valid"] and "09:00" in ok["description"] and "Monday" in ok["description"]
    assert len(ok["next"]) == 3 and all(t.startswith("Mon ") for t in ok["next"])
    bad = editor.get("/app/schedule-preview/", {"cron": "61 * * * *"}).json()
    assert not bad["valid"] and bad["error"]


@pytest.mark.parametrize(
    "method,url",
    [
        ("get", "/app/workflows/{wf}/"),
        ("post", "/app/workflows/{wf}/active/"),
        ("post", "/app/workflows/{wf}/versions/1/restore/"),
        ("get", "/app/runs/{run}/"),
        ("post", "/app/runs/{run}/replay/"),
        ("get", "/runs/{run}/live"),
        ("post", "/api/workflows/{wf}/test/"),
    ],
)
def test_another_organizations_member_gets_404(outsider, workflow, failed_run, method, url):
    response = getattr(outsider, method)(url.format(wf=workflow.pk, run=failed_run.pk))
    assert response.status_code == 404


def test_the_live_view_offers_replay_to_editors_and_opens_the_new_runs_live_view(editor, viewer, failed_run):
    live = f"/app/runs/{failed_run.pk}/live/"  # the member pages' live view (issue 21)
    html = editor.get(live).content.decode()
    assert 'id="pf-replay-current"' in html and f'href="/app/runs/{failed_run.pk}/"' in html
    assert 'id="pf-replay"' not in viewer.get(live).content.decode()
    response = editor.post(f"/app/runs/{failed_run.pk}/replay/", {"version": "original", "then": "live"})
    replay = Run.objects.get(replay_of=failed_run)
    assert response["Location"] == f"/app/runs/{replay.pk}/live/"
    assert "replayed →" in editor.get(live).content.decode()


def test_a_run_that_is_not_failed_offers_no_replay(editor, workflow):
    run, _ = run_accept(workflow=workflow, trigger="manual", payload={"body": {}})
    assert 'id="pf-replay-current"' not in editor.get(f"/app/runs/{run.pk}/").content.decode()
    response = editor.post(f"/app/runs/{run.pk}/replay/", {"version": "current"}, follow=True)
    assert "cannot be replayed" in response.content.decode()
    assert not Run.objects.filter(replay_of=run).exists()


# -- credentials and members -------------------------------------------------------------------
@pytest.fixture
def fernet_keys(settings):
    from testing.worker import TEST_FERNET_KEY

    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]
    return settings


@pytest.fixture
def admin(org):
    return member(org, Role.ADMIN, "admin@acme.test")


def test_admins_create_and_change_credentials_with_write_only_secrets(admin, editor, outsider, fernet_keys):
    from integrations.models import Credential
    from integrations.services import credential_reveal

    assert editor.get("/app/credentials/").status_code == 403
    form = admin.get("/app/credentials/new/?kind=http_bearer").content.decode()
    assert 'name="field_token"' in form and 'type="password"' in form and 'name="field_allowed_hosts"' in form
    missing = admin.post("/app/credentials/new/", {"kind": "http_bearer", "name": "CRM", "field_token": "t0k3n-value"})
    assert missing.status_code == 400 and "allowed_hosts is required" in missing.content.decode()
    created = admin.post(
        "/app/credentials/new/",
        {"kind": "http_bearer", "name": "CRM", "field_token": "t0k3n-value", "field_allowed_hosts": "crm.example.com"},
    )
    assert created.status_code == 302
    credential = Credential.objects.get(name="CRM")
    assert credential.public_data["allowed_hosts"] == ["crm.example.com"]
    listing = admin.get("/app/credentials/").content.decode()
    assert "crm.example.com" in listing and "token: set" in listing and "t0k3n-value" not in listing
    page = admin.get(f"/app/credentials/{credential.pk}/").content.decode()
    assert "t0k3n-value" not in page and "leave blank to keep it" in page
    # a blank secret keeps the stored one; public fields change
    admin.post(
        f"/app/credentials/{credential.pk}/",
        {"name": "CRM", "field_token": "", "field_allowed_hosts": "crm.example.com, api.example.com"},
    )
    credential.refresh_from_db()
    assert credential_reveal(credential)["token"] == "t0k3n-value"
    assert credential.public_data["allowed_hosts"] == ["crm.example.com", "api.example.com"]
    assert editor.get(f"/app/credentials/{credential.pk}/").status_code == 403
    assert outsider.get(f"/app/credentials/{credential.pk}/").status_code == 404


def test_admins_add_change_and_remove_members_and_the_last_owner_stays(org, admin, viewer):
    User.objects.create_user(email="new@acme.test", password=PASSWORD)
    assert "Add member" not in viewer.get("/app/members/").content.decode()
    assert viewer.post("/app/members/add/", {"email": "new@acme.test", "role": "viewer"}).status_code == 403
    admin.post("/app/members/add/", {"email": "new@acme.test", "role": "editor"})
    added = Membership.objects.get(user__email="new@acme.test")
    assert added.role == "editor"
    admin.post(f"/app/members/{added.pk}/role/", {"role": "viewer"})
    added.refresh_from_db()
    assert added.role == "viewer"
    # only an owner grants the owner role
    assert admin.post(f"/app/members/{added.pk}/role/", {"role": "owner"}).status_code == 403
    admin.post(f"/app/members/{added.pk}/remove/")
    assert not Membership.objects.filter(pk=added.pk).exists()
    html = admin.get("/app/members/").content.decode()
    assert re.findall(r'<tr data-member="([^"]+)">', html) == ["admin@acme.test", "vi@acme.test"]


def test_a_run_that_failed_outside_any_step_still_says_why_first(editor, workflow):
    run, _ = run_accept(workflow=workflow, trigger="manual", payload={"body": {}})
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error="step 3 is missing from the run's definition")
    html = editor.get(f"/app/runs/{run.pk}/").content.decode()
    assert html.index("What went wrong") < html.index("step 3 is missing") < html.index("Steps</h2>")


def test_no_member_page_has_inline_script_or_style(editor, workflow, failed_run):
    """A strict Content-Security-Policy (script-src 'self', no unsafe-inline) keeps every page working."""
    pages = [
        "/app/workflows/",
        "/app/workflows/new/",
        f"/app/workflows/{workflow.pk}/",
        "/app/runs/",
        f"/app/runs/{failed_run.pk}/",
        "/app/members/",
    ]
    for url in pages:
        html = editor.get(url).content.decode()
        assert not re.search(r"<script(?![^>]*(src=|application/json))", html), url
        assert "style=" not in html and "<style" not in html and " onclick=" not in html, url
    login = Client().get("/app/login/").content.decode()
    assert "<script src=" in login and "style=" not in login


def test_the_openapi_schema_has_the_test_endpoint_and_the_replay_version(editor):
    schema = editor.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    test = schema["paths"]["/api/workflows/{id}/test/"]["post"]
    components = schema["components"]["schemas"]
    assert test["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/TestRunRequest")
    assert test["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/TestResult")
    assert set(components["TestRunRequest"]["properties"]) == {"payload", "steps", "send_step", "on_failure"}
    version = components["ReplayRequest"]["properties"]["version"]["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert components[version]["enum"] == ["original", "current"]
    assert "/api/templates/check/" in schema["paths"]


def test_browsing_without_switching_organization_writes_no_session(editor):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert editor.get("/app/workflows/").status_code == 200  # the organization is remembered once
    with CaptureQueriesContext(connection) as page:
        assert editor.get("/app/workflows/").status_code == 200
    writes = [q["sql"] for q in page.captured_queries if "django_session" in q["sql"] and "UPDATE" in q["sql"]]
    assert writes == []


def test_the_runs_page_groups_only_its_own_rows(editor, failed_run):
    """Replay counts are computed for the page's rows, not grouped over every run of the organization."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as page:
        assert editor.get("/app/runs/").status_code == 200
    grouped = [q["sql"] for q in page.captured_queries if "GROUP BY" in q["sql"]]
    assert grouped and all('"workflows_run"."id" IN' in sql for sql in grouped)
