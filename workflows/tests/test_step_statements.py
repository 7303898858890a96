"""What executing a step costs the database: one statement to claim, one to record (PostgreSQL).

In-process (``engine.run_step``, what the Celery task calls), counting this
thread's statements; the http action calls a local server.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from testing.network import Reply
from workflows.execution import engine
from workflows.models import Run, RunStatus, StepAttempt, StepRun, StepRunStatus
from workflows.services import run_accept, workflow_create

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement claim is PostgreSQL's"),
]


@pytest.fixture
def single_tenant(settings):
    settings.POTAFLOW_ORG_MAX_RUNNING_STEPS = 0
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    return settings


def statements(run, position, message_id):
    with CaptureQueriesContext(connection) as captured:
        outcome = engine.run_step(run.pk, position, message_id=message_id)
    return outcome, [q["sql"] for q in captured.captured_queries]


def test_a_pending_step_is_claimed_in_one_statement_and_recorded_in_one(org, single_tenant, http_server):
    http_server.route("POST", "/hook", Reply(200, {"ok": True}))
    http = {"method": "POST", "url": http_server.url + "/hook", "body_type": "json", "body": {"n": "{{ trigger.n }}"}}
    wf = workflow_create(
        organization=org,
        name="Two",
        steps=[
            {"key": "first", "action_type": "http.request", "config": http},
            {"key": "second", "action_type": "http.request", "config": http},
        ],
    )
    warm, _ = run_accept(workflow=wf, trigger="manual", payload={"n": 0})
    engine.run_step(warm.pk, 0, message_id="warm-0")  # this process reads the version once

    run, _ = run_accept(workflow=wf, trigger="manual", payload={"n": 7})
    outcome, first = statements(run, 0, "m-0")
    assert outcome == engine.PROCEED
    assert len(first) == 2, first
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING

    outcome, second = statements(run, 1, "m-1")
    assert outcome == engine.STOP
    assert len(second) == 2, second

    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.started_at and run.finished_at
    rows = list(run.step_runs.order_by("position"))
    assert [s.status for s in rows] == [StepRunStatus.SUCCEEDED] * 2
    assert rows[0].output["status"] == 200 and rows[1].output["status"] == 200
    assert all(s.attempts == 1 and s.lease_expires_at is None and s.claim_token for s in rows)
    attempt = StepAttempt.objects.get(step_run=rows[0])
    assert (attempt.outcome, attempt.number, attempt.response_status) == ("succeeded", 1, 200)
    assert attempt.request["url"] == http_server.url + "/hook" and attempt.worker_pid


def test_steps_that_only_compute_run_in_the_same_task_one_statement_each(org, single_tenant, http_server):
    """After an http step, two transforms run in its task: each is recorded and the next claimed in one
    statement (the last one's record completes the run), with its own attempt and the same claim token."""
    http_server.route("POST", "/hook", Reply(200, {"ok": True}))
    http = {"method": "POST", "url": http_server.url + "/hook", "body_type": "json", "body": {"n": 1}}
    wf = workflow_create(
        organization=org,
        name="Local",
        steps=[
            {"key": "call", "action_type": "http.request", "config": http},
            {"key": "a", "action_type": "transform", "config": {"value": {"n": "{{ trigger.n }}"}}},
            {"key": "b", "action_type": "transform", "config": {"value": {"m": 2}}},
        ],
    )
    warm, _ = run_accept(workflow=wf, trigger="manual", payload={"n": 0})
    engine.run_step(warm.pk, 0, message_id="warm-0")
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"n": 7})
    outcome, sql = statements(run, 0, "m-0")
    assert outcome == engine.STOP  # the run is complete: nothing left for the chain
    assert len(sql) == 4, sql  # claim, record call + claim a, record a + claim b, record b
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED
    rows = list(run.step_runs.order_by("position"))
    assert [(r.status, r.attempts, r.claim_token) for r in rows] == [(StepRunStatus.SUCCEEDED, 1, "m-0")] * 3
    assert rows[1].output == {"n": 7} and rows[2].output == {"m": 2}
    attempts = list(StepAttempt.objects.filter(step_run__run=run).order_by("step_run__position"))
    assert [a.outcome for a in attempts] == ["succeeded"] * 3
    assert attempts[0].finished_at <= attempts[1].started_at <= attempts[1].finished_at <= attempts[2].started_at


