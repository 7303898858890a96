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
    """After an http step, two transforms run in its task, each with its own attempt and the same claim
    token: the first is computed ahead and recorded with the http step's success and the second's
    claim, in one statement; the second's record completes the run."""
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
    assert len(sql) == 3, sql  # claim call, record call + a (computed ahead) + claim b, record b
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
    # From the first step: nothing ran before it, so nothing is read.
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    _, sql = statements(run, 0, "m-0")
    assert [q for q in sql if '"output"' in q and q.startswith("SELECT")] == [], sql
    assert StepRun.objects.get(run=run, key="c").output == 3
    assert StepRun.objects.get(run=run, key="d").output == 30
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    # From a later step (an earlier message recorded a): read once for c and d.
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    StepRun.objects.filter(run=run, key="a").update(status=StepRunStatus.SUCCEEDED, attempts=1, output={"n": 5})
    _, sql = statements(run, 1, "m-1")
    assert len([q for q in sql if '"output"' in q and q.startswith("SELECT")]) == 1, sql
    assert StepRun.objects.get(run=run, key="c").output == 7
    assert StepRun.objects.get(run=run, key="d").output == 70
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


def test_a_row_of_transforms_and_a_filter_is_recorded_in_one_statement_with_an_attempt_each(org, single_tenant):
    """Steps that compute quickly and purely are computed ahead of their claim: [a, b, c, gate, d]
    costs a claim, one statement recording a, b, c and gate and claiming d, and d's record."""
    wf = workflow_create(
        organization=org,
        name="Ahead",
        steps=[
            {"key": "a", "action_type": "transform", "config": {"value": {"n": "{{ trigger.n }}"}}},
            {"key": "b", "action_type": "transform", "config": {"value": "{{ steps.a.output.n * 2 }}"}},
            {"key": "c", "action_type": "transform", "config": {"value": "{{ steps.b.output + 1 }}"}},
            {"key": "gate", "action_type": "filter", "config": {"condition": "{{ steps.c.output > 10 }}"}},
            {"key": "d", "action_type": "transform", "config": {"value": "{{ steps.c.output }} ok"}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"n": 7})
    outcome, sql = statements(run, 0, "m-0")
    assert outcome == engine.STOP
    writes = [q for q in sql if not q.lstrip().startswith("SELECT")]
    assert len(writes) == 3, writes
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED
    rows = list(run.step_runs.order_by("position"))
    assert [(r.key, r.status, r.attempts, r.claim_token) for r in rows] == [
        (key, StepRunStatus.SUCCEEDED, 1, "m-0") for key in ("a", "b", "c", "gate", "d")
    ]
    assert [r.output for r in rows[:3]] == [{"n": 7}, 14, 15] and rows[3].output["passed"] is True
    assert rows[4].output == "15 ok"
    assert rows[1].rendered_config == {"value": 14}
    attempts = list(StepAttempt.objects.filter(step_run__run=run).order_by("step_run__position"))
    assert [(a.number, a.outcome) for a in attempts] == [(1, "succeeded")] * 5
    assert all(a.worker_pid and a.duration_ms is not None and a.started_at <= a.finished_at for a in attempts)
    assert all(attempts[i].finished_at <= attempts[i + 1].started_at for i in range(4)), [
        (a.started_at, a.finished_at) for a in attempts
    ]


def test_a_filter_that_filters_is_not_computed_ahead_but_claimed_and_recorded_as_filtered(org, single_tenant):
    wf = workflow_create(
        organization=org,
        name="Filtered",
        steps=[
            {"key": "a", "action_type": "transform", "config": {"value": 1}},
            {"key": "b", "action_type": "transform", "config": {"value": 2}},
            {"key": "gate", "action_type": "filter", "config": {"condition": "{{ steps.b.output > 5 }}"}},
            {"key": "d", "action_type": "transform", "config": {"value": 3}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    assert engine.run_step(run.pk, 0, message_id="m-0") == engine.STOP
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.FILTERED
    states = dict(run.step_runs.values_list("key", "status"))
    assert states == {"a": "succeeded", "b": "succeeded", "gate": "filtered", "d": "skipped"}


def test_steps_computed_ahead_are_kept_only_if_all_are_still_pending(org, single_tenant):
    """Another worker's message holds c: b and c are not recorded from this task's computation, the
    ordinary claim takes b, and c is left to the message that has it."""
    wf = workflow_create(
        organization=org,
        name="Raced",
        steps=[{"key": key, "action_type": "transform", "config": {"value": key}} for key in "abcd"],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    lease = timezone.now() + timedelta(seconds=60)
    StepRun.objects.filter(run=run, key="c").update(
        status=StepRunStatus.RUNNING, attempts=1, claim_token="other", lease_expires_at=lease
    )
    assert engine.run_step(run.pk, 0, message_id="m-0") == engine.STOP
    rows = {r.key: r for r in StepRun.objects.filter(run=run)}
    assert [(rows[k].status, rows[k].attempts, rows[k].claim_token) for k in "abcd"] == [
        (StepRunStatus.SUCCEEDED, 1, "m-0"),
        (StepRunStatus.SUCCEEDED, 1, "m-0"),
        (StepRunStatus.RUNNING, 1, "other"),
        (StepRunStatus.PENDING, 0, ""),
    ]
    assert not StepAttempt.objects.filter(step_run__run=run, step_run__key__in=["c", "d"]).exists()
    assert list(StepAttempt.objects.filter(step_run__run=run).values_list("number", flat=True)) == [1, 1]


@pytest.fixture
def two_tenants(settings, other_org):
    """The default per-organization rule with a second organization: claims look at fairness."""
    from workflows.execution import fairness

    settings.POTAFLOW_ORG_MAX_RUNNING_STEPS = -1
    fairness._org_count_cache.update(value=0.0, until=0.0)  # count the new organization now
    yield settings
    fairness._org_count_cache.update(value=0.0, until=0.0)


def parked_checks(sql):
    """Statements that ask whether this organization has parked steps (not whether others have)."""
    return [q for q in sql if "parked_at IS NOT NULL" in q and "organization_id <>" not in q]


def test_with_several_organizations_the_success_record_says_whether_steps_are_parked(org, two_tenants):
    """The step's success record also answers "has this organization parked steps?" (one round trip
    less per step); when it has, they are woken as before."""
    wf = workflow_create(
        organization=org, name="Fair", steps=[{"key": "a", "action_type": "transform", "config": {"value": 1}}]
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    _, sql = statements(run, 0, "m-0")
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    checks = parked_checks(sql)
    assert len(checks) == 1 and checks[0].lstrip().startswith("WITH done AS"), checks  # in the record itself

    # With a parked step of the organization: the record says so and the task wakes it.
    parked, _ = run_accept(workflow=wf, trigger="manual", payload={})
    StepRun.objects.filter(run=parked).update(parked_at=timezone.now())
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    from testing.worker import IsolatedBroker

    with IsolatedBroker():  # the woken step's message goes nowhere
        _, sql = statements(run, 0, "m-1")
    assert len(parked_checks(sql)) >= 2, parked_checks(sql)  # the record's answer, then the wake
    assert StepRun.objects.get(run=parked).parked_at is None  # woken
