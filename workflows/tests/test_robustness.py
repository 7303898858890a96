"""Inputs the database cannot store, a broker that is down, stale instances,
retry delays and the broker's visibility timeout, schedule firing times."""

import json
from datetime import UTC, datetime

import pytest
from django.core.checks import run_checks
from django.test import Client
from rest_framework.test import APIClient

from testing.worker import broker_at
from workflows import services, templating
from workflows.execution import policy, recording
from workflows.models import Run, RunStatus, StepRun, StepRunStatus, TriggerType, Workflow
from workflows.services import (
    WorkflowInvalid,
    run_accept,
    run_replay,
    workflow_create,
    workflow_rotate_webhook_token,
    workflow_update,
)
from workflows.tasks import SCHEDULED_AT_HEADER, scheduled_time

STEPS = [{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}}]


@pytest.fixture
def hook_wf(org):
    return workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


# -- 1. input the database cannot store is a 400 naming it, with nothing recorded --------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "body", "content_type", "needle"),
    [
        ("", b'{"a": NaN}', "application/json", "NaN is not a JSON number"),
        ("", b'{"a": [1, -Infinity]}', "application/json", "-Infinity is not a JSON number"),
        ("", b'{"a": "x\\u0000y"}', "application/json", "trigger.body.a: contains a NUL character"),
        ("", b'{"a": "\\ud800"}', "application/json", "trigger.body.a: contains a lone UTF-16 surrogate"),
        ("", b"x\x00y", "text/plain", "trigger.body: contains a NUL character"),
        ("?x=%00", b"{}", "application/json", "trigger.query.x: contains a NUL character"),
        ("", b"a=%00", "application/x-www-form-urlencoded", "trigger.body.a: contains a NUL character"),
        ("", b"[" * 50000, "application/json", "nested too deeply"),
        ("", b"[" * 150 + b"]" * 150, "application/json", "nested more than 100 levels"),
        ("", b'{"n": 1' + b"0" * 5000 + b"}", "application/json", "Malformed JSON body"),
    ],
)
def test_a_webhook_body_the_database_cannot_store_is_400_naming_it(hook_wf, query, body, content_type, needle):
    response = Client().post(f"/hooks/{hook_wf.webhook_token}{query}", data=body, content_type=content_type)
    assert response.status_code == 400, response.content
    assert needle in response.json()["detail"]
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_a_step_config_or_run_payload_with_nul_is_400_naming_the_field(editor, hook_wf):
    steps = [{"key": "a", "action_type": "transform", "config": {"value": {"deep": ["ok", "x\u0000y"]}}}]
    response = api(editor).post("/api/workflows/", {"name": "N", "steps": steps}, format="json")
    assert response.status_code == 400
    assert "NUL" in response.json()["errors"]["steps[0].config.value.deep[1]"][0]
    assert Workflow.objects.count() == 1

    response = api(editor).post(f"/api/workflows/{hook_wf.pk}/run/", {"payload": {"a": "x\u0000"}}, format="json")
    assert response.status_code == 400
    assert "trigger.body.a: contains a NUL character" in response.json()["errors"]["payload"][0]
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_services_refuse_nul_in_workflow_fields_and_payloads(org):
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="a\x00b")
    assert "NUL" in exc.value.errors["name"][0]
    wf = workflow_create(organization=org, name="W", steps=STEPS)
    with pytest.raises(services.PayloadInvalid, match="trigger.headers.x"):
        run_accept(workflow=wf, trigger="manual", payload={"headers": {"x": "\x00"}})
    assert Run.objects.count() == 0


# -- 5. a broker that is down never turns a recorded run into a 500 ----------------------------
@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_down_still_answers_202_and_the_run_waits_queued(editor, hook_wf, caplog):
    with broker_at("redis://127.0.0.1:9/0"):  # port 9 (discard): nothing listens
        hook = Client().post(f"/hooks/{hook_wf.webhook_token}", data="{}", content_type="application/json")
        manual = api(editor).post(f"/api/workflows/{hook_wf.pk}/run/", {"payload": {}}, format="json")
        failed = Run.objects.get(pk=manual.json()["run_id"])
        Run.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)
        replay = api(editor).post(f"/api/runs/{failed.pk}/replay/", {}, format="json")
    assert hook.status_code == 202 and manual.status_code == 202 and replay.status_code == 201
    queued = Run.objects.filter(status=RunStatus.QUEUED)
    assert {str(r.pk) for r in queued} == {hook.json()["run_id"], replay.json()["id"]}
    assert caplog.text.count("could not be sent to the broker; the sweeper will") == 3


