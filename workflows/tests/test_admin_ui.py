"""The workflow and run admin as a product UI: scoping, roles, run now, rotation, previews, errors on fields."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role, User
from workflows.admin.widgets import cron_description, human_duration, next_firings, schedule_preview, status_badge
from workflows.models import Run, RunStatus, TriggerType, Workflow
from workflows.services import run_accept, workflow_create
from workflows.tests.conftest import make_user
from workflows.tests.test_admin_forms import browser_form_data

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.body.n }}"}}},
    {"key": "done", "action_type": "transform", "config": {"value": "{{ steps.shape.output.n }}"}},
]


def staff(org, role, email) -> Client:
    user = make_user(org, role, email)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


@pytest.fixture
def wf(org):
    return workflow_create(
        organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, webhook_secret="s" * 20, steps=STEPS
    )


@pytest.fixture
def foreign(other_org):
    wf = workflow_create(organization=other_org, name="Secret plans", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n": 1}})
    return wf, run


def test_another_organizations_workflow_run_and_webhook_url_are_404(org, foreign):
    client = staff(org, Role.OWNER, "boss@example.com")
    wf, run = foreign
    for url in (
        f"/admin/workflows/workflow/{wf.pk}/change/",
        f"/admin/workflows/workflow/{wf.pk}/run/",
        f"/admin/workflows/workflow/{wf.pk}/rotate-token/",
        f"/admin/workflows/run/{run.pk}/change/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/admin/workflows/workflow/{wf.pk}/rotate-token/").status_code == 404
    listing = client.get("/admin/workflows/workflow/").content.decode()
    runs = client.get("/admin/workflows/run/").content.decode()
    for page in (listing, runs):
        assert "Secret plans" not in page and wf.webhook_token not in page


def test_a_viewer_sees_the_workflow_but_no_save_button_secret_or_run_now(org, wf):
    client = staff(org, Role.VIEWER, "v@example.com")
    html = client.get(f"/admin/workflows/workflow/{wf.pk}/change/").content.decode()
    # Not even their own organization's URL: it is the capability to trigger runs (editors and above).
    assert wf.webhook_token not in html
    assert 'name="_save"' not in html and 'id="pf-run-now"' not in html
    assert "s" * 20 not in html and "set (requests must be signed)" in html
    assert client.get(f"/admin/workflows/workflow/{wf.pk}/run/").status_code == 403
    assert client.post(f"/admin/workflows/workflow/{wf.pk}/rotate-token/").status_code == 403


def test_an_editor_runs_now_with_a_json_payload_and_lands_on_the_live_view(org, wf):
    client = staff(org, Role.EDITOR, "e@example.com")
    page = client.get(f"/admin/workflows/workflow/{wf.pk}/change/", HTTP_HOST="localhost:8765").content.decode()
    assert f'value="http://localhost:8765/hooks/{wf.webhook_token}"' in page  # built from this request's host
    assert 'id="pf-run-now"' in page and 'id="pf-copy-webhook"' in page and 'name="_save"' in page
    response = client.post(f"/admin/workflows/workflow/{wf.pk}/run/", {"payload": "not json"})
    assert response.status_code == 200 and "Enter a valid JSON" in response.content.decode()
    response = client.post(f"/admin/workflows/workflow/{wf.pk}/run/", {"payload": '{"n": 5}'})
    run = Run.objects.get(workflow=wf)
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/live"
    assert run.trigger == "manual" and run.payload["body"] == {"n": 5}


def test_rotating_the_token_changes_the_url(org, wf):
    client = staff(org, Role.EDITOR, "e@example.com")
    old = wf.webhook_token
    assert client.get(f"/admin/workflows/workflow/{wf.pk}/rotate-token/").status_code == 200
    assert Workflow.objects.get(pk=wf.pk).webhook_token == old  # a GET only asks
    assert client.post(f"/admin/workflows/workflow/{wf.pk}/rotate-token/").status_code == 302
    assert Workflow.objects.get(pk=wf.pk).webhook_token != old


def test_the_list_shows_last_run_and_runs_in_the_last_24_hours(org, wf):
    client = staff(org, Role.VIEWER, "v@example.com")
    for _ in range(2):
        run_accept(workflow=wf, trigger="manual", payload={})
    Run.objects.filter(workflow=wf).update(status=RunStatus.FAILED)
    html = client.get("/admin/workflows/workflow/").content.decode()
    assert '<td class="field-runs_24h">2</td>' in html
    assert 'data-status="failed"' in html
    assert "Secret" not in html


def test_a_bad_template_is_reported_on_the_step_config_field(org, wf):
    client = staff(org, Role.EDITOR, "e@example.com")
    data = {
        "organization": org.pk,
        "name": "Hook",
        "description": "",
        "is_active": "on",
        "trigger_type": "webhook",
        "webhook_secret": "",
        "schedule": "",
        "timezone": "UTC",
        "steps-TOTAL_FORMS": "2",
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for i, (key, config) in enumerate([("one", '{"value": 1}'), ("two", '{"value": "{{ steps.ghost.output }}"}')]):
        data.update(
            {
                f"steps-{i}-position": str(i),
                f"steps-{i}-key": key,
                f"steps-{i}-action_type": "transform",
                f"steps-{i}-config": config,
                f"steps-{i}-max_retries": "3",
                f"steps-{i}-backoff_seconds": "2",
                f"steps-{i}-backoff_max_seconds": "300",
                f"steps-{i}-timeout_seconds": "30",
            }
        )
    response = client.post("/admin/workflows/workflow/add/", data)
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.forms[0].errors == {}
    assert "ghost" in str(formset.forms[1].errors["config"])
    data.update({"steps-1-config": '{"value": 2}', "trigger_type": "schedule", "schedule": "every day"})
    response = client.post("/admin/workflows/workflow/add/", data)
    assert "schedule" in response.context["adminform"].form.errors
    assert not Workflow.objects.filter(name="Hook").exclude(pk=wf.pk).exists()


def test_the_webhook_secret_is_write_only_and_kept_when_left_empty(org, wf):
    client = staff(org, Role.EDITOR, "e@example.com")
    url = f"/admin/workflows/workflow/{wf.pk}/change/"
    page = client.get(url).content.decode()
    assert "s" * 20 not in page
    data = browser_form_data(page)
    assert data["webhook_secret"] == [""]
    data["name"] = ["Hook renamed"]  # a real change, so the form is saved
    response = client.post(url, {**data, "_save": ["Save"]})
    assert response.status_code == 302
    saved = Workflow.objects.get(pk=wf.pk)
    assert saved.name == "Hook renamed" and saved.webhook_secret == "s" * 20
    data["remove_webhook_secret"] = ["on"]
    assert client.post(url, {**data, "_save": ["Save"]}).status_code == 302
    assert Workflow.objects.get(pk=wf.pk).webhook_secret == ""


def test_the_signing_row_is_not_a_second_webhook_secret_label(org, wf):
    html = staff(org, Role.EDITOR, "e@example.com").get(f"/admin/workflows/workflow/{wf.pk}/change/").content.decode()
    assert html.count(">Webhook secret:</label>") == 1
    assert ">Signing:</label>" in html and "set (requests must be signed)" in html


def test_a_schedule_workflow_shows_its_cron_in_words_and_next_firings(org):
    wf = workflow_create(
        organization=org, name="Mon", trigger_type=TriggerType.SCHEDULE, schedule="0 21 * * 1", timezone="Asia/Tokyo"
    )
    client = staff(org, Role.VIEWER, "v@example.com")
    html = client.get(f"/admin/workflows/workflow/{wf.pk}/change/").content.decode()
    assert "At 21:00, only on Monday" in html  # 24-hour, like the firing times below
    assert html.count("21:00 JST") == 3


@pytest.mark.parametrize("expression", ["61 * * * *", "0 9 * * 1 *", "0 9 * *"])
def test_an_invalid_cron_gets_its_error_and_no_description(org, expression):
    wf = workflow_create(organization=org, name="Cron", trigger_type=TriggerType.SCHEDULE, schedule="0 9 * * 1")
    client = staff(org, Role.EDITOR, "e@example.com")
    url = f"/admin/workflows/workflow/{wf.pk}/change/"
    data = browser_form_data(client.get(url).content.decode())
    data["schedule"] = [expression]
    response = client.post(url, {**data, "_save": ["Save"]})
    assert response.status_code == 200
    assert "schedule" in response.context["adminform"].form.errors
    html = response.content.decode()
    assert "pf-cron-description" not in html and "Next firings" not in html
    assert schedule_preview(expression, "UTC") == "–"


def test_cron_helpers_use_the_workflows_timezone():
    now = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)  # a Wednesday
    times = next_firings("0 9 * * 1", "Europe/Paris", now=now)
    assert [t.isoformat() for t in times] == [
        "2025-01-06T09:00:00+01:00",
        "2025-01-13T09:00:00+01:00",
        "2025-01-20T09:00:00+01:00",
    ]
    assert next_firings("0 9 * * 1", "Mars/Olympus") == []
    assert cron_description("*/5 * * * *") == "Every 5 minutes"
    assert cron_description("30 14 * * *") == "At 14:30"


def test_durations_read_like_a_person_would_say_them():
    assert [human_duration(v) for v in (None, 0, 850, 23242, 192_000, 7_500_000)] == [
        "–",
        "0 ms",
        "850 ms",
        "23.2 s",
        "3 min 12 s",
        "2 h 5 min",
    ]


def test_status_badges_carry_the_word_not_only_a_colour():
    html = status_badge("failed<script>")
    assert ">failed&lt;script&gt;</span>" in html


def test_the_run_page_shows_pretty_json_and_links_to_the_live_view(org, wf):
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n": 42}})
    client = staff(org, Role.VIEWER, "v@example.com")
    html = client.get(f"/admin/workflows/run/{run.pk}/change/").content.decode()
    assert html.count(f'href="/runs/{run.pk}/live"') == 1  # one way to the live view: the "Watch live" button
    assert 'id="pf-live-link"' in html
    assert "<details" in html and "&quot;n&quot;: 42" in html
    dead = client.get("/admin/workflows/run/?dead_lettered__exact=1")
    assert dead.status_code == 200 and list(dead.context["cl"].result_list) == []


def test_the_run_list_shows_durations_in_seconds_and_runs_by_workflow_name(org, wf, django_assert_max_num_queries):
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, started_at=now - timedelta(milliseconds=23242), finished_at=now
    )
    client = staff(org, Role.VIEWER, "v@example.com")
    html = client.get("/admin/workflows/run/").content.decode()
    assert "23.2 s" in html and "23242 ms" not in html
    shown = client.get(f"/admin/workflows/run/{run.pk}/change/")
    assert str(shown.context["original"]) == f"Run {str(run.pk)[:8]} of Hook (succeeded)"
    with django_assert_max_num_queries(0):
        str(shown.context["original"])  # the workflow came with the run


def test_run_again_starts_a_manual_run_with_the_same_body_only(org, wf):
    wf.is_active = False  # paused: its webhook is off, but it can still be run by hand
    wf.save(update_fields=["is_active"])
    payload = {"method": "POST", "headers": {"Webhook-Signature": "v1,abc", "Cookie": "x"}, "query": {"a": "1"}}
    original, _ = run_accept(workflow=wf, trigger="webhook", payload={**payload, "body": {"n": 3}})
    client = staff(org, Role.EDITOR, "e@example.com")
    response = client.post(
        "/admin/workflows/run/", {"action": "run_again_action", "_selected_action": [str(original.pk)]}
    )
    assert response.status_code == 302
    again = Run.objects.exclude(pk=original.pk).get()
    assert again.trigger == "manual" and again.payload["body"] == {"n": 3}
    assert again.payload["headers"] == {} and again.payload["query"] == {}
    assert again.payload["requested_by"] == "e@example.com"
    viewer = staff(org, Role.VIEWER, "v@example.com")
    viewer.post("/admin/workflows/run/", {"action": "run_again_action", "_selected_action": [str(original.pk)]})
    assert Run.objects.count() == 2


def test_run_again_reports_a_payload_the_database_cannot_store(org, wf):
    original, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n": 1}})
    # A body that became unstorable (e.g. rows from before the storable checks): a warning, not a 500.
    Run.objects.filter(pk=original.pk).update(payload={"body": {"deep": _nested(200)}})
    client = staff(org, Role.EDITOR, "e@example.com")
    response = client.post(
        "/admin/workflows/run/", {"action": "run_again_action", "_selected_action": [str(original.pk)]}, follow=True
    )
    assert response.status_code == 200
    texts = [str(m) for m in response.context["messages"]]
    assert any("Started 0 run(s)." in t for t in texts) and any(str(original.pk) in t for t in texts), texts
    assert Run.objects.count() == 1


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value
