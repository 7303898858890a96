"""The engine end to end: a real Celery worker, the real broker, a committed database."""

import pytest

from testing.worker import wait_for_run
from workflows.execution.recording import TRUNCATION_MARKER
from workflows.models import StepRun
from workflows.services import run_accept, run_replay, workflow_create
from workflows.tests.handlers import calls

pytestmark = pytest.mark.slow

FAST = {"backoff_seconds": 0.3, "backoff_max_seconds": 3}


def custom(key, handler, log, **extra):
    step = {"key": key, "action_type": "custom", "config": {"handler": handler, "input": {"log": str(log)}}}
    step["config"]["input"].update(extra.pop("input", {}))
    step.update(FAST)
    step.update(extra)
    return step


def test_a_three_step_chain_passes_outputs_along(celery_worker, org, tmp_path):
    log = tmp_path / "echo.jsonl"
    wf = workflow_create(
        organization=org,
        name="Chain",
        steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.body.n * 2 }}"}}},
            custom("call", "test.echo", log, input={"n": "{{ steps.shape.output.n }}"}),
            {
                "key": "final",
                "action_type": "transform",
                "config": {"value": {"total": "{{ steps.call.output.input.n + 1 }}", "run": "{{ run.id }}"}},
            },
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n": 20}})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, worker=celery_worker)
    assert run.status == "succeeded", run.error
    steps = list(run.step_runs.order_by("position"))
    assert [s.status for s in steps] == ["succeeded"] * 3
    assert steps[0].output == {"n": 40}
    assert steps[1].output == {"input": {"n": 40}, "attempt": 1}
    assert steps[1].rendered_config == {"handler": "test.echo", "input": {"log": str(log), "n": 40}}
    assert steps[2].output == {"total": 41, "run": str(run.pk)}
    assert all(s.attempts == 1 and s.duration_ms is not None and s.finished_at for s in steps)
    assert run.started_at and run.finished_at
    assert len(calls(log)) == 1


def test_a_retryable_failure_is_retried_with_growing_waits(celery_worker, org, tmp_path):
    log = tmp_path / "flaky.jsonl"
    wf = workflow_create(
        organization=org, name="Flaky", steps=[custom("flaky", "test.flaky", log, input={"fail_times": 2})]
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, worker=celery_worker)
    assert run.status == "succeeded"
    step = run.step_runs.get()
    assert step.attempts == 3 and step.output == {"calls": 3} and step.error == ""
    times = [c["t"] for c in calls(log)]
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    assert 0.2 <= first_wait < second_wait, (first_wait, second_wait)


def test_retries_exhausted_dead_letter_the_run_and_replay_skips_done_steps(celery_worker, org, tmp_path):
    first, flaky = tmp_path / "first.jsonl", tmp_path / "flaky.jsonl"
    wf = workflow_create(
        organization=org,
        name="Dead letter",
        steps=[
            custom("first", "test.echo", first),
            custom("flaky", "test.flaky", flaky, input={"fail_times": 3}, max_retries=1),
            {"key": "last", "action_type": "transform", "config": {"value": "{{ steps.flaky.output.calls }}"}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, worker=celery_worker)
    assert run.status == "failed" and run.dead_lettered
    statuses = dict(run.step_runs.values_list("key", "status"))
    assert statuses == {"first": "succeeded", "flaky": "failed", "last": "skipped"}
    failed = run.step_runs.get(key="flaky")
    assert failed.attempts == 2 and "gave up after 2 attempts" in failed.error and "flaky: call 2" in failed.error

    replay = run_replay(run=run)
    replay = wait_for_run(replay.pk, {"succeeded", "failed"}, worker=celery_worker)
    assert replay.status == "succeeded" and replay.replay_of_id == run.pk
    assert len(calls(first)) == 1  # the succeeded step was reused, not run again
    assert len(calls(flaky)) == 4  # 2 in the original run, 2 in the replay
    assert replay.step_runs.get(key="first").reused
    assert replay.step_runs.get(key="last").output == 4


def test_a_permanent_error_fails_at_once_and_skips_the_rest(celery_worker, org, tmp_path):
    log = tmp_path / "boom.jsonl"
    wf = workflow_create(
        organization=org,
        name="Boom",
        steps=[custom("boom", "test.boom", log), custom("never", "test.echo", tmp_path / "never.jsonl")],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, worker=celery_worker)
    assert run.status == "failed" and not run.dead_lettered
    boom, never = run.step_runs.order_by("position")
    assert boom.status == "failed" and boom.attempts == 1 and "HTTP 422" in boom.error
    assert never.status == "skipped"
    assert len(calls(log)) == 1 and calls(tmp_path / "never.jsonl") == []
    assert "boom" in run.error


def test_an_unexpected_exception_is_a_permanent_failure_with_its_type(celery_worker, org, tmp_path):
    wf = workflow_create(organization=org, name="Crash", steps=[custom("crash", "test.crash", tmp_path / "c.jsonl")])
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, worker=celery_worker)
    step = run.step_runs.get()
    assert run.status == "failed" and step.attempts == 1
    assert step.error == "ZeroDivisionError: division by zero"


def test_an_undefined_variable_at_run_time_fails_the_step_naming_it(celery_worker, org):
    wf = workflow_create(
        organization=org,
        name="Undefined",
        steps=[{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body.customer.email }}"}}],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {}})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, worker=celery_worker)
    step = run.step_runs.get()
    assert run.status == "failed" and "customer" in step.error and "undefined" in step.error


def test_a_false_filter_ends_the_run_as_filtered(celery_worker, org, tmp_path):
    wf = workflow_create(
        organization=org,
        name="Filter",
        steps=[
            {"key": "gate", "action_type": "filter", "config": {"condition": "trigger.body.amount > 100"}},
            custom("after", "test.echo", tmp_path / "after.jsonl"),
        ],
    )
    small, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"amount": 5}})
    big, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"amount": 500}})
    # A form-encoded body's fields are text: "500" > 100 compares numbers, with no TypeError (issue 21).
    form, _ = run_accept(workflow=wf, trigger="webhook", payload={"body": {"amount": "500"}})
    small = wait_for_run(small.pk, {"succeeded", "failed", "filtered"}, worker=celery_worker)
    big = wait_for_run(big.pk, {"succeeded", "failed", "filtered"}, worker=celery_worker)
    form = wait_for_run(form.pk, {"succeeded", "failed", "filtered"}, worker=celery_worker)
    assert (small.status, big.status, form.status) == ("filtered", "succeeded", "succeeded"), form.error
    # The filter that ended the run says so: "filtered", not "succeeded" (issue 21).
    assert dict(small.step_runs.values_list("key", "status")) == {"gate": "filtered", "after": "skipped"}
    assert small.step_runs.get(key="gate").output == {"passed": False, "condition": False}
    assert len(calls(tmp_path / "after.jsonl")) == 2


