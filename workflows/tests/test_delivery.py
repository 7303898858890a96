"""Delivery guarantees with real processes: a killed worker, a broker that lost
its messages, and beat firing a schedule. These take seconds (beat up to a minute)."""

import os
import signal
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from testing.worker import (
    IsolatedBroker,
    is_filesystem_broker,
    start_beat,
    start_worker,
    wait_for,
    wait_for_run,
)
from workflows.execution import dispatch, engine, policy
from workflows.models import Run, StepRun, TriggerType
from workflows.services import run_accept, workflow_create
from workflows.tasks import recover_stalled_runs
from workflows.tests.handlers import calls

pytestmark = pytest.mark.slow


def test_a_step_killed_with_its_worker_runs_again_on_a_new_worker(celery_worker, org, tmp_path):
    log = tmp_path / "slow.jsonl"
    wf = workflow_create(
        organization=org,
        name="Slow",
        steps=[
            {"key": "slow", "action_type": "custom", "config": {"handler": "test.slow", "input": {"log": str(log)}}},
            {"key": "after", "action_type": "transform", "config": {"value": "{{ steps.slow.output.calls }}"}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    wait_for(lambda: len(calls(log)) == 1, timeout=30, message="the slow step to start")
    celery_worker.kill()  # SIGKILL to the whole process group, mid-step
    step = StepRun.objects.get(run=run, key="slow")
    assert step.status == "running" and step.attempts == 1

    celery_worker.start()
    if is_filesystem_broker():
        # kombu's filesystem transport deletes a message when it hands it out,
        # so a killed worker's message is gone: the sweeper brings the run back
        # once the attempt's lease has lapsed (made so here, not waited for).
        assert dispatch.recover_stalled_runs(stalled_after=0) == []  # its lease is still live
        long_ago = timezone.now() - timedelta(seconds=60)
        StepRun.objects.filter(pk=step.pk).update(lease_expires_at=long_ago)
        Run.objects.filter(pk=run.pk).update(last_progress_at=long_ago)
        assert str(run.pk) in dispatch.recover_stalled_runs(stalled_after=0)
    # On Redis the unacknowledged message is redelivered (visibility timeout).
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker)
    assert run.status == "succeeded", run.error
    step = run.step_runs.get(key="slow")
    assert step.attempts == 2 and step.output == {"calls": 2}
    assert run.step_runs.get(key="after").output == 2
    first, second = calls(log)
    assert first["pid"] != second["pid"]


def test_a_run_whose_messages_were_flushed_is_recovered_by_the_sweeper(transactional_db, org, tmp_path):
    log = tmp_path / "echo.jsonl"
    wf = workflow_create(
        organization=org,
        name="Lost",
        steps=[
            {"key": "a", "action_type": "custom", "config": {"handler": "test.echo", "input": {"log": str(log)}}},
            {"key": "b", "action_type": "transform", "config": {"value": "{{ steps.a.output.attempt }}"}},
        ],
    )
    with IsolatedBroker() as broker:
        run, _ = run_accept(workflow=wf, trigger="manual", payload={})
        wait_for(lambda: broker.message_count() > 0, timeout=10, message="the run's message in the broker")
        broker.flush()
        assert broker.message_count() == 0
        worker = start_worker(env={**broker.env, "POTAFLOW_STALLED_AFTER_SECONDS": "1"})
        try:
            wait_for(lambda: Run.objects.get(pk=run.pk).last_progress_at is not None, timeout=1)
            import time

            time.sleep(1.5)  # older than POTAFLOW_STALLED_AFTER_SECONDS
            assert Run.objects.get(pk=run.pk).status == "queued"  # nothing left to deliver it
            recover_stalled_runs.delay()  # what beat sends every POTAFLOW_RECOVERY_INTERVAL_SECONDS
            run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=30, worker=worker)
        finally:
            worker.stop()
    assert run.status == "succeeded"
    assert run.step_runs.get(key="b").output == 1
    assert len(calls(log)) == 1
    assert "recovering stalled run" in worker.log_text()


def test_beat_fires_a_schedule_and_the_worker_runs_it(celery_worker, org):
    wf = workflow_create(
        organization=org,
        name="Every minute",
        trigger_type=TriggerType.SCHEDULE,
        schedule="* * * * *",
        timezone="Europe/Paris",
        steps=[{"key": "when", "action_type": "transform", "config": {"value": "{{ trigger.body.fired_at }}"}}],
    )
    beat = start_beat()
    try:
        run = wait_for(lambda: Run.objects.filter(workflow=wf).first(), timeout=80, message="a scheduled run")
        run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=30, worker=celery_worker)
    finally:
        beat.stop()
    assert run.trigger == "schedule" and run.status == "succeeded"
    assert run.payload["fired_at"] and run.step_runs.get().output == run.payload["fired_at"]
    assert run.payload["body"]["timezone"] == "Europe/Paris"


