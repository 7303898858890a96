"""The run path under faults: every attempt recorded, idempotency keys, in-doubt steps,
leases, tenant limits and connection reuse — with a real worker, broker, database and peers."""

import dataclasses
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organization
from integrations.services import credential_create
from testing.network import FakeSlack, RecordingHTTPServer, Reply, worker_network_guard_env
from testing.worker import (
    IsolatedBroker,
    is_filesystem_broker,
    start_beat,
    start_worker,
    wait_for,
    wait_for_run,
    worker_database_url,
)
from workflows.execution import dispatch, engine
from workflows.execution.recording import WORKER_HOST
from workflows.models import Run, StepAttempt, StepRun
from workflows.services import run_accept, run_replay, workflow_create
from workflows.tests.handlers import calls

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peers():
    servers = {"http": RecordingHTTPServer().start(), "slack": FakeSlack().start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def celery_worker_env(peers):
    env = worker_network_guard_env()
    env.update(
        {
            "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1",
            "POTAFLOW_SLACK_API_URL": peers["slack"].api_url,
            "CONN_MAX_AGE": "60",  # production's default: the worker keeps its connection
            "POTAFLOW_ORG_MAX_RUNNING_STEPS": "0",
        }
    )
    return env


@pytest.fixture
def stack(celery_worker, peers, settings, fernet_keys):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    for server in peers.values():
        server.reset()
    peers["slack"].posted.clear()
    return peers


def pool_children(worker) -> list[int]:
    children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- every attempt is a row ------------------------------------------------------------
def test_a_step_failing_three_times_then_succeeding_has_four_attempt_rows(stack, org, editor, tmp_path):
    log = tmp_path / "flaky.jsonl"
    wf = workflow_create(
        organization=org,
        name="Flaky",
        steps=[
            {
                "key": "flaky",
                "action_type": "custom",
                "config": {"handler": "test.flaky", "input": {"log": str(log), "fail_times": 3}},
                "backoff_seconds": 0.2,
                "backoff_max_seconds": 0.5,
            }
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)
    assert run.status == "succeeded", run.error
    attempts = list(StepAttempt.objects.filter(step_run__run=run).order_by("number"))
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert [a.outcome for a in attempts] == ["retryable_error"] * 3 + ["succeeded"]
    assert [a.error for a in attempts] == [f"flaky: call {n} fails" for n in (1, 2, 3)] + [""]
    starts = [a.started_at for a in attempts]
    assert starts == sorted(starts) and len(set(starts)) == 4
    assert all(a.finished_at >= a.started_at and a.duration_ms is not None for a in attempts)
    assert all(a.worker_pid and a.worker_host for a in attempts)

    api = APIClient()
    api.force_authenticate(editor)
    body = api.get(f"/api/runs/{run.pk}/").json()
    log_rows = body["steps"][0]["attempt_log"]
    assert [(r["number"], r["outcome"]) for r in log_rows] == [
        (1, "retryable_error"),
        (2, "retryable_error"),
        (3, "retryable_error"),
        (4, "succeeded"),
    ]
    assert log_rows[0]["error"] == "flaky: call 1 fails" and log_rows[0]["duration_ms"] is not None

    web = Client()
    web.force_login(editor)
    live = web.get(f"/runs/{run.pk}/live.json").json()
    assert [a["outcome"] for a in live["steps"][0]["attempt_log"]] == [r["outcome"] for r in log_rows]
    # The live view is a member page now; the old address sends members there.
    page = web.get(f"/runs/{run.pk}/live", follow=True).content.decode()
    assert page.count('class="pf-attempt"') == 4 and "flaky: call 2 fails" in page


# -- idempotency keys --------------------------------------------------------------------
def http_workflow(org, url, **step):
    return workflow_create(
        organization=org,
        name="Forward",
        steps=[
            {
                "key": "post",
                "action_type": "http.request",
                "config": {"method": "POST", "url": url, "body": {"id": "{{ trigger.body.id }}"}},
                "backoff_seconds": 0.2,
                "backoff_max_seconds": 0.5,
                **step,
            }
        ],
    )


def test_every_retry_of_a_step_sends_the_same_idempotency_key_and_a_replay_a_new_one(stack, org):
    http = stack["http"]
    http.route("POST", "/pay", [Reply(503, "busy"), Reply(502, "busy"), Reply(201, {"ok": True})])
    run, _ = run_accept(workflow=http_workflow(org, f"{http.url}/pay"), trigger="manual", payload={"body": {"id": 7}})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)
    assert run.status == "succeeded", run.error
    keys = [r.headers.get("idempotency-key") for r in http.requests]
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1
    assert keys[0] == f"potaflow-{run.pk}-0"
    attempts = StepAttempt.objects.filter(step_run__run=run).order_by("number")
    assert list(attempts.values_list("response_status", flat=True)) == [503, 502, 201]
    assert attempts[0].request == {"method": "POST", "url": f"{http.url}/pay", "query_keys": []}
    assert attempts[2].response_excerpt == '{"ok": true}'

    http.reset()
    http.route("POST", "/pay", Reply(422, "no"))
    failed, _ = run_accept(workflow=run.workflow, trigger="manual", payload={"body": {"id": 8}})
    failed = wait_for_run(failed.pk, {"succeeded", "failed"}, timeout=60)
    replay = wait_for_run(run_replay(run=failed).pk, {"succeeded", "failed"}, timeout=60)
    first, second = (r.headers["idempotency-key"] for r in http.requests)
    assert first == f"potaflow-{failed.pk}-0" and second == f"potaflow-{replay.pk}-0" and first != second


def test_the_idempotency_header_can_be_renamed_or_switched_off(stack, org):
    http = stack["http"]
    http.route("POST", "/a", Reply(200, "ok"))
    wf = workflow_create(
        organization=org,
        name="Headers",
        steps=[
            {
                "key": "a",
                "action_type": "http.request",
                "config": {"method": "POST", "url": f"{http.url}/a", "idempotency_header": "X-Request-Id"},
            },
            {
                "key": "b",
                "action_type": "http.request",
                "config": {"method": "POST", "url": f"{http.url}/a", "idempotency_header": ""},
            },
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    assert wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60).status == "succeeded"
    named, off = http.requests
    assert named.headers["x-request-id"] == f"potaflow-{run.pk}-0" and "idempotency-key" not in named.headers
    assert "idempotency-key" not in off.headers and "x-request-id" not in off.headers


def test_a_post_killed_mid_call_is_sent_again_with_the_same_key(stack, org, celery_worker):
    """The destination answers after 3 s; the pool child dies 1 s into the POST."""
    http = stack["http"]
    http.route("POST", "/slow", [Reply(200, {"n": 1}, delay=3), Reply(200, {"n": 2})])
    run, _ = run_accept(workflow=http_workflow(org, f"{http.url}/slow"), trigger="manual", payload={"body": {"id": 1}})
    wait_for(lambda: http.requests, timeout=30, message="the POST to arrive")
    time.sleep(1)
    busy = StepAttempt.objects.get(step_run__run=run, number=1)
    os.kill(busy.worker_pid, 9)
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker)
    assert run.status == "succeeded", run.error
    keys = {r.headers["idempotency-key"] for r in http.requests}
    assert len(http.requests) == 2 and keys == {f"potaflow-{run.pk}-0"}
    outcomes = list(StepAttempt.objects.filter(step_run__run=run).order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["in_doubt", "succeeded"]


# -- in doubt: a person decides where a repeat is not safe -------------------------------------
def slack_workflow(org, credential, **step):
    return workflow_create(
        organization=org,
        name="Notify",
        steps=[
            {
                "key": "notify",
                "action_type": "slack.message",
                "credential": credential.pk,
                "config": {"channel": "C0123456789", "text": "deploy {{ trigger.body.n }}"},
                **step,
            }
        ],
    )


@pytest.mark.parametrize("on_in_doubt", ["", "retry"])
def test_a_slack_step_whose_worker_dies_mid_call_is_in_doubt(stack, org, celery_worker, on_in_doubt):
    slack = stack["slack"]
    first = {"delay": 3.0}

    def slow_first(request):
        reply = slack.handle(request)
        delay, first["delay"] = first["delay"], 0.0
        return dataclasses.replace(reply, delay=delay)

    slack.route("POST", "/api/chat.postMessage", slow_first)
    cred = credential_create(
        organization=org, name="slack", kind="slack_bot_token", secret={"token": "xoxb-test-token"}
    )
    wf = slack_workflow(org, cred, on_in_doubt=on_in_doubt)
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {"n": 1}})
    wait_for(lambda: slack.requests, timeout=30, message="the Slack call to arrive")
    time.sleep(1)
    os.kill(StepAttempt.objects.get(step_run__run=run, number=1).worker_pid, 9)
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker)
    outcomes = list(StepAttempt.objects.filter(step_run__run=run).order_by("number").values_list("outcome", flat=True))
    if on_in_doubt == "retry":
        assert run.status == "succeeded" and outcomes == ["in_doubt", "succeeded"]
        assert len(slack.posted) == 2  # the person chose repeats over silence
    else:
        assert run.status == "failed" and run.dead_lettered
        assert outcomes == ["in_doubt"]
        assert "on_in_doubt=dead_letter" in run.error and "replay" in run.error
        assert len(slack.posted) == 1  # never sent twice behind anyone's back


