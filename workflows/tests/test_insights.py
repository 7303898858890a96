"""Insights: rollups written by the database as runs finish, read by GET /api/insights/.

The rollups must equal what the runs say (every way a run's status changes is counted, and
deleting runs subtracts nothing), agree with /api/stats/ and /metrics for the same window,
and keep their history after retention prunes the runs.
"""

import importlib
import math
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from testing.worker import wait_for_run
from workflows.checks import insights_retention_check
from workflows.models import RollupGrain, Run, RunRollup, RunStatus, StepFailureRollup, StepRun, StepRunStatus
from workflows.ops import insights as ins
from workflows.ops import retention
from workflows.services import run_accept, workflow_create, workflow_current_version

from .test_metrics import parse, value

# The migration that installs the triggers, whatever number it has once other migrations land.
MIGRATION = importlib.import_module(
    "workflows.migrations." + next((Path(__file__).parents[1] / "migrations").glob("*_insights_rollups.py")).stem
)


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def add_run(workflow, status, *, ms=None, at=None, dead=False):
    created = at or timezone.now() - timedelta(minutes=5)
    started = created if ms is not None else None
    return Run.objects.create(
        workflow=workflow,
        workflow_version=workflow.version,
        version=workflow_current_version(workflow),
        trigger="manual",
        status=status,
        dead_lettered=dead,
        created_at=created,
        started_at=started,
        finished_at=created + timedelta(milliseconds=ms) if ms is not None else None,
    )


def test_the_migration_spells_the_statuses_and_buckets_as_the_code_does():
    assert "(" + ", ".join(f"'{s}'" for s in ins.COUNTED_STATUSES) + ")" == MIGRATION.FINAL
    assert set(ins.COUNTED_STATUSES) == {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.FILTERED}
    assert float(MIGRATION.BASE) == ins.DURATION_BASE
    assert StepRunStatus.FAILED == "failed"


@pytest.mark.django_db
def test_every_status_change_is_counted_once_and_deleting_runs_subtracts_nothing(org, viewer):
    wf = workflow_create(organization=org, name="A")
    run = add_run(wf, RunStatus.QUEUED)
    assert not RunRollup.objects.exists()  # unfinished runs are not counted
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED,
        started_at=run.created_at,
        finished_at=run.created_at + timedelta(milliseconds=400),
        dead_lettered=True,
    )
    hour = RunRollup.objects.get(grain=RollupGrain.HOUR, status="failed")
    day = RunRollup.objects.get(grain=RollupGrain.DAY, status="failed")
    assert (hour.runs, hour.dead_lettered, hour.timed, hour.duration_ms_sum) == (1, 1, 1, 400)
    assert (day.runs, day.organization_id, day.workflow_id) == (1, org.pk, wf.pk)
    assert hour.start == run.created_at.replace(minute=0, second=0, microsecond=0)
    assert day.start == run.created_at.replace(hour=0, minute=0, second=0, microsecond=0)
    assert sum(hour.durations.values()) == 1
    # The same run changed again (a correction by hand, say): its old contribution goes, the new one comes.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, dead_lettered=False)
    rows = {r.status: r for r in RunRollup.objects.filter(grain=RollupGrain.HOUR)}
    assert (rows["failed"].runs, rows["failed"].dead_lettered, rows["failed"].durations) == (
        0,
        0,
        {k: 0 for k in hour.durations},
    )
    assert (rows["succeeded"].runs, rows["succeeded"].duration_ms_sum) == (1, 400)
    # Back to running (a replay of a step, say) takes it out until it finishes again.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    assert RunRollup.objects.get(grain=RollupGrain.HOUR, status="succeeded").runs == 0
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    # A failed step instance is counted with its error's first line.
    step = StepRun.objects.create(run=run, position=0, key="post", action_type="http.request")
    StepRun.objects.filter(pk=step.pk).update(status=StepRunStatus.FAILED, error="HTTP 503 from api\ntrace...")
    failure = StepFailureRollup.objects.get(grain=RollupGrain.DAY)
    assert (failure.step_key, failure.action_type, failure.error, failure.failures) == (
        "post",
        "http.request",
        "HTTP 503 from api",
        1,
    )
    before = client_for(viewer).get("/api/insights/").json()
    Run.objects.all().delete()  # retention, a person in the admin: the history stays
    after = client_for(viewer).get("/api/insights/").json()
    assert after == before and after["totals"]["succeeded"] == 1
    assert after["top_failing_steps"][0]["top_errors"] == [{"error": "HTTP 503 from api", "count": 1}]