# -- 6. a stale instance never writes back what changed since it was read -----------------------
@pytest.mark.django_db
def test_an_update_from_a_stale_instance_keeps_a_rotated_token(hook_wf):
    stale = Workflow.objects.get(pk=hook_wf.pk)
    rotated = workflow_rotate_webhook_token(workflow=Workflow.objects.get(pk=hook_wf.pk))
    workflow_update(workflow=stale, name="Renamed")
    fresh = Workflow.objects.get(pk=hook_wf.pk)
    assert fresh.webhook_token == rotated.webhook_token and fresh.name == "Renamed" and fresh.version == 3
    assert stale.webhook_token == rotated.webhook_token and stale.version == 3  # the caller sees the truth


# -- 7. retry delays stay below the visibility timeout; checks say when settings conflict -------
def test_retry_delays_are_capped_below_the_visibility_timeout(settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    assert policy.max_retry_delay() == 3540
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6}
    assert policy.max_retry_delay() == 4.5
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": "/x"}
    assert policy.max_retry_delay() == policy.RETRY_AFTER_CAP_SECONDS


def test_a_long_retry_after_is_capped_below_the_visibility_timeout(settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
    assert policy.retry_delay({}, 1, 3600.0) == 540


def test_system_checks_flag_a_visibility_timeout_that_conflicts(settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    settings.POTAFLOW_STALLED_AFTER_SECONDS = 300
    assert not [m for m in run_checks() if m.id.startswith("workflows.")]
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 200}
    found = {m.id: m.msg for m in run_checks() if m.id.startswith("workflows.")}
    assert "reaches the broker's visibility_timeout (200 s)" in found["workflows.E001"]
    assert "Retry delays are capped at" in found["workflows.W001"]
    assert "POTAFLOW_STALLED_AFTER_SECONDS (300)" in found["workflows.W002"]


# -- 8. a schedule firing is the minute it was scheduled for ---------------------------------------
class _Request:
    def __init__(self, **headers):
        self.headers = headers
        self.__dict__.update(headers)


def test_the_firing_time_comes_from_the_beat_header_not_the_clock():
    when = scheduled_time(_Request(**{SCHEDULED_AT_HEADER: "2024-03-01T09:15:02.345+00:00"}))
    assert when == datetime(2024, 3, 1, 9, 15, tzinfo=UTC)
    assert scheduled_time(_Request()).second == 0  # no header: now, on the minute


@pytest.mark.slow
def test_a_late_or_redelivered_firing_is_the_same_run_at_the_scheduled_minute(celery_worker, org):
    from testing.worker import wait_for
    from workflows.tasks import fire_schedule

    wf = workflow_create(
        organization=org, name="Cron", trigger_type=TriggerType.SCHEDULE, schedule="* * * * *", steps=STEPS
    )
    headers = {"celery_beat_task": True, SCHEDULED_AT_HEADER: "2024-03-01T09:15:00.120000+00:00"}
    fire_schedule.apply_async(kwargs={"workflow_id": wf.pk}, headers=headers)
    fire_schedule.apply_async(kwargs={"workflow_id": wf.pk}, headers=headers, countdown=1)  # late duplicate
    run = wait_for(lambda: Run.objects.filter(workflow=wf).first(), timeout=20, message="the firing's run")
    assert run.payload["fired_at"] == "2024-03-01T09:15:00+00:00"
    assert run.idempotency_key == "schedule:2024-03-01T09:15:00+00:00"
    wait_for(
        lambda: celery_worker.log_text().count("workflows.fire_schedule") >= 4,  # 2 x received + succeeded
        timeout=20,
        message="both firings executed",
    )
    assert Run.objects.filter(workflow=wf).count() == 1


def test_beat_stamps_its_send_time_on_schedule_firings_only():
    from workflows.tasks import stamp_schedule_time

    beat = {"celery_beat_task": True}
    stamp_schedule_time(headers=beat)
    assert datetime.fromisoformat(beat[SCHEDULED_AT_HEADER]).tzinfo is not None
    manual: dict = {}
    stamp_schedule_time(headers=manual)
    assert manual == {}


# -- 9. replay re-evaluates the filter that stopped the run, and only a filter ---------------------
@pytest.mark.django_db
def test_replay_of_a_filtered_run_restarts_at_the_filter_not_at_an_output_that_looks_like_one(org):
    steps = [
        {"key": "shape", "action_type": "transform", "config": {"value": {"passed": False}}},
        {"key": "gate", "action_type": "filter", "config": {"condition": "false"}},
        {"key": "after", "action_type": "transform", "config": {"value": 1}},
    ]
    wf = workflow_create(organization=org, name="F", steps=steps)
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    StepRun.objects.filter(run=run, key="shape").update(status=StepRunStatus.SUCCEEDED, output={"passed": False})
    gate = {"passed": False, "condition": False}
    StepRun.objects.filter(run=run, key="gate").update(status=StepRunStatus.SUCCEEDED, output=gate)
    StepRun.objects.filter(run=run, key="after").update(status=StepRunStatus.SKIPPED)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FILTERED)
    run.refresh_from_db()
    replay = run_replay(run=run)
    assert dict(replay.step_runs.values_list("key", "status")) == {
        "shape": "succeeded",
        "gate": "pending",
        "after": "pending",
    }