# -- leases: a dead worker is noticed in seconds, a lost message too ---------------------------
def test_a_whole_worker_killed_mid_step_is_recovered_by_its_lapsed_lease(org, tmp_path, transactional_db):
    """Default broker visibility (an hour): only the lease and the sweeper bring the step back."""
    log = tmp_path / "slow.jsonl"
    wf = workflow_create(
        organization=org,
        name="Slow",
        steps=[
            {
                "key": "slow",
                "action_type": "custom",
                "config": {"handler": "test.slow", "input": {"log": str(log), "seconds": 20}},
            }
        ],
    )
    env = {"POTAFLOW_BROKER_VISIBILITY_TIMEOUT": "3600", "POTAFLOW_STEP_LEASE_SECONDS": "6"}
    with IsolatedBroker() as broker:
        worker = start_worker(env={**broker.env, **env})
        beat = start_beat(env={**broker.env, **env})
        try:
            run, _ = run_accept(workflow=wf, trigger="manual", payload={})
            wait_for(lambda: calls(log), timeout=30, message="the slow step to start")
            worker.kill()
            killed_at = time.monotonic()
            worker = start_worker(env={**broker.env, **env})
            run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=worker)
            settled = time.monotonic() - killed_at
        finally:
            beat.stop()
            worker.stop()
    assert run.status == "succeeded", run.error
    assert settled < 30, f"took {settled:.1f} s"
    outcomes = list(StepAttempt.objects.filter(step_run__run=run).order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["in_doubt", "succeeded"]


def test_a_lost_message_is_recovered_within_the_settle_target_with_default_settings(org, tmp_path, transactional_db):
    log = tmp_path / "echo.jsonl"
    wf = workflow_create(
        organization=org,
        name="Lost",
        steps=[{"key": "a", "action_type": "custom", "config": {"handler": "test.echo", "input": {"log": str(log)}}}],
    )
    with IsolatedBroker() as broker:
        run, _ = run_accept(workflow=wf, trigger="manual", payload={})
        if not is_filesystem_broker():
            wait_for(lambda: broker.message_count() > 0, timeout=10, message="the run's message in the broker")
        broker.flush()
        lost_at = time.monotonic()
        worker = start_worker(env=broker.env)
        beat = start_beat(env=broker.env)  # the sweeper every POTAFLOW_RECOVERY_INTERVAL_SECONDS (default)
        try:
            run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=90, worker=worker)
        finally:
            beat.stop()
            worker.stop()
    settled = time.monotonic() - lost_at
    assert run.status == "succeeded" and len(calls(log)) == 1
    assert settled < 60, f"took {settled:.1f} s"