@pytest.mark.django_db
def test_windows_buckets_previous_period_scope_and_errors(org, other_org, viewer, outsider):
    a = workflow_create(organization=org, name="A")
    b = workflow_create(organization=org, name="B")
    foreign = workflow_create(organization=other_org, name="Foreign")
    now = timezone.now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    for ms in range(100, 1100, 100):  # 10 succeeded runs of A this hour, 100..1000 ms
        add_run(a, RunStatus.SUCCEEDED, ms=ms, at=this_hour)
    add_run(a, RunStatus.FAILED, ms=2000, at=this_hour - timedelta(hours=3), dead=True)
    add_run(b, RunStatus.FILTERED, ms=5, at=this_hour - timedelta(hours=23))
    add_run(b, RunStatus.FAILED, ms=50, at=this_hour - timedelta(hours=30))  # the previous 24 h
    add_run(a, RunStatus.SUCCEEDED, ms=50, at=this_hour - timedelta(days=20))  # in 30 d only
    add_run(foreign, RunStatus.FAILED, ms=10, at=this_hour)  # another organization's

    data = client_for(viewer).get("/api/insights/?window=24h").json()
    assert data["window"] == "24h" and data["grain"] == "hour" and len(data["buckets"]) == 24
    assert data["buckets"][-1]["start"] == this_hour.isoformat().replace("+00:00", "Z")
    assert data["buckets"][-1]["succeeded"] == 10 and data["buckets"][-4]["failed"] == 1
    assert data["buckets"][0]["filtered"] == 1
    assert data["totals"] == {
        "succeeded": 10,
        "failed": 1,
        "filtered": 1,
        "runs": 12,
        "dead_lettered": 1,
        "timed_runs": 12,
        "duration_ms_sum": 5500 + 2000 + 5,
    }
    assert data["failure_rate"] == round(1 / 11, 4)
    # Nearest rank over 12 durations (5, 100..1000, 2000): p50 = 6th = 500, p95 = 12th = 2000.
    assert abs(data["p50_ms"] - 500) <= 500 * 0.025 and abs(data["p95_ms"] - 2000) <= 2000 * 0.025
    assert data["previous"]["totals"]["failed"] == 1 and data["previous"]["totals"]["runs"] == 1
    assert data["previous"]["p50_ms"] == data["previous"]["p95_ms"] and abs(data["previous"]["p50_ms"] - 50) <= 2

    week = client_for(viewer).get("/api/insights/?window=7d").json()
    assert len(week["buckets"]) == 7 and week["grain"] == "day" and week["totals"]["runs"] == 13
    month = client_for(viewer).get(f"/api/insights/?window=30d&workflow={a.pk}").json()
    assert month["workflow"] == a.pk and month["totals"]["runs"] == 12 and len(month["buckets"]) == 30

    assert client_for(viewer).get(f"/api/insights/?workflow={foreign.pk}").status_code == 404
    assert client_for(viewer).get(f"/api/insights/?organization={other_org.pk}").status_code == 404
    assert client_for(outsider).get("/api/insights/").json()["totals"]["runs"] == 1  # their own only
    bad = client_for(viewer).get("/api/insights/?window=1y")
    assert bad.status_code == 400 and "24h, 7d, 30d" in str(bad.json())
    assert client_for(viewer).get("/api/insights/?workflow=abc").status_code == 400
    assert APIClient().get("/api/insights/").status_code == 401