def test_earlier_outputs_are_read_only_by_a_step_whose_config_names_them(org, single_tenant):
    """Once per task: the steps run after it in process see what it read and what they recorded."""
    wf = workflow_create(
        organization=org,
        name="Outputs",
        steps=[
            {"key": "a", "action_type": "transform", "config": {"value": {"n": 1}}},
            {"key": "b", "action_type": "transform", "config": {"value": {"n": 2}}},
            {"key": "c", "action_type": "transform", "config": {"value": "{{ steps.a.output.n + steps.b.output.n }}"}},
            {"key": "d", "action_type": "transform", "config": {"value": "{{ steps.c.output * 10 }}"}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    _, sql = statements(run, 0, "m-0")
    assert len([q for q in sql if '"output"' in q and q.startswith("SELECT")]) == 1, sql
    assert StepRun.objects.get(run=run, key="c").output == 3
    assert StepRun.objects.get(run=run, key="d").output == 30
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_a_second_message_for_a_claimed_step_does_not_claim_it_again(org, single_tenant):
    wf = workflow_create(
        organization=org, name="Once", steps=[{"key": "a", "action_type": "transform", "config": {"value": 1}}]
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    StepRun.objects.filter(run=run).update(status=StepRunStatus.RUNNING, attempts=1, claim_token="first")
    assert engine.run_step(run.pk, 0, message_id="second") == engine.STOP
    step = StepRun.objects.get(run=run)
    assert (step.status, step.attempts, step.claim_token) == (StepRunStatus.RUNNING, 1, "first")
    assert not StepAttempt.objects.filter(step_run=step).exists()


def test_the_template_context_still_offers_earlier_outputs_to_the_action(org, single_tenant):
    wf = workflow_create(
        organization=org, name="Ctx", steps=[{"key": "a", "action_type": "transform", "config": {"value": 5}}]
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    engine.run_step(run.pk, 0, message_id="m-0")
    run = Run.objects.select_related("version").get(pk=run.pk)
    lazy = engine.build_context(run, {"config": {"value": 1}})["steps"]
    assert not isinstance(lazy, dict)
    assert dict(lazy) == {"a": {"output": 5, "status": "succeeded"}}
    assert engine.build_context(run)["steps"] == {"a": {"output": 5, "status": "succeeded"}}


def test_with_a_tenant_limit_the_claim_counts_under_the_organizations_lock(org, other_org, settings):
    settings.POTAFLOW_ORG_MAX_RUNNING_STEPS = 1
    one_step = [{"key": "a", "action_type": "transform", "config": {"value": 1}}]
    busy_wf = workflow_create(organization=org, name="Busy", steps=one_step)
    other_wf = workflow_create(organization=other_org, name="Other", steps=one_step)
    holding, _ = run_accept(workflow=busy_wf, trigger="manual", payload={})
    StepRun.objects.filter(run=holding).update(
        status=StepRunStatus.RUNNING, attempts=1, lease_expires_at=timezone.now() + timedelta(seconds=60)
    )
    waiting, _ = run_accept(workflow=busy_wf, trigger="manual", payload={})
    elsewhere, _ = run_accept(workflow=other_wf, trigger="manual", payload={})

    outcome, _ = statements(waiting, 0, "m-waiting")
    # Parked, not sent back around: its organization is at its (hard) limit.
    assert outcome == engine.STOP and outcome.retry_in is None
    step = StepRun.objects.get(run=waiting)
    assert step.status == StepRunStatus.PENDING and step.parked_at is not None
    assert not StepAttempt.objects.filter(step_run__run=waiting).exists()

    outcome, claimed = statements(elsewhere, 0, "m-elsewhere")
    assert outcome == engine.STOP and Run.objects.get(pk=elsewhere.pk).status == RunStatus.SUCCEEDED
    assert any("FOR UPDATE" in sql and "accounts_organization" in sql for sql in claimed), claimed
    assert len(claimed) <= 6, claimed  # BEGIN, lock, claim, COMMIT, record (+ a warm-up read)
