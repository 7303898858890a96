"""Beat's heap scheduler (workflows.scheduling.scheduler) and the bulk firing (services.run_schedule_fire_many).

The scheduler runs in this process against the test database and a
redis-server of its own (``IsolatedBroker``); what it sent is read back from
that broker. The end-to-end path (the real beat process, the real worker) is
in test_delivery.py and below.
"""

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import PeriodicTask

from testing.worker import IsolatedBroker, start_beat, wait_for
from workflows.models import Run, TriggerType
from workflows.ops.status import due_schedules
from workflows.scheduling.cron import next_firings
from workflows.scheduling.scheduler import HeapDatabaseScheduler
from workflows.scheduling.schedules import FIRE_BATCH_TASK, FIRE_TASK
from workflows.services import (
    run_schedule_fire,
    run_schedule_fire_many,
    workflow_create,
    workflow_delete,
    workflow_update,
)

STEPS = [{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body.fired_at }}"}}]

needs_redis = pytest.mark.services  # reads the messages back from Redis


def schedule(org, name, cron="* * * * *", tz="UTC", **fields):
    return workflow_create(
        organization=org,
        name=name,
        trigger_type=TriggerType.SCHEDULE,
        schedule=cron,
        timezone=tz,
        steps=STEPS,
        **fields,
    )


def sent_messages(broker: IsolatedBroker) -> list[tuple[str, str, list, dict]]:
    """(queue, task name, args, kwargs) of every message in the default and the schedules queue, oldest first."""
    client = redis.Redis.from_url(broker.url)
    out = []
    for queue in ("celery", settings.POTAFLOW_SCHEDULE_QUEUE):
        for raw in reversed(client.lrange(queue, 0, -1)):  # LPUSH: newest first
            message = json.loads(raw)
            args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            out.append((queue, message["headers"]["task"], args, kwargs))
        client.delete(queue)
    return out


def firings(messages) -> dict[str, list[int]]:
    """scheduled_at -> workflow ids, from the fire_schedules batches."""
    out: dict[str, list[int]] = {}
    for queue, task, _args, kwargs in messages:
        if task == FIRE_BATCH_TASK:
            assert queue == settings.POTAFLOW_SCHEDULE_QUEUE
            out.setdefault(kwargs["scheduled_at"], []).extend(kwargs["workflow_ids"])
    return out


def next_minute() -> float:
    return (time.time() // 60 + 1) * 60


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def new_scheduler(app, broker, clock=None) -> HeapDatabaseScheduler:
    beat = HeapDatabaseScheduler(app=app)
    # Only the schedules' rows: the sweeper's and the other CELERY_BEAT_SCHEDULE rows would add their own sends.
    PeriodicTask.objects.exclude(task=FIRE_TASK).delete()
    beat.broker = broker
    if clock is not None:
        beat.clock = clock
    return beat


@pytest.fixture
def broker(transactional_db, settings):
    settings.POTAFLOW_SCHEDULE_BATCH_SIZE = 4
    with IsolatedBroker() as isolated:
        yield isolated


@pytest.fixture
def scheduler(broker):
    from potaflow.celery import app

    beat = new_scheduler(app, broker)
    yield beat
    beat.close()


# -- next run times: POSIX cron's meaning, the same for beat and every preview -----------------------
# (expression, time zone, clock start, the firings POSIX cron makes from there)
CRON_TABLE = [
    # Day of month OR day of week when both are restricted (Celery's crontab ANDs them: 2027-02-01...).
    ("0 9 1 * 1", "UTC", "2026-11-30T10:00+00:00", ["12-01 09:00+00:00", "12-07 09:00+00:00", "12-14 09:00+00:00"]),
    # One of them '*'-led: both must match (Mondays that are odd days of the month).
    ("0 9 */2 * 1", "UTC", "2026-11-30T10:00+00:00", ["12-07 09:00+00:00", "12-21 09:00+00:00", "01-11 09:00+00:00"]),
    ("@daily", "Europe/Berlin", "2026-12-07T12:00+00:00", ["12-08 00:00+01:00", "12-09 00:00+01:00"]),
    ("*/15 * * * *", "UTC", "2026-12-07T12:07+00:00", ["12-07 12:15+00:00", "12-07 12:30+00:00", "12-07 12:45+00:00"]),
    # Month ends without L: the 31st skips the months that have none.
    ("0 0 31 * *", "UTC", "2027-01-01T00:00+00:00", ["01-31 00:00+00:00", "03-31 00:00+00:00", "05-31 00:00+00:00"]),
    # DST, Europe/Berlin: a fixed time in the skipped hour fires as the clock jumps, once in the repeated one;
    # a wildcard job fires at the times the clock shows (both passes of 02:xx in October).
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2027-03-27T00:00+00:00",
        ["03-27 02:30+01:00", "03-28 03:00+02:00", "03-29 02:30+02:00"],
    ),
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T00:00+00:00",
        ["10-24 02:30+02:00", "10-25 02:30+02:00", "10-26 02:30+01:00"],
    ),
    (
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-10-24T23:00+00:00",
        ["10-25 01:30+02:00", "10-25 02:00+02:00", "10-25 02:30+02:00", "10-25 02:00+01:00", "10-25 02:30+01:00"],
    ),
    ("*/30 * * * *", "Europe/Berlin", "2027-03-28T00:00+00:00", ["03-28 01:30+01:00", "03-28 03:00+02:00"]),
    # DST, America/New_York.
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00+00:00", ["11-01 01:30-04:00", "11-02 01:30-05:00"]),
    ("30 2 * * *", "America/New_York", "2027-03-13T12:00+00:00", ["03-14 03:00-04:00", "03-15 02:30-04:00"]),
    (
        "0 * * * *",
        "America/New_York",
        "2026-11-01T04:30+00:00",
        ["11-01 01:00-04:00", "11-01 01:00-05:00", "11-01 02:00-05:00"],
    ),
]


