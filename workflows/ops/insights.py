"""Insights: runs over time by status, failure rate, run duration p50/p95, dead letters and the steps
that fail most, per organization or per workflow, for the last 24 h / 7 d / 30 d beside the period before.

Read from the rollup tables (``RunRollup``, ``StepFailureRollup``), never from the runs: the database
writes them in the statement that finishes a run (migration ``*_insights_rollups``), so a page
costs a few index range reads whatever the number of runs, and keeps its history after retention has
pruned the runs. A run counts in the hour and the day (UTC) it was received in, as ``/api/stats/``
counts runs by ``created_at``; only finished runs are counted (queued, running or waiting ones are
not yet). The 24 h window is the current hour and the 23 before it, by the hour; 7 d and 30 d are
the current day and the days before it, by the day.

Durations are counted in logarithmic buckets of ratio ``DURATION_BASE`` (bucket ``k >= 1`` holds
``[BASE**(k-1), BASE**k)`` ms, bucket 0 under 1 ms); a percentile is the geometric middle of the
bucket holding its nearest rank, within 2.5 % of the exact value ``/api/stats/`` gives for the same runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Max, QuerySet, Sum
from django.utils import timezone

from ..models import RollupGrain, RunRollup, RunStatus, StepFailureRollup, Workflow

DURATION_BASE = 1.05  # spelled as "1.05" in the triggers of migration *_insights_rollups
COUNTED_STATUSES = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.FILTERED.value)
TOP_STEPS = 10
TOP_ERRORS = 3


@dataclass(frozen=True)
class Window:
    name: str
    grain: str
    buckets: int

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.grain == RollupGrain.HOUR else timedelta(days=1)


WINDOWS = {
    "24h": Window("24h", RollupGrain.HOUR, 24),
    "7d": Window("7d", RollupGrain.DAY, 7),
    "30d": Window("30d", RollupGrain.DAY, 30),
}


def bounds(window: Window, now: datetime) -> tuple[datetime, datetime, datetime]:
    """(previous period's start, this period's start, end): whole hours or days, UTC, ending after ``now``."""
    now = now.astimezone(UTC)
    if window.grain == RollupGrain.HOUR:
        current = now.replace(minute=0, second=0, microsecond=0)
    else:
        current = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = current + window.step
    start = end - window.step * window.buckets
    return start - window.step * window.buckets, start, end


def duration_bucket_value(bucket: int) -> int:
    """What a duration bucket stands for, in ms: the geometric middle of its range."""
    return 0 if bucket <= 0 else round(DURATION_BASE ** (bucket - 0.5))


def percentile(histogram: dict[int, int], fraction: float) -> int | None:
    """Nearest-rank percentile of the durations counted in ``histogram`` (bucket → runs)."""
    count = sum(n for n in histogram.values() if n > 0)
    if count == 0:
        return None
    rank = max(math.ceil(fraction * count), 1)
    seen = 0
    for bucket in sorted(histogram):
        seen += max(histogram[bucket], 0)
        if seen >= rank:
            return duration_bucket_value(bucket)
    return None  # pragma: no cover - the ranks add up to count


def failure_rate(counts: dict[str, int]) -> float | None:
    """failed / (succeeded + failed): ``1 - success_rate`` of /api/stats/ (filtered runs count for neither)."""
    decided = counts.get(RunStatus.SUCCEEDED, 0) + counts.get(RunStatus.FAILED, 0)
    return round(counts.get(RunStatus.FAILED, 0) / decided, 4) if decided else None


def _scoped(model: type[Any], organization_ids: Sequence[int], workflow_id: int | None) -> QuerySet:
    rows = model.objects.filter(organization_id__in=list(organization_ids))
    return rows.filter(workflow_id=workflow_id) if workflow_id is not None else rows


def _histograms(
    organization_ids: Sequence[int], workflow_id: int | None, grain: str, since: datetime, until: datetime
) -> dict[datetime, dict[int, int]]:
    """Duration buckets summed per rollup start, in the database (one row per start and bucket)."""
    if not organization_ids:
        return {}
    table = RunRollup._meta.db_table
    marks = ", ".join(["%s"] * len(organization_ids))
    if connection.vendor == "postgresql":
        each, value = "CROSS JOIN LATERAL jsonb_each_text(r.durations) d", "d.value::integer"
    else:
        each, value = ", json_each(r.durations) d", "CAST(d.value AS INTEGER)"
    sql = (
        f"SELECT r.start, d.key, SUM({value}) FROM {table} r {each}"  # noqa: S608 - names are ours; values are parameters
        f" WHERE r.organization_id IN ({marks}) AND r.grain = %s AND r.start >= %s AND r.start < %s"
    )
    params: list[Any] = [*organization_ids, grain, since, until]
    if workflow_id is not None:
        sql += " AND r.workflow_id = %s"
        params.append(workflow_id)
    sql += " GROUP BY r.start, d.key"
    out: dict[datetime, dict[int, int]] = defaultdict(dict)
    field = RunRollup._meta.get_field("start")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for start, key, n in cursor.fetchall():
            if not isinstance(start, datetime):  # SQLite hands back text
                start = field.to_python(start)
            start = _aware(start)
            out[start][int(key)] = out[start].get(int(key), 0) + int(n or 0)
    return out


def _aware(value: datetime) -> datetime:
    return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value.astimezone(UTC)


def _merge(histograms: Iterable[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = defaultdict(int)
    for histogram in histograms:
        for bucket, n in histogram.items():
            total[bucket] += n
    return dict(total)


def _period(
    buckets: list[dict[str, Any]], histograms: dict[datetime, dict[int, int]], starts: list[datetime]
) -> dict[str, Any]:
    totals: dict[str, int] = {status: 0 for status in COUNTED_STATUSES}
    totals.update(runs=0, dead_lettered=0, timed_runs=0, duration_ms_sum=0)
    for bucket in buckets:
        for name in totals:
            totals[name] += bucket[name]
    merged = _merge(histograms.get(start, {}) for start in starts)
    return {
        "totals": totals,
        "failure_rate": failure_rate(totals),
        "p50_ms": percentile(merged, 0.50),
        "p95_ms": percentile(merged, 0.95),
    }


def insights(
    *, organization_ids: Sequence[int], workflow_id: int | None = None, window: str = "24h", now: datetime | None = None
) -> dict[str, Any]:
    """The figures of one window and the period before it (see the module docstring). ``window``: a WINDOWS key."""
    spec = WINDOWS[window]
    previous_start, start, end = bounds(spec, now or timezone.now())
    rows = (
        _scoped(RunRollup, organization_ids, workflow_id)
        .filter(grain=spec.grain, start__gte=previous_start, start__lt=end)
        .values("start", "status")
        .annotate(runs=Sum("runs"), dead=Sum("dead_lettered"), timed=Sum("timed"), duration_sum=Sum("duration_ms_sum"))
        .order_by()
    )
    histograms = _histograms(organization_ids, workflow_id, spec.grain, previous_start, end)
    starts = [previous_start + spec.step * i for i in range(spec.buckets * 2)]
    by_start: dict[datetime, dict[str, Any]] = {}
    for bucket_start in starts:
        by_start[bucket_start] = {
            "start": bucket_start,
            **{status: 0 for status in COUNTED_STATUSES},
            "runs": 0,
            "dead_lettered": 0,
            "timed_runs": 0,
            "duration_ms_sum": 0,
        }
    for row in rows:
        bucket = by_start.get(_aware(row["start"]))
        if bucket is None or row["status"] not in COUNTED_STATUSES:
            continue
        bucket[row["status"]] += row["runs"] or 0
        bucket["runs"] += row["runs"] or 0
        bucket["dead_lettered"] += row["dead"] or 0
        bucket["timed_runs"] += row["timed"] or 0
        bucket["duration_ms_sum"] += row["duration_sum"] or 0
    for bucket_start, bucket in by_start.items():
        histogram = histograms.get(bucket_start, {})
        bucket["failure_rate"] = failure_rate(bucket)
        bucket["p50_ms"] = percentile(histogram, 0.50)
        bucket["p95_ms"] = percentile(histogram, 0.95)
    previous_starts, current_starts = starts[: spec.buckets], starts[spec.buckets :]
    current = [by_start[s] for s in current_starts]
    previous = [by_start[s] for s in previous_starts]
    this_period = _period(current, histograms, current_starts)
    before = _period(previous, histograms, previous_starts)
    return {
        "workflow": workflow_id,
        "window": spec.name,
        "grain": spec.grain,
        "start": start,
        "end": end,
        "buckets": current,
        **this_period,
        "previous": {"start": previous_start, "end": start, "buckets": previous, **before},
        "top_failing_steps": top_failing_steps(organization_ids, workflow_id, spec.grain, start, end),
    }


def top_failing_steps(
    organization_ids: Sequence[int], workflow_id: int | None, grain: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The steps with the most failed instances in the period, each with its most frequent error texts."""
    rows = (
        _scoped(StepFailureRollup, organization_ids, workflow_id)
        .filter(grain=grain, start__gte=start, start__lt=end)
        .values("workflow_id", "step_key", "error")
        .annotate(n=Sum("failures"), action_type=Max("action_type"))
        .filter(n__gt=0)
        .order_by()
    )
    steps: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        step = steps.setdefault(
            (row["workflow_id"], row["step_key"]),
            {
                "workflow": row["workflow_id"],
                "step": row["step_key"],
                "action_type": row["action_type"],
                "failures": 0,
                "top_errors": [],
            },
        )
        step["failures"] += row["n"]
        step["top_errors"].append({"error": row["error"], "count": row["n"]})
    top = sorted(steps.values(), key=lambda s: (-s["failures"], s["workflow"], s["step"]))[:TOP_STEPS]
    names = dict(Workflow.objects.filter(pk__in={s["workflow"] for s in top}).values_list("pk", "name"))
    for step in top:
        step["workflow_name"] = names.get(step["workflow"])
        step["top_errors"] = sorted(step["top_errors"], key=lambda e: (-e["count"], e["error"]))[:TOP_ERRORS]
    return top


