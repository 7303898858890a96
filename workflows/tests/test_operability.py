"""Operating PotaFlow with real processes: metrics scraped from gunicorn (two web
worker processes, Prometheus multiprocess mode) while a real Celery worker
executes a batch with retries, a dead letter, a filter and a replay; JSON log
lines of the worker, gunicorn and beat.
"""

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from testing.network import free_port
from testing.procfile import procfile_command
from testing.worker import start_beat, subprocess_env, wait_for, wait_for_run
from workflows.models import Run, TriggerType
from workflows.services import run_accept, workflow_create
from workflows.tests import ops_handlers  # noqa: F401 - registers ops.* in this process (saving validates names)

pytestmark = pytest.mark.slow

BASE_DIR = Path(__file__).resolve().parents[2]
METRICS_TOKEN = "metrics-token-for-the-operability-test"
FAST = {"backoff_seconds": 0.2, "backoff_max_seconds": 0.5}
WORKER_ENV = {"LOG_FORMAT": "json", "POTAFLOW_HANDLER_MODULES": "workflows.tests.ops_handlers"}


@pytest.fixture
def celery_worker_env():
    return WORKER_ENV


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn started exactly as the Procfile starts it (two workers); yields (base URL, its log file).

    Nothing metrics-specific is set: PROMETHEUS_MULTIPROC_DIR comes from gunicorn.conf.py's default
    ($POTAFLOW_VAR_DIR/prometheus), as under `make run` (issue 17: a test that set it itself hid
    that the config imported prometheus_client before setting it).
    """
    folder = tmp_path_factory.mktemp("web")
    port = free_port()
    with django_db_blocker.unblock():
        env = subprocess_env(
            {
                "ALLOWED_HOSTS": "127.0.0.1",
                "SECURE_SSL_REDIRECT": "false",
                "POTAFLOW_WEBHOOK_MAX_BYTES": "1000",
                "POTAFLOW_METRICS_TOKEN": METRICS_TOKEN,
                "LOG_FORMAT": "json",
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "WEB_CONCURRENCY": "2",
            }
        )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    multiproc = Path(env["POTAFLOW_VAR_DIR"]) / "prometheus"
    multiproc.mkdir(parents=True, exist_ok=True)
    (multiproc / "counter_1.db").write_bytes(b"left over by a crashed run")  # on_starting must remove it
    log_path = folder / "gunicorn.log"
    command = procfile_command("web")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            pytest.fail("gunicorn exited:\n" + log_path.read_text())
        try:  # the first request of a fresh worker imports the URL conf: allow it time on a busy machine
            return requests.get(f"{base}/healthz", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, timeout=60, message="gunicorn")
    yield base, log_path
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)


def scrape(base: str) -> dict[tuple, float]:
    response = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))


def conserved(samples: dict) -> bool:
    accepted = total(samples, "potaflow_events_accepted_total")
    return accepted == total(samples, "potaflow_runs_finished_total") + total(samples, "potaflow_runs_unfinished")


def test_metrics_from_several_processes_conserve_every_event_of_a_batch(celery_worker, web, org, editor, tmp_path):
    base, _ = web
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 401  # the token is required

    flaky = {"handler": "test.flaky", "input": {"log": "{{ trigger.body.log }}", "fail_times": 1}}
    retried = workflow_create(
        organization=org,
        name="Retried",
        trigger_type=TriggerType.WEBHOOK,
        steps=[{"key": "call", "action_type": "custom", "config": flaky, "max_retries": 2, **FAST}],
    )
    dead = workflow_create(
        organization=org,
        name="Dead",
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {
                "key": "call",
                "action_type": "custom",
                "config": {**flaky, "input": {**flaky["input"], "fail_times": 2}},
                "max_retries": 1,
                **FAST,
            }
        ],
    )
    filtered = workflow_create(
        organization=org,
        name="Filtered",
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {"key": "gate", "action_type": "filter", "config": {"condition": "{{ trigger.body.keep }}"}},
            {"key": "shape", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}},
        ],
    )
    signed = workflow_create(
        organization=org,
        name="Signed",
        trigger_type=TriggerType.WEBHOOK,
        webhook_secret="a-webhook-secret-of-enough-length",
        signature_scheme="github",
        steps=[{"key": "t", "action_type": "transform", "config": {"value": 1}}],
    )

    def hook(wf_or_token, body):
        token = wf_or_token if isinstance(wf_or_token, str) else wf_or_token.webhook_token
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(
            f"{base}/hooks/{token}", data=data, headers={"Content-Type": "application/json"}, timeout=10
        )

    sends = [(retried, {"log": str(tmp_path / f"r{i}.log")}) for i in range(3)]
    sends += [(dead, {"log": str(tmp_path / "dead.log")})]
    sends += [(filtered, {"keep": False}), (filtered, {"keep": True})]
    refusals = [
        ("no-such-token", {}),  # inactive
        ("another-unknown-token", {}),  # inactive
        (retried, {"log": "x" * 2000}),  # size
        (filtered, b"{not json"),  # invalid
        (signed, {"unsigned": True}),  # signature
    ]
    # Concurrently, so both gunicorn workers take requests.
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda args: hook(*args), sends + refusals))
    statuses = [a.status_code for a in answers]
    assert statuses == [202] * 6 + [404, 404, 413, 400, 401], statuses
    run_ids = [a.json()["run_id"] for a in answers[:6]]
    dead_run = run_ids[3]

    # While the batch runs, every scrape conserves accepted = finished + unfinished.
    scrapes = 0
    while Run.objects.filter(status__in=["queued", "running"]).exists():
        assert conserved(scrape(base))
        scrapes += 1
        time.sleep(0.2)
    assert scrapes >= 1
    for run_id in run_ids:
        wait_for_run(run_id, {"succeeded", "failed", "filtered"}, timeout=60, worker=celery_worker)
    assert Run.objects.get(pk=dead_run).dead_lettered

    # Replay the dead letter through the real API (its third call succeeds).
    login = requests.post(
        f"{base}/api/auth/token/", json={"email": editor.email, "password": "pw-long-enough-123"}, timeout=30
    )
    assert login.status_code == 200, login.text
    replay = requests.post(
        f"{base}/api/runs/{dead_run}/replay/",
        json={},
        headers={"Authorization": f"Bearer {login.json()['access']}"},
        timeout=30,
    )
    assert replay.status_code == 201, replay.text
    assert conserved(scrape(base))
    wait_for_run(replay.json()["id"], {"succeeded"}, timeout=60, worker=celery_worker)
    # One manual run through the service, as the admin's "Run now" does.
    manual, _ = run_accept(workflow=filtered, trigger="manual", payload={"body": {"keep": True}})
    wait_for_run(manual.pk, {"succeeded"}, timeout=60, worker=celery_worker)

    final = [scrape(base) for _ in range(6)]  # answered by either gunicorn worker
    m = final[0]
    assert all(conserved(s) for s in final)
    accepted = {t: total(m, "potaflow_events_accepted_total", trigger=t) for t in ("webhook", "replay", "manual")}
    assert accepted == {"webhook": 6, "replay": 1, "manual": 1}
    finished = {s: total(m, "potaflow_runs_finished_total", status=s) for s in ("succeeded", "failed", "filtered")}
    assert finished == {"succeeded": 6, "failed": 1, "filtered": 1}
    assert total(m, "potaflow_runs_unfinished") == 0
    assert total(m, "potaflow_oldest_unfinished_run_age_seconds") == 0
    assert total(m, "potaflow_runs_dead_lettered_total") == 1
    assert total(m, "potaflow_runs_replayed_total") == 1
    assert total(m, "potaflow_run_duration_seconds_count") == 8

    # Attempts: 3 x (retry + success), the dead letter's 2 failures, the replay's success.
    custom = lambda outcome: total(m, "potaflow_step_attempts_total", action="custom", outcome=outcome)  # noqa: E731
    assert custom("retryable_error") == 5
    assert custom("succeeded") == 4
    assert total(m, "potaflow_step_attempts_total", action="filter", outcome="succeeded") == 3
    assert total(m, "potaflow_step_attempts_total", action="transform", outcome="succeeded") == 2
    assert total(m, "potaflow_step_duration_seconds_count", action="custom") == 9

    # Counted in the web processes, summed over both: the same in every scrape.
    for s in final:
        rejected = {r: total(s, "potaflow_events_rejected_total", reason=r) for r in ("inactive", "size", "invalid")}
        assert rejected == {"inactive": 2, "size": 1, "invalid": 1}
        assert total(s, "potaflow_events_rejected_total", reason="signature") == 1
        assert total(s, "potaflow_events_rejected_total", reason="rate") == 0
        assert total(s, "potaflow_webhook_intake_seconds_count") == 6
    assert total(m, "potaflow_broker_queue_length") == 0


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_a_step_in_the_worker_logs_json_lines_labelled_with_run_and_step(celery_worker, org, tmp_path):
    offset = len(celery_worker.log_text())
    flaky = {"handler": "test.flaky", "input": {"log": str(tmp_path / "calls.log"), "fail_times": 1}}
    secret_url = "https://example.com/hooks/tok3n-SECRET-value?api_key=k3y-SECRET&page=2"
    wf = workflow_create(
        organization=org,
        name="Logged",
        trigger_type=TriggerType.MANUAL,
        steps=[
            {"key": "call", "action_type": "custom", "config": flaky, "max_retries": 2, **FAST},
            {"key": "say", "action_type": "custom", "config": {"handler": "ops.log_url", "input": {"url": secret_url}}},
        ],
    )
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {}})
    wait_for_run(run.pk, {"succeeded"}, timeout=60, worker=celery_worker)
    wait_for(lambda: "calling https://example.com" in celery_worker.log_text()[offset:], message="the handler's line")

    text = celery_worker.log_text()[offset:]
    mine = [line for line in text.splitlines() if str(run.pk) in line]
    assert mine, text
    assert all(line.startswith("{") for line in mine), mine  # every line about the run is JSON
    entries = [e for e in json_lines(text) if e.get("run_id") == str(run.pk)]
    assert {"ts", "level", "logger", "message", "process", "pid"} <= set(entries[0])
    assert {e["process"] for e in entries} == {"worker"}
    for entry in entries:
        assert entry["workflow_id"] == wf.pk and entry["organization_id"] == org.pk, entry
        assert entry["step"] in ("call", "say") and isinstance(entry["attempt"], int), entry

    retry = next(e for e in entries if e["logger"] == "workflows.execution.recording" and "retry in" in e["message"])
    assert (retry["step"], retry["attempt"], retry["level"]) == ("call", 1, "INFO")
    said = next(e for e in entries if e["logger"] == "workflows.tests.ops_handlers")
    assert (said["step"], said["attempt"], said["level"]) == ("say", 1, "WARNING")
    # A line written by the action itself is redacted like Django's request lines.
    assert "/hooks/[redacted]" in said["message"] and "api_key=[redacted]&page=2" in said["message"]
    assert "SECRET" not in text
    # Lines outside a step carry no engine labels.
    task_lines = [e for e in json_lines(text) if e["logger"] == "celery.app.trace"]
    assert task_lines and all("run_id" not in e for e in task_lines)


def test_beat_and_gunicorn_log_json_lines(web, transactional_db):  # beat writes rows: flushed after
    base, log_path = web
    assert requests.get(f"{base}/healthz?token=q-SECRET", timeout=10).status_code == 200
    wait_for(lambda: "/healthz?token=" in log_path.read_text(), message="the access line")
    entries = json_lines(log_path.read_text())
    access = next(e for e in entries if e["logger"] == "gunicorn.access" and "/healthz?token=" in e["message"])
    assert access["path"] == "/healthz"
    assert (access["process"], access["method"], access["status"]) == ("web", "GET", "200")
    assert access["duration_ms"] >= 0
    assert "token=[redacted]" in access["message"] and "q-SECRET" not in log_path.read_text()
    assert any(e["logger"] == "gunicorn.error" and "Booting worker" in e["message"] for e in entries)

    beat = start_beat(env={"LOG_FORMAT": "json"})
    try:
        starting = next(e for e in json_lines(beat.log_text()) if "beat: Starting" in e["message"])
    finally:
        beat.stop()
    assert starting["process"] == "beat" and starting["logger"].startswith("celery")
