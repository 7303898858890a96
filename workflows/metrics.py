"""What ``GET /metrics`` reports, and where each figure comes from.

Two sources, chosen per fact (README "Operating PotaFlow" says why):

**The database, read at scrape time** — everything about runs and attempts:
``potaflow_events_accepted_total{trigger}``, ``potaflow_runs_finished_total{status}``,
``potaflow_runs_dead_lettered_total``, ``potaflow_runs_replayed_total``,
``potaflow_step_attempts_total{action,outcome}``, the histograms
``potaflow_step_duration_seconds{action}`` (closed attempts' ``duration_ms``)
and ``potaflow_run_duration_seconds`` (finished runs), the gauges
``potaflow_runs_unfinished{status}`` and ``potaflow_oldest_unfinished_run_age_seconds``.
Runs are written by web processes and finished by workers on any host; the
database is the one place that sees them all, so any web process answers
for the whole installation, nothing is lost when a process restarts, and no
worker needs an HTTP port. All run figures come from **one** grouped query
(one snapshot), so ``accepted = finished + unfinished`` holds exactly in
every scrape. The cost is one aggregate over the runs and one over the
attempts per scrape, bounded by retention.

**The web process, counted where it happens** — what leaves no row:
``potaflow_events_rejected_total{reason}`` (a refused webhook creates no run)
and ``potaflow_webhook_intake_seconds``. These use prometheus_client's
multiprocess mode under gunicorn (``PROMETHEUS_MULTIPROC_DIR``, see
``potaflow/gunicorn_config.py``) so every gunicorn worker's counts add up in
whichever worker answers the scrape; they are per host (sum them over
instances) and restart from zero with gunicorn (Prometheus' ``rate()``
handles resets).

The gauge ``potaflow_broker_queue_length`` asks the broker at scrape time
(``potaflow.broker``); it is left out of a scrape when the broker does not answer.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from integrations.registry import all_actions

from .models import UNFINISHED_RUN_STATUSES, AttemptOutcome, Run, RunStatus, RunTrigger, StepAttempt

logger = logging.getLogger(__name__)

# ``_created`` series double every counter and mean nothing for database-derived ones.
disable_created_metrics()

REJECTION_REASONS = ("signature", "size", "rate", "inactive", "invalid")
# The webhook view's answers, as rejection reasons (see workflows.webhooks for each check).
REJECTION_BY_STATUS = {401: "signature", 413: "size", 429: "rate", 404: "inactive", 400: "invalid", 411: "invalid"}
FINISHED_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.FILTERED)

INTAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0)

# Not registered anywhere: a scrape collects them itself (multiprocess files or these objects).
EVENTS_REJECTED = Counter(
    "potaflow_events_rejected_total",
    "Webhook events refused before a run existed, by reason "
    "(signature 401, size 413, rate 429, inactive 404, invalid 400/411).",
    ["reason"],
    registry=None,
)
WEBHOOK_INTAKE = Histogram(
    "potaflow_webhook_intake_seconds",
    "Time to answer a webhook event that was accepted (202) or recognised as a duplicate (200).",
    buckets=INTAKE_BUCKETS,
    registry=None,
)
for _reason in REJECTION_REASONS:
    EVENTS_REJECTED.labels(reason=_reason)  # every series exists from the start, at 0


def multiprocess_dir() -> str | None:
    """The folder gunicorn's workers share their counts in, or None (one process: counts in memory)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# -- counting at the webhook ---------------------------------------------------
def observe_intake(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Count the webhook view's refusals by reason and time its accepted answers.

    The view's status says what happened (each check has its own status, see
    ``REJECTION_BY_STATUS``); a 5xx is neither an acceptance nor a refusal.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        started = time.perf_counter()
        response = view(request, *args, **kwargs)
        status = response.status_code
        if status in (200, 202):
            WEBHOOK_INTAKE.observe(time.perf_counter() - started)
        elif status in REJECTION_BY_STATUS:
            EVENTS_REJECTED.labels(reason=REJECTION_BY_STATUS[status]).inc()
        return response

    return wrapper