# -- tenants cannot exhaust or starve the worker ------------------------------------------
def test_one_organizations_heavy_steps_do_not_starve_another(org, tmp_path, transactional_db):
    """Concurrency 2, the default work-conserving limit: B's heavy steps take both slots while nobody
    else waits; once A's run is queued, B's next heavy steps are parked and A's run takes the first
    slot that frees -- it does not wait behind B's whole backlog."""
    heavy = Organization.objects.create(name="Heavy", slug="heavy")
    burn = workflow_create(
        organization=heavy,
        name="Burn",
        steps=[
            {
                "key": "burn",
                "action_type": "custom",
                "config": {"handler": "test.burn", "input": {"log": str(tmp_path / "b.jsonl"), "seconds": 3}},
                "timeout_seconds": 10,
            }
        ],
    )
    quick = workflow_create(
        organization=org, name="Quick", steps=[{"key": "t", "action_type": "transform", "config": {"value": 1}}]
    )
    with IsolatedBroker() as broker:  # this worker alone consumes: its concurrency is the test's premise
        worker = start_worker(env={**broker.env, "POTAFLOW_ORG_MAX_RUNNING_STEPS": "-1"})
        try:
            burners = [run_accept(workflow=burn, trigger="manual", payload={})[0] for _ in range(4)]
            wait_for(lambda: len(calls(tmp_path / "b.jsonl")) >= 2, timeout=30, message="two heavy steps to start")
            time.sleep(1)
            run, _ = run_accept(workflow=quick, trigger="manual", payload={})
            run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=30, worker=worker)
            for burner in burners:
                wait_for_run(burner.pk, {"succeeded", "failed"}, timeout=60, worker=worker)
        finally:
            worker.stop()
    starts = [c["t"] for c in calls(tmp_path / "b.jsonl")]
    latency = (run.finished_at - run.created_at).total_seconds()
    print(f"\nfairness: a one-step run of another organization finished in {latency:.2f} s")
    assert starts[1] - starts[0] < 1.5  # alone, B used both slots at once
    # First-in-first-out it would wait for B's third and fourth steps too (~5 s).
    assert run.status == "succeeded" and latency < 4.0
    log = worker.log_text()
    assert "parked" in log and "deferred" not in log  # B's later steps waited in the database, not the broker


