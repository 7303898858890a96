"""Steps that only compute run in the task that finished the step before them (issue 19): no broker
message of their own, each still recorded with its attempt, every run-path guarantee kept.
Real worker, broker, database and a local HTTP peer."""

import os
import time

import pytest

from integrations import registry
from testing import worker as test_worker
from testing.network import RecordingHTTPServer, Reply, worker_network_guard_env
from testing.worker import wait_for, wait_for_run
from workflows.execution import dispatch
from workflows.models import StepAttempt, StepRun
from workflows.services import run_accept, workflow_create
from workflows.tests.handlers import calls
from workflows.tests.inline_actions import Compute, plugin_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http():
    server = RecordingHTTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def celery_worker_env():
    env = worker_network_guard_env()
    plugins = plugin_path(test_worker.test_var_dir() / "inline-plugins")
    env.update(
        {
            "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1",
            "POTAFLOW_ORG_MAX_RUNNING_STEPS": "0",
            "PYTHONPATH": os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    return env


@pytest.fixture
def compute_action():
    """``test.compute`` in this process's registry too (the worker loads it as a plugin)."""
    actions = registry.all_actions()
    actions[Compute.name] = Compute()
    yield
    actions.pop(Compute.name, None)


@pytest.fixture
def stack(celery_worker, http, settings, compute_action):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    http.reset()
    return celery_worker


def transform(key, value):
    return {"key": key, "action_type": "transform", "config": {"value": value}}


def post(key, url):
    return {
        "key": key,
        "action_type": "http.request",
        "config": {"method": "POST", "url": url, "body": {"n3": "{{ steps.more.output.n3 }}"}},
    }


def attempts_of(run):
    return {
        row.key: list(row.attempt_log.order_by("number").values_list("outcome", flat=True))
        for row in StepRun.objects.filter(run=run).prefetch_related("attempt_log")
    }


def test_five_steps_record_every_attempt_and_the_local_ones_share_one_message(stack, org, http):
    http.route("POST", "/deliver", Reply(200, {"ok": True}))
    wf = workflow_create(
        organization=org,
        name="Five",
        steps=[
            transform("shape", {"n2": "{{ trigger.body.n * 2 }}"}),
            transform("more", {"n3": "{{ steps.shape.output.n2 + 1 }}"}),
            transform("label", {"email": "{{ trigger.body.email }}"}),
            {"key": "gate", "action_type": "filter", "config": {"condition": "{{ steps.more.output.n3 > 0 }}"}},
            post("deliver", f"{http.url}/deliver"),
        ],
    )
    # The chain is one message: the four local steps, then the one step that leaves the process.
    specs = wf.versions.latest("number").definition["steps"]
    assert dispatch.message_groups(specs) == [[0, 1, 2, 3, 4]]

    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n": 20, "email": "a@example.com"}})
    run = wait_for_run(run.pk, {"succeeded", "failed", "filtered"}, timeout=60, worker=stack)
    assert run.status == "succeeded", run.error
    rows = list(StepRun.objects.filter(run=run).order_by("position"))
    assert [(r.key, r.status, r.attempts) for r in rows] == [
        ("shape", "succeeded", 1),
        ("more", "succeeded", 1),
        ("label", "succeeded", 1),
        ("gate", "succeeded", 1),
        ("deliver", "succeeded", 1),
    ]
    assert [r.output for r in rows[:4]] == [{"n2": 40}, {"n3": 41}, {"email": "a@example.com"}, rows[3].output]
    assert rows[3].output["passed"] is True
    attempts = list(StepAttempt.objects.filter(step_run__run=run).order_by("step_run__position"))
    assert [a.outcome for a in attempts] == ["succeeded"] * 5
    assert all(a.started_at <= a.finished_at and a.duration_ms is not None for a in attempts)
    # One message ran the five steps (its id is their claim token, one pool process ran them, one
    # after the other).
    tokens = [r.claim_token for r in rows]
    assert tokens[0] and set(tokens) == {tokens[0]}
    assert len({a.worker_pid for a in attempts}) == 1
    assert all(attempts[i].finished_at <= attempts[i + 1].started_at for i in range(4))
    # The http step's idempotency key is the run and its position, as before.
    (request,) = http.requests
    assert request.headers["idempotency-key"] == f"potaflow-{run.pk}-4"
    assert request.json() in ({"n3": 41}, {"n3": "41"})
    # The worker received one execute_step message for this run, not five.
    log = stack.log_text()
    assert log.count(f"execute_step[{tokens[0]}] received") == 1
    received = [line for line in log.splitlines() if "execute_step[" in line and "] received" in line]
    assert sum(str(run.pk) in line for line in received) == 1, "no other message about this run"


def test_a_failing_local_step_retries_with_backoff_through_the_broker(stack, org, tmp_path):
    log = tmp_path / "compute.jsonl"
    wf = workflow_create(
        organization=org,
        name="Flaky compute",
        steps=[
            transform("first", {"a": 1}),
            {
                "key": "compute",
                "action_type": "test.compute",
                "config": {"log": str(log), "fail_times": 2, "value": "{{ steps.first.output.a }}"},
                "backoff_seconds": 1,
                "backoff_max_seconds": 2,
            },
            transform("after", {"calls": "{{ steps.compute.output.calls }}"}),
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    wait_for(lambda: StepRun.objects.filter(run=run, key="compute", status="retrying").exists(), timeout=30)
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=stack)
    assert run.status == "succeeded", run.error
    assert attempts_of(run) == {
        "first": ["succeeded"],
        "compute": ["retryable_error", "retryable_error", "succeeded"],
        "after": ["succeeded"],
    }
    compute = list(StepAttempt.objects.filter(step_run__run=run, step_run__key="compute").order_by("number"))
    # Backoff ~1 s then ~2 s (+-20 %), waited in the broker: the worker logged a Celery retry of the
    # compute step's position each time, not a sleep.
    gaps = [(compute[i + 1].started_at - compute[i].finished_at).total_seconds() for i in range(2)]
    assert gaps[0] >= 0.7 and gaps[1] >= 1.5, gaps
    tokens = dict(StepRun.objects.filter(run=run).values_list("key", "claim_token"))
    token = tokens["compute"]
    lines = stack.log_text().splitlines()
    assert sum(f"execute_step[{token}] retry: Retry in" in line for line in lines) == 2
    # Both retries are messages about the compute step (position 1) with a countdown (an ETA).
    retried = [
        line
        for line in lines
        if f"execute_step[{token}] received" in line and f"('{run.pk}', 1)" in line and "'eta': datetime" in line
    ]
    assert len(retried) == 2, lines[-20:]
    assert [c["attempt"] for c in calls(log)] == [1, 2, 3]
    assert StepRun.objects.get(run=run, key="after").output == {"calls": 3}
    # The first message ran the step before it; the retry message carries on with the step after it.
    assert tokens["first"] == token == tokens["after"]


def test_a_worker_killed_during_a_local_step_loses_nothing(stack, org, tmp_path, http):
    """The pool child dies 1 s into a local step; the redelivered message takes it over."""
    http.route("POST", "/deliver", Reply(200, {"ok": True}))
    log = tmp_path / "compute.jsonl"
    wf = workflow_create(
        organization=org,
        name="Killed",
        steps=[
            transform("more", {"n3": 3}),
            {"key": "compute", "action_type": "test.compute", "config": {"log": str(log), "seconds": 4}},
            transform("after", {"calls": "{{ steps.compute.output.calls }}"}),
            post("deliver", f"{http.url}/deliver"),
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    wait_for(lambda: calls(log), timeout=30, message="the local step to start")
    time.sleep(1)
    busy = StepAttempt.objects.get(step_run__run=run, step_run__key="compute", number=1)
    first = StepAttempt.objects.get(step_run__run=run, step_run__key="more")
    assert busy.worker_pid == first.worker_pid  # the same task runs it
    os.kill(busy.worker_pid, 9)
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=stack)
    assert run.status == "succeeded", run.error
    assert attempts_of(run) == {
        "more": ["succeeded"],
        "compute": ["worker_lost", "succeeded"],
        "after": ["succeeded"],
        "deliver": ["succeeded"],
    }
    assert len(calls(log)) == 2
    assert StepRun.objects.get(run=run, key="after").output == {"calls": 2}
    (request,) = http.requests
    assert request.headers["idempotency-key"] == f"potaflow-{run.pk}-3"


def test_a_loop_of_local_steps_runs_in_the_task_that_decided_it(stack, org):
    """A decision's segment of steps that only compute is run by the deciding task, not sent."""
    wf = workflow_create(
        organization=org,
        name="Loop",
        steps=[
            transform("items", {"list": [1, 2, 3]}),
            {
                "key": "each",
                "action_type": "for_each",
                "config": {"items": "{{ steps.items.output.list }}", "steps": [transform("double", "{{ item * 2 }}")]},
            },
            transform("total", "{{ steps.each.output | sum }}"),
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=stack)
    assert run.status == "succeeded", run.error
    rows = list(StepRun.objects.filter(run=run).order_by("position"))
    assert [(r.path or r.key, r.output) for r in rows if r.key != "each"] == [
        ("items", {"list": [1, 2, 3]}),
        ("each[0]/double", 2),
        ("each[1]/double", 4),
        ("each[2]/double", 6),
        ("total", 12),
    ]
    assert all(v == ["succeeded"] for v in attempts_of(run).values())
    assert {r.claim_token for r in rows} == {rows[0].claim_token}  # one message ran the whole run


def test_a_branch_and_the_steps_of_its_path_run_in_process(stack, org, http):
    """Flow runs: a control step joins the message of the step before it."""
    http.route("POST", "/deliver", Reply(200, {"ok": True}))
    wf = workflow_create(
        organization=org,
        name="Branch",
        steps=[
            transform("more", {"n3": "{{ trigger.body.n }}"}),
            {
                "key": "route",
                "action_type": "branch",
                "config": {
                    "paths": [
                        {
                            "name": "big",
                            "when": "{{ steps.more.output.n3 > 10 }}",
                            "steps": [transform("big_label", {"size": "big"}), post("deliver", f"{http.url}/deliver")],
                        }
                    ],
                    "otherwise": [transform("small_label", {"size": "small"})],
                },
            },
            transform("done", {"ok": True}),
        ],
    )
    assert dispatch.message_groups(wf.versions.latest("number").definition["steps"][:2]) == [[0, 1]]
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n": 50}})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=stack)
    assert run.status == "succeeded", run.error
    rows = {r.key: r for r in StepRun.objects.filter(run=run)}
    assert set(rows) == {"more", "route", "big_label", "deliver", "done"}
    assert rows["route"].output == {"taken": ["big"]} and rows["route"].claim_token == rows["more"].claim_token
    # The path leaves the process (its http step): sent as a chain of one message (the local step,
    # then the http step); what follows the branch (a transform) is run by the task that closed it.
    assert rows["big_label"].claim_token != rows["more"].claim_token
    assert rows["done"].claim_token == rows["deliver"].claim_token == rows["big_label"].claim_token
    assert all(v == ["succeeded"] for v in attempts_of(run).values())
    (request,) = http.requests
    assert request.headers["idempotency-key"] == f"potaflow-{run.pk}-{rows['deliver'].path or 'deliver'}"


def test_a_messages_time_limits_cover_its_in_process_steps_within_the_longest_step(settings):
    from workflows.execution.policy import HARD_LIMIT_GRACE_SECONDS, SOFT_LIMIT_GRACE_SECONDS, chain_limits

    settings.POTAFLOW_STEP_TIMEOUT_MAX_SECONDS = 120
    call = {"action_type": "http.request", "timeout_seconds": 60}
    local = {"action_type": "transform", "timeout_seconds": 10}
    assert chain_limits([call]) == (60 + SOFT_LIMIT_GRACE_SECONDS, 60 + HARD_LIMIT_GRACE_SECONDS)
    assert chain_limits([call, local]) == (70 + 2 * SOFT_LIMIT_GRACE_SECONDS, 70 + 2 * HARD_LIMIT_GRACE_SECONDS)
    # Never past the longest step allowed: the broker's visibility timeout is checked against that.
    assert chain_limits([call] + [local] * 20) == (120 + SOFT_LIMIT_GRACE_SECONDS, 120 + HARD_LIMIT_GRACE_SECONDS)


def test_a_message_runs_at_most_one_step_that_leaves_the_process():
    local, call = {"action_type": "transform"}, {"action_type": "http.request"}
    assert dispatch.message_groups([local, local]) == [[0, 1]]
    assert dispatch.message_groups([call, local, call]) == [[0, 1], [2]]
    assert dispatch.message_groups([local, call, call, local]) == [[0, 1], [2, 3]]
    assert dispatch.message_groups([local, call, local, call]) == [[0, 1, 2], [3]]
    assert dispatch.message_groups([call, call]) == [[0], [1]]


def test_a_worker_killed_during_an_http_step_after_local_steps_is_taken_over_in_doubt(stack, org, http):
    """One message ran a transform and handed over to a POST; the pool child dies 1 s into the POST.
    The redelivered message walks past the transform (succeeded) and takes the POST over: in doubt,
    sent again with the same idempotency key (a repeat is safe with it)."""
    http.route("POST", "/slow", [Reply(200, {"n": 1}, delay=3), Reply(200, {"n": 2})])
    wf = workflow_create(
        organization=org,
        name="Hand over",
        steps=[transform("more", {"n3": 3}), post("deliver", f"{http.url}/slow")],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    wait_for(lambda: http.requests, timeout=30, message="the POST to arrive")
    time.sleep(1)
    busy = StepAttempt.objects.get(step_run__run=run, step_run__key="deliver", number=1)
    first = StepAttempt.objects.get(step_run__run=run, step_run__key="more")
    assert busy.worker_pid == first.worker_pid  # the same task ran both
    os.kill(busy.worker_pid, 9)
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=stack)
    assert run.status == "succeeded", run.error
    assert attempts_of(run) == {"more": ["succeeded"], "deliver": ["in_doubt", "succeeded"]}
    keys = {r.headers["idempotency-key"] for r in http.requests}
    assert len(http.requests) == 2 and keys == {f"potaflow-{run.pk}-1"}
    tokens = set(StepRun.objects.filter(run=run).values_list("claim_token", flat=True))
    assert len(tokens) == 1, "the redelivered message (the same id) took the POST over"


@pytest.mark.services  # the hand-over is one PostgreSQL statement; SQLite claims in a transaction
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("middle", "expected"),
    [
        # a -> compute without the wait, compute -> deliver durable
        ({"key": "more", "action_type": "test.compute", "config": {"log": "", "value": 2}}, [False, True]),
        # a and the transform (computed ahead) recorded with deliver's claim: one durable statement
        (transform("more", {"n3": 2}), [True]),
    ],
    ids=["hand-over", "computed-ahead"],
)
def test_a_hand_over_waits_for_the_disk_only_when_the_next_step_leaves_the_process(
    org, http, settings, compute_action, tmp_path, middle, expected
):
    """The claim of a step that calls out must survive a database crash before it calls (else a
    redelivery finds it pending and calls again); a claim of a step that only computes need not."""
    from django.db import connection

    from testing.worker import IsolatedBroker
    from workflows.execution import engine

    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    http.reset()
    deliver_url = f"{http.url}/deliver"
    http.route("POST", "/deliver", Reply(200, {"ok": True}))
    wf = workflow_create(
        organization=org,
        name="Durable",
        steps=[
            transform("a", {"n": 1}),
            {**middle, "config": {**middle["config"], "log": str(tmp_path / "compute.jsonl")}}
            if middle["action_type"] == "test.compute"
            else middle,
            {"key": "deliver", "action_type": "http.request", "config": {"method": "POST", "url": deliver_url}},
        ],
    )
    hand_overs: list[bool] = []

    def spy(execute, sql, params, many, context):
        if "'synchronous_commit', CASE WHEN" in sql:  # recording._HAND_OVER_SQL
            hand_overs.append(params["durable"])
        return execute(sql, params, many, context)

    with IsolatedBroker():  # the run's message goes nowhere: this process runs it
        run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n3": 1}})
        with connection.execute_wrapper(spy):
            outcome = engine.run_step(run.pk, 0, message_id="message-1")
    assert hand_overs == expected
    run.refresh_from_db()
    assert run.status == "succeeded" and not outcome.proceed
    assert len(http.requests) == 1