@pytest.mark.django_db
def test_rollups_have_their_own_retention_and_its_minimum_is_checked(org, settings):
    wf = workflow_create(organization=org, name="A")
    add_run(wf, RunStatus.SUCCEEDED, ms=10, at=timezone.now() - timedelta(days=10))
    assert RunRollup.objects.filter(grain=RollupGrain.HOUR).count() == 1
    report = retention.prune(now=timezone.now())
    assert report.rollups == 1  # the hourly row is past POTAFLOW_INSIGHTS_HOURLY_DAYS (7); the daily one stays
    assert list(RunRollup.objects.values_list("grain", flat=True)) == [RollupGrain.DAY]
    assert insights_retention_check() == []
    settings.POTAFLOW_INSIGHTS_DAILY_DAYS = 30
    (error,) = insights_retention_check()
    assert error.id == "workflows.E002" and "POTAFLOW_INSIGHTS_DAILY_DAYS" in error.msg and "60" in error.msg


@pytest.mark.services
@pytest.mark.django_db
def test_the_set_based_rebuild_gives_what_the_triggers_wrote(org):
    from django.db import connection  # imported here: the test is PostgreSQL's only

    if connection.vendor != "postgresql":
        pytest.skip("potaflow_insights_rebuild() is a PostgreSQL function")
    a = workflow_create(organization=org, name="A")
    b = workflow_create(organization=org, name="B")
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for i, (wf, status, ms, dead) in enumerate(
        [(a, RunStatus.SUCCEEDED, 120, False), (a, RunStatus.SUCCEEDED, 0, False),
         (a, RunStatus.FAILED, 5000, True), (b, RunStatus.FILTERED, None, False),
         (b, RunStatus.SUCCEEDED, 99_999, False), (a, RunStatus.RUNNING, None, False)]
    ):  # fmt: skip
        run = add_run(wf, status, ms=ms, at=hour - timedelta(hours=i * 7), dead=dead)
        if status == RunStatus.FAILED:
            step = StepRun.objects.create(run=run, position=0, key="post", action_type="http.request")
            StepRun.objects.filter(pk=step.pk).update(status=StepRunStatus.FAILED, error="HTTP 500\nmore")

    def snapshot():
        runs = RunRollup.objects.values_list(
            "organization_id", "workflow_id", "grain", "start", "status", "runs", "dead_lettered", "timed",
            "duration_ms_sum", "durations",
        )  # fmt: skip
        steps = StepFailureRollup.objects.values_list("workflow_id", "grain", "start", "step_key", "error", "failures")
        return sorted(map(repr, runs)), sorted(map(repr, steps))

    by_triggers = snapshot()
    assert len(by_triggers[0]) >= 8 and len(by_triggers[1]) == 2  # 5 finished runs, by hour and by day
    ins.rebuild_rollups()
    assert snapshot() == by_triggers


def test_percentiles_are_within_the_bucket_width():
    for exact in (1, 7, 99, 143, 1000, 59_999, 3_600_000):
        bucket = math.floor(math.log(exact) / math.log(ins.DURATION_BASE)) + 1  # as the triggers compute it
        assert abs(ins.duration_bucket_value(bucket) - exact) <= exact * 0.025 + 1
    assert ins.percentile({}, 0.5) is None
    assert ins.percentile({3: 1, 10: 0, 40: 1}, 0.5) == ins.duration_bucket_value(3)


def _scripted_day(org, now):
    """Runs received over the last 20 hours, executed by the real worker: successes, a filter, failures."""
    ok = workflow_create(
        organization=org,
        name="Orders",
        steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.body.n }}"}}},
            {"key": "big", "action_type": "filter", "config": {"condition": "trigger.body.n > 2"}},
        ],
    )
    broken = workflow_create(
        organization=org,
        name="Sync",
        steps=[
            {
                "key": "push",
                "action_type": "custom",
                "max_retries": 0,
                "config": {"handler": "test.boom", "input": {"log": "/dev/null"}},
            }
        ],
    )
    runs = []
    for hour in range(0, 20, 2):
        at = now - timedelta(hours=hour, minutes=7)
        runs.append(run_accept(workflow=ok, trigger="manual", payload={"body": {"n": hour}}, received_at=at)[0])
        if hour % 6 == 0:
            runs.append(run_accept(workflow=broken, trigger="manual", payload={"body": {}}, received_at=at)[0])
    return ok, broken, [wait_for_run(r.pk, {"succeeded", "failed", "filtered"}) for r in runs]


