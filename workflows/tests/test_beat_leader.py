"""Two beats, one sender: the lease row of workflows/scheduling/leader.py.

The leases are taken in the test database (PostgreSQL in CI: the statement
that decides, with the database's clock); the schedulers send to a
redis-server of their own (``IsolatedBroker``) and what they sent is read back.
The same statements through a real PgBouncer (transaction pooling) are in
potaflow/tests/test_pgbouncer.py; two beat hosts killed and taken over, in
bench/cluster.py.
"""

import pytest
from django.db import connection

from testing.worker import IsolatedBroker
from workflows.models import SchedulerLease
from workflows.scheduling.leader import Leadership, try_acquire
from workflows.scheduling.scheduler import HeapDatabaseScheduler
from workflows.tests.test_schedules import (
    firings,
    iso,
    needs_redis,
    new_scheduler,
    next_minute,
    schedule,
    sent_messages,
)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def expire(name: str = "beat") -> None:
    """The lease lapses in the database (as if its holder stopped renewing long ago)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE workflows_schedulerlease SET expires_at = expires_at - interval '1 hour' WHERE name = %s"
            if connection.vendor == "postgresql"
            else "UPDATE workflows_schedulerlease SET expires_at = datetime(expires_at, '-1 hour') WHERE name = %s",
            [name],
        )


@pytest.mark.django_db(transaction=True)
def test_one_holder_at_a_time_and_a_new_term_at_each_takeover(settings):
    settings.POTAFLOW_BEAT_LEASE_SECONDS = 20
    first = try_acquire("host-a:1:aa", 20)
    assert first is not None and first.term == 1 and 18 < first.seconds_left <= 20
    assert try_acquire("host-b:2:bb", 20) is None  # running: the other waits
    again = try_acquire("host-a:1:aa", 20)  # renewing keeps the term
    assert again is not None and again.term == 1
    expire()
    taken = try_acquire("host-b:2:bb", 20)
    assert taken is not None and taken.term == 2
    assert try_acquire("host-a:1:aa", 20) is None  # the old leader cannot come back while it runs
    lease = SchedulerLease.objects.get(name="beat")
    assert (lease.holder, lease.term) == ("host-b:2:bb", 2)


@pytest.mark.django_db(transaction=True)
def test_a_leader_that_cannot_renew_stops_sending_before_its_lease_lapses(settings):
    settings.POTAFLOW_BEAT_LEASE_SECONDS = 20
    clock_a, clock_b = Clock(), Clock()
    a = Leadership("host-a:1:aa", monotonic=clock_a)
    b = Leadership("host-b:2:bb", monotonic=clock_b)
    assert a.check() == (True, True)
    assert b.check() == (False, False)
    clock_a.now += 4  # before renew time: no statement, still leader
    assert a.check() == (True, False)

    # a's renewals fail (the database is away): it keeps sending only while a margin is left.
    a.renew_at = float("inf")
    clock_a.now += 10  # 14 s into a 20 s lease: more than a quarter left
    assert a.is_leader
    clock_a.now += 1.1  # under a quarter left: stop, well before the database lets b in
    assert a.check() == (False, False)
    assert a.term is None
    clock_b.now += 5
    assert b.check() == (False, False)  # the lease still runs in the database

    expire()
    clock_b.now += 5
    assert b.check() == (True, True)
    assert b.term == 2


@pytest.mark.django_db(transaction=True)
def test_a_clean_stop_hands_over_at_once(settings):
    settings.POTAFLOW_BEAT_LEASE_SECONDS = 20
    a, b = Leadership("host-a:1:aa"), Leadership("host-b:2:bb")
    assert a.check()[0] and not b.check()[0]
    a.step_down()
    b.next_try = 0
    assert b.check() == (True, True)


@pytest.mark.django_db(transaction=True)
def test_without_election_every_beat_sends(settings):
    settings.POTAFLOW_BEAT_LEADER_ELECTION = False
    a, b = Leadership("host-a:1:aa"), Leadership("host-b:2:bb")
    assert a.check()[0] and b.check()[0]
    assert not SchedulerLease.objects.exists()


@pytest.fixture
def broker(transactional_db, settings):
    settings.POTAFLOW_SCHEDULE_BATCH_SIZE = 100
    settings.POTAFLOW_BEAT_LEASE_SECONDS = 20
    with IsolatedBroker() as isolated:
        yield isolated


def beat(broker: IsolatedBroker, holder: str, clock: Clock) -> HeapDatabaseScheduler:
    from potaflow.celery import app  # noqa: PLC0415 - the configured app, after Django's setup

    scheduler = new_scheduler(app, broker)
    scheduler.leadership = Leadership(holder, monotonic=clock)
    return scheduler


@needs_redis
def test_two_beats_send_each_minute_once_and_the_standby_takes_over_without_a_gap(broker, org):
    workflows = sorted(schedule(org, f"every minute {n}").pk for n in range(3))
    clock_a, clock_b = Clock(), Clock()
    a = beat(broker, "host-a:1:aa", clock_a)
    b = beat(broker, "host-b:2:bb", clock_b)
    minute = next_minute()
    for at in (minute - 5, minute + 0.05, minute + 1, minute + 30):
        a.clock = b.clock = lambda at=at: at
        clock_a.now = clock_b.now = 1000 + at - minute
        a.tick()
        b.tick()
    assert {at: sorted(ids) for at, ids in firings(sent_messages(broker)).items()} == {iso(minute): workflows}
    assert not b._entries  # the standby keeps no schedule of its own

    # a dies (no goodbye) after sending the minute; its lease lapses; b takes over, reads what a
    # saved, and sends the next minute once -- not the one a already sent.
    expire()
    at = minute + 60.5
    b.clock = lambda: at
    clock_b.now += 31
    b.tick()
    assert b.leadership.term == 2
    assert {at: sorted(ids) for at, ids in firings(sent_messages(broker)).items()} == {iso(minute + 60): workflows}
    b.clock = lambda: minute + 90
    clock_b.now += 2
    b.tick()
    assert firings(sent_messages(broker)) == {}


@needs_redis
def test_a_takeover_after_a_missed_minute_sends_that_minute(broker, org):
    workflows = sorted(schedule(org, f"every minute {n}").pk for n in range(2))
    clock_a, clock_b = Clock(), Clock()
    a = beat(broker, "host-a:1:aa", clock_a)
    b = beat(broker, "host-b:2:bb", clock_b)
    minute = next_minute()
    a.clock = b.clock = lambda: minute - 10
    a.tick()
    b.tick()
    # a dies 10 s before the minute; b takes over 25 s after it: the minute is sent, late.
    expire()
    b.clock = lambda: minute + 25
    clock_b.now += 40
    b.tick()
    assert {at: sorted(ids) for at, ids in firings(sent_messages(broker)).items()} == {iso(minute): workflows}