def test_a_step_that_allocates_past_the_ceiling_fails_and_leaves_no_bloated_process(org, tmp_path, transactional_db):
    wf = workflow_create(
        organization=org,
        name="Hog",
        steps=[
            {
                "key": "hog",
                "action_type": "custom",
                "config": {"handler": "test.hog", "input": {"log": str(tmp_path / "h.jsonl"), "mib": 2048}},
            }
        ],
    )
    limits = {"POTAFLOW_WORKER_MEMORY_LIMIT_MB": "400", "POTAFLOW_WORKER_MAX_RSS_MB": "250"}
    with IsolatedBroker() as broker:  # only the worker with these limits may take the step
        worker = start_worker(env={**broker.env, **limits})
        try:
            started = time.monotonic()
            run, _ = run_accept(workflow=wf, trigger="manual", payload={})
            run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=worker)
            took = time.monotonic() - started
            time.sleep(2)  # a bloated child is replaced after its task
            sizes = {pid: rss_mib(pid) for pid in pool_children(worker)}
        finally:
            worker.stop()
    assert run.status == "failed" and "POTAFLOW_WORKER_MEMORY_LIMIT_MB" in run.error and "400 MiB" in run.error
    assert took < 30
    assert sizes and max(sizes.values()) < 250, sizes


# -- the worker keeps its database connection ------------------------------------------
@pytest.mark.services
def test_the_worker_reuses_its_database_connection_across_tasks(stack, org, settings):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("counts PostgreSQL backend PIDs")
    if worker_database_url()[1]:
        pytest.skip("behind PgBouncer (transaction pooling) the server backend changes between transactions")
    steps = [
        {"key": f"s{i}", "action_type": "custom", "config": {"handler": "test.backend_pid", "input": {}}}
        for i in range(11)
    ]
    run, _ = run_accept(
        workflow=workflow_create(organization=org, name="Pids", steps=steps), trigger="manual", payload={}
    )
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)
    assert run.status == "succeeded", run.error
    outputs = [s.output for s in StepRun.objects.filter(run=run).order_by("position")]
    by_worker: dict[int, set[int]] = {}
    for out in outputs:
        by_worker.setdefault(out["worker_pid"], set()).add(out["pid"])
    assert all(len(pids) == 1 for pids in by_worker.values()), by_worker  # one connection per pool child


# -- secrets never stored ----------------------------------------------------------------
def test_a_destination_that_echoes_the_credential_does_not_get_it_stored(stack, org, editor):
    http = stack["http"]
    http.route("POST", "/echo", lambda req: Reply(200, {"you_sent": req.headers.get("authorization")}))
    cred = credential_create(
        organization=org,
        name="api",
        kind="http_bearer",
        secret={"token": "sk-live-0123456789", "allowed_hosts": ["127.0.0.1"]},
    )
    run, _ = run_accept(
        workflow=http_workflow(org, f"{http.url}/echo", credential=cred.pk),
        trigger="manual",
        payload={"body": {"id": 1}},
    )
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)
    assert http.requests[0].headers["authorization"] == "Bearer sk-live-0123456789"  # it was sent...
    step = run.step_runs.get()
    assert step.output["body"] == {"you_sent": "[redacted]"}  # ...and never stored (the whole header value it sent)
    api = APIClient()
    api.force_authenticate(editor)
    assert "sk-live-0123456789" not in api.get(f"/api/runs/{run.pk}/").content.decode()
    attempt = StepAttempt.objects.get(step_run=step)
    assert "sk-live-0123456789" not in str(attempt.response_excerpt) + str(attempt.request)


