"""Beat's scheduler: django-celery-beat's ``DatabaseScheduler``, made to hold 10,000 schedules.

Why: ``DatabaseScheduler`` sends one due entry per tick, and every tick
compares the whole schedule with a copy of it, asks the database whether
anything changed and publishes one message; every few minutes it saves each
entry with a SELECT and an UPDATE. That is ~4.6 ms of beat CPU per due
schedule, so 10,000 schedules firing the same minute took ~46 s of a core.

This subclass keeps the tables and their meaning (``PeriodicTask`` rows written
by ``workflows.scheduling.schedules``, ``enabled``, ``last_run_at``, crontab time zones,
``PeriodicTasks.last_update`` as the change signal) and changes the mechanics:

- entries sit in a heap by their next due time; one tick sends everything due;
- each tick asks ``PeriodicTasks.last_update`` once; when it moved, one scan of
  ``(id, date_changed)`` finds the rows added, edited, disabled or deleted and
  only those are rebuilt (a changed ``CrontabSchedule`` rebuilds its entries);
- a crontab's next run comes from the cron rule (``workflows.scheduling.cron``: POSIX
  cron's meaning, the one every preview shows, not Celery's crontab, which ANDs day of
  month and day of week), computed once per crontab and minute for all its entries;
- due PotaFlow firings (``workflows.fire_schedule`` rows) of one scheduled
  minute go as ``workflows.fire_schedules`` messages of up to
  ``POTAFLOW_SCHEDULE_BATCH_SIZE`` workflows, the scheduled minute in the message;
- what a tick sent gets its ``last_run_at``/``total_run_count`` in one UPDATE.

Rows that use django-celery-beat features PotaFlow's schedules do not
(intervals such as the recovery sweeper, ``start_time``, ``expires``,
``one_off``, solar, clocked) keep its ``ModelEntry`` logic, in the same heap.

Firing time: a firing is for the latest crontab occurrence at or before the
moment it is sent (after a restart or an outage that is the most recent missed
one, as before; a broker error leaves the entry due and it is retried), and the
worker records one run per workflow and minute, so a repeat is never a second run.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import celery.schedules
from celery import Celery
from celery.beat import ScheduleEntry
from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections
from django.db.models import F
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from .cron import Cron, ScheduleError, cron_expression
from .leader import Leadership
from .schedules import FIRE_BATCH_TASK, FIRE_TASK

logger = logging.getLogger(__name__)

# Most occurrences walked to find the latest one before now (a year of every minute is 525,600).
MAX_CATCH_UP_STEPS = 10_000
# Seconds before an entry whose message could not be sent is tried again.
SEND_RETRY_SECONDS = 1.0
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")
LOAD_CHUNK = 2_000


class CronEntry(ScheduleEntry):
    """A plain crontab ``PeriodicTask`` row: ``next_at`` is its next occurrence (epoch seconds)."""

    # Always set here (ScheduleEntry's types allow None for entries built field by field).
    name: str
    task: str
    last_run_at: datetime
    schedule: celery.schedules.crontab
    kwargs: dict[str, Any]
    options: dict[str, Any]

    def __init__(self, model: PeriodicTask, crontab_id: int, schedule: celery.schedules.crontab, app: Celery) -> None:
        headers = json.loads(model.headers or "{}")
        headers["periodic_task_name"] = model.name
        options = {
            option: getattr(model, option)
            for option in ("queue", "exchange", "routing_key", "priority")
            if getattr(model, option) is not None
        }
        super().__init__(
            name=model.name,
            task=model.task,
            last_run_at=model.last_run_at or model.date_changed or datetime.now(UTC),
            total_run_count=model.total_run_count,
            schedule=schedule,
            args=json.loads(model.args or "[]"),
            kwargs=json.loads(model.kwargs or "{}"),
            options={**options, "headers": headers},
            app=app,
        )
        self.id = model.pk
        self.date_changed = model.date_changed
        self.crontab_id = crontab_id
        self.next_at = 0.0
        self.token = 0

    @property
    def workflow_id(self) -> int | None:
        """The workflow a PotaFlow firing is for, when it can go in a batch."""
        if self.task != FIRE_TASK or self.args or set(self.kwargs) != {"workflow_id"}:
            return None
        if set(self.options) != {"headers"} or set(self.options["headers"]) != {"periodic_task_name"}:
            return None  # a queue, routing or header of its own: sent as it is
        workflow_id = self.kwargs["workflow_id"]
        return workflow_id if isinstance(workflow_id, int) else None


class BeatModelEntry(ModelEntry):
    """django-celery-beat's ``ModelEntry`` with what the heap keeps on it (set by ``HeapDatabaseScheduler``)."""

    id: int
    date_changed: datetime
    token: int
    name: str
    last_run_at: datetime  # ModelEntry.__init__ always sets it (the row's, else date_changed or now)


