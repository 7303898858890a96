"""Retention: finished runs go after their status's retention, in batches; the run tables stop growing."""

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from workflows import tasks
from workflows.models import Run, RunStatus, StepAttempt, StepRun, StepRunStatus, WorkflowVersion
from workflows.ops import retention
from workflows.services import run_accept, run_replay, workflow_create, workflow_current_version, workflow_update

STEPS = [
    {"key": "a", "action_type": "transform", "config": {"value": 1}},
    {"key": "b", "action_type": "transform", "config": {"value": 2}},
]


@pytest.fixture
def days(settings):
    settings.POTAFLOW_RETAIN_SUCCEEDED_DAYS = 7
    settings.POTAFLOW_RETAIN_FAILED_DAYS = 30
    settings.POTAFLOW_RETAIN_FILTERED_DAYS = 3
    return settings


@pytest.fixture
def wf(org):
    return workflow_create(organization=org, name="W", steps=STEPS)


def finished(wf, status, *, at, dead=False):
    """A run accepted and finished at ``at`` (each step succeeded, with one attempt row)."""
    # Written directly, not accepted: nothing is sent to a broker (no worker runs here).
    wf.refresh_from_db()
    run = Run.objects.create(
        workflow=wf,
        workflow_version=wf.version,
        version=workflow_current_version(wf),
        trigger="manual",
        payload={"body": {"at": at.isoformat()}},
        status=status,
        dead_lettered=dead,
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(seconds=1),
    )
    step_status = StepRunStatus.SUCCEEDED if status == RunStatus.SUCCEEDED else StepRunStatus.FAILED
    for position, spec in enumerate(STEPS):
        step = StepRun.objects.create(
            run=run, position=position, key=spec["key"], action_type="transform", status=step_status
        )
        StepAttempt.objects.create(step_run=step, number=1, outcome="succeeded", started_at=at)
    return run


def ago(days, hours=0):
    return timezone.now() - timedelta(days=days, hours=hours)


@pytest.mark.django_db
def test_each_status_goes_after_its_own_retention(wf, days):
    keep = [
        finished(wf, RunStatus.SUCCEEDED, at=ago(6)),
        finished(wf, RunStatus.FAILED, at=ago(29)),
        finished(wf, RunStatus.FILTERED, at=ago(2)),
        finished(wf, RunStatus.FAILED, at=ago(400), dead=True),  # dead-lettered, never replayed
    ]
    unfinished = [run_accept(workflow=wf, trigger="manual", payload={})[0] for _ in range(2)]
    Run.objects.filter(pk=unfinished[0].pk).update(created_at=ago(400))
    Run.objects.filter(pk=unfinished[1].pk).update(created_at=ago(400), status=RunStatus.RUNNING)
    gone = [
        finished(wf, RunStatus.SUCCEEDED, at=ago(7, 1)),
        finished(wf, RunStatus.FAILED, at=ago(30, 1)),
        finished(wf, RunStatus.FILTERED, at=ago(3, 1)),
    ]
    report = retention.prune()
    assert dict(report.runs) == {"succeeded": 1, "failed": 1, "filtered": 1}
    assert (report.step_runs, report.attempts, report.capped) == (6, 6, False)
    left = set(Run.objects.values_list("pk", flat=True))
    assert left == {r.pk for r in keep + unfinished}
    assert not StepRun.objects.filter(run_id__in=[r.pk for r in gone]).exists()
    assert not StepAttempt.objects.filter(step_run__run_id__in=[r.pk for r in gone]).exists()


@pytest.mark.django_db
def test_zero_keeps_a_status_forever(wf, days):
    days.POTAFLOW_RETAIN_SUCCEEDED_DAYS = 0
    old = finished(wf, RunStatus.SUCCEEDED, at=ago(3000))
    failed = finished(wf, RunStatus.FAILED, at=ago(3000))
    retention.prune()
    assert list(Run.objects.values_list("pk", flat=True)) == [old.pk]
    assert not Run.objects.filter(pk=failed.pk).exists()


@pytest.mark.django_db
def test_a_dead_lettered_run_goes_once_replayed_and_its_replay_keeps_its_history(wf, days):
    dead = finished(wf, RunStatus.FAILED, at=ago(31), dead=True)
    retention.prune()
    assert Run.objects.filter(pk=dead.pk).exists()
    replay = run_replay(run=dead)
    assert replay.step_runs.filter(reused=False).count() == 2
    report = retention.prune()
    assert report.total_runs == 1 and not Run.objects.filter(pk=dead.pk).exists()
    replay = Run.objects.get(pk=replay.pk)
    assert replay.replay_of_id is None and replay.step_runs.count() == 2
    assert len(replay.definition["steps"]) == 2  # the version it shared with the deleted run stays