def test_oversized_outputs_are_truncated_with_a_marker(celery_worker, org, settings):
    wf = workflow_create(
        organization=org,
        name="Big",
        steps=[{"key": "big", "action_type": "custom", "config": {"handler": "test.big", "input": {"size": 200_000}}}],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, worker=celery_worker)
    output = run.step_runs.get().output
    assert output[TRUNCATION_MARKER] is True and output["size_bytes"] > 200_000
    assert len(output["preview"]) < 64 * 1024


def test_a_stale_message_for_a_deleted_run_is_dropped(celery_worker, org):
    from workflows.tasks import execute_step

    execute_step.delay("00000000-0000-0000-0000-000000000000", 0)
    execute_step.delay("not-a-uuid", 3)
    wf = workflow_create(
        organization=org, name="After", steps=[{"key": "t", "action_type": "transform", "config": {"value": 1}}]
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    assert wait_for_run(run.pk, {"succeeded"}, worker=celery_worker).status == "succeeded"
    assert "does not exist" in celery_worker.log_text()


def test_step_runs_show_retrying_with_next_attempt(celery_worker, org, tmp_path):
    log = tmp_path / "slowretry.jsonl"
    wf = workflow_create(
        organization=org,
        name="Retrying",
        steps=[custom("flaky", "test.flaky", log, input={"fail_times": 1, "retry_after": 2.5})],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    from testing.worker import wait_for

    step = wait_for(lambda: StepRun.objects.filter(run=run, status="retrying").first(), timeout=20, message="retrying")
    assert step.attempts == 1 and step.next_attempt_at is not None and "call 1 fails" in step.error
    gap = (step.next_attempt_at - step.finished_at).total_seconds()
    assert 2.3 <= gap <= 2.7  # retry_after from the service wins over the computed backoff
    run = wait_for_run(run.pk, {"succeeded"}, worker=celery_worker)
    times = [c["t"] for c in calls(log)]
    assert times[1] - times[0] >= 2.3


def test_an_output_with_nul_or_nan_is_stored_cleaned_not_left_running(celery_worker, org, tmp_path):
    log = tmp_path / "unstorable.jsonl"
    wf = workflow_create(
        organization=org,
        name="Unstorable",
        steps=[
            custom("odd", "test.unstorable", log),
            {"key": "next", "action_type": "transform", "config": {"value": "{{ steps.odd.output.text }}"}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=20, worker=celery_worker)
    assert run.status == "succeeded", run.error
    output = run.step_runs.get(key="odd").output
    assert output == {"text": "a\ufffdb", "nan": "NaN", "inf": "Infinity", "a\ufffdkey": 1}
    assert run.step_runs.get(key="next").output == "a\ufffdb"
    assert len(calls(log)) == 1


def test_an_outcome_that_cannot_be_recorded_fails_the_step_for_good(celery_worker, org, tmp_path):
    """Whatever breaks the recording, the step ends failed with the reason, never left running."""
    log = tmp_path / "deep.jsonl"
    wf = workflow_create(organization=org, name="Deep", steps=[custom("deep", "test.too_deep", log)])
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=20, worker=celery_worker)
    step = run.step_runs.get()
    assert run.status == "failed" and not run.dead_lettered
    assert step.status == "failed" and step.attempts == 1
    assert step.error.startswith("the step's outcome could not be recorded: RecursionError")
    assert len(calls(log)) == 1