def expected_instants(start: datetime, table: list[str]) -> list[datetime]:
    """'12-01 09:00+00:00' -> that instant, in the year of ``start`` or the next one (the table never wraps twice)."""
    out = []
    year = start.year
    for text in table:
        at = datetime.fromisoformat(f"{year}-{text[:5]}T{text[6:]}")
        if at < start:
            year += 1
            at = datetime.fromisoformat(f"{year}-{text[:5]}T{text[6:]}")
        out.append(at)
    return out


def beat_firings(scheduler: HeapDatabaseScheduler, start: datetime, count: int) -> list[datetime]:
    """The minutes beat fires for, its clock advanced from ``start`` to each moment it says it has work."""
    sent: list[str] = []
    send = scheduler._send_batch

    def recording_send(workflow_ids, scheduled_at):
        sent.append(scheduled_at)
        return send(workflow_ids, scheduled_at)

    scheduler._send_batch = recording_send
    scheduler.clock = lambda: start.timestamp()
    scheduler.tick()
    assert sent == []
    while len(sent) < count:
        due = scheduler._queue[0][0]
        scheduler.clock = lambda due=due: due - 1  # a second early: nothing yet
        scheduler.tick()
        before = len(sent)
        scheduler.clock = lambda due=due: due + 0.05
        scheduler.tick()
        assert len(sent) == before + 1, (before, sent)
    return [datetime.fromisoformat(at) for at in sent]


@pytest.mark.parametrize(("cron", "tz", "start", "table"), CRON_TABLE)
def test_beat_fires_what_every_preview_shows_posix_crons_meaning(scheduler, org, cron, tz, start, table):
    start = datetime.fromisoformat(start)
    expected = expected_instants(start, table)
    workflow = schedule(org, cron, cron=cron, tz=tz)
    # Beat has seen it fire last at the clock's start (no catch-up of earlier occurrences).
    PeriodicTask.objects.filter(name=workflow.periodic_task_name).update(last_run_at=start)

    # What the admin, member pages, API and potaflow_status show: the one module, in the schedule's zone.
    preview = next_firings(cron, tz, count=len(expected), now=start)
    assert [at.isoformat() for at in preview] == [at.isoformat() for at in expected]
    assert due_schedules(now=start)[0].at.isoformat() == expected[0].isoformat()
    # What beat does, its clock advanced.
    assert [at.timestamp() for at in beat_firings(scheduler, start, len(expected))] == [
        at.timestamp() for at in expected
    ]


# -- a tick: every due firing in batches, saved in one statement ---------------------------------------
@needs_redis
def test_a_tick_sends_the_due_firings_in_batches_with_their_minute_and_saves_them_at_once(scheduler, org):
    workflows = [schedule(org, f"every minute {n}") for n in range(10)]
    schedule(org, "yearly", cron="0 0 1 1 *")
    scheduler.tick()  # loads every row; nothing is due before the next minute
    assert firings(sent_messages(scheduler.broker)) == {}

    minute = next_minute()
    scheduler.clock = lambda: minute + 0.05
    with CaptureQueriesContext(connection) as queries:
        scheduler.tick()
    messages = sent_messages(scheduler.broker)
    assert list(firings(messages)) == [iso(minute)]
    assert sorted(firings(messages)[iso(minute)]) == sorted(w.pk for w in workflows)
    assert len(messages) == 3  # 10 workflows, 4 a message
    assert [task for _queue, task, _args, _kwargs in messages] == [FIRE_BATCH_TASK] * 3
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1 and "last_run_at" in updates[0]
    rows = PeriodicTask.objects.filter(name__in=[w.periodic_task_name for w in workflows])
    assert {(r.last_run_at.timestamp(), r.total_run_count) for r in rows} == {(minute + 0.05, 1)}

    # Sent: not again within the minute, however often beat ticks, nor by a beat restarted in it.
    for at in (minute + 1, minute + 30, minute + 59.9):
        scheduler.clock = lambda at=at: at
        scheduler.tick()
    restarted = new_scheduler(scheduler.app, scheduler.broker, clock=lambda: minute + 40)
    restarted.tick()
    assert firings(sent_messages(scheduler.broker)) == {}
    # The next minute, once; after an outage, once, for the latest minute missed.
    restarted.clock = lambda: minute + 60.02
    restarted.tick()
    assert sorted(firings(sent_messages(scheduler.broker))[iso(minute + 60)]) == sorted(w.pk for w in workflows)
    later = new_scheduler(scheduler.app, scheduler.broker, clock=lambda: minute + 60 * 6 + 10)
    later.tick()
    assert {at: sorted(ids) for at, ids in firings(sent_messages(scheduler.broker)).items()} == {
        iso(minute + 60 * 6): sorted(w.pk for w in workflows)
    }


