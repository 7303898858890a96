"""Sharing the workers between organizations: work-conserving, and quiet while a step waits.

The rule (``policy.org_step_limit``): an organization may use every free slot
while no other organization has work waiting; while one does, it runs at most
its fair share. "Work waiting" is a cheap look at the database at claim time:
a *queued* run of another organization (its first message is in the broker),
or a *parked* step of another organization.

A step whose organization is at its limit is not sent back through the broker
(that was a re-publish every few hundred milliseconds per waiting step): its
message is dropped (acknowledged, the rest of its chain with it) and the step
is **parked** -- ``StepRun.parked_at`` set, status unchanged. Parked steps are
an organization's own queue in the database, oldest first. When a step of that
organization finishes, the worker that ran it wakes as many of them as the
organization may now run, and sends each run's chain again to the recovery
queue (``POTAFLOW_RECOVERY_QUEUE``: it does not wait behind the backlog). The
sweeper wakes them too (a wake lost with a worker). Parking and waking both
hold the organization's row lock, and a parker wakes after it commits, so a
slot freed while a step was being parked is never missed.
"""

import logging
import time
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Organization

from ..models import StepRun
from .policy import org_limit_may_apply, org_step_limit, worker_slots

logger = logging.getLogger(__name__)

# How long one process trusts its answer to "does another organization have work waiting?"
WAITING_CACHE_SECONDS = 0.5
ORGANIZATION_COUNT_CACHE_SECONDS = 30.0

_OTHERS_WAITING_SQL = """
SELECT EXISTS (
           SELECT 1 FROM workflows_run AS r JOIN workflows_workflow AS w ON w.id = r.workflow_id
            WHERE r.status = 'queued' AND w.organization_id <> %(org)s)
    OR EXISTS (
           SELECT 1 FROM workflows_steprun AS s
             JOIN workflows_run AS r ON r.id = s.run_id
             JOIN workflows_workflow AS w ON w.id = r.workflow_id
            WHERE s.parked_at IS NOT NULL AND w.organization_id <> %(org)s)
"""
_RUNNING_SQL = """
SELECT count(*) FROM workflows_steprun AS s
  JOIN workflows_run AS r ON r.id = s.run_id
  JOIN workflows_workflow AS w ON w.id = r.workflow_id
 WHERE s.status = 'running' AND s.lease_expires_at > %(now)s AND w.organization_id = %(org)s
"""
_HAS_PARKED_SQL = """
SELECT EXISTS (
    SELECT 1 FROM workflows_steprun AS s
      JOIN workflows_run AS r ON r.id = s.run_id
      JOIN workflows_workflow AS w ON w.id = r.workflow_id
     WHERE s.parked_at IS NOT NULL AND w.organization_id = %(org)s)
"""
_WAKE_SQL = """
UPDATE workflows_steprun SET parked_at = NULL
 WHERE id IN (
       SELECT s.id FROM workflows_steprun AS s
         JOIN workflows_run AS r ON r.id = s.run_id
         JOIN workflows_workflow AS w ON w.id = r.workflow_id
        WHERE s.parked_at IS NOT NULL AND w.organization_id = %(org)s
        ORDER BY s.parked_at, s.id
        LIMIT %(n)s
          FOR UPDATE OF s SKIP LOCKED)
RETURNING run_id
"""
_PARKED_ORGANIZATIONS_SQL = """
SELECT DISTINCT w.organization_id FROM workflows_steprun AS s
  JOIN workflows_run AS r ON r.id = s.run_id
  JOIN workflows_workflow AS w ON w.id = r.workflow_id
 WHERE s.parked_at IS NOT NULL
"""

_waiting_cache: dict[int, tuple[float, bool]] = {}
_org_count_cache: dict[str, float] = {"value": 0.0, "until": 0.0}


def organization_count() -> int:
    """How many organizations exist, re-read at most every 30 s (a single tenant never waits)."""
    now = time.monotonic()
    if now >= _org_count_cache["until"]:
        _org_count_cache.update(value=Organization.objects.count(), until=now + ORGANIZATION_COUNT_CACHE_SECONDS)
    return int(_org_count_cache["value"])


def limit_may_apply() -> bool:
    """False on a single-tenant install without a cap: claims skip everything here."""
    return org_limit_may_apply(organization_count())


