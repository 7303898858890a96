"""One beat sends, any number wait: a lease row in the database elects the leader.

Why: django-celery-beat has no leader election, so two beats (two hosts, for
availability) would each send every firing. Every beat process calls
``Leadership.check()`` at the start of each tick; only the holder of the
``beat`` lease (``workflows.SchedulerLease``) sends, the others wait and
retry every few seconds. The leader renews the lease well before it lapses;
a leader that dies (host killed, cut from the database) stops renewing, and
once the lease has expired -- by the database's clock, so hosts' clocks do
not matter -- the first standby to ask takes it over.

Why a row and not ``pg_advisory_lock``: a session advisory lock belongs to one
server connection; behind PgBouncer's transaction pooling that connection is
handed to other clients between transactions (the lock would be held by
whoever got it, or released under us), and a connection cut by the network
keeps the lock until the server notices, which can take minutes. Each lease
statement here is one autocommit statement: correct through any pooler.

Safety margin: a leader sends only while its lease has more than
``MARGIN_FRACTION`` of its length left, as measured on its own monotonic
clock from *before* the statement that granted it (so its idea of the
deadline is never later than the database's). A beat frozen between that
check and the send for longer than the margin could still send once after a
standby took over; the worker records one run per workflow and scheduled
minute, so such a repeat never becomes a second run.

No firing is skipped at a takeover as long as it completes within a minute
(lease ``POTAFLOW_BEAT_LEASE_SECONDS``, default 20 s, plus one tick): the new
leader reloads the schedule with the ``last_run_at`` its predecessor saved and
sends the missed minute late (beat's rule: the latest occurrence due).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from ..models import SchedulerLease

logger = logging.getLogger(__name__)

LEASE_NAME = "beat"
# The leader renews once this share of the lease has passed, and stops sending when less than
# MARGIN_FRACTION of it is left (it could not renew: the database is away).
RENEW_FRACTION = 0.25
MARGIN_FRACTION = 0.25
# A standby asks again this often (seconds, at most; never more than the lease's length).
STANDBY_POLL_SECONDS = 2.0

# One identity per process: schedulers built again in the same process (a test, a restarted
# loop) are the same holder; a restarted process is a new one (it must wait for the lease).
PROCESS_HOLDER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

# PostgreSQL: take the lease when it is free, expired or already ours; the database's clock decides.
_ACQUIRE_SQL = """
INSERT INTO workflows_schedulerlease AS l (name, holder, term, acquired_at, renewed_at, expires_at)
VALUES (%(name)s, %(holder)s, 1, now(), now(), now() + %(seconds)s * interval '1 second')
ON CONFLICT (name) DO UPDATE
   SET holder = EXCLUDED.holder,
       term = CASE WHEN l.holder = EXCLUDED.holder THEN l.term ELSE l.term + 1 END,
       acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE now() END,
       renewed_at = now(),
       expires_at = EXCLUDED.expires_at
 WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
RETURNING l.term, EXTRACT(EPOCH FROM (l.expires_at - now()))
"""


def lease_seconds() -> float:
    return max(3.0, float(settings.POTAFLOW_BEAT_LEASE_SECONDS))


@dataclass(frozen=True)
class Grant:
    term: int
    seconds_left: float  # by the database's clock, at the moment it granted


def try_acquire(holder: str, seconds: float, name: str = LEASE_NAME) -> Grant | None:
    """Take or renew the lease for ``holder``; None when another holder's lease is still running."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_ACQUIRE_SQL, {"name": name, "holder": holder, "seconds": seconds})
            row = cursor.fetchone()
        return Grant(term=int(row[0]), seconds_left=float(row[1])) if row else None
    # SQLite (one machine, development): its transactions take the write lock at BEGIN here.
    with transaction.atomic():
        now = timezone.now()
        until = now + timedelta(seconds=seconds)
        lease = SchedulerLease.objects.filter(name=name).first()
        if lease is None:
            SchedulerLease.objects.create(
                name=name, holder=holder, term=1, acquired_at=now, renewed_at=now, expires_at=until
            )
            return Grant(term=1, seconds_left=seconds)
        if lease.holder != holder and lease.expires_at >= now:
            return None
        if lease.holder != holder:
            lease.term, lease.holder, lease.acquired_at = lease.term + 1, holder, now
        lease.renewed_at, lease.expires_at = now, until
        lease.save()
        return Grant(term=lease.term, seconds_left=seconds)