@needs_redis
def test_a_tick_costs_the_same_statements_for_8_or_40_due_schedules(scheduler, org, settings):
    settings.POTAFLOW_SCHEDULE_BATCH_SIZE = 500
    counts = []
    for n in (8, 40):
        while PeriodicTask.objects.count() < n:
            schedule(org, f"s{PeriodicTask.objects.count()}")
        minute = next_minute() + 60 * len(counts)
        scheduler.clock = lambda minute=minute: minute - 1
        scheduler.tick()  # loads the new rows
        scheduler.clock = lambda minute=minute: minute + 0.05
        with CaptureQueriesContext(connection) as queries:
            scheduler.tick()
        counts.append(len(queries.captured_queries))
        assert len(firings(sent_messages(scheduler.broker))[iso(minute)]) == n
    assert counts[0] == counts[1] == 2  # "anything changed?" + one UPDATE


# -- changes take effect at the next tick --------------------------------------------------------------
@needs_redis
def test_disabled_deleted_and_edited_schedules_take_effect_at_the_next_tick(scheduler, org):
    keep, pause, drop, edit = (schedule(org, name) for name in ("keep", "pause", "drop", "edit"))
    scheduler.tick()
    new = schedule(org, "new")
    workflow_update(workflow=pause, is_active=False)
    workflow_delete(workflow=drop)
    workflow_update(workflow=edit, schedule="0 0 1 1 *", timezone="Europe/Paris")
    minute = next_minute()
    scheduler.clock = lambda: minute + 0.05
    with CaptureQueriesContext(connection) as queries:
        scheduler.tick()
    assert {at: sorted(ids) for at, ids in firings(sent_messages(scheduler.broker)).items()} == {
        iso(minute): sorted([keep.pk, new.pk])
    }
    # Only the rows that changed were read again, not every row.
    reads = [q["sql"] for q in queries.captured_queries if 'FROM "django_celery_beat_periodictask"' in q["sql"]]
    assert len(reads) == 2 and '"id" IN' in reads[1]

    workflow_update(workflow=pause, is_active=True)
    scheduler.clock = lambda: minute + 60.05
    scheduler.tick()
    # Back on: it fires from the next minute on with the others (no catch-up of the minutes it was off).
    assert {at: sorted(ids) for at, ids in firings(sent_messages(scheduler.broker)).items()} == {
        iso(minute + 60): sorted([keep.pk, new.pk, pause.pk])
    }


@needs_redis
def test_a_schedule_fires_at_its_time_zones_hour(scheduler, org):
    paris = schedule(org, "nine in Paris", cron="0 9 * * *", tz="Europe/Paris")
    utc = schedule(org, "nine UTC", cron="0 9 * * *", tz="UTC")
    scheduler.tick()
    entries = {e.name: e for e in scheduler._entries.values()}
    at_paris = datetime.fromtimestamp(entries[paris.periodic_task_name].next_at, ZoneInfo("Europe/Paris"))
    at_utc = datetime.fromtimestamp(entries[utc.periodic_task_name].next_at, UTC)
    assert (at_paris.hour, at_paris.minute, at_utc.hour, at_utc.minute) == (9, 0, 9, 0)
    scheduler.clock = lambda: at_paris.timestamp() + 0.1
    scheduler.tick()
    assert firings(sent_messages(scheduler.broker)) == {iso(at_paris.timestamp()): [paris.pk]}