# What the heap holds, by PeriodicTask id.
HeapEntry = CronEntry | BeatModelEntry


def is_plain_crontab(model: PeriodicTask) -> bool:
    """Rows the fast path handles; anything else keeps ``ModelEntry``'s logic."""
    return (
        model.crontab_id is not None
        and model.start_time is None
        and model.expires is None
        and model.expire_seconds is None
        and not model.one_off
    )


class HeapDatabaseScheduler(DatabaseScheduler):
    """``DatabaseScheduler`` with entries in a heap by due time and incremental reloads (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._entries: dict[int, HeapEntry] = {}  # PeriodicTask id -> its entry
        self._queue: list[tuple[float, int, HeapEntry]] = []  # (when, token, entry)
        self._tokens = itertools.count(1)
        self._crontabs: dict[int, tuple[Any, ...]] = {}  # id -> the fields its schedule was built from
        self._schedules: dict[int, celery.schedules.crontab] = {}  # id -> TzAwareCrontab, shared by its entries
        self._crons: dict[int, Cron] = {}  # id -> the cron rule of its fields, shared by its entries
        self._next_cache: dict[tuple[int, int], float] = {}
        self._loaded = False
        self._changed_at: datetime | None = None
        self.clock = time.time  # epoch seconds; the tests set their own
        self.batch_size = max(1, int(getattr(settings, "POTAFLOW_SCHEDULE_BATCH_SIZE", 5000)))
        self.leadership = Leadership()  # only the holder of the lease sends (scheduling/leader.py)
        super().__init__(*args, **kwargs)

    # -- the schedule as django-celery-beat and Celery see it ------------------------------
    def setup_schedule(self) -> None:
        # Writes CELERY_BEAT_SCHEDULE's entries as PeriodicTask rows (as DatabaseScheduler does);
        # the first tick loads every row.
        self.install_default_entries(None)
        self.update_from_dict(self.app.conf.beat_schedule)

    def update_from_dict(self, mapping: dict[str, Any]) -> None:
        for name, fields in mapping.items():
            try:
                ModelEntry.from_entry(name, app=self.app, **fields)
            except Exception as exc:  # noqa: BLE001 - as DatabaseScheduler: one bad entry must not stop beat
                logger.exception("Cannot add entry %r to the database schedule: %r. Contents: %r", name, exc, fields)
        self._changed_at = None  # reload at the next tick

    @property
    def schedule(self) -> dict[str, ScheduleEntry]:  # type: ignore[override]  # read-only, as DatabaseScheduler's
        if not self._loaded:
            self._refresh()
        return {entry.name: entry for entry in self._entries.values()}

    def sync(self) -> None:
        """Nothing to write: each tick saved what it sent."""

    # -- ticking -------------------------------------------------------------------------------
    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send everything due; return the seconds until the next due entry (at most ``max_interval``)."""
        leader, became = self.leadership.check()
        if not leader:
            self._forget()  # a standby keeps nothing: when it takes over, it reads what the leader saved
            return min(self.leadership.wait_seconds(), self._max_wait)
        if became:
            self._forget()
        self._refresh()
        now = self.clock()
        due_cron: list[CronEntry] = []
        while self._queue and self._queue[0][0] <= now:
            _when, token, entry = heapq.heappop(self._queue)
            if self._entries.get(entry.id) is not entry or entry.token != token:
                continue  # edited, disabled or deleted since it was queued
            if isinstance(entry, CronEntry):
                due_cron.append(entry)
            else:
                self._tick_model_entry(entry)
        if due_cron:
            self._send_cron(due_cron, now)
        if not self._queue:
            return self._max_wait
        return max(0.0, min(self._queue[0][0] - self.clock(), self._max_wait))

    @property
    def _max_wait(self) -> float:
        """``max_interval``, which celery-types types ``int | None``."""
        assert self.max_interval is not None  # noqa: S101 - DatabaseScheduler.__init__ sets it (5 s by default)
        return self.max_interval

    def _forget(self) -> None:
        """Drop the in-memory schedule; the next refresh loads every row (``last_run_at`` as saved)."""
        self._entries.clear()
        self._queue.clear()
        self._loaded = False
        self._changed_at = None

    def close(self) -> None:
        self.leadership.step_down()
        super().close()

    def _push(self, entry: HeapEntry, when: float) -> None:
        entry.token = next(self._tokens)
        heapq.heappush(self._queue, (when, entry.token, entry))

    def _send_cron(self, entries: list[CronEntry], now: float) -> None:
        began = time.monotonic()
        sent_at = datetime.fromtimestamp(now, UTC)
        batches: dict[float, list[tuple[int, CronEntry]]] = defaultdict(list)  # occurrence -> (workflow id, entry)
        sent: list[CronEntry] = []
        for entry in entries:
            occurrence = self._latest_occurrence(entry, now)
            workflow_id = entry.workflow_id
            if workflow_id is not None:
                batches[occurrence].append((workflow_id, entry))
            elif self._send_one(entry):
                sent.append(entry)
            else:
                self._push(entry, now + SEND_RETRY_SECONDS)
        messages = len(sent)
        for occurrence, group in batches.items():
            scheduled_at = datetime.fromtimestamp(occurrence, UTC).isoformat()
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                if self._send_batch([workflow_id for workflow_id, _entry in chunk], scheduled_at):
                    sent.extend(entry for _workflow_id, entry in chunk)
                    messages += 1
                else:
                    for _workflow_id, entry in chunk:
                        self._push(entry, now + SEND_RETRY_SECONDS)
        for entry in sent:
            entry.last_run_at = sent_at
            entry.total_run_count += 1
            entry.next_at = self._next_after(entry, now)
            self._push(entry, entry.next_at)
        self._save_sent([entry.id for entry in sent], sent_at)
        logger.info(
            "Scheduler: sent %d schedule firing(s) in %d message(s) (%.0f ms, saved included)",
            len(sent),
            messages,
            (time.monotonic() - began) * 1000,
        )

    def _send_batch(self, workflow_ids: list[int], scheduled_at: str) -> bool:
        try:
            self.app.send_task(
                FIRE_BATCH_TASK,
                kwargs={"workflow_ids": workflow_ids, "scheduled_at": scheduled_at},
                producer=self.producer,
                headers={"celery_beat_task": True},
            )
        except Exception:  # noqa: BLE001 - a broker error must not stop beat; the entries stay due
            logger.exception("beat: could not send the firings of %d schedule(s); trying again", len(workflow_ids))
            return False
        return True

    def _send_one(self, entry: CronEntry) -> bool:
        try:
            self.apply_async(entry, producer=self.producer, advance=False)
        except Exception:  # noqa: BLE001 - as Celery's apply_entry, plus: the entry stays due
            logger.exception("beat: could not send %s (%s); trying again", entry.name, entry.task)
            return False
        return True

    def _tick_model_entry(self, entry: BeatModelEntry) -> None:
        """django-celery-beat's own logic for the rows the fast path does not take."""
        now = self.clock()
        try:
            is_due, next_in = entry.is_due()
        except Exception:  # noqa: BLE001 - as Celery: one entry must not stop beat
            is_due, next_in = self._is_due_failed(entry)  # type: ignore[attr-defined]  # Celery's; not in celery-types
        if not is_due:
            self._push(entry, now + (next_in if isinstance(next_in, int | float) else self._max_wait))
            return
        new_entry: BeatModelEntry = next(entry)  # ModelEntry.__next__: a new entry of the same class
        new_entry.id, new_entry.date_changed = entry.id, entry.date_changed
        self._entries[entry.id] = new_entry
        self.apply_entry(entry, producer=self.producer)
        self._push(new_entry, now + next_in)
        self._save_sent([entry.id], new_entry.model.last_run_at)

    def _save_sent(self, ids: list[int], last_run_at: datetime) -> None:
        """One UPDATE for every row a tick sent (no save(): it would look like an edit)."""
        if not ids:
            return
        try:
            PeriodicTask.objects.filter(pk__in=ids).update(
                last_run_at=last_run_at, total_run_count=F("total_run_count") + 1
            )
        except (DatabaseError, InterfaceError):
            logger.exception("beat: could not save last_run_at of %d schedule(s)", len(ids))

    # -- crontab arithmetic ----------------------------------------------------------------
    def _next_after(self, entry: CronEntry, after: float) -> float:
        """The entry's first occurrence after ``after`` (epoch s), by the cron rule (``scheduling.cron``).

        Only the minute of ``after`` counts, so one computation serves every
        entry of that crontab for that minute.
        """
        minute = int(after // 60)
        key = (entry.crontab_id, minute)
        found = self._next_cache.get(key)
        if found is None:
            found = self._crons[entry.crontab_id].next_after(datetime.fromtimestamp(minute * 60, UTC)).timestamp()
            if len(self._next_cache) > 100_000:
                self._next_cache.clear()
            self._next_cache[key] = found
        return found

    def _latest_occurrence(self, entry: CronEntry, now: float) -> float:
        """The occurrence a due entry fires for: the latest one at or before ``now``."""
        occurrence = entry.next_at
        for _ in range(MAX_CATCH_UP_STEPS):
            following = self._next_after(entry, occurrence)
            if following > now:
                return occurrence
            occurrence = following
        return now // 60 * 60

    # -- loading what changed ------------------------------------------------------------------
    def _refresh(self) -> None:
        """Apply the rows changed since the last look; one query when nothing did."""
        try:
            close_old_connections()
            changed_at = PeriodicTasks.last_change()
            if self._loaded and changed_at is not None and changed_at == self._changed_at:
                return
            self._reload()
            self._changed_at = changed_at
            self._loaded = True
        except (DatabaseError, InterfaceError):
            logger.exception("beat: could not read the schedule; keeping the one in memory")

    def _reload(self) -> None:
        enabled = dict(PeriodicTask.objects.filter(enabled=True).values_list("id", "date_changed"))
        crontabs = {row[0]: row[1:] for row in CrontabSchedule.objects.values_list("id", *CRONTAB_FIELDS)}
        stale_crontabs = {cid for cid, spec in self._crontabs.items() if crontabs.get(cid) != spec}
        for cid in stale_crontabs:
            self._crontabs.pop(cid, None)
            self._schedules.pop(cid, None)
            self._crons.pop(cid, None)
        if stale_crontabs:
            self._next_cache.clear()
        for gone in set(self._entries) - set(enabled):
            del self._entries[gone]
        load = [
            pk
            for pk, date_changed in enabled.items()
            if (entry := self._entries.get(pk)) is None
            or entry.date_changed != date_changed
            or not isinstance(entry, CronEntry)  # a few rows (intervals...): always re-read
            or entry.crontab_id in stale_crontabs
        ]
        for start in range(0, len(load), LOAD_CHUNK):
            self._load(load[start : start + LOAD_CHUNK])
        if load or stale_crontabs:
            logger.info("Scheduler: %d schedule row(s) (re)loaded, %d in all", len(load), len(self._entries))

    def _load(self, ids: Iterable[int]) -> None:
        rows = PeriodicTask.objects.filter(pk__in=list(ids), enabled=True).select_related(
            "crontab", "interval", "solar", "clocked"
        )
        now = self.clock()
        for model in rows:
            previous = self._entries.get(model.pk)
            try:
                entry = self._build(model, previous)
                if isinstance(entry, CronEntry):
                    entry.next_at = self._next_after(entry, entry.last_run_at.timestamp())
            except Exception:  # noqa: BLE001 - as DatabaseScheduler: a bad row is skipped, not fatal
                logger.exception("beat: cannot schedule %s; skipped", model.name)
                self._entries.pop(model.pk, None)
                continue
            self._entries[model.pk] = entry
            # A ModelEntry's is_due() decides at the next tick.
            self._push(entry, entry.next_at if isinstance(entry, CronEntry) else now)

    def _build(self, model: PeriodicTask, previous: HeapEntry | None) -> HeapEntry:
        crontab = model.crontab
        if crontab is not None and crontab.pk not in self._crons:
            # A row written in Celery's own syntax (not by PotaFlow): Celery's logic below.
            with contextlib.suppress(ScheduleError):
                self._crons[crontab.pk] = Cron(cron_expression(crontab), str(crontab.timezone))
        if crontab is None or not is_plain_crontab(model) or crontab.pk not in self._crons:
            model_entry = BeatModelEntry(model, app=self.app)
            model_entry.id, model_entry.date_changed = model.pk, model.date_changed
            return model_entry
        spec = tuple(getattr(crontab, field) for field in CRONTAB_FIELDS)
        if self._crontabs.get(crontab.pk) != spec:
            self._crontabs[crontab.pk] = spec
            self._schedules[crontab.pk] = crontab.schedule
        entry = CronEntry(model, crontab.pk, self._schedules[crontab.pk], self.app)
        if model.last_run_at is not None and previous is not None and previous.last_run_at > entry.last_run_at:
            entry.last_run_at = previous.last_run_at  # an edit saved an older last_run_at than beat's
        return entry

    @property
    def info(self) -> str:
        return "    . schedule -> PeriodicTask rows, kept in a heap by due time"