@pytest.mark.django_db
def test_batches_are_capped_per_pass_and_the_rest_waits_for_the_next(wf, days):
    for _ in range(7):
        finished(wf, RunStatus.SUCCEEDED, at=ago(10))
    first = retention.prune(batch_size=2, max_runs=5)
    assert (first.total_runs, first.capped) == (5, True)
    assert "more remain" in first.summary()
    second = retention.prune(batch_size=2, max_runs=5)
    assert (second.total_runs, second.capped) == (2, False)
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_dry_run_counts_and_deletes_nothing_and_the_command_prints_it(wf, days):
    finished(wf, RunStatus.SUCCEEDED, at=ago(10))
    finished(wf, RunStatus.FILTERED, at=ago(10))
    finished(wf, RunStatus.SUCCEEDED, at=ago(1))
    out = StringIO()
    call_command("prune_runs", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "would delete 2 run(s) (1 filtered, 1 succeeded), 4 step run(s), 4 attempt(s)" in text
    assert "succeeded 7 d" in text and Run.objects.count() == 3
    out = StringIO()
    call_command("prune_runs", stdout=out)
    assert "deleted 2 run(s)" in out.getvalue() and Run.objects.count() == 1


@pytest.mark.django_db
def test_superseded_versions_no_run_uses_are_deleted_after_a_grace_period(wf, days):
    used = finished(wf, RunStatus.FAILED, at=ago(1))  # uses version 1
    workflow_update(workflow=wf, steps=STEPS[:1])  # version 2: used by nobody
    workflow_update(workflow=wf, steps=STEPS)  # version 3: current
    assert retention.prune().versions == 0  # version 3 is too new for 2 to go yet
    later = timezone.now() + retention.VERSION_GRACE + timedelta(minutes=1)
    assert retention.prune(now=later).versions == 1
    assert sorted(WorkflowVersion.objects.values_list("number", flat=True)) == [1, 3]
    Run.objects.filter(pk=used.pk).delete()
    retention.prune(now=later)
    assert list(WorkflowVersion.objects.values_list("number", flat=True)) == [3]  # the current one always stays


def test_beat_runs_the_pruning_task():
    entry = django_settings.CELERY_BEAT_SCHEDULE["potaflow-prune-runs"]
    assert entry["task"] == tasks.prune_runs.name == "workflows.prune_runs"
    assert entry["schedule"] == float(django_settings.POTAFLOW_PRUNE_INTERVAL_SECONDS) > 0


@pytest.mark.django_db(transaction=True)
def test_under_a_steady_stream_the_run_tables_stop_growing(wf, days):
    """Twenty simulated days of runs with a prune pass each day: rows (and, on PostgreSQL, pages) plateau."""
    days.POTAFLOW_RETAIN_SUCCEEDED_DAYS = 2
    days.POTAFLOW_RETAIN_FAILED_DAYS = 4
    days.POTAFLOW_RETAIN_FILTERED_DAYS = 1
    start = timezone.now()
    rows, sizes = [], []
    for day in range(20):
        today = start + timedelta(days=day)
        for status in (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.FILTERED):
            finished(wf, status, at=today)
        workflow_update(workflow=wf, description=f"edited on day {day}")  # a new version a day too
        tasks.prune_runs.run() if day == 0 else retention.prune(now=today + timedelta(hours=2))
        rows.append(
            (Run.objects.count(), StepRun.objects.count(), StepAttempt.objects.count(), WorkflowVersion.objects.count())
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM workflows_run, workflows_steprun, workflows_stepattempt")
                cursor.execute(
                    "SELECT sum(pg_total_relation_size(c)) FROM unnest(ARRAY["
                    "'workflows_run', 'workflows_steprun', 'workflows_stepattempt']::regclass[]) c"
                )
                sizes.append(cursor.fetchone()[0])
    # Pruned 2 h into each day, so kept: 2 succeeded x 2 days + 1 failed x 4 days + 1 filtered x 1 day = 9 runs;
    # versions: the 4 the failed runs still use, plus the current one.
    assert rows[-1] == (9, 18, 18, 5), rows
    assert len(set(rows[3:])) == 1, rows  # flat once the longest retention (4 days) has passed
    assert rows[0][0] < rows[1][0] < rows[3][0]  # it did grow before that
    if sizes:
        assert max(sizes[10:]) <= max(sizes[:10]), sizes