# -- the worker side: one run per workflow and minute, in bulk ----------------------------------------
@pytest.mark.django_db
def test_run_schedule_fire_many_records_what_run_schedule_fire_does_once_per_minute(org):
    workflows = [schedule(org, f"w{n}", tz="Europe/Paris") for n in range(5)]
    inactive = schedule(org, "off", is_active=False)
    fired_at = datetime(2026, 3, 1, 9, 15, tzinfo=UTC)
    single = run_schedule_fire(workflow_id=workflows[0].pk, fired_at=fired_at)

    runs = run_schedule_fire_many(workflow_ids=[w.pk for w in workflows] + [inactive.pk, 999_999], fired_at=fired_at)
    assert sorted(r.workflow_id for r in runs) == sorted(w.pk for w in workflows[1:])  # not twice, not inactive
    for run in Run.objects.filter(workflow__in=workflows):
        assert run.payload == single.payload | {"body": single.payload["body"]}
        assert run.payload["body"]["timezone"] == "Europe/Paris"
        assert run.idempotency_key == "schedule:2026-03-01T09:15:00+00:00"
        assert (run.trigger, run.status, run.workflow_version) == ("schedule", "queued", 1)
        assert list(run.step_runs.values_list("position", "key", "status")) == [(0, "t", "pending")]
    assert run_schedule_fire_many(workflow_ids=[w.pk for w in workflows], fired_at=fired_at) == []  # redelivered
    assert Run.objects.filter(workflow__in=workflows).count() == 5
    run_schedule_fire_many(workflow_ids=[workflows[1].pk], fired_at=fired_at + timedelta(minutes=1))
    assert Run.objects.filter(workflow=workflows[1]).count() == 2


@pytest.mark.django_db
def test_run_schedule_fire_many_costs_the_same_statements_for_3_or_30_workflows(org):
    counts = []
    for n in (3, 30):
        workflows = [schedule(org, f"n{n}-{i}") for i in range(n)]
        with CaptureQueriesContext(connection) as queries:
            run_schedule_fire_many(workflow_ids=[w.pk for w in workflows], fired_at=datetime.now(UTC))
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1] <= 8


@pytest.mark.django_db
def test_run_schedule_fire_many_records_in_chunks_of_a_transaction_each(org, monkeypatch):
    from workflows import services

    monkeypatch.setattr(services, "SCHEDULE_RECORD_CHUNK", 4)
    workflows = [schedule(org, f"c{i}") for i in range(10)]
    with CaptureQueriesContext(connection) as queries:
        runs = run_schedule_fire_many(workflow_ids=[w.pk for w in workflows], fired_at=datetime.now(UTC))
    assert len(runs) == Run.objects.filter(workflow__in=workflows).count() == 10
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 6  # 3 chunks x (runs, step runs)


# -- the real beat and worker processes ----------------------------------------------------------------
@pytest.mark.slow
def test_real_beat_fires_each_schedule_once_a_minute_and_stops_one_disabled_while_it_runs(celery_worker, org):
    keep = [schedule(org, f"keep {n}") for n in range(3)]
    pause = schedule(org, "pause")
    beat = start_beat()
    try:
        workflow_update(workflow=pause, is_active=False)
        first = wait_for(
            lambda: Run.objects.filter(workflow__in=keep).count() >= 3 and Run.objects.filter(workflow__in=keep),
            timeout=80,
            message="the first minute's runs",
        )
        minute = first[0].payload["fired_at"]
        wait_for(lambda: "sent 3 schedule firing(s) in 1 message(s)" in beat.log_text(), timeout=10, message="log")
    finally:
        beat.stop()
    runs = Run.objects.filter(workflow__in=keep)
    assert sorted(r.workflow_id for r in runs) == sorted(w.pk for w in keep)
    assert {r.payload["fired_at"] for r in runs} == {minute} and minute.endswith(":00+00:00")
    assert not Run.objects.filter(workflow=pause).exists()


@pytest.mark.slow
def test_a_backlog_of_steps_does_not_hold_back_a_minutes_firings(celery_worker, org, tmp_path):
    from workflows.services import run_accept
    from workflows.tasks import fire_schedules

    slow = workflow_create(
        organization=org,
        name="Slow",
        steps=[{"key": "slow", "action_type": "custom", "config": {"handler": "test.slow", "input": {
            "log": str(tmp_path) + "/slow-{{ run.id }}.jsonl", "seconds": 1.5}}}],
    )  # fmt: skip
    backlog = [run_accept(workflow=slow, trigger="manual", payload={})[0] for _ in range(12)]  # ~9 s for 2 processes
    cron = schedule(org, "cron")
    fire_schedules.apply_async(kwargs={"workflow_ids": [cron.pk], "scheduled_at": "2026-03-01T09:15:00+00:00"})
    run = wait_for(lambda: Run.objects.filter(workflow=cron).first(), timeout=30, message="the firing's run")
    waiting = Run.objects.filter(pk__in=[r.pk for r in backlog], status="queued").count()
    assert waiting >= 4, "the firing waited behind the backlog of steps"
    assert run.payload["fired_at"] == "2026-03-01T09:15:00+00:00"
