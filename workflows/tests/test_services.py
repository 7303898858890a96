import pytest
from django_celery_beat.models import PeriodicTask

from integrations.services import credential_create
from workflows import services
from workflows.models import Run, RunStatus, StepRun, StepRunStatus, TriggerType
from workflows.services import WorkflowInvalid, run_accept, run_replay, workflow_create, workflow_update

pytestmark = pytest.mark.django_db


def three_steps():
    return [
        {"key": "shape", "action_type": "transform", "config": {"value": {"email": "{{ trigger.body.email }}"}}},
        {"key": "check", "action_type": "filter", "config": {"condition": "steps.shape.output.email != ''"}},
        {"key": "call", "action_type": "custom", "config": {"handler": "test.echo", "input": {"log": "/dev/null"}}},
    ]


def test_create_stores_ordered_steps_and_version_one(org, editor):
    wf = workflow_create(organization=org, name="W", created_by=editor, steps=three_steps())
    assert [s.key for s in wf.steps.all()] == ["shape", "check", "call"]
    assert [s.position for s in wf.steps.all()] == [0, 1, 2]
    assert wf.version == 1
    assert len(wf.webhook_token) >= 32


def test_update_bumps_version_and_replaces_steps(org):
    wf = workflow_create(organization=org, name="W", steps=three_steps())
    workflow_update(workflow=wf, name="W2")
    assert wf.version == 2
    workflow_update(workflow=wf, steps=three_steps()[:1])
    wf.refresh_from_db()
    assert wf.version == 3 and wf.name == "W2"
    assert [s.key for s in wf.steps.all()] == ["shape"]


def test_an_update_that_changes_nothing_keeps_the_version_and_the_steps(org):
    wf = workflow_create(organization=org, name="W", trigger_type=TriggerType.MANUAL, steps=three_steps())
    step_ids = list(wf.steps.values_list("pk", flat=True))
    workflow_update(workflow=wf, name="W", is_active=True, trigger_type="manual", steps=three_steps())
    assert wf.version == 1
    assert list(wf.steps.values_list("pk", flat=True)) == step_ids  # not deleted and re-created

    changed = three_steps()
    changed[2]["max_retries"] = 5
    workflow_update(workflow=wf, name="W", steps=changed)
    assert wf.version == 2 and wf.steps.get(key="call").max_retries == 5
    changed[0]["config"] = {"value": {"email": True}}
    workflow_update(workflow=wf, steps=changed)
    assert wf.version == 3
    changed[0]["config"] = {"value": {"email": 1}}  # equal in Python (True == 1), not as a definition
    workflow_update(workflow=wf, steps=changed)
    assert wf.version == 4
    workflow_update(workflow=wf, description="now described")
    assert wf.version == 5 and wf.description == "now described"


def test_a_reference_to_a_later_step_names_the_step_and_field(org):
    steps = three_steps()
    steps[0]["config"] = {"value": "{{ steps.call.output }}"}
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="W", steps=steps)
    assert "steps[0].config.value" in exc.value.errors
    message = exc.value.errors["steps[0].config.value"][0]
    assert "'shape'" in message and "'call'" in message


def test_template_syntax_errors_are_rejected(org):
    steps = [{"key": "a", "action_type": "transform", "config": {"value": "{{ trigger.body.x "}}]
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="W", steps=steps)
    assert "syntax" in exc.value.errors["steps[0].config.value"][0]


def test_unknown_action_duplicate_key_and_bad_config_are_named(org):
    steps = [
        {"key": "a", "action_type": "nope.action", "config": {}},
        {"key": "a", "action_type": "transform", "config": {}},
        {"key": "c", "action_type": "custom", "config": {"handler": "not.registered"}},
        {"key": "d", "action_type": "transform", "config": {"value": 1}, "max_retries": -1},
    ]
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="W", steps=steps)
    errors = exc.value.errors
    assert "unknown action type 'nope.action'" in errors["steps[0].action_type"][0]
    assert "used by an earlier step" in errors["steps[1].key"][0]
    assert "'value' is a required property" in errors["steps[1].config"][0]
    assert "not.registered" in errors["steps[2].config.handler"][0]
    assert "max_retries" in errors["steps[3].max_retries"][0]


