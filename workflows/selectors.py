"""Reads of workflows and runs, scoped to what a user may see: the API, the admin, the live view and stats use these.

Tenancy itself is decided in ``accounts.selectors.scope_to_user``; a
superuser sees every organization's workflows and runs here (the admin and the
live view), while the API scopes superusers like everyone else.
"""

import itertools
import math
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, DurationField, ExpressionWrapper, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.models import Organization, Role, User
from accounts.selectors import organizations_for, scope_to_user, sole_organization

from .models import FileState, Run, RunFile, RunStatus, TestRun, TestRunStatus, Workflow

STATS_WINDOW = timedelta(hours=24)


def workflows_visible_to(user: User) -> QuerySet:
    """Every workflow for a superuser, their organizations' otherwise."""
    workflows = Workflow.objects.all()
    return workflows if user.is_superuser else scope_to_user(workflows, user)


def runs_visible_to(user: User) -> QuerySet:
    """Runs (with their workflow and organization) the user may see: every run for a superuser."""
    runs = Run.objects.select_related("workflow", "workflow__organization")
    return runs if user.is_superuser else scope_to_user(runs, user, organization_field="workflow__organization")


def organization_for_new_workflow(user: User, requested: int | None) -> Organization:
    """Where a new (created or imported) workflow goes: the organization named, or the user's only one.

    Either way the user must be an editor (or above) there. Raises
    ``ValidationError`` on ``organization`` (not an editor of the one named,
    or several to choose from), ``PermissionDenied`` when they edit nowhere.
    """
    editable = organizations_for(user, minimum_role=Role.EDITOR)
    if requested is not None:
        organization = editable.filter(pk=requested).first()
        if organization is None:
            raise ValidationError({"organization": [f"You are not an editor (or above) of organization {requested}."]})
        return organization
    organization = sole_organization(editable)
    if organization is not None:
        return organization
    if not editable.exists():
        raise PermissionDenied("Creating a workflow needs the editor role in an organization.")
    raise ValidationError(
        {"organization": ["You belong to several organizations: say which one this workflow is for."]}
    )


def with_run_summary(workflows: QuerySet, *, now: datetime | None = None) -> QuerySet:
    """Annotate each workflow with its last run (``last_run_status``, ``last_run_at``) and ``runs_last_24h``."""
    last = Run.objects.filter(workflow=OuterRef("pk")).order_by("-created_at")
    since = (now or timezone.now()) - timedelta(hours=24)
    return workflows.annotate(
        last_run_status=Subquery(last.values("status")[:1]),
        last_run_at=Subquery(last.values("created_at")[:1]),
        runs_last_24h=Count("runs", filter=Q(runs__created_at__gte=since)),
    )


def _percentile(durations: QuerySet, count: int, fraction: float) -> int | None:
    """Nearest-rank percentile of an ordered duration queryset of ``count`` rows, in ms."""
    if count == 0:
        return None
    index = max(math.ceil(fraction * count), 1) - 1
    value = durations[index : index + 1].values_list("duration", flat=True).first()
    return int(value.total_seconds() * 1000) if value is not None else None


def run_stats(runs: QuerySet, *, now: Any = None) -> dict[str, Any]:
    """Aggregate ``runs`` (already scoped) created in the 24 h before ``now``.

    Percentiles are computed in the database by ordering on the duration and
    reading one row at the rank (nearest-rank method), so the same code runs on
    PostgreSQL and SQLite and never loads a day of runs into memory.
    """
    now = now or timezone.now()
    since = now - STATS_WINDOW
    window = runs.filter(created_at__gte=since, created_at__lte=now)
    counts = dict(window.order_by().values_list("status").annotate(n=Count("pk")))
    by_status = {status: counts.get(status, 0) for status in RunStatus.values}
    decided = by_status[RunStatus.SUCCEEDED] + by_status[RunStatus.FAILED]
    durations = (
        window.filter(started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        .order_by("duration", "pk")
    )
    finished = durations.count()
    return {
        "window_start": since,
        "window_end": now,
        "total": sum(by_status.values()),
        "by_status": by_status,
        "dead_lettered": window.filter(dead_lettered=True).count(),
        "success_rate": round(by_status[RunStatus.SUCCEEDED] / decided, 4) if decided else None,
        "duration_ms": {
            "count": finished,
            "p50": _percentile(durations, finished, 0.50),
            "p95": _percentile(durations, finished, 0.95),
        },
    }


def run_files(run: Run) -> QuerySet[RunFile]:
    """The files a run owns (uploads and what its steps wrote), ready ones only, oldest first.

    A replay shares its original's files (the same payload references them): listed on the
    run that owns them, and on the replay once its original is gone (``hand_over_to_replays``).
    """
    referenced = _payload_file_ids(run.payload)
    owned = Q(run=run)
    if referenced:  # a replay's uploads: its original's, the same organization's
        owned |= Q(pk__in=referenced, organization_id=run.workflow.organization_id)
    return RunFile.objects.filter(owned, state=FileState.READY).order_by("created_at", "id")


def _payload_file_ids(payload: Any) -> list[str]:
    files = payload.get("files") if isinstance(payload, dict) else None
    if not isinstance(files, dict):
        return []
    refs = [ref for value in files.values() for ref in (value if isinstance(value, list) else [value])]
    return [ref["id"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("id"), str)][:100]


def run_file_for(run: Run, file_id: Any) -> RunFile | None:
    """One of ``run``'s files by id (None: not this run's, malformed, or not ready)."""
    try:
        return run_files(run).filter(pk=file_id).first()
    except ValidationError:
        return None


# Web threads that may wait for a test run's result at once (per process); the others answer 202 at once.
_test_waiters = threading.BoundedSemaphore(settings.POTAFLOW_WEB_HEAVY_SLOTS)
TEST_RUN_POLL_SECONDS = (0.05, 0.1, 0.2, 0.3)


def test_run_result(test_id: Any, *, wait_seconds: float = 0.0) -> TestRun:
    """The test run, waiting up to ``wait_seconds`` for it to finish (when a waiter slot of this process is free).

    Waiting holds a web thread, so at most ``POTAFLOW_WEB_HEAVY_SLOTS`` (an
    eighth of the threads) wait at once; the rest get the unfinished row
    and the client polls.
    """
    test = TestRun.objects.get(pk=test_id)
    if test.status in (TestRunStatus.DONE, TestRunStatus.FAILED) or wait_seconds <= 0:
        return test
    if not _test_waiters.acquire(blocking=False):
        return test
    try:
        deadline = time.monotonic() + wait_seconds
        for attempt in itertools.count():
            pause = TEST_RUN_POLL_SECONDS[min(attempt, len(TEST_RUN_POLL_SECONDS) - 1)]
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(pause, left))
            test = TestRun.objects.get(pk=test_id)
            if test.status in (TestRunStatus.DONE, TestRunStatus.FAILED):
                break
    finally:
        _test_waiters.release()
    return test