def others_waiting(organization_id: int) -> bool:
    """Does another organization have a queued run or a parked step? (cached for half a second)"""
    now = time.monotonic()
    cached = _waiting_cache.get(organization_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    with connection.cursor() as cursor:
        cursor.execute(_OTHERS_WAITING_SQL, {"org": organization_id})
        waiting = bool(cursor.fetchone()[0])
    _waiting_cache[organization_id] = (now + WAITING_CACHE_SECONDS, waiting)
    return waiting


def limit_for(organization_id: int) -> int:
    """The organization's running-step limit at this moment (0: none)."""
    count = organization_count()
    if int(settings.POTAFLOW_ORG_MAX_RUNNING_STEPS) < 0 and count >= 2:
        return org_step_limit(count, others_waiting=others_waiting(organization_id))
    return org_step_limit(count, others_waiting=False)


def lock_organization(organization_id: int) -> None:
    """Claims, parks and wakes of one organization count one after the other (inside a transaction)."""
    list(Organization.objects.select_for_update().filter(pk=organization_id).values_list("pk"))


def running(organization_id: int) -> int:
    """Steps of the organization running under a live lease."""
    with connection.cursor() as cursor:
        cursor.execute(_RUNNING_SQL, {"org": organization_id, "now": timezone.now()})
        return int(cursor.fetchone()[0])


def is_busy(organization_id: int) -> bool:
    """At its limit now? Call inside the claiming transaction: the organization's row stays locked.

    Only a pending or retrying step asks (a take-over replaces the slot its lost attempt held).
    """
    limit = limit_for(organization_id)
    if not limit:
        return False
    lock_organization(organization_id)
    return running(organization_id) >= limit


def park(step_run: StepRun, organization_id: int) -> None:
    """Keep the step in its organization's queue in the database (inside the claiming transaction)."""
    StepRun.objects.filter(pk=step_run.pk, parked_at__isnull=True).update(parked_at=timezone.now())
    # A slot of the organization may have freed while this transaction counted: look again once committed.
    transaction.on_commit(lambda: _safely(wake, organization_id))


def slot_freed(organization_id: int) -> None:
    """After a step of the organization finished: send what it parked, if anything (never raises)."""
    _safely(_wake_if_parked, organization_id)


def _wake_if_parked(organization_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_HAS_PARKED_SQL, {"org": organization_id})
        if not cursor.fetchone()[0]:
            return 0
    return wake(organization_id)


def wake(organization_id: int) -> int:
    """Unpark as many of the organization's steps as it may run now, oldest first, and send them."""
    from . import dispatch  # dispatch imports the engine, which imports this module

    with transaction.atomic():
        lock_organization(organization_id)
        limit = limit_for(organization_id)
        busy = running(organization_id)
        room = (limit - busy) if limit else max(1, worker_slots() * 2 - busy)
        if room <= 0:
            return 0
        # SQLite has no row locks (its IMMEDIATE transactions hold the one write lock already).
        sql = _WAKE_SQL if connection.vendor == "postgresql" else _WAKE_SQL.replace("FOR UPDATE OF s SKIP LOCKED", "")
        with connection.cursor() as cursor:
            cursor.execute(sql, {"org": organization_id, "n": room})
            run_ids = [row[0] for row in cursor.fetchall()]
    for run_id in run_ids:
        logger.info("run %s: a parked step is sent (its organization has a free slot)", run_id)
        dispatch.dispatch(run_id, queue=settings.POTAFLOW_RECOVERY_QUEUE)
    return len(run_ids)


def wake_parked() -> int:
    """The sweeper's pass: every organization with parked steps gets what it may run now."""
    with connection.cursor() as cursor:
        cursor.execute(_PARKED_ORGANIZATIONS_SQL)
        organizations = [row[0] for row in cursor.fetchall()]
    return sum(wake(organization_id) for organization_id in organizations)


def _safely(function: Any, organization_id: int) -> int:
    try:
        return int(function(organization_id))
    except Exception:  # noqa: BLE001 - the sweeper wakes what this missed; the step's outcome is recorded
        logger.exception("could not wake the parked steps of organization %s", organization_id)
        return 0