def test_the_sweeper_ignores_a_running_step_whose_lease_is_live(org, transactional_db):
    wf = workflow_create(
        organization=org, name="W", steps=[{"key": "t", "action_type": "transform", "config": {"value": 1}}]
    )
    with transaction.atomic():  # its message is sent on commit: the session worker finds it set up
        run, _ = run_accept(workflow=wf, trigger="manual", payload={})
        now = timezone.now()
        StepRun.objects.filter(run=run).update(
            status="running", attempts=1, lease_expires_at=now + timedelta(seconds=30)
        )
        Run.objects.filter(pk=run.pk).update(status="running", last_progress_at=now - timedelta(seconds=600))
    assert dispatch.recover_stalled_runs(stalled_after=0) == []


def test_a_redelivered_message_does_not_take_over_while_its_attempt_still_runs(org, transactional_db):
    """A broker connection blip requeues the messages of running tasks: only a dead attempt may be taken over."""
    wf = workflow_create(
        organization=org, name="W", steps=[{"key": "t", "action_type": "transform", "config": {"value": 1}}]
    )
    busy = subprocess.Popen(["sleep", "30"])  # stands for the pool child still running the attempt
    try:
        with transaction.atomic():  # its message is sent on commit: the session worker finds it set up
            run, _ = run_accept(workflow=wf, trigger="manual", payload={})
            step = run.step_runs.get()
            now = timezone.now()
            StepRun.objects.filter(pk=step.pk).update(
                status="running",
                attempts=1,
                claim_token="msg-1",
                started_at=now,
                lease_expires_at=now + timedelta(seconds=30),
            )
            StepAttempt.objects.create(
                step_run=step, number=1, started_at=now, worker_host=WORKER_HOST, worker_pid=busy.pid
            )
        assert engine.run_step(run.pk, 0, may_be_redelivery=True, message_id="msg-1") == engine.STOP
        step.refresh_from_db()
        assert (step.status, step.attempts) == ("running", 1)  # left to the attempt that is alive

        busy.kill()
        busy.wait()
        assert engine.run_step(run.pk, 0, may_be_redelivery=True, message_id="msg-1") == engine.STOP
    finally:
        busy.kill()
    step.refresh_from_db()
    assert (step.status, step.attempts) == ("succeeded", 2)  # its process is gone: taken over at once
    outcomes = list(step.attempt_log.order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["worker_lost", "succeeded"]


@pytest.mark.parametrize("renewed_past_limit, outcome", [(True, "timed_out"), (False, "in_doubt")])
def test_a_lost_attempt_is_timed_out_only_if_its_worker_renewed_past_the_hard_limit(
    org, transactional_db, renewed_past_limit, outcome
):
    wf = workflow_create(
        organization=org,
        name="W",
        steps=[
            {
                "key": "t",
                "action_type": "custom",
                "config": {"handler": "test.echo", "input": {"log": "/dev/null"}},
                "on_in_doubt": "retry",
                "timeout_seconds": 1,
            }
        ],
    )
    with transaction.atomic():  # its message is sent on commit: the session worker finds it set up
        run, _ = run_accept(workflow=wf, trigger="manual", payload={})
        now = timezone.now()
        started = now - timedelta(seconds=120)  # long ago: the message waited in a backlog, or the step hung
        last_renewal = started + timedelta(seconds=30 if renewed_past_limit else 5)  # hard limit: 1 + 15 s
        StepRun.objects.filter(run=run).update(
            status="running",
            attempts=1,
            claim_token="gone",
            started_at=started,
            lease_expires_at=last_renewal + timedelta(seconds=15),
        )
        StepAttempt.objects.create(step_run=run.step_runs.get(), number=1, started_at=started)
    engine.run_step(run.pk, 0, force=True, message_id="sweeper-1")
    lost = StepAttempt.objects.get(step_run__run=run, number=1)
    assert lost.outcome == outcome
