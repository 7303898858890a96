"""What an operator wants to know at a glance (``manage.py potaflow_status``).

Queue depth, runs created in the last hour by status, what is unfinished now
and how old, dead letters, the schedules due next, the runs waiting (by kind) and
the delays and waits due next (issue 19), the retention settings
in force and the file storage used (``workflows.files``). Reads only; each part is independent, so a broker that is down
still leaves the rest of the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from core.broker import probe_queue

from ..files import services as file_services
from ..files import storage as file_storage
from ..flow import tree
from ..models import UNFINISHED_RUN_STATUSES, Run, RunStatus, StepRun, StepRunStatus, Workflow
from ..scheduling.cron import Cron, cron_expression
from ..scheduling.schedules import FIRE_TASK
from .metrics import oldest_unfinished_run_age, run_counts

# Set by the retention work (a run older than N days in that status is deleted; 0 = forever).
# Read with getattr: absent (before that work is deployed) means kept forever too.
RETENTION_SETTINGS = {
    "succeeded": "POTAFLOW_RETAIN_SUCCEEDED_DAYS",
    "failed": "POTAFLOW_RETAIN_FAILED_DAYS",
    "filtered": "POTAFLOW_RETAIN_FILTERED_DAYS",
}
RECENT = timedelta(hours=1)


@dataclass
class DueSchedule:
    at: datetime
    workflow_id: int | None
    workflow: str
    cron: str
    timezone: str


@dataclass
class DueWait:
    """A waiting delay, or a wait's timeout: when the beat-driven wake-up task resumes it."""

    at: datetime
    run_id: str
    workflow_id: int
    workflow: str
    step: str  # the instance's path ("lines[3]/pause")
    kind: str  # delay, webhook or approval


@dataclass
class StatusReport:
    at: datetime
    queue: str = ""
    queue_length: int | None = None
    broker_rtt_ms: float | None = None
    broker_error: str = ""
    recent_by_status: dict[str, int] = field(default_factory=dict)
    unfinished_by_status: dict[str, int] = field(default_factory=dict)
    oldest_unfinished_age_seconds: float | None = None
    dead_lettered_total: int = 0
    dead_lettered_recent: int = 0
    schedules: list[DueSchedule] = field(default_factory=list)
    waiting_by_kind: dict[str, int] = field(default_factory=dict)
    waits: list[DueWait] = field(default_factory=list)
    retention: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_storage: str = ""
    file_bytes: int = 0
    file_count: int = 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        for entry in data["schedules"] + data["waits"]:
            entry["at"] = entry["at"].isoformat()
        return data


def status_report(*, now: datetime | None = None, schedules: int = 5, waits: int = 5) -> StatusReport:
    """Gather the report (the broker is asked with short timeouts; see ``core.broker``)."""
    now = now or timezone.now()
    report = StatusReport(at=now)
    try:
        probe = probe_queue()
        report.queue, report.queue_length, report.broker_rtt_ms = probe.queue, probe.length, probe.round_trip_ms
    except Exception as exc:  # noqa: BLE001 - the report says the broker is down and goes on
        report.broker_error = f"{type(exc).__name__}: {exc}"

    recent = run_counts(Run.objects.filter(created_at__gte=now - RECENT, created_at__lte=now))
    report.recent_by_status = {status: recent.by_status.get(status, 0) for status in RunStatus.values}
    report.dead_lettered_recent = recent.dead_lettered
    everything = run_counts()
    report.unfinished_by_status = {s: everything.by_status.get(s, 0) for s in UNFINISHED_RUN_STATUSES}
    report.dead_lettered_total = everything.dead_lettered
    report.oldest_unfinished_age_seconds = oldest_unfinished_run_age(now)
    report.schedules = due_schedules(now=now, limit=schedules)
    report.waiting_by_kind = everything.waiting_by_kind
    report.waits = due_waits(limit=waits)
    report.retention = retention_in_force()
    report.file_storage = file_storage.describe()
    report.file_bytes, report.file_count = file_services.usage()
    return report


def due_schedules(*, now: datetime, limit: int = 5) -> list[DueSchedule]:
    """The next firing of each enabled schedule, soonest first.

    The next time is computed once per crontab row (schedules share them), not
    once per schedule: 10,000 schedules on a few crontabs cost a few computations (the cron rule
    of ``scheduling.cron``, as beat's).
    """
    tasks = PeriodicTask.objects.filter(enabled=True, task=FIRE_TASK, crontab__isnull=False).select_related("crontab")
    names = dict(Workflow.objects.values_list("pk", "name"))
    nexts: dict[int, tuple[datetime, str, str]] = {}
    due = []
    for task in tasks:
        c = task.crontab
        if c is None:  # excluded by the query (crontab__isnull=False); narrows the type
            continue
        if c.pk not in nexts:
            cron = cron_expression(c)
            nexts[c.pk] = (Cron(cron, str(c.timezone)).next_after(now), cron, str(c.timezone))
        at, cron, tz_name = nexts[c.pk]
        workflow_id = _workflow_id(task)
        name = task.name if workflow_id is None else names.get(workflow_id, task.name)
        due.append(DueSchedule(at, workflow_id, name, cron, tz_name))
    return sorted(due, key=lambda d: d.at)[:limit]


def due_waits(*, limit: int = 5) -> list[DueWait]:
    """The waiting delays and waits with a wake-up time (a delay's end, a wait's timeout), soonest
    first: what ``flow.wake_due`` resumes next (a time already past means beat is behind or stopped).
    A wait without ``timeout_seconds`` has no time and is not listed (it is counted by kind)."""
    rows = (
        StepRun.objects.filter(
            status=StepRunStatus.WAITING, wake_at__isnull=False, action_type__in=[tree.DELAY, tree.WAIT]
        )
        .order_by("wake_at", "pk")
        .values_list(
            "wake_at", "run_id", "run__workflow_id", "run__workflow__name", "path", "key", "action_type", "resume_token"
        )
    )
    due = []
    for at, run_id, workflow_id, name, path, key, action_type, token in rows[:limit]:
        if at is None:  # excluded by the query (wake_at__isnull=False); narrows the type
            continue
        kind = "delay" if action_type == tree.DELAY else ("webhook" if token else "approval")
        due.append(DueWait(at, str(run_id), workflow_id, name, path or key, kind))
    return due


def _workflow_id(task: PeriodicTask) -> int | None:
    suffix = task.name.removeprefix("potaflow-workflow-")
    return int(suffix) if suffix != task.name and suffix.isdigit() else None


def retention_in_force() -> dict[str, dict[str, Any]]:
    """Per finished status: the setting's name and its days (None: kept forever / not configured)."""
    return {
        status: {"setting": name, "days": getattr(settings, name, None)} for status, name in RETENTION_SETTINGS.items()
    }