def release(holder: str, name: str = LEASE_NAME) -> None:
    """Let a standby take over at once (a clean stop); a lease of someone else is left alone."""
    # The database's clock, as the grant's; Now() on SQLite too (raw now() is PostgreSQL's only: on
    # the embedded default the release failed and the standby waited for the lease to lapse).
    SchedulerLease.objects.filter(name=name, holder=holder).update(expires_at=Now())


class Leadership:
    """This beat's view of the lease: ``check()`` before sending anything."""

    def __init__(self, holder: str | None = None, *, name: str = LEASE_NAME, monotonic=time.monotonic) -> None:  # noqa: ANN001 - a clock function
        self.holder = holder or PROCESS_HOLDER
        self.name = name
        self.monotonic = monotonic
        self.term: int | None = None
        self.deadline = 0.0  # monotonic time after which our lease may have lapsed
        self.renew_at = 0.0
        self.next_try = 0.0
        self.enabled = lease_seconds() > 0 and settings.POTAFLOW_BEAT_LEADER_ELECTION

    @property
    def is_leader(self) -> bool:
        seconds = lease_seconds()
        return self.term is not None and self.monotonic() < self.deadline - seconds * MARGIN_FRACTION

    def check(self) -> tuple[bool, bool]:
        """(may send now, just became leader). Renews or asks for the lease when it is time."""
        if not self.enabled:
            became = self.term is None
            self.term = self.term or 1
            return True, became
        now = self.monotonic()
        was_leader = self.term is not None
        if (was_leader and now >= self.renew_at) or (not was_leader and now >= self.next_try):
            self._ask(now)
        leader = self.is_leader
        if was_leader and not leader:
            logger.warning("beat: lost the leader lease (term %s); standing by", self.term)
            self.term = None
        return leader, leader and not was_leader

    def _ask(self, started: float) -> None:
        seconds = lease_seconds()
        try:
            close_old_connections()
            grant = try_acquire(self.holder, seconds, self.name)
        except (DatabaseError, InterfaceError) as exc:
            # Keep what we had: the lease still runs until its deadline; ask again soon.
            logger.warning("beat: could not reach the leader lease: %s: %s", type(exc).__name__, exc)
            self.renew_at = self.next_try = started + min(STANDBY_POLL_SECONDS, seconds / 4)
            return
        if grant is None:  # another beat holds it (check() logs a loss)
            self.deadline = 0.0
            self.next_try = started + min(STANDBY_POLL_SECONDS, seconds / 4)
            return
        if self.term != grant.term:
            logger.info("beat: leader (term %d, holder %s)", grant.term, self.holder)
        self.term = grant.term
        # Measured from before the statement: never later than the database's own deadline.
        self.deadline = started + grant.seconds_left
        self.renew_at = started + seconds * RENEW_FRACTION

    def wait_seconds(self) -> float:
        """How long a standby sleeps before asking again."""
        return max(0.1, min(STANDBY_POLL_SECONDS, self.next_try - self.monotonic()))

    def step_down(self) -> None:
        """Release the lease on a clean stop so the standby need not wait for it to lapse."""
        if self.term is None or not self.enabled:
            return
        try:
            release(self.holder, self.name)
            logger.info("beat: released the leader lease (term %s)", self.term)
        except (DatabaseError, InterfaceError):
            logger.exception("beat: could not release the leader lease; it lapses by itself")
        self.term = None