@pytest.mark.slow
def test_a_scripted_day_agrees_with_stats_and_metrics_and_survives_pruning(celery_worker, org, viewer, settings):
    metrics_before = parse(Client().get("/metrics").content.decode())
    now = timezone.now()
    ok, broken, runs = _scripted_day(org, now)
    statuses = [r.status for r in runs]
    assert statuses.count("failed") == 4 and statuses.count("filtered") == 2 and statuses.count("succeeded") == 8

    api = client_for(viewer)
    data = api.get("/api/insights/?window=24h").json()
    stats = api.get("/api/stats/").json()
    metrics = parse(Client().get("/metrics").content.decode())
    totals = data["totals"]
    for status in ins.COUNTED_STATUSES:
        assert totals[status] == stats["by_status"][status], status
        finished = ("potaflow_runs_finished_total", (("status", status),))
        assert totals[status] == metrics[finished] - metrics_before.get(finished, 0), status
    assert totals["runs"] == stats["total"] == len(runs)
    assert totals["dead_lettered"] == stats["dead_lettered"]
    assert data["failure_rate"] == round(1 - stats["success_rate"], 4)
    for p in ("p50", "p95"):
        exact = stats["duration_ms"][p]
        assert abs(data[f"{p}_ms"] - exact) <= exact * 0.025 + 1, (p, data[f"{p}_ms"], exact)
    assert totals["timed_runs"] == stats["duration_ms"]["count"]
    counted = value(metrics, "potaflow_run_duration_seconds_count") - metrics_before.get(
        ("potaflow_run_duration_seconds_count", ()), 0
    )
    seconds = value(metrics, "potaflow_run_duration_seconds_sum") - metrics_before.get(
        ("potaflow_run_duration_seconds_sum", ()), 0
    )
    assert counted == totals["timed_runs"]
    assert abs(seconds * 1000 - totals["duration_ms_sum"]) <= totals["timed_runs"]  # whole ms per run
    # The runs sit in the hours they were received in.
    by_start = {b["start"]: b["runs"] for b in data["buckets"]}
    for run in runs:
        start = run.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        assert by_start[start.isoformat().replace("+00:00", "Z")] >= 1
    (failing,) = data["top_failing_steps"]
    assert (failing["workflow"], failing["workflow_name"], failing["step"], failing["failures"]) == (
        broken.pk,
        "Sync",
        "push",
        4,
    )
    assert "boom: the remote said no" in failing["top_errors"][0]["error"]
    per_workflow = api.get(f"/api/insights/?window=24h&workflow={ok.pk}").json()
    assert per_workflow["totals"]["runs"] == 10 and per_workflow["top_failing_steps"] == []

    # Retention prunes every run a month on (hourly rollups kept that long here):
    # Insights and /metrics keep their numbers.
    settings.POTAFLOW_INSIGHTS_HOURLY_DAYS = 60
    pruned = retention.prune(now=now + timedelta(days=settings.POTAFLOW_RETAIN_FAILED_DAYS + 1))
    assert pruned.total_runs == len(runs) and not Run.objects.exists()
    later = ins.insights(organization_ids=[org.pk], window="24h", now=now)
    assert later["totals"] == totals and later["p95_ms"] == data["p95_ms"]
    assert later["top_failing_steps"][0]["failures"] == 4
    scraped = parse(Client().get("/metrics").content.decode())
    for status in ins.COUNTED_STATUSES:
        finished = ("potaflow_runs_finished_total", (("status", status),))
        assert scraped[finished] == metrics[finished]


@pytest.mark.django_db
def test_openapi_documents_the_endpoint():
    call_command("spectacular", "--file", "/dev/null", "--validate")
    from drf_spectacular.generators import SchemaGenerator  # imported here: builds the whole schema

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/insights/"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"workflow", "organization", "window"}
    body = schema["components"]["schemas"]["Insights"]["properties"]
    assert {"buckets", "totals", "p50_ms", "p95_ms", "top_failing_steps", "previous"} <= set(body)
