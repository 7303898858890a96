"""Deleting finished runs once they are past their retention, a little at a time.

Nothing else ever deletes a run, so without this the run tables grow forever.
Retention is per status (``POTAFLOW_RETAIN_SUCCEEDED_DAYS``,
``POTAFLOW_RETAIN_FAILED_DAYS``, ``POTAFLOW_RETAIN_FILTERED_DAYS``; ``0`` keeps
them forever), counted from when the run finished. Queued and running runs are
never touched. A dead-lettered run waits for a person: it is kept until it is
replayed (then the failed retention applies) or deleted by hand.

``prune`` deletes in batches of ``POTAFLOW_PRUNE_BATCH_SIZE`` runs, one short
transaction each (ids selected with ``SKIP LOCKED`` so two pruners never wait
on each other), up to ``POTAFLOW_PRUNE_MAX_RUNS`` per call: a backlog is worked
off over several beat intervals instead of one long DELETE that locks the
tables. Step runs and attempts go with their run; a replay of a deleted run
keeps its history (``replay_of`` becomes null). A deleted run's files
(``workflows.files``) are deleted in the same pass, bytes then rows, unless a
replay that stays uses them: they move to the newest such replay. So are
uploads abandoned mid-write (``POTAFLOW_UPLOAD_ABANDONED_SECONDS``) and the
files of runs deleted any other way (a deleted workflow or organization).

It also deletes superseded ``WorkflowVersion`` rows that no run uses any more
(a definition edited many times would otherwise stay stored once per edit).
A version is only deleted once a newer one has existed for
``VERSION_GRACE``, so a run being accepted with it right now is never refused.

Insights' rollups are not the runs' and stay (their own retention,
``POTAFLOW_INSIGHTS_HOURLY_DAYS`` / ``POTAFLOW_INSIGHTS_DAILY_DAYS``, is applied here too).
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from ..files import services as file_services
from ..models import Run, RunFile, RunStatus, StepAttempt, StepRun, TestRun, WorkflowVersion
from .insights import prune_rollups

logger = logging.getLogger(__name__)
TEST_RUN_RETENTION = timedelta(days=1)

VERSION_GRACE = timedelta(hours=1)


@dataclass
class PruneReport:
    """What a pruning pass deleted (or, dry, would delete)."""

    runs: Counter = field(default_factory=Counter)  # by status
    step_runs: int = 0
    attempts: int = 0
    versions: int = 0
    rollups: int = 0  # Insights rollups past POTAFLOW_INSIGHTS_*_DAYS (never the ones of the runs deleted)
    files: int = 0  # files deleted (bytes and rows): their run's, and abandoned uploads
    capped: bool = False  # stopped at POTAFLOW_PRUNE_MAX_RUNS: more is left for the next pass
    dry_run: bool = False

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(self.runs.items())) or "none"
        text = (
            f"{verb} {self.total_runs} run(s) ({by_status}), {self.step_runs} step run(s), "
            f"{self.attempts} attempt(s), {self.versions} unused workflow version(s), {self.files} file(s)"
        )
        if self.rollups:
            text += f", {self.rollups} expired Insights rollup row(s)"
        return text + ("; stopped at the per-pass cap, more remain" if self.capped else "")


def retention_days() -> dict[str, int]:
    """Days each finished status is kept (0: forever)."""
    return {
        RunStatus.SUCCEEDED: settings.POTAFLOW_RETAIN_SUCCEEDED_DAYS,
        RunStatus.FAILED: settings.POTAFLOW_RETAIN_FAILED_DAYS,
        RunStatus.FILTERED: settings.POTAFLOW_RETAIN_FILTERED_DAYS,
    }


def expired_runs(now: datetime | None = None) -> QuerySet[Run]:
    """Finished runs past their status's retention (dead-lettered ones only once replayed)."""
    now = now or timezone.now()
    expired = Q(pk__in=[])
    for status, days in retention_days().items():
        if days <= 0:
            continue
        cutoff = now - timedelta(days=days)
        # created_at first: the (status, created_at) index narrows the scan; a run finishes after it is created.
        condition = Q(status=status, created_at__lt=cutoff) & (Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True))
        if status == RunStatus.FAILED:
            condition &= Q(dead_lettered=False) | Q(Exists(Run.objects.filter(replay_of=OuterRef("pk"))))
        expired |= condition
    return Run.objects.filter(expired)


def unused_versions(now: datetime | None = None) -> QuerySet[WorkflowVersion]:
    """Versions that are not their workflow's current one, superseded for a while, and used by no run."""
    now = now or timezone.now()
    newer = WorkflowVersion.objects.filter(
        workflow=OuterRef("workflow"), number__gt=OuterRef("number"), created_at__lt=now - VERSION_GRACE
    )
    return (
        WorkflowVersion.objects.filter(number__lt=F("workflow__version"))
        .filter(Exists(newer))
        .filter(~Exists(Run.objects.filter(version=OuterRef("pk"))))
    )


def prune(
    *, dry_run: bool = False, batch_size: int | None = None, max_runs: int | None = None, now: datetime | None = None
) -> PruneReport:
    """Delete expired runs batch by batch (see the module docstring), then unused versions."""
    batch_size = batch_size or settings.POTAFLOW_PRUNE_BATCH_SIZE
    max_runs = max_runs or settings.POTAFLOW_PRUNE_MAX_RUNS
    now = now or timezone.now()
    report = PruneReport(dry_run=dry_run)
    if dry_run:
        expired = expired_runs(now)
        for status, count in Counter(expired.values_list("status", flat=True)).items():
            report.runs[status] = count
        report.step_runs = StepRun.objects.filter(run__in=expired).count()
        report.attempts = StepAttempt.objects.filter(step_run__run__in=expired).count()
        report.versions = unused_versions(now).count()
        report.files = RunFile.objects.filter(Q(run__in=expired) | file_services.garbage(now)).count()
        return report

    while report.total_runs < max_runs:
        size = min(batch_size, max_runs - report.total_runs)
        with transaction.atomic():
            batch = list(
                expired_runs(now)
                .order_by("created_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", "status")[:size]
            )
            if not batch:
                break
            file_services.hand_over_to_replays([pk for pk, _ in batch])  # a kept replay still uses them
            _, deleted = Run.objects.filter(pk__in=[pk for pk, _ in batch]).delete()
        report.runs.update(status for _, status in batch)
        report.step_runs += deleted.get(StepRun._meta.label, 0)
        report.attempts += deleted.get(StepAttempt._meta.label, 0)
    else:
        report.capped = expired_runs(now).exists()

    while True:
        with transaction.atomic():
            ids = list(unused_versions(now).values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            _, deleted = WorkflowVersion.objects.filter(pk__in=ids).delete()
        report.versions += deleted.get(WorkflowVersion._meta.label, 0)
    # Test runs (workflows.dry_run results) are read right after they finish: a day is plenty.
    TestRun.objects.filter(created_at__lt=now - TEST_RUN_RETENTION).delete()
    # The deleted runs' files (detached by the deletion) and uploads abandoned mid-write: bytes, then rows.
    while deleted_files := file_services.prune_files(limit=batch_size, now=now):
        report.files += deleted_files
    report.rollups = prune_rollups(now)
    if report.total_runs or report.versions or report.files or report.rollups:
        logger.info("retention: %s", report.summary())
    return report