# -- reading the database ------------------------------------------------------
@dataclass(frozen=True)
class RunCounts:
    """Runs by trigger and status, from one query: accepted == finished + unfinished, always."""

    by_trigger: dict[str, int]
    by_status: dict[str, int]
    dead_lettered: int

    @property
    def accepted(self) -> int:
        return sum(self.by_trigger.values())

    @property
    def replayed(self) -> int:
        return self.by_trigger.get(RunTrigger.REPLAY, 0)


def run_counts(runs: Any = None) -> RunCounts:
    """Count ``runs`` (default: all) by trigger, status and dead-letter flag in one grouped query."""
    runs = Run.objects.all() if runs is None else runs
    by_trigger = dict.fromkeys(RunTrigger.values, 0)
    by_status = dict.fromkeys(RunStatus.values, 0)
    dead = 0
    rows = runs.order_by().values_list("trigger", "status", "dead_lettered").annotate(n=Count("pk"))
    for trigger, status, dead_lettered, n in rows:
        by_trigger[trigger] = by_trigger.get(trigger, 0) + n
        by_status[status] = by_status.get(status, 0) + n
        dead += n if dead_lettered else 0
    return RunCounts(by_trigger=by_trigger, by_status=by_status, dead_lettered=dead)


def oldest_unfinished_run_age(now: datetime | None = None) -> float | None:
    """Seconds since the oldest queued or running run was accepted; None when there is none."""
    oldest = Run.objects.filter(status__in=UNFINISHED_RUN_STATUSES).aggregate(oldest=Min("created_at"))["oldest"]
    if oldest is None:
        return None
    return max(((now or timezone.now()) - oldest).total_seconds(), 0.0)


def _bucket_counts(field: str, buckets: Iterable[float], to_db: Callable[[float], Any]) -> dict[str, Count]:
    return {f"le_{i}": Count("pk", filter=Q(**{f"{field}__lte": to_db(b)})) for i, b in enumerate(buckets)}


@dataclass(frozen=True)
class HistogramData:
    buckets: list[tuple[str, float]]  # cumulative (le, count), ending with +Inf
    sum_seconds: float


def _histogram(row: dict[str, Any], buckets: tuple[float, ...], sum_seconds: float) -> HistogramData:
    cumulative = [(_le(b), float(row[f"le_{i}"])) for i, b in enumerate(buckets)]
    cumulative.append(("+Inf", float(row["count"])))
    return HistogramData(buckets=cumulative, sum_seconds=sum_seconds)


def _le(bound: float) -> str:
    return floatToGoString(bound)  # as prometheus_client writes its own buckets: 0.1, 10.0, +Inf


def attempt_counts() -> dict[tuple[str, str], int]:
    """Closed attempts by (action type, outcome); an attempt still running has no outcome yet."""
    rows = (
        StepAttempt.objects.exclude(outcome="")
        .order_by()
        .values_list("step_run__action_type", "outcome")
        .annotate(n=Count("pk"))
    )
    return {(action, outcome): n for action, outcome, n in rows}


def step_duration_histograms() -> dict[str, HistogramData]:
    """Durations of closed attempts, per action type (what each attempt took, retries included)."""
    rows = (
        StepAttempt.objects.exclude(outcome="")
        .filter(duration_ms__isnull=False)
        .order_by()
        .values("step_run__action_type")
        .annotate(
            count=Count("pk"),
            total_ms=Sum("duration_ms"),
            **_bucket_counts("duration_ms", STEP_BUCKETS, lambda b: int(b * 1000)),
        )
    )
    return {row["step_run__action_type"]: _histogram(row, STEP_BUCKETS, (row["total_ms"] or 0) / 1000) for row in rows}


