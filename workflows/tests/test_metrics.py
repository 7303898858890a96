"""GET /metrics: the Prometheus text format, its token, and where each figure comes from.

These call the real view through Django's test client (one process). The same
figures through gunicorn with several web processes and a real worker are in
``test_operability.py``.
"""

from datetime import timedelta
from pathlib import Path

import pytest
from celery import current_app
from django.db import transaction
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from testing.worker import IsolatedBroker
from workflows.models import AttemptOutcome, MetricBaseline, Run, RunStatus, StepAttempt, StepRun, TriggerType
from workflows.services import run_accept, workflow_create, workflow_current_version, workflow_delete

REASONS = ("signature", "size", "rate", "inactive", "invalid")
BASE_DIR = Path(__file__).resolve().parents[2]
STEPS = [{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}}]
FAMILIES = {
    "potaflow_events_accepted": "counter",
    "potaflow_events_rejected": "counter",
    "potaflow_runs_finished": "counter",
    "potaflow_runs_dead_lettered": "counter",
    "potaflow_runs_replayed": "counter",
    "potaflow_step_attempts": "counter",
    "potaflow_step_duration_seconds": "histogram",
    "potaflow_run_duration_seconds": "histogram",
    "potaflow_webhook_intake_seconds": "histogram",
    "potaflow_runs_unfinished": "gauge",
    "potaflow_oldest_unfinished_run_age_seconds": "gauge",
    "potaflow_broker_queue_length": "gauge",
}


