"""What ``GET /metrics`` reports, and where each figure comes from.

Two sources, chosen per fact (README "Operating PotaFlow" says why):

**The database, read at scrape time** — everything about runs and attempts:
``potaflow_events_accepted_total{trigger}``, ``potaflow_runs_finished_total{status}``,
``potaflow_runs_dead_lettered_total``, ``potaflow_runs_replayed_total``,
``potaflow_step_attempts_total{action,outcome}``, the histograms
``potaflow_step_duration_seconds{action}`` (closed attempts' ``duration_ms``)
and ``potaflow_run_duration_seconds`` (finished runs), the gauges
``potaflow_runs_unfinished{status}`` and ``potaflow_oldest_unfinished_run_age_seconds``; flow control
(issue 19): ``potaflow_loop_iterations_total{status}`` (iterations of ``for_each`` steps that ended),
``potaflow_approvals_total{decision}`` (approvals given or refused by a member) and the gauge
``potaflow_runs_waiting{kind}`` (waiting runs by what they wait for: delay, webhook, approval).
Runs are written by web processes and finished by workers on any host; the
database is the one place that sees them all, so any web process answers
for the whole installation, nothing is lost when a process restarts, and no
worker needs an HTTP port. All run figures come from **one** grouped query
in one snapshot, so ``accepted = finished + unfinished`` holds exactly in
every scrape. Rows deleted later (retention, a deleted workflow) would make
counters go down; before they go, what they counted is carried into
``MetricBaseline`` (``carry_over``, from a ``pre_delete`` hook) and a scrape
reports rows + baseline. The cost is a few aggregates over the run and
attempt tables per scrape, bounded by retention.

**The web process, counted where it happens** — what leaves no row:
``potaflow_events_rejected_total{reason}`` (a refused webhook creates no run),
``potaflow_webhook_intake_seconds`` and ``potaflow_database_unavailable_total{kind}``
(requests answered 503 while the database did not answer). These use prometheus_client's
multiprocess mode under gunicorn (``PROMETHEUS_MULTIPROC_DIR``, see
``gunicorn.conf.py``) so every gunicorn worker's counts add up in
whichever worker answers the scrape; they are per host (sum them over
instances) and restart from zero with gunicorn (Prometheus' ``rate()``
handles resets).

The gauge ``potaflow_broker_queue_length`` (one sample per queue the workers consume) asks the broker at scrape time
(``core.broker``); it is left out of a scrape when the broker does not answer.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    Case,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from accounts.models import Organization
from core.broker import probe_queue
from integrations.oauth.selectors import connection_counts
from integrations.registry import all_actions

from ..files import services as file_services
from ..flow import tree
from ..models import (
    ACTIVE_RUN_STATUSES,
    UNFINISHED_RUN_STATUSES,
    AttemptOutcome,
    MetricBaseline,
    Run,
    RunStatus,
    RunTrigger,
    StepAttempt,
    StepIteration,
    StepRun,
    StepRunStatus,
    Workflow,
)
from . import heartbeat

logger = logging.getLogger(__name__)

# ``_created`` series double every counter and mean nothing for database-derived ones.
disable_created_metrics()

REJECTION_REASONS = ("signature", "size", "rate", "inactive", "invalid")
# The webhook view's answers, as rejection reasons (see workflows.intake.webhooks for each check).
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
# Counted by potaflow.database_errors, which answers them 503 with Retry-After (never a 500).
REQUEST_KINDS = ("webhook", "api", "page")
DATABASE_UNAVAILABLE = Counter(
    "potaflow_database_unavailable_total",
    "Requests answered 503 (Retry-After) because the database did not answer, by kind (webhook, api, page).",
    ["kind"],
    registry=None,
)
for _kind in REQUEST_KINDS:
    DATABASE_UNAVAILABLE.labels(kind=_kind)


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
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]  # (sample name, sorted labels) -> value


@dataclass(frozen=True)
class RunCounts:
    """Runs by trigger and status, from one query: accepted == finished + unfinished, always; the
    waiting runs by what they wait for (``WAIT_KINDS``; each counts once, by its first waiting
    delay or wait, "other" while its loop iterations run on), so they add up to the waiting ones."""

    by_trigger: dict[str, int]
    by_status: dict[str, int]
    dead_lettered: int
    waiting_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(self.by_trigger.values())

    @property
    def replayed(self) -> int:
        return self.by_trigger.get(RunTrigger.REPLAY, 0)


def run_counts(runs: QuerySet[Run] | None = None) -> RunCounts:
    """Count ``runs`` (default: all) by trigger, status and dead-letter flag in one grouped query."""
    runs = Run.objects.all() if runs is None else runs
    by_trigger = dict.fromkeys(RunTrigger.values, 0)
    by_status = dict.fromkeys(RunStatus.values, 0)
    waiting = dict.fromkeys(WAIT_KINDS, 0)
    dead = 0
    rows = (
        runs.order_by()
        .annotate(wait_kind=_wait_kind())
        .values_list("trigger", "status", "dead_lettered", "wait_kind")
        .annotate(n=Count("pk"))
    )
    for trigger, status, dead_lettered, kind, n in rows:
        by_trigger[trigger] = by_trigger.get(trigger, 0) + n
        by_status[status] = by_status.get(status, 0) + n
        dead += n if dead_lettered else 0
        if status == RunStatus.WAITING:
            waiting[kind or "other"] = waiting.get(kind or "other", 0) + n
    return RunCounts(by_trigger=by_trigger, by_status=by_status, dead_lettered=dead, waiting_by_kind=waiting)


# What a waiting run waits for (its first waiting delay or wait: a wait with a resume token is
# resumed by a POST, one without by a member's approval).
WAIT_KINDS = ("delay", "webhook", "approval")
ITERATION_STATUSES = (StepRunStatus.SUCCEEDED, StepRunStatus.FAILED, StepRunStatus.FILTERED)
APPROVAL_DECISIONS = ("approved", "refused")


def _wait_kind() -> Case:
    """What a run waits for: its first waiting delay or wait (read for waiting runs only)."""
    first = StepRun.objects.filter(
        run=OuterRef("pk"), status=StepRunStatus.WAITING, action_type__in=[tree.DELAY, tree.WAIT]
    ).order_by("position")
    kind = Case(
        When(action_type=tree.DELAY, then=Value("delay")),
        When(resume_token="", then=Value("approval")),
        default=Value("webhook"),
        output_field=CharField(),
    )
    return Case(
        When(status=RunStatus.WAITING, then=Subquery(first.annotate(kind=kind).values("kind")[:1])),
        default=Value(""),
        output_field=CharField(),
    )


def oldest_unfinished_run_age(now: datetime | None = None) -> float | None:
    """Seconds since the oldest queued or running run was accepted; None when there is none.

    A waiting run (a delay, a wait for a POST or an approval) is paused on purpose, for days if
    need be: it is not "behind", so it never ages this figure (nor ``/healthz?strict``)."""
    oldest = Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).aggregate(oldest=Min("created_at"))["oldest"]
    if oldest is None:
        return None
    return max(((now or timezone.now()) - oldest).total_seconds(), 0.0)


def _bucket_counts(field: str, buckets: Iterable[float], to_db: Callable[[float], Any]) -> dict[str, Count]:
    return {f"le_{i}": Count("pk", filter=Q(**{f"{field}__lte": to_db(b)})) for i, b in enumerate(buckets)}


def _le(bound: float) -> str:
    return floatToGoString(bound)  # as prometheus_client writes its own buckets: 0.1, 10.0, +Inf


def _add_histogram(
    samples: Samples, name: str, labels: Labels, row: dict[str, Any], buckets: tuple[float, ...]
) -> None:
    """Cumulative buckets (the row's ``le_<i>`` counts), ``_count`` and ``_sum`` (``row["sum"]``, seconds)."""
    for i, bound in enumerate(buckets):
        samples[(f"{name}_bucket", tuple(sorted((*labels, ("le", _le(bound))))))] = float(row[f"le_{i}"] or 0)
    samples[(f"{name}_bucket", tuple(sorted((*labels, ("le", "+Inf")))))] = float(row["count"] or 0)
    samples[(f"{name}_count", labels)] = float(row["count"] or 0)
    samples[(f"{name}_sum", labels)] = float(row["sum"] or 0)


def counted_samples(
    runs: QuerySet[Run],
    attempts: QuerySet[StepAttempt],
    *,
    deleting: bool = False,
    counts: RunCounts | None = None,
    every_run: bool = False,
) -> Samples:
    """The counter and histogram samples these rows account for (see ``FAMILIES``).

    ``deleting``: the rows are about to be deleted and their counts carried over
    (``carry_over``); a run deleted before it finished then counts as failed, so
    ``accepted = finished + unfinished`` keeps holding. ``counts``: ``run_counts(runs)``
    when the caller has it already. ``every_run``: ``runs`` are all runs (a scrape), so loop
    iterations and approvals are counted without reading the run table again.
    """
    samples: Samples = {}
    counts = counts if counts is not None else run_counts(runs)
    for trigger, n in counts.by_trigger.items():
        samples[("potaflow_events_accepted_total", (("trigger", trigger),))] = n
    abandoned = sum(counts.by_status.get(s, 0) for s in UNFINISHED_RUN_STATUSES) if deleting else 0
    for status in FINISHED_STATUSES:
        extra = abandoned if status == RunStatus.FAILED else 0
        samples[("potaflow_runs_finished_total", (("status", status),))] = counts.by_status.get(status, 0) + extra
    samples[("potaflow_runs_dead_lettered_total", ())] = counts.dead_lettered
    samples[("potaflow_runs_replayed_total", ())] = counts.replayed

    closed = attempts.exclude(outcome="").order_by()
    for action, outcome, n in closed.values_list("step_run__action_type", "outcome").annotate(n=Count("pk")):
        samples[("potaflow_step_attempts_total", (("action", action), ("outcome", outcome)))] = n
    timed = closed.filter(duration_ms__isnull=False).values("step_run__action_type")
    for row in timed.annotate(
        count=Count("pk"),
        total_ms=Sum("duration_ms"),
        **_bucket_counts("duration_ms", STEP_BUCKETS, lambda b: int(b * 1000)),
    ):
        labels = (("action", row["step_run__action_type"]),)
        histogram_row: dict[str, Any] = {**row, "sum": (row["total_ms"] or 0) / 1000}
        _add_histogram(samples, "potaflow_step_duration_seconds", labels, histogram_row, STEP_BUCKETS)

    iterations = StepIteration.objects.all() if every_run else StepIteration.objects.filter(loop__run__in=runs)
    for status, n in (
        iterations.filter(status__in=ITERATION_STATUSES).order_by().values_list("status").annotate(n=Count("pk"))
    ):
        samples[("potaflow_loop_iterations_total", (("status", status),))] = n
    step_runs = StepRun.objects.all() if every_run else StepRun.objects.filter(run__in=runs)
    approvals = step_runs.filter(
        action_type=tree.WAIT, status=StepRunStatus.SUCCEEDED, reused=False, resume_token=""
    ).filter(output__has_keys=["approved", "by"])  # a timed-out approval has neither
    decided = approvals.order_by().aggregate(
        approved=Count("pk", filter=Q(output__approved=True)), refused=Count("pk", filter=Q(output__approved=False))
    )
    for decision in APPROVAL_DECISIONS:
        samples[("potaflow_approvals_total", (("decision", decision),))] = decided[decision] or 0

    run_row = (
        runs.filter(status__in=FINISHED_STATUSES, started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        .aggregate(
            count=Count("pk"),
            total=Sum("duration"),
            **_bucket_counts("duration", RUN_BUCKETS, lambda b: timedelta(seconds=b)),
        )
    )
    total = run_row.pop("total")
    run_row["sum"] = total.total_seconds() if isinstance(total, timedelta) else 0.0
    _add_histogram(samples, "potaflow_run_duration_seconds", (), run_row, RUN_BUCKETS)
    return samples


def _zero_samples() -> Samples:
    """Every series a dashboard expects, at 0: rates and ratios work before the first event."""
    samples: Samples = {}
    zero_hist = {"count": 0, "sum": 0, **{f"le_{i}": 0 for i in range(len(STEP_BUCKETS))}}
    for action in all_actions():
        for outcome in AttemptOutcome.values:
            samples[("potaflow_step_attempts_total", (("action", action), ("outcome", outcome)))] = 0
        _add_histogram(samples, "potaflow_step_duration_seconds", (("action", action),), zero_hist, STEP_BUCKETS)
    for status in ITERATION_STATUSES:
        samples[("potaflow_loop_iterations_total", (("status", status),))] = 0
    return samples


# -- counts that outlive their rows ----------------------------------------------
def _series_key(name: str, labels: Labels) -> str:
    return json.dumps([name, [list(pair) for pair in labels]], separators=(",", ":"))


def baseline_samples() -> Samples:
    """What deleted rows accounted for (``MetricBaseline``), as samples."""
    samples: Samples = {}
    for series, value in MetricBaseline.objects.values_list("series", "value"):
        name, labels = json.loads(series)
        samples[(name, tuple(tuple(pair) for pair in labels))] = value
    return samples


def carry_over(runs: QuerySet[Run]) -> None:
    """Add what ``runs`` and their attempts account for to the baseline, before they are deleted.

    Called (through the ``pre_delete`` hook below) inside the transaction that
    deletes them, so a scrape sees either the rows or the baseline, never both
    or neither, and a counter never goes down when retention prunes runs.
    """
    samples = counted_samples(runs, StepAttempt.objects.filter(step_run__run__in=runs), deleting=True)
    for (name, labels), value in samples.items():
        if not value:
            continue
        key = _series_key(name, labels)
        if MetricBaseline.objects.filter(series=key).update(value=F("value") + value):
            continue
        try:
            with transaction.atomic():
                MetricBaseline.objects.create(series=key, value=value)
        except IntegrityError:  # another deletion created it meanwhile
            MetricBaseline.objects.filter(series=key).update(value=F("value") + value)


# Origins (what ``.delete()`` was called on) whose runs were carried over already: one
# ``carry_over`` per delete call, not one per run. Weak, so nothing outlives its delete.
_carried: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def _runs_deleted_with(origin: Any) -> QuerySet[Run] | None:
    """All runs a delete of ``origin`` removes, when that is known without Django's collector."""
    if isinstance(origin, QuerySet):
        if origin.model is Run:
            return origin.all()
        if origin.model is Workflow:
            return Run.objects.filter(workflow__in=origin.values("pk"))
        return None
    if isinstance(origin, Run):
        return Run.objects.filter(pk=origin.pk)
    if isinstance(origin, Workflow):
        return Run.objects.filter(workflow_id=origin.pk)
    if isinstance(origin, Organization):
        return Run.objects.filter(workflow__organization_id=origin.pk)
    return None


@receiver(pre_delete, sender=Run, dispatch_uid="potaflow-metrics-carry-over-deleted-runs")
def _carry_over_deleted_run(sender: type[Run], instance: Run, origin: Any = None, **kwargs: Any) -> None:
    """Every way a run is deleted (retention, a deleted workflow or organization, the admin) keeps its counts.

    Django sends ``pre_delete`` for every run before it deletes anything, in the
    deleting transaction; the first signal of a delete carries all its runs over.
    """
    if origin is not None and _carried.get(id(origin)) is origin:
        return
    runs = _runs_deleted_with(origin)
    if runs is not None:
        try:
            _carried[id(origin)] = origin
        except TypeError:  # not weak-referenceable: carry this run alone
            runs = None
    carry_over(runs if runs is not None else Run.objects.filter(pk=instance.pk))


# -- the scrape ------------------------------------------------------------------
COUNTERS: tuple[tuple[str, str, list[str]], ...] = (
    (
        "potaflow_events_accepted",
        "Events recorded as runs, by trigger (webhook, schedule, manual, replay).",
        ["trigger"],
    ),
    ("potaflow_runs_finished", "Runs that reached a final status.", ["status"]),
    ("potaflow_runs_dead_lettered", "Failed runs that were dead-lettered.", []),
    ("potaflow_runs_replayed", "Runs started as replays.", []),
    ("potaflow_step_attempts", "Closed step attempts, by action type and outcome.", ["action", "outcome"]),
    ("potaflow_loop_iterations", "Iterations of for_each steps that ended, by status.", ["status"]),
    ("potaflow_approvals", "Approvals decided by a member (wait steps of kind approval), by decision.", ["decision"]),
)
HISTOGRAMS: tuple[tuple[str, str, list[str], tuple[float, ...]], ...] = (
    ("potaflow_step_duration_seconds", "Duration of closed step attempts, by action type.", ["action"], STEP_BUCKETS),
    ("potaflow_run_duration_seconds", "Duration of finished runs (first step start to end).", [], RUN_BUCKETS),
)


@contextmanager
def _one_snapshot() -> Iterator[None]:
    """PostgreSQL: every query of the scrape reads the same snapshot (rows and baseline agree).

    Not on SQLite (development): its transactions take the write lock at BEGIN here.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def database_samples() -> tuple[Samples, RunCounts, float | None]:
    """Counter and histogram samples (rows + baseline), the live run counts and the oldest run's age."""
    with _one_snapshot():
        samples = _zero_samples()
        counts = run_counts()  # one grouped query serves the counters and the unfinished gauge
        counted = counted_samples(Run.objects.all(), StepAttempt.objects.all(), counts=counts, every_run=True)
        for source in (counted, baseline_samples()):
            for key, value in source.items():
                samples[key] = samples.get(key, 0) + value
        age = oldest_unfinished_run_age()
    return samples, counts, age


class DatabaseCollector:
    """The database-derived families (and the broker's queue length), computed at each scrape."""

    def collect(self) -> Iterator[Metric]:
        samples, counts, age = database_samples()
        for name, documentation, label_names in COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=label_names)
            for (sample, labels), value in sorted(samples.items()):
                if sample == f"{name}_total":
                    family.add_metric([dict(labels)[label] for label in label_names], value)
            yield family
        for name, documentation, label_names, buckets in HISTOGRAMS:
            histogram = HistogramMetricFamily(name, documentation, labels=label_names)
            for sample, labels in sorted(samples):
                if sample != f"{name}_count":
                    continue
                bounds = [*(_le(b) for b in buckets), "+Inf"]
                cumulative = [(le, samples[(f"{name}_bucket", tuple(sorted((*labels, ("le", le)))))]) for le in bounds]
                histogram.add_metric(
                    [dict(labels)[label] for label in label_names], cumulative, samples[(f"{name}_sum", labels)]
                )
            yield histogram

        unfinished = GaugeMetricFamily("potaflow_runs_unfinished", "Runs not finished yet.", labels=["status"])
        for status in UNFINISHED_RUN_STATUSES:
            unfinished.add_metric([status], counts.by_status.get(status, 0))
        yield unfinished
        waiting = GaugeMetricFamily(
            "potaflow_runs_waiting",
            "Runs waiting, by what they wait for (delay, webhook: a POST to a resume URL, approval).",
            labels=["kind"],
        )
        for kind, n in counts.waiting_by_kind.items():
            waiting.add_metric([kind], n)
        yield waiting
        connections = GaugeMetricFamily(
            "potaflow_connections",
            "Connections (OAuth credentials) by kind and status; needs_reconnect: steps using them fail.",
            labels=["kind", "status"],
        )
        for (kind, state), n in sorted(connection_counts().items()):
            connections.add_metric([kind, state], n)
        yield connections
        yield GaugeMetricFamily(
            "potaflow_oldest_unfinished_run_age_seconds",
            "Age of the oldest queued or running run (0 when there is none).",
            value=age or 0.0,
        )
        file_bytes, file_count = file_services.usage()
        yield GaugeMetricFamily(
            "potaflow_file_storage_bytes", "Bytes of files kept in the file storage (POTAFLOW_FILE_STORAGE).",
            value=file_bytes,
        )  # fmt: skip
        yield GaugeMetricFamily("potaflow_file_storage_files", "Files kept in the file storage.", value=file_count)
        yield from self._broker()
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        # Workers serve no HTTP: they report themselves in the database (workflows/ops/heartbeat.py).
        workers = heartbeat.alive()
        yield GaugeMetricFamily(
            "potaflow_workers_alive", "Celery workers heard from within three heartbeats.", value=len(workers)
        )
        memory = GaugeMetricFamily(
            "potaflow_worker_resident_memory_bytes",
            "Resident memory of a worker (main process and pool children) at its last heartbeat.",
            labels=["worker"],
        )
        for worker in workers:
            memory.add_metric([worker.name], worker.rss_bytes)
        yield memory

    def _broker(self) -> Iterator[Metric]:
        # Every queue the workers consume: steps and sweeps in the default one, beat's
        # firings in their own (settings.CELERY_TASK_QUEUES).
        gauge = GaugeMetricFamily(
            "potaflow_broker_queue_length", "Messages waiting in a broker queue for a worker.", labels=["queue"]
        )
        for queue in settings.CELERY_TASK_QUEUES:
            try:
                probe = probe_queue(queue.name)
            except Exception as exc:  # noqa: BLE001 - any broker failure: leave the gauge out of this scrape
                logger.warning("metrics: broker queue length unavailable: %s: %s", type(exc).__name__, exc)
                return
            gauge.add_metric([probe.queue], probe.length)
        yield gauge


class _InProcessCollector:
    """This process's live counters, when there is no multiprocess folder (runserver, tests)."""

    def collect(self) -> Iterator[Metric]:
        yield from EVENTS_REJECTED.collect()
        yield from WEBHOOK_INTAKE.collect()
        yield from DATABASE_UNAVAILABLE.collect()


def scrape_registry() -> CollectorRegistry:
    """A registry holding everything one scrape reports (built per scrape; nothing is global)."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_InProcessCollector())
    registry.register(DatabaseCollector())
    return registry