# -- 10. one source of step defaults -------------------------------------------------------------
@pytest.mark.django_db
def test_step_defaults_are_the_same_in_the_model_the_api_and_the_snapshot(org, editor):
    from workflows.models import STEP_DEFAULTS, Step

    response = api(editor).post(
        "/api/workflows/",
        {"name": "D", "steps": [{"key": "a", "action_type": "transform", "config": {"value": 1}}]},
        format="json",
    )
    assert response.status_code == 201
    step = response.json()["steps"][0]
    assert {k: step[k] for k in STEP_DEFAULTS} == STEP_DEFAULTS
    assert {k: getattr(Step(), k) for k in STEP_DEFAULTS} == STEP_DEFAULTS
    snapshot = services.workflow_definition(Workflow.objects.get(pk=response.json()["id"]))["steps"][0]
    assert {k: snapshot[k] for k in STEP_DEFAULTS} == STEP_DEFAULTS


# -- 4 (templates): a template cannot allocate without bound --------------------------------------
@pytest.mark.parametrize("expression", ['"x" * 10**10', "[0] * 10**9", "10 ** 1000000", "(7 ** 30000) * (7 ** 30000)"])
def test_huge_repetitions_and_powers_are_template_errors(expression):
    with pytest.raises(templating.TemplateError, match="would have more than"):
        templating.render_string("{{ " + expression + " }}", {})
    assert templating.render_string('{{ "ab" * 3 }}', {}) == "ababab"
    assert templating.render_string("{{ 2 ** 10 * 3 }}", {}) == 3072


@pytest.mark.parametrize(
    "expression",
    [
        '"%999999999s" % "x"',
        '"%.999999999f" % 1.5',
        '"%*s" % (999999999, "x")',
        '"{:>999999999}".format("x")',
        '"{:{w}}".format("x", w=999999999)',
        '"x" | center(999999999)',
        '"x" | indent(999999999)',
        '"x" | wordwrap(width=999999999)',
        '"%999999999d" | format(1)',
    ],
)
def test_huge_format_widths_are_template_errors(expression):
    with pytest.raises(templating.TemplateError, match="not allowed"):
        templating.render_string("{{ " + expression + " }}", {})


def test_ordinary_formatting_still_works():
    assert templating.render_string('{{ "%05.1f" % 3.14159 }}', {}) == "003.1"
    assert templating.render_string('{{ "{:>6}".format("ab") }}', {}) == "    ab"
    assert templating.render_string('{{ "ab" | center(6) }}', {}) == "  ab  "
    assert templating.render_string('{{ "%s-%d" | format("a", 7) }}', {}) == "a-7"
    assert templating.render_string('{{ "%(n)s%%" % {"n": 5} }}', {}) == "5%"


def test_json_constants_in_outputs_stay_storable():
    output = recording.cap_output({"t": "a\x00b", "n": float("nan"), "i": float("-inf")})
    assert json.dumps(output, allow_nan=False)
    assert "\x00" not in output["t"] and output["n"] == "NaN" and output["i"] == "-Infinity"