def parse(text: str) -> dict[tuple, float]:
    """{(sample name, ((label, value), ...)): value} of a scrape."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(client: Client | None = None, **headers: str) -> dict[tuple, float]:
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def hook_wf(org):
    return workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)


def test_every_family_is_exposed_with_its_type(db):
    text = Client().get("/metrics").content.decode()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert {name: types.get(name) for name in FAMILIES} == FAMILIES
    # Counters carry the _total suffix dashboards use.
    assert 'potaflow_events_accepted_total{trigger="webhook"} 0.0' in text
    assert "potaflow_runs_dead_lettered_total 0.0" in text


def test_with_a_token_a_scrape_needs_the_bearer_token(db, settings):
    settings.POTAFLOW_METRICS_TOKEN = "scrape-token-0123456789"
    client = Client()
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert b"potaflow_" not in wrong.content
    assert client.get("/metrics", headers={"authorization": "Basic scrape-token-0123456789"}).status_code == 401
    ok = client.get("/metrics", headers={"authorization": "Bearer scrape-token-0123456789"})
    assert ok.status_code == 200
    assert b"potaflow_runs_finished_total" in ok.content


def test_without_a_token_the_endpoint_is_open_only_where_allowed(db, settings):
    settings.POTAFLOW_METRICS_TOKEN = ""
    settings.POTAFLOW_METRICS_ALLOW_OPEN = True  # its default with DEBUG on (development)
    assert Client().get("/metrics").status_code == 200
    # Production (DEBUG off: the default is false) without a token: closed, saying how to open it.
    settings.POTAFLOW_METRICS_ALLOW_OPEN = False
    refused = Client().get("/metrics")
    assert refused.status_code == 403
    assert b"POTAFLOW_METRICS_TOKEN" in refused.content and b"POTAFLOW_METRICS_ALLOW_OPEN" in refused.content
    assert b"potaflow_" not in refused.content.replace(b"POTAFLOW_", b"")


def test_the_allow_open_default_follows_debug(tmp_path):
    import subprocess  # noqa: PLC0415 - only this test starts a fresh interpreter for the settings
    import sys  # noqa: PLC0415 - the same interpreter as the tests

    code = "from django.conf import settings; print(settings.POTAFLOW_METRICS_ALLOW_OPEN)"
    for debug, expected in (("true", "True"), ("false", "False")):
        env = {"DEBUG": debug, "SECRET_KEY": "x" * 50, "POTAFLOW_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
               "DJANGO_SETTINGS_MODULE": "potaflow.settings"}  # fmt: skip
        out = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], env=env, cwd=BASE_DIR,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert out.stdout.strip() == expected


def make_run(wf, status, *, trigger="manual", dead=False, created_ago=0.0, duration=None) -> Run:
    now = timezone.now()
    run = Run.objects.create(
        workflow=wf,
        workflow_version=wf.version,
        version=workflow_current_version(wf),
        trigger=trigger,
        status=status,
        dead_lettered=dead,
        created_at=now - timedelta(seconds=created_ago),
    )
    if duration is not None:
        Run.objects.filter(pk=run.pk).update(started_at=now - timedelta(seconds=duration), finished_at=now)
    return run


def test_run_figures_come_from_the_database_and_conserve(hook_wf):
    make_run(hook_wf, RunStatus.QUEUED, trigger="webhook", created_ago=120)
    make_run(hook_wf, RunStatus.RUNNING, trigger="webhook", created_ago=30)
    make_run(hook_wf, RunStatus.SUCCEEDED, trigger="webhook", duration=0.3)
    make_run(hook_wf, RunStatus.SUCCEEDED, trigger="schedule", duration=7)
    make_run(hook_wf, RunStatus.FAILED, trigger="manual", dead=True, duration=45)
    make_run(hook_wf, RunStatus.FILTERED, trigger="replay", duration=0.05)

    m = scrape()
    accepted = {t: value(m, "potaflow_events_accepted_total", trigger=t) for t in ("webhook", "schedule", "manual")}
    assert accepted == {"webhook": 3, "schedule": 1, "manual": 1}
    assert value(m, "potaflow_events_accepted_total", trigger="replay") == 1
    finished = {s: value(m, "potaflow_runs_finished_total", status=s) for s in ("succeeded", "failed", "filtered")}
    assert finished == {"succeeded": 2, "failed": 1, "filtered": 1}
    unfinished = {s: value(m, "potaflow_runs_unfinished", status=s) for s in ("queued", "running")}
    assert unfinished == {"queued": 1, "running": 1}
    assert value(m, "potaflow_runs_dead_lettered_total") == 1
    assert value(m, "potaflow_runs_replayed_total") == 1
    total_accepted = sum(v for (name, _), v in m.items() if name == "potaflow_events_accepted_total")
    assert total_accepted == sum(finished.values()) + sum(unfinished.values()) == 6
    assert 119 <= value(m, "potaflow_oldest_unfinished_run_age_seconds") < 180

    # Run durations: 0.05 s, 0.3 s, 7 s, 45 s.
    assert value(m, "potaflow_run_duration_seconds_bucket", le="0.1") == 1
    assert value(m, "potaflow_run_duration_seconds_bucket", le="0.5") == 2
    assert value(m, "potaflow_run_duration_seconds_bucket", le="10.0") == 3
    assert value(m, "potaflow_run_duration_seconds_bucket", le="60.0") == 4
    assert value(m, "potaflow_run_duration_seconds_count") == 4
    assert value(m, "potaflow_run_duration_seconds_sum") == pytest.approx(52.35, abs=0.01)


def test_attempts_by_action_and_outcome_and_their_durations(hook_wf):
    run = make_run(hook_wf, RunStatus.RUNNING)
    http = StepRun.objects.create(run=run, position=0, key="call", action_type="http.request")
    slack = StepRun.objects.create(run=run, position=1, key="tell", action_type="slack.message")
    now = timezone.now()
    for number, (outcome, ms) in enumerate(
        [(AttemptOutcome.RETRYABLE_ERROR, 40), (AttemptOutcome.TIMED_OUT, 30_000), (AttemptOutcome.SUCCEEDED, 200)], 1
    ):
        StepAttempt.objects.create(step_run=http, number=number, outcome=outcome, started_at=now, duration_ms=ms)
    StepAttempt.objects.create(step_run=slack, number=1, outcome=AttemptOutcome.IN_DOUBT, started_at=now)
    StepAttempt.objects.create(step_run=slack, number=2, outcome="", started_at=now)  # still running: not counted

    m = scrape()
    attempts = lambda action, outcome: value(m, "potaflow_step_attempts_total", action=action, outcome=outcome)  # noqa: E731
    assert attempts("http.request", "retryable_error") == 1
    assert attempts("http.request", "timed_out") == 1
    assert attempts("http.request", "succeeded") == 1
    assert attempts("slack.message", "in_doubt") == 1
    assert attempts("slack.message", "succeeded") == 0  # every registered action x outcome is present
    assert attempts("email.send", "permanent_error") == 0

    assert value(m, "potaflow_step_duration_seconds_bucket", action="http.request", le="0.05") == 1
    assert value(m, "potaflow_step_duration_seconds_bucket", action="http.request", le="0.25") == 2
    assert value(m, "potaflow_step_duration_seconds_bucket", action="http.request", le="30.0") == 3
    assert value(m, "potaflow_step_duration_seconds_count", action="http.request") == 3
    assert value(m, "potaflow_step_duration_seconds_sum", action="http.request") == pytest.approx(30.24)
    # The in-doubt attempt has no duration (its worker died): no observation.
    assert value(m, "potaflow_step_duration_seconds_count", action="slack.message") == 0


def test_webhook_refusals_are_counted_by_reason_and_acceptances_timed(org, hook_wf, settings):
    settings.POTAFLOW_WEBHOOK_MAX_BYTES = 100
    settings.POTAFLOW_WEBHOOK_RATE = "3/h"  # 3 events per workflow in an hour-long window
    signed = workflow_create(
        organization=org,
        name="Signed",
        trigger_type=TriggerType.WEBHOOK,
        webhook_secret="a-webhook-secret-of-enough-length",
        signature_scheme="github",
        steps=STEPS,
    )
    client = Client()
    before = scrape(client)

    def post(token, body=b"{}", **headers):
        return client.post(f"/hooks/{token}", body, content_type="application/json", headers=headers).status_code

    answers = [
        post(hook_wf.webhook_token, b'{"n": 1}', idempotency_key="a"),
        post(hook_wf.webhook_token, b'{"n": 1}', idempotency_key="a"),
        post(hook_wf.webhook_token, b"x" * 101),
        post(hook_wf.webhook_token),  # the workflow's 4th event in the window
        post("no-such-token"),
        *(post(signed.webhook_token, b'{"n": 2}') for _ in range(3)),  # not signed
        post(signed.webhook_token),
    ]
    after = scrape(client)
    assert answers == [202, 200, 413, 429, 404, 401, 401, 401, 429]

    name = "potaflow_events_rejected_total"
    deltas = {r: value(after, name, reason=r) - value(before, name, reason=r) for r in REASONS}
    assert deltas == {"size": 1, "rate": 2, "inactive": 1, "signature": 3, "invalid": 0}
    intake = "potaflow_webhook_intake_seconds_count"
    assert value(after, intake) - value(before, intake) == 2  # the 202 and the duplicate's 200
    assert Run.objects.count() == 1


def test_a_malformed_body_is_an_invalid_refusal(hook_wf):
    client = Client()
    before = scrape(client)
    response = client.post(f"/hooks/{hook_wf.webhook_token}", b"{not json", content_type="application/json")
    assert response.status_code == 400
    after = scrape(client)
    name = "potaflow_events_rejected_total"
    assert value(after, name, reason="invalid") - value(before, name, reason="invalid") == 1


@pytest.mark.slow  # starts its own redis-server when the broker is Redis
def test_the_broker_queue_length_counts_waiting_messages(db):
    with IsolatedBroker():
        assert value(scrape(), "potaflow_broker_queue_length", queue="celery") == 0
        assert value(scrape(), "potaflow_broker_queue_length", queue="potaflow.schedules") == 0
        for _ in range(3):
            current_app.send_task("workflows.recover_stalled_runs")
        current_app.send_task("workflows.fire_schedules", args=([], "2026-12-01T00:00:00+00:00"))
        samples = scrape()
        assert value(samples, "potaflow_broker_queue_length", queue="celery") == 3
        # beat's firings wait in their own queue (settings.CELERY_TASK_ROUTES), counted apart
        assert value(samples, "potaflow_broker_queue_length", queue="potaflow.schedules") == 1


def test_a_broker_that_does_not_answer_leaves_only_its_gauge_out(db, settings):
    from testing.worker import broker_at

    with broker_at("redis://127.0.0.1:1/0"):
        m = scrape()
    assert not any(name == "potaflow_broker_queue_length" for name, _ in m)
    assert ("potaflow_runs_finished_total", (("status", "failed"),)) in m


def test_a_run_accepted_through_the_service_is_counted_once(hook_wf):
    before = value(scrape(), "potaflow_events_accepted_total", trigger="webhook")
    run_accept(workflow=hook_wf, trigger="webhook", payload={"body": {}}, idempotency_key="k")
    run_accept(workflow=hook_wf, trigger="webhook", payload={"body": {}}, idempotency_key="k")
    assert value(scrape(), "potaflow_events_accepted_total", trigger="webhook") == before + 1


# -- counters outlive the rows they count ------------------------------------------------
GAUGES = ("potaflow_runs_unfinished", "potaflow_oldest_unfinished_run_age_seconds", "potaflow_broker_queue_length")


def counters(samples: dict) -> dict:
    """Counter and histogram samples (what must never go down), without the intake ones counted in memory."""
    return {
        key: v
        for key, v in samples.items()
        if key[0] not in GAUGES and not key[0].startswith(("potaflow_events_rejected", "potaflow_webhook_intake"))
    }


def history(wf, n: int) -> list[Run]:
    """``n`` finished runs, each with a failed and a succeeded attempt, plus one queued run."""
    runs = []
    for i in range(n):
        run = make_run(wf, (RunStatus.SUCCEEDED, RunStatus.FAILED)[i % 2], dead=bool(i % 2), duration=1 + i)
        step = StepRun.objects.create(run=run, position=0, key="call", action_type="http.request")
        now = timezone.now()
        StepAttempt.objects.create(
            step_run=step, number=1, outcome=AttemptOutcome.RETRYABLE_ERROR, started_at=now, duration_ms=100 * i
        )
        StepAttempt.objects.create(
            step_run=step, number=2, outcome=AttemptOutcome.SUCCEEDED, started_at=now, duration_ms=2000
        )
        runs.append(run)
    make_run(wf, RunStatus.QUEUED, created_ago=60)
    return runs


def test_counters_keep_their_values_when_retention_deletes_runs(hook_wf):
    runs = history(hook_wf, 6)
    before = scrape()
    with transaction.atomic():  # as a retention batch does
        deleted, _ = Run.objects.filter(pk__in=[r.pk for r in runs[:4]]).delete()
    assert deleted > 4 and Run.objects.count() == 3
    after = scrape()
    assert counters(after) == counters(before)
    assert value(after, "potaflow_events_accepted_total", trigger="manual") == 7
    assert value(after, "potaflow_step_attempts_total", action="http.request", outcome="retryable_error") == 6
    assert value(after, "potaflow_step_duration_seconds_count", action="http.request") == 12
    assert value(after, "potaflow_run_duration_seconds_count") == 6
    assert value(after, "potaflow_runs_unfinished", status="queued") == 1

    # New events count on top of what was carried over, and later deletions add up.
    make_run(hook_wf, RunStatus.SUCCEEDED, duration=1)
    Run.objects.get(pk=runs[4].pk).delete()  # one run, deleted on its own (the admin)
    later = scrape()
    assert value(later, "potaflow_events_accepted_total", trigger="manual") == 8
    assert value(later, "potaflow_runs_finished_total", status="succeeded") == 4
    assert value(later, "potaflow_runs_dead_lettered_total") == 3
    assert MetricBaseline.objects.filter(series__contains="potaflow_events_accepted_total").get().value == 5


def test_deleting_a_workflow_keeps_its_counts_and_conservation(org, hook_wf):
    history(hook_wf, 3)
    other = workflow_create(organization=org, name="Other", trigger_type=TriggerType.MANUAL)
    make_run(other, RunStatus.SUCCEEDED, duration=2)
    before = scrape()
    workflow_delete(workflow=hook_wf)
    after = scrape()
    assert Run.objects.count() == 1
    accepted = value(after, "potaflow_events_accepted_total", trigger="manual")
    assert accepted == value(before, "potaflow_events_accepted_total", trigger="manual") == 5
    # Its queued run will never finish: it counts as failed, so accepted = finished + unfinished still.
    failed = "potaflow_runs_finished_total"
    assert value(after, failed, status="failed") == value(before, failed, status="failed") + 1
    assert value(after, "potaflow_runs_unfinished", status="queued") == 0
    finished = sum(value(after, failed, status=s) for s in ("succeeded", "failed", "filtered"))
    assert accepted == finished
    assert value(after, "potaflow_run_duration_seconds_count") == value(before, "potaflow_run_duration_seconds_count")


def test_a_scrape_counts_the_runs_in_one_grouped_query(hook_wf):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workflows.ops.metrics import database_samples

    run_accept(workflow=hook_wf, trigger="webhook", payload={"body": {}})
    with CaptureQueriesContext(connection) as scrape_queries:
        _samples, counts, _age = database_samples()
    assert counts.by_trigger["webhook"] == 1
    grouped = [
        q for q in scrape_queries.captured_queries if 'FROM "workflows_run"' in q["sql"] and "GROUP BY" in q["sql"]
    ]
    assert len(grouped) == 1