def slow_workflow(org, log, seconds, **policy):
    return workflow_create(
        organization=org,
        name="Slow",
        steps=[
            {
                "key": "slow",
                "action_type": "custom",
                "config": {"handler": "test.slow", "input": {"log": str(log), "seconds": seconds}},
                **policy,
            },
            {"key": "after", "action_type": "transform", "config": {"value": "{{ steps.slow.output.calls }}"}},
        ],
    )


def test_a_forced_dispatch_while_a_slow_step_runs_does_not_run_it_twice(celery_worker, org, tmp_path):
    """A long step (or a backlog) is not a lost message: recovery must not start it again in parallel."""
    log = tmp_path / "slow.jsonl"
    wf = slow_workflow(org, log, seconds=3, timeout_seconds=5)
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    wait_for(lambda: len(calls(log)) == 1, timeout=30, message="the slow step to start")
    assert StepRun.objects.get(run=run, key="slow").lease_expires_at > timezone.now()  # its worker holds it
    assert dispatch.recover_stalled_runs(stalled_after=0) == []
    dispatch.dispatch(run.pk, force=True)  # as a sweeper with a too-short threshold would
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=30, worker=celery_worker)
    assert run.status == "succeeded", run.error
    assert len(calls(log)) == 1
    assert run.step_runs.get(key="slow").attempts == 1
    assert "dropping duplicate message" in celery_worker.log_text()


def test_a_step_killed_with_its_pool_process_is_requeued_and_runs_again(celery_worker, org, tmp_path):
    """Only the pool child dies (OOM killer): reject_on_worker_lost requeues the message at once."""
    log = tmp_path / "slow.jsonl"
    wf = slow_workflow(org, log, seconds=4)
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    first = wait_for(lambda: calls(log), timeout=30, message="the slow step to start")[0]
    assert first["pid"] != celery_worker.proc.pid
    os.kill(first["pid"], signal.SIGKILL)
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=30, worker=celery_worker)
    assert run.status == "succeeded", run.error
    assert celery_worker.alive
    step = run.step_runs.get(key="slow")
    assert step.attempts == 2 and step.output == {"calls": 2}
    first_call, second_call = calls(log)
    assert second_call["attempt"] == 2 and second_call["pid"] != first_call["pid"]
    assert run.step_runs.get(key="after").output == 2


def test_a_step_that_keeps_killing_its_worker_is_dead_lettered(celery_worker, org, tmp_path):
    log = tmp_path / "kill.jsonl"
    wf = workflow_create(
        organization=org,
        name="Killer",
        steps=[
            {
                "key": "oom",
                "action_type": "custom",
                "config": {"handler": "test.kill_self", "input": {"log": str(log)}},
                "max_retries": 1,
            },
            {"key": "after", "action_type": "transform", "config": {"value": 1}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=30, worker=celery_worker)
    assert run.status == "failed" and run.dead_lettered
    step = run.step_runs.get(key="oom")
    assert step.status == "failed" and step.attempts == 2
    assert step.error == "worker lost or time limit exceeded; gave up after 2 attempts"
    assert run.step_runs.get(key="after").status == "skipped"
    assert len(calls(log)) == 2  # max_retries=1: two attempts, no third


def test_a_step_past_its_hard_time_limit_is_rerun_by_the_sweeper_then_dead_lettered(org, transactional_db):
    """Celery acks a message whose hard time limit killed it: the sweeper must end it, not loop."""
    wf = workflow_create(
        organization=org,
        name="Hung",
        steps=[{"key": "t", "action_type": "transform", "config": {"value": 1}, "max_retries": 0}],
    )
    with transaction.atomic():  # its message is sent on commit: the session worker finds it set up
        run, _ = run_accept(workflow=wf, trigger="manual", payload={})
        long_ago = timezone.now() - timedelta(seconds=policy.time_limit(None) + 1)
        StepRun.objects.filter(run=run).update(status="running", attempts=1, started_at=long_ago, claim_token="gone")
        Run.objects.filter(pk=run.pk).update(status="running", last_progress_at=long_ago)
    # What the sweeper's forced message does (run in this process: the engine, not a mock).
    assert engine.run_step(run.pk, 0, force=True, message_id="sweeper-1") == engine.STOP
    run.refresh_from_db()
    step = run.step_runs.get()
    assert run.status == "failed" and run.dead_lettered
    assert step.error == "worker lost or time limit exceeded; gave up after 1 attempts"
    assert engine.run_step(run.pk, 0, force=True, message_id="sweeper-2") == engine.STOP  # finished: dropped