def prune_rollups(now: datetime | None = None) -> int:
    """Delete hourly rollups older than POTAFLOW_INSIGHTS_HOURLY_DAYS and daily ones older than
    POTAFLOW_INSIGHTS_DAILY_DAYS (retention calls it); returns the rows deleted."""
    now = now or timezone.now()
    deleted = 0
    for grain, days in (
        (RollupGrain.HOUR, settings.POTAFLOW_INSIGHTS_HOURLY_DAYS),
        (RollupGrain.DAY, settings.POTAFLOW_INSIGHTS_DAILY_DAYS),
    ):
        cutoff = now - timedelta(days=days)
        for model in (RunRollup, StepFailureRollup):
            deleted += model.objects.filter(grain=grain, start__lt=cutoff).delete()[0]
    return deleted


def rebuild_rollups() -> None:
    """Recount every rollup from the runs still stored, in one set-based pass (PostgreSQL).

    For bulk loads made with the triggers off (``bench/growth.py``); it replaces the rollups, so the
    history of runs pruned since is lost: not for a live database. The triggers write the same rows
    one run at a time (a test holds the two to the same result).
    """
    if connection.vendor != "postgresql":
        raise NotImplementedError("rebuild_rollups is a PostgreSQL function (migration *_insights_rollups).")
    with connection.cursor() as cursor:
        cursor.execute("SELECT potaflow_insights_rebuild()")