def test_credentials_must_be_of_the_org_and_an_accepted_kind(org, other_org, fernet_keys):
    mine = credential_create(
        organization=org,
        name="tok",
        kind="http_bearer",
        secret={"token": "s3cret-value", "allowed_hosts": ["api.example.com"]},
    )
    theirs = credential_create(
        organization=other_org,
        name="tok",
        kind="http_bearer",
        secret={"token": "x", "allowed_hosts": ["api.example.com"]},
    )
    steps = [{"key": "a", "action_type": "transform", "config": {"value": 1}, "credential": mine.pk}]
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="W", steps=steps)
    assert "cannot be used by transform" in exc.value.errors["steps[0].credential"][0]
    steps[0]["credential"] = theirs.pk
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="W", steps=steps)
    assert "no credential" in exc.value.errors["steps[0].credential"][0]


def test_schedule_workflow_is_synced_to_a_periodic_task(org):
    wf = workflow_create(
        organization=org,
        name="Nightly",
        trigger_type=TriggerType.SCHEDULE,
        schedule="30 2 * * 1-5",
        timezone="Europe/Paris",
        steps=three_steps()[:1],
    )
    task = PeriodicTask.objects.get(name=wf.periodic_task_name)
    assert task.task == "workflows.fire_schedule"
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "2", "1-5")
    assert str(task.crontab.timezone) == "Europe/Paris"
    assert task.enabled and f'"workflow_id": {wf.pk}' in task.kwargs

    workflow_update(workflow=wf, schedule="*/15 * * * *", timezone="America/New_York")
    task.refresh_from_db()
    assert (task.crontab.minute, task.crontab.hour) == ("*/15", "*")
    assert str(task.crontab.timezone) == "America/New_York"

    workflow_update(workflow=wf, is_active=False)
    task.refresh_from_db()
    assert task.enabled is False

    workflow_update(workflow=wf, trigger_type=TriggerType.MANUAL)
    assert not PeriodicTask.objects.filter(name=wf.periodic_task_name).exists()

    workflow_update(workflow=wf, trigger_type=TriggerType.SCHEDULE, is_active=True)
    assert PeriodicTask.objects.filter(name=wf.periodic_task_name, enabled=True).exists()
    services.workflow_delete(workflow=wf)
    assert not PeriodicTask.objects.filter(name=wf.periodic_task_name).exists()


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("schedule", "61 * * * *", "not a valid cron"),
        ("schedule", "* * * *", "5-field"),
        ("timezone", "Mars/Olympus", "IANA"),
    ],
)
def test_invalid_cron_or_timezone_names_the_field(org, field, value, needle):
    kwargs = {"schedule": "* * * * *", "timezone": "UTC", field: value}
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="S", trigger_type=TriggerType.SCHEDULE, **kwargs)
    assert needle in exc.value.errors[field][0]
    assert not PeriodicTask.objects.exists()


def test_run_accept_snapshots_the_definition_and_is_idempotent(org):
    wf = workflow_create(organization=org, name="W", steps=three_steps())
    run, created = run_accept(workflow=wf, trigger="manual", payload={"body": {}}, idempotency_key="k1")
    again, created_again = run_accept(workflow=wf, trigger="manual", payload={"body": {}}, idempotency_key="k1")
    assert created and not created_again and again.pk == run.pk
    assert run.status == RunStatus.QUEUED
    assert [s["key"] for s in run.definition["steps"]] == ["shape", "check", "call"]
    assert list(run.step_runs.values_list("status", flat=True)) == ["pending"] * 3
    workflow_update(workflow=wf, steps=three_steps()[:1])
    run.refresh_from_db()
    assert len(run.definition["steps"]) == 3 and run.workflow_version == 1


def test_replay_reuses_succeeded_outputs_and_starts_at_the_failed_step(org):
    wf = workflow_create(organization=org, name="W", steps=three_steps())
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {}})
    with pytest.raises(WorkflowInvalid, match="queued"):
        run_replay(run=run)
    StepRun.objects.filter(run=run, position__lt=2).update(status=StepRunStatus.SUCCEEDED, output={"ok": 1})
    StepRun.objects.filter(run=run, position=2).update(status=StepRunStatus.FAILED, error="x")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, dead_lettered=True)
    run.refresh_from_db()
    replay = run_replay(run=run)
    rows = list(replay.step_runs.values_list("status", "reused", "output"))
    assert rows == [("succeeded", True, {"ok": 1}), ("succeeded", True, {"ok": 1}), ("pending", False, None)]
    assert replay.replay_of == run and replay.trigger == "replay"
    from_start = run_replay(run=run, from_step="shape")
    assert list(from_start.step_runs.values_list("status", flat=True)) == ["pending"] * 3
    with pytest.raises(WorkflowInvalid) as exc:
        run_replay(run=run, from_step="ghost")
    assert "ghost" in exc.value.errors["from_step"][0]