def run_duration_histogram() -> HistogramData:
    """Durations (start of the first step to the end) of finished runs."""
    row = (
        Run.objects.filter(status__in=FINISHED_STATUSES, started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        .aggregate(
            count=Count("pk"),
            total=Sum("duration"),
            **_bucket_counts("duration", RUN_BUCKETS, lambda b: timedelta(seconds=b)),
        )
    )
    total = row["total"]
    return _histogram(row, RUN_BUCKETS, total.total_seconds() if isinstance(total, timedelta) else 0.0)


# -- the scrape ------------------------------------------------------------------
class DatabaseCollector:
    """The database-derived families (and the broker's queue length), computed at each scrape."""

    def collect(self) -> Iterator[Metric]:
        counts = run_counts()
        accepted = CounterMetricFamily(
            "potaflow_events_accepted", "Events recorded as runs, by trigger (webhook, schedule, manual, replay).",
            labels=["trigger"],
        )  # fmt: skip
        for trigger, n in sorted(counts.by_trigger.items()):
            accepted.add_metric([trigger], n)
        yield accepted

        finished = CounterMetricFamily("potaflow_runs_finished", "Runs that reached a final status.", labels=["status"])
        for status in FINISHED_STATUSES:
            finished.add_metric([status], counts.by_status.get(status, 0))
        yield finished
        yield CounterMetricFamily(
            "potaflow_runs_dead_lettered", "Failed runs that were dead-lettered.", value=counts.dead_lettered
        )
        yield CounterMetricFamily("potaflow_runs_replayed", "Runs started as replays.", value=counts.replayed)

        unfinished = GaugeMetricFamily("potaflow_runs_unfinished", "Runs not finished yet.", labels=["status"])
        for status in UNFINISHED_RUN_STATUSES:
            unfinished.add_metric([status], counts.by_status.get(status, 0))
        yield unfinished
        yield GaugeMetricFamily(
            "potaflow_oldest_unfinished_run_age_seconds",
            "Age of the oldest queued or running run (0 when there is none).",
            value=oldest_unfinished_run_age() or 0.0,
        )

        yield from self._attempts()
        run_hist = run_duration_histogram()
        family = HistogramMetricFamily("potaflow_run_duration_seconds", "Duration of finished runs.")
        family.add_metric([], run_hist.buckets, run_hist.sum_seconds)
        yield family
        yield from self._broker()

    def _attempts(self) -> Iterator[Metric]:
        counts = attempt_counts()
        actions = sorted(set(all_actions()) | {action for action, _ in counts})
        attempts = CounterMetricFamily(
            "potaflow_step_attempts", "Closed step attempts, by action type and outcome.", labels=["action", "outcome"]
        )
        for action in actions:
            for outcome in AttemptOutcome.values:
                attempts.add_metric([action, outcome], counts.get((action, outcome), 0))
        yield attempts

        histograms = step_duration_histograms()
        durations = HistogramMetricFamily(
            "potaflow_step_duration_seconds", "Duration of closed step attempts, by action type.", labels=["action"]
        )
        empty = HistogramData(buckets=[(_le(b), 0.0) for b in STEP_BUCKETS] + [("+Inf", 0.0)], sum_seconds=0.0)
        for action in sorted(set(actions) | set(histograms)):
            data = histograms.get(action, empty)
            durations.add_metric([action], data.buckets, data.sum_seconds)
        yield durations

    def _broker(self) -> Iterator[Metric]:
        from potaflow.broker import probe_queue

        try:
            probe = probe_queue()
        except Exception as exc:  # noqa: BLE001 - any broker failure: leave the gauge out of this scrape
            logger.warning("metrics: broker queue length unavailable: %s: %s", type(exc).__name__, exc)
            return
        yield GaugeMetricFamily(
            "potaflow_broker_queue_length",
            f"Messages waiting in the broker's {probe.queue!r} queue for a worker.",
            value=probe.length,
        )


class _InProcessCollector:
    """This process's live counters, when there is no multiprocess folder (runserver, tests)."""

    def collect(self) -> Iterator[Metric]:
        yield from EVENTS_REJECTED.collect()
        yield from WEBHOOK_INTAKE.collect()


def scrape_registry() -> CollectorRegistry:
    """A registry holding everything one scrape reports (built per scrape; nothing is global)."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_InProcessCollector())
    registry.register(DatabaseCollector())
    return registry
