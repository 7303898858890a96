"""Execution of one step: claim it, render its config, call the action, record the outcome.

``run_step`` is what the ``workflows.execute_step`` task calls; it returns what
follows: go on with the chain, stop it, or send the same message again after a
delay (a retry). A step whose organization is at its limit is parked in the
database instead (``workflows.execution.fairness``), never sent back around.

Delivery is at least once (acks_late, reject on worker loss, the recovery
sweeper), so execution is idempotent: a step is *claimed* in a transaction
that locks its row, a succeeded step is never executed again, and a message
for a run that no longer exists is dropped with a log line.

Claim rules for a message about step N:
- ``pending``: claimed.
- ``retrying``: claimed when its next attempt is due (the retry message).
- ``running``: the attempt in progress may be dead or very much alive.
  Taken over only when its worker is known to be gone:
  * the very message that claimed it came back (``may_be_redelivery``: its
    worker died and the broker handed the message out again); or
  * a sweeper's message (``force``) finds the step's lease lapsed (the worker
    stopped renewing it, see ``workflows.execution.leases``).
  Taking over closes the lost attempt as ``in_doubt`` (the action may have
  had its effect), ``worker_lost`` (an action without side effects) or
  ``timed_out`` (past its hard time limit). An in-doubt attempt is retried
  only when the step's ``on_in_doubt`` policy says ``retry`` (the default
  for actions that make repeats safe, e.g. with an idempotency key); otherwise
  the run is dead-lettered for a person to decide. A step lost more than
  ``max_retries`` times is dead-lettered too (it keeps killing its worker).
  Anything else is a duplicate, dropped.
- ``succeeded``: not executed; the chain goes on only if the next step has not
  started (the worker died between finishing and sending the next message).
- ``failed``/``skipped`` or a finished run: dropped.

Every attempt is a ``StepAttempt`` row, opened in the claiming transaction
before anything is sent and closed by ``workflows.execution.recording``.

Steps that only compute (``policy.runs_in_process``: transform, filter, the control
steps) have no message of their own: the task that finished the step before them
runs them, one after the other (issue 19). Each is still claimed -- with the
message's id as claim token, so a redelivered message takes over what its dead
worker left running -- and recorded with its own attempt; on PostgreSQL the
success of one and the claim of the next are one statement (``_hand_over``), and
the outputs read for templates are read once per task. A retry of such a step
goes back to the broker as a message about that step, with its countdown
(``StepOutcome.position``). A decision of the task (a path, an iteration, what
follows a container) whose segment only computes is run by the task too
(``dispatch.taking_segments``). A message runs at most one step that leaves
the process (``dispatch.message_groups``): the steps that only compute before it
hand over to it in the same task (its claim committed durably, before it calls
out), so a straight run of transforms, a filter and an http step is one message.

The common claim -- a ``pending`` step of an unfinished run -- is one
statement on PostgreSQL (``_claim_pending``: a conditional UPDATE that also
opens the attempt and starts the run; with a per-organization limit, that
statement counts the running steps after locking the organization's row, in
one short transaction). Every other case (and SQLite, and a claim that
matched nothing) goes through ``_claim``'s locking transaction, which also
says why: duplicate, not due, take-over, or parked at the limit. The
definition a run executes is its ``WorkflowVersion``'s, immutable, so each
worker process reads it once per version (``workflows.execution.definitions``).
"""

import json
import logging
import os
import time
import uuid
from collections import ChainMap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from core.structured_logging import bind as bind_log_context
from core.structured_logging import log_context
from integrations.base import Action, ActionContext
from integrations.errors import PermanentError, RetryableError, RunFiltered
from integrations.models import Credential
from integrations.registry import UnknownAction, get_action
from integrations.services import StepCredential, credential_for_step

from .. import templating
from ..files.services import RunFileAccess
from ..flow import tree
from ..models import (
    AttemptOutcome,
    InDoubtPolicy,
    Run,
    RunStatus,
    StepAttempt,
    StepRun,
    StepRunStatus,
    Workflow,
    WorkflowVersion,
)
from . import dispatch, fairness, flow, recording
from .definitions import definitions
from .leases import keeper
from .policy import (
    computes_ahead,
    in_doubt_policy,
    lease_seconds,
    policy,
    retry_delay,
    runs_in_process,
    time_limit,
)
from .recording import Attempt, Scrubber, cap_output

logger = logging.getLogger(__name__)

# A retry message may arrive a little before next_attempt_at (clock skew, ETA rounding).
RETRY_EARLY_TOLERANCE = timedelta(seconds=2)
OUT_OF_MEMORY = object()
# On a (straight list) run object: the succeeded steps' outputs this task has read or recorded.
OUTPUTS_SEEN = "_potaflow_outputs_seen"
# Has the message ``run_step`` is running taken its step that leaves the process (``_follower``)?
# Outside a message: yes, so nothing that leaves the process is ever taken by accident.
_message_left_process: ContextVar[bool] = ContextVar("potaflow_message_left_process", default=True)
CLAIM_FIELDS = ["status", "attempts", "claim_token", "started_at", "finished_at", "next_attempt_at", "lease_expires_at"]


@dataclass(frozen=True)
class StepOutcome:
    proceed: bool = False
    retry_in: float | None = None
    # The step a retry is about: a step run in process may be the one to send again, not the message's.
    position: int | None = None
    # The next step runs in this task (``policy.runs_in_process``): claim it here, no message.
    inline_next: int | None = None
    inline_key: str = ""


STOP = StepOutcome(proceed=False)
PROCEED = StepOutcome(proceed=True)


def idempotency_key(run_id: Any, position: int) -> str:
    """The same for every attempt of one step of one run; a replay is another run, so another key."""
    return f"potaflow-{run_id}-{position}"


def run_step(
    run_id: Any, position: int, *, may_be_redelivery: bool = False, force: bool = False, message_id: str = ""
) -> StepOutcome:
    """Execute step ``position`` of run ``run_id`` once, recording everything.

    ``message_id`` identifies the delivering message (the Celery task id) and
    becomes the claim token; ``may_be_redelivery`` says the broker may be
    handing it out again (see the module docstring for who may claim what).
    """
    # Every line logged while handling this step carries these labels (core.structured_logging).
    with (
        log_context(run_id=str(run_id), step=None, attempt=None, workflow_id=None, organization_id=None),
        dispatch.taking_segments() as taken,
        _message(),
    ):
        pending = _claim_pending(run_id, position, message_id=message_id)
        claim: Attempt | StepOutcome = pending or _claim(
            run_id, position, may_be_redelivery=may_be_redelivery, force=force, message_id=message_id
        )
        # The steps after it that only compute run here, one after the other, each claimed with this
        # message's id as its token and recorded with its own attempt (see ``_hand_over``).
        organization_id: int | None = None  # of the steps this task ran: its slot frees at the end
        last: Attempt | None = None  # the last step this task ran
        while True:
            if isinstance(claim, StepOutcome):
                if claim.inline_next is None and claim.retry_in is None and taken:
                    # A decision of this task wrote a segment of steps that only compute: run it here.
                    _, positions, specs = taken.pop()
                    claim = StepOutcome(inline_next=positions[0], inline_key=str(specs[0].get("key")))
                if claim.inline_next is None:
                    # What its organization parked may go -- unless the last step's record said none is.
                    if organization_id is not None and fairness.limit_may_apply() and not _none_parked(last):
                        fairness.slot_freed(organization_id)
                    return replace(claim, position=position) if claim.retry_in is not None else claim
                position = claim.inline_next
                bind_log_context(step=None, attempt=None)
                claim = _claim_pending(run_id, position, message_id=message_id) or _claim(
                    run_id,
                    position,
                    may_be_redelivery=may_be_redelivery,
                    force=False,
                    message_id=message_id,
                    expect_key=claim.inline_key,
                )
                continue
            position = claim.step_run.position
            organization_id = claim.run.workflow.organization_id
            claim.ask_parked = fairness.limit_may_apply()  # its success's record says if any step is parked
            last = claim
            with keeper.holding(claim.step_run.pk, claim.number):
                claim = _execute(claim)


def _none_parked(last: Attempt | None) -> bool:
    """Did the record of the task's last step find its organization with no parked step?"""
    return last is not None and last.parked is False


# -- claiming ------------------------------------------------------------------
# A pending step of an unfinished run: claimed, its attempt opened and its run
# started in one statement (one round trip, one commit). The conditional UPDATE
# is the claim: of two messages for the same step, the second matches no row.
# Only a queued run is written (running, started_at); for a later step the run's
# last_progress_at is the previous step's recording, and a running step keeps
# the sweeper away from the run anyway (its lease says whether it is alive).
_CLAIM_PENDING_SQL = """
WITH claimed AS (
    UPDATE workflows_steprun AS s
       SET status = %(step_running)s, attempts = s.attempts + 1, claim_token = %(token)s, started_at = %(now)s,
           finished_at = NULL, next_attempt_at = NULL, lease_expires_at = %(lease)s, parked_at = NULL
      FROM workflows_run AS r
     WHERE s.run_id = %(run)s AND s.position = %(position)s AND s.status = %(step_pending)s
       AND r.id = s.run_id
       AND (r.status IN (%(run_queued)s, %(run_running)s, %(run_waiting)s) OR s.error_path){below_limit}
    RETURNING s.id, s.key, s.attempts, s.path, s.parent_id, s.error_path
), opened AS (
    INSERT INTO workflows_stepattempt
           (step_run_id, number, outcome, started_at, error, response_excerpt, worker_host, worker_pid)
    SELECT id, attempts, '', %(now)s, '', '', %(host)s, %(pid)s FROM claimed
), started AS (
    UPDATE workflows_run
       SET status = %(run_running)s, started_at = %(now)s, last_progress_at = %(now)s
     WHERE id = %(run)s AND status = %(run_queued)s AND EXISTS (SELECT 1 FROM claimed)
)
SELECT claimed.id, claimed.key, claimed.attempts, claimed.path, claimed.parent_id, claimed.error_path,
       r.workflow_id, w.organization_id, r.version_id, r.workflow_version, r.trigger, r.payload,
       r.created_at, COALESCE(r.started_at, %(now)s),
       CASE WHEN r.version_id = ANY(%(cached)s::bigint[]) THEN NULL ELSE v.definition END
  FROM claimed, workflows_run AS r
  JOIN workflows_workflow AS w ON w.id = r.workflow_id
  JOIN workflows_workflowversion AS v ON v.id = r.version_id
 WHERE r.id = %(run)s
"""
_ORGANIZATION_SQL = """
SELECT w.organization_id FROM workflows_run AS r JOIN workflows_workflow AS w ON w.id = r.workflow_id
 WHERE r.id = %(run)s
"""
# With a per-organization limit: the organization's row is locked first (in the
# same transaction), so claims of one organization count one after the other,
# and the claim only matches while its running steps are below the limit.
_LOCK_ORGANIZATION_SQL = """
SELECT o.id FROM workflows_run AS r
  JOIN workflows_workflow AS w ON w.id = r.workflow_id
  JOIN accounts_organization AS o ON o.id = w.organization_id
 WHERE r.id = %(run)s
   FOR UPDATE OF o
"""
_BELOW_LIMIT = """
       AND (SELECT count(*) FROM workflows_steprun AS busy
              JOIN workflows_run AS busy_run ON busy_run.id = busy.run_id
              JOIN workflows_workflow AS busy_wf ON busy_wf.id = busy_run.workflow_id
             WHERE busy.status = %(step_running)s AND busy.lease_expires_at > %(now)s
               AND busy_wf.organization_id = %(organization)s) < %(limit)s"""
# Status values come from their TextChoices, as parameters (the SQL above names none).
_STATUSES = {
    "step_pending": StepRunStatus.PENDING.value,
    "step_running": StepRunStatus.RUNNING.value,
    "run_queued": RunStatus.QUEUED.value,
    "run_running": RunStatus.RUNNING.value,
    "run_waiting": RunStatus.WAITING.value,
}
_CLAIM_PENDING = _CLAIM_PENDING_SQL.format(below_limit="")
_CLAIM_PENDING_BELOW_LIMIT = _CLAIM_PENDING_SQL.format(below_limit=_BELOW_LIMIT)


def _claim_pending(run_id: Any, position: int, *, message_id: str) -> Attempt | None:
    """Claim a pending step in one statement; None when that does not apply (``_claim`` decides then)."""
    if connection.vendor != "postgresql":
        return None  # SQLite has no data-modifying CTEs
    try:
        run_uuid = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
    except ValueError:
        return None  # not a run id: _claim drops the message with its log line
    now = timezone.now()
    params: dict[str, Any] = {
        "run": run_uuid,
        "position": position,
        "token": message_id,
        "now": now,
        "lease": now + timedelta(seconds=lease_seconds()),
        "host": recording.WORKER_HOST,
        "pid": os.getpid(),
        "cached": definitions.known(),  # the definition comes with the claim unless this process has it
        **_STATUSES,
    }
    with connection.cursor() as cursor:
        if not fairness.limit_may_apply():
            cursor.execute(_CLAIM_PENDING, params)
            row = cursor.fetchone()
        else:
            # The organization first, without a lock: while no other organization has work waiting
            # (the common case, cached for half a second) there is no limit, so no lock either --
            # the lock held through a durable commit made one organization's claims take turns.
            cursor.execute(_ORGANIZATION_SQL, params)
            found = cursor.fetchone()
            if found is None:
                return None  # no such run: _claim drops the message with its log line
            if not fairness.limit_for(found[0]):
                cursor.execute(_CLAIM_PENDING, params)
                row = cursor.fetchone()
            else:
                # No row: not pending, or at the limit -- _claim tells them apart.
                with transaction.atomic():
                    cursor.execute(_LOCK_ORGANIZATION_SQL, params)
                    locked = cursor.fetchone()
                    if locked is None:
                        return None
                    limit = fairness.limit_for(locked[0])
                    params.update(organization=locked[0], limit=limit)
                    cursor.execute(_CLAIM_PENDING_BELOW_LIMIT if limit else _CLAIM_PENDING, params)
                    row = cursor.fetchone()
    if row is None:
        return None
    (step_pk, key, attempts, path, parent_id, error_path) = row[:6]
    (workflow_id, organization_id, version_id, number, trigger, payload, created, started) = row[6:14]
    if row[14] is not None:
        definition = definitions.remember(version_id, recording.json_from_db(WorkflowVersion, "definition", row[14]))
    else:
        definition = definitions.get(version_id)
    run = Run(
        id=run_uuid,
        workflow_id=workflow_id,
        version_id=version_id,
        workflow_version=number,
        trigger=trigger,
        payload=recording.json_from_db(Run, "payload", payload),
        status=RunStatus.RUNNING,
        created_at=created,
        started_at=started,
        last_progress_at=now,
    )
    run.workflow = Workflow(id=workflow_id, organization_id=organization_id)
    run.version = WorkflowVersion(id=version_id, workflow_id=workflow_id, number=number)
    run.version.definition = definition
    if position == 0 and not flow.is_flow_run(run):
        run.__dict__[OUTPUTS_SEEN] = {}  # no step runs before a straight run's first: nothing to read
    step_run = StepRun(
        id=step_pk,
        run=run,
        position=position,
        key=key,
        path=path,
        parent_id=parent_id,
        error_path=error_path,
        status=StepRunStatus.RUNNING,
        attempts=attempts,
        claim_token=message_id,
        started_at=now,
        lease_expires_at=params["lease"],
    )
    bind_log_context(step=key, attempt=attempts, workflow_id=workflow_id, organization_id=organization_id)
    return Attempt(step_run=step_run, run=run)


def _claim(
    run_id: Any, position: int, *, may_be_redelivery: bool, force: bool, message_id: str, expect_key: str = ""
) -> Attempt | StepOutcome:
    """Take the step for a new attempt (an ``Attempt``), or say why not (a ``StepOutcome``).

    ``expect_key``: the step the task means to run in process after the one it finished.
    """
    now = timezone.now()
    with transaction.atomic():
        try:
            step_run = (
                StepRun.objects.select_for_update(of=("self",))
                .select_related("run__workflow", "run__version")
                .get(run_id=run_id, position=position)
            )
        except (StepRun.DoesNotExist, ValidationError, ValueError):
            logger.warning("dropping message for run %s step %s: it does not exist (deleted?)", run_id, position)
            return STOP
        run = step_run.run
        if expect_key and step_run.key != expect_key:
            logger.warning("run %s: step %s is %r, not %r: not run here", run_id, position, step_run.key, expect_key)
            return STOP
        bind_log_context(
            step=step_run.key,
            attempt=step_run.attempts or None,
            workflow_id=run.workflow_id,
            organization_id=run.workflow.organization_id,
        )
        if run.is_finished and not step_run.error_path:
            logger.info("dropping message for run %s step %s: the run is already %s", run_id, position, run.status)
            return STOP
        status = step_run.status
        if status == StepRunStatus.SUCCEEDED:
            return _after_duplicate_success(run, step_run)
        if status in (
            StepRunStatus.FAILED,
            StepRunStatus.SKIPPED,
            StepRunStatus.FILTERED,
            StepRunStatus.WAITING,
            StepRunStatus.NOT_TAKEN,
        ):
            return STOP

        spec = _spec_for(run, step_run)
        if status == StepRunStatus.RETRYING:
            claimable = step_run.next_attempt_at is None or step_run.next_attempt_at <= now + RETRY_EARLY_TOLERANCE
        elif status == StepRunStatus.RUNNING:
            claimable = _worker_is_gone(
                step_run, now, may_be_redelivery=may_be_redelivery, force=force, message_id=message_id
            )
        else:
            claimable = status == StepRunStatus.PENDING
        if not claimable:
            logger.info("dropping duplicate message for run %s step %s (status %s)", run_id, position, status)
            return STOP

        # A take-over is exempt: the lost attempt held one of the organization's slots already.
        if status != StepRunStatus.RUNNING and _organization_is_busy(run.workflow.organization_id):
            fairness.park(step_run, run.workflow.organization_id)
            logger.info(
                "run %s step %s parked: its organization has its share of the workers while another waits",
                run_id,
                position,
            )
            return STOP

        if status == StepRunStatus.RUNNING:
            stop = _close_lost_attempt(run, step_run, spec, now)
            if stop is not None:
                return stop

        step_run.status = StepRunStatus.RUNNING
        step_run.attempts += 1
        bind_log_context(attempt=step_run.attempts)
        step_run.claim_token = message_id
        step_run.started_at = now
        step_run.finished_at = None
        step_run.next_attempt_at = None
        step_run.lease_expires_at = now + timedelta(seconds=lease_seconds())
        step_run.parked_at = None
        step_run.save(
            update_fields=[
                "parked_at",
                "status",
                "attempts",
                "claim_token",
                "started_at",
                "finished_at",
                "next_attempt_at",
                "lease_expires_at",
            ]
        )
        recording.open_attempt(step_run, step_run.attempts, now)
        run_fields: dict[str, Any] = {"last_progress_at": now}
        if run.status == RunStatus.QUEUED:
            run_fields.update(status=RunStatus.RUNNING, started_at=now)
            run.status, run.started_at = RunStatus.RUNNING, now
        Run.objects.filter(pk=run.pk).update(**run_fields)
    return Attempt(step_run=step_run, run=run)


def _spec_for(run: Run, step_run: StepRun) -> dict[str, Any] | None:
    if flow.is_flow_run(run):
        return flow.spec_of(run, step_run.key)  # by key: instances are written as the tree is walked
    position = step_run.position
    return next((s for s in run.definition.get("steps", []) if s["position"] == position), None)


def _worker_is_gone(step_run: StepRun, now: datetime, *, may_be_redelivery: bool, force: bool, message_id: str) -> bool:
    """May this message take over a step another attempt left ``running``?"""
    lease_lapsed = step_run.lease_expires_at is None or step_run.lease_expires_at < now
    if message_id and step_run.claim_token == message_id and may_be_redelivery:
        # The message that claimed it is back: its worker died (a killed pool
        # child's message is requeued at once) -- or only lost its broker
        # connection, which requeues the messages of tasks still running.
        # Tell the two apart before running the step a second time.
        alive = _attempt_process_alive(step_run)
        return not alive if alive is not None else lease_lapsed
    return force and lease_lapsed


def _attempt_process_alive(step_run: StepRun) -> bool | None:
    """Whether the process running the step's current attempt is alive; None when it is on another host."""
    attempt = StepAttempt.objects.filter(step_run=step_run, number=step_run.attempts).first()
    if attempt is None or attempt.worker_pid is None or attempt.worker_host != recording.WORKER_HOST:
        return None
    if attempt.worker_pid == os.getpid():
        return False  # this very process claimed it and is no longer running it
    try:
        os.kill(attempt.worker_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(attempt.worker_pid)


def _is_zombie(pid: int) -> bool:
    """A killed pool child not reaped yet still answers kill(pid, 0)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _close_lost_attempt(run: Run, step_run: StepRun, spec: dict[str, Any] | None, now: datetime) -> StepOutcome | None:
    """Record what became of the attempt a dead worker held; STOP when the step must not run again."""
    action = _action_or_none(spec)
    # Timed out only if its worker was still renewing the lease past the hard time limit
    # (Celery killed it); a message that merely waited in a backlog says nothing about that.
    last_alive = step_run.lease_expires_at - timedelta(seconds=lease_seconds()) if step_run.lease_expires_at else None
    timed_out = (
        step_run.started_at is not None
        and last_alive is not None
        and last_alive >= step_run.started_at + timedelta(seconds=time_limit(spec))
    )
    if timed_out:
        outcome, what = AttemptOutcome.TIMED_OUT, "was still running past its hard time limit and was stopped"
    elif action is not None and not action.has_side_effects:
        outcome, what = AttemptOutcome.WORKER_LOST, "lost its worker (killed or stopped responding)"
    else:
        outcome, what = AttemptOutcome.IN_DOUBT, "lost its worker mid-call: whether its effect happened is unknown"
    number = step_run.attempts
    recording.close_lost_attempt(step_run, outcome, f"attempt {number} {what}", now)
    logger.warning("run %s step %s: attempt %d %s", run.pk, step_run.key, number, what)

    if outcome == AttemptOutcome.IN_DOUBT:
        config = (spec or {}).get("config") or {}
        if in_doubt_policy(spec, action, config) == InDoubtPolicy.DEAD_LETTER:
            recording.fail_unattempted(
                run,
                step_run,
                f"attempt {number} {what}; not retried automatically (on_in_doubt=dead_letter): "
                "check the destination, then replay the run to send it again",
                dead_letter=True,
            )
            return STOP
    if number > policy(spec, "max_retries"):
        recording.fail_unattempted(
            run, step_run, f"worker lost or time limit exceeded; gave up after {number} attempts", dead_letter=True
        )
        return STOP
    return None


def _organization_is_busy(organization_id: int) -> bool:
    """True when the organization runs its limit of steps (workers are shared by all tenants).

    The limit is work-conserving (``workflows.execution.fairness``): none while
    no other organization has work waiting. When it applies, the organization's
    row is locked for the rest of the claiming transaction, so two claims for
    the same organization count one after the other.
    """
    return fairness.is_busy(organization_id)


def _organization_count() -> int:
    """How many organizations exist (cached: it only decides whether the limit may apply)."""
    return fairness.organization_count()


def _after_duplicate_success(run: Run, step_run: StepRun) -> StepOutcome:
    # The worker may have died after recording the step: the step after it that runs in this
    # task is claimed again here (pending, or left running by this very message's dead worker).
    in_flow = flow.is_flow_run(run)
    if in_flow:
        # The worker may have died between recording the step and deciding what follows: decide
        # again (writing nothing that exists already).
        if step_run.action_type in tree.CONTROL_TYPES:
            return STOP
        follower = _follower(run, step_run, in_flow=True)
        if follower is not None and StepRun.objects.filter(run_id=run.pk, position=follower[0]).exists():
            return StepOutcome(inline_next=follower[0], inline_key=str(follower[1].get("key")))
        return PROCEED if flow.after_success(run, step_run) else STOP
    position = step_run.position
    following = run.step_runs.filter(position__gt=position).order_by("position").first()
    if following is None:
        recording.finish_if_complete(run)
        return STOP
    follower = _follower(run, step_run, in_flow=False)
    if follower is not None and follower[0] == following.position:
        return StepOutcome(inline_next=following.position, inline_key=following.key)
    return PROCEED if following.status == StepRunStatus.PENDING else STOP


def _follower(run: Run, step_run: StepRun, *, in_flow: bool) -> tuple[int, dict[str, Any]] | None:
    """The next step of this step's chain when it runs in the same task: its position and spec.

    The rule of ``dispatch.message_groups``: a step that only computes (``policy.runs_in_process``)
    always; a step that leaves the process only while this message has not taken one (its own
    message would start there). A segment's rows have consecutive positions (``flow._start_list``);
    a control step ends its segment (it decides what follows).
    """
    if in_flow:
        place = flow.places(run).get(step_run.key)
        if place is None or tree.is_control(place.steps[place.index]) or place.index + 1 >= len(place.steps):
            return None
        current: Mapping[str, Any] | None = place.steps[place.index]
        following: Mapping[str, Any] | None = place.steps[place.index + 1]
    else:
        steps = run.definition.get("steps", [])
        current = next((s for s in steps if s.get("position") == step_run.position), None)
        following = next((s for s in steps if s.get("position") == step_run.position + 1), None)
    if not runs_in_process(current):
        _message_left_process.set(True)
    if following is None or (not runs_in_process(following) and _message_left_process.get()):
        return None
    return step_run.position + 1, dict(following)


@contextmanager
def _message() -> Iterator[None]:
    """While ``run_step`` runs one message: it has not taken a step that leaves the process yet."""
    token = _message_left_process.set(False)
    try:
        yield
    finally:
        _message_left_process.reset(token)


# -- executing -----------------------------------------------------------------
def _execute(attempt: Attempt) -> Attempt | StepOutcome:
    try:
        return _attempt(attempt)
    except Exception as exc:  # noqa: BLE001 - recording the outcome failed: fail for good, never stay running
        logger.exception("could not record the outcome of step %s of run %s", attempt.step_run.key, attempt.run.pk)
        recording.record_failure(attempt, f"the step's outcome could not be recorded: {type(exc).__name__}: {exc}")
        return STOP


def _attempt(attempt: Attempt) -> Attempt | StepOutcome:
    run, step_run = attempt.run, attempt.step_run
    spec = _spec_for(run, step_run)
    in_flow = flow.is_flow_run(run)
    output: object  # what the action returned, or OUT_OF_MEMORY
    try:
        if spec is None:
            raise PermanentError(f"step {step_run.position} is missing from the run's definition")
        if in_flow and spec.get("action_type") in tree.CONTROL_TYPES:
            _decide(attempt, spec)
            return STOP
        try:
            action = get_action(spec["action_type"])
        except UnknownAction as exc:
            raise PermanentError(str(exc)) from None
        credential = _credential_for(run, spec, action)
        attempt.scrub = Scrubber(tuple(credential.secret_values()) if credential else ())
        context = build_context(run, spec, step_run if in_flow else None)
        config = templating.prepare_config(action, spec.get("config") or {})
        try:
            attempt.rendered = templating.render_value(config, context)
        except templating.TemplateError as exc:
            raise PermanentError(f"template error: {exc.message}") from None
        attempt.request = action.request_summary(attempt.rendered) if isinstance(attempt.rendered, dict) else None
        ctx = _action_context(attempt, spec, context, config, credential, in_flow=in_flow)
        if action.output_limit_setting:
            attempt.output_limit = int(getattr(settings, action.output_limit_setting))
        try:
            output = action.run(attempt.rendered, ctx)
        finally:
            if credential is not None and credential.connection is not None:  # tokens a refresh brought in
                attempt.scrub = Scrubber(tuple(credential.secret_values()))
    except RunFiltered as filtered:
        recording.record_filtered(attempt, filtered.output)
        return STOP
    except RetryableError as exc:
        return _retry_or_give_up(
            attempt, spec, exc.message, exc.retry_after, AttemptOutcome.RETRYABLE_ERROR, response_status=exc.status
        )
    except SoftTimeLimitExceeded:
        message = f"timed out: still running after {policy(spec, 'timeout_seconds'):g} s"
        return _retry_or_give_up(attempt, spec, message, None, AttemptOutcome.TIMED_OUT)
    except PermanentError as exc:
        recording.record_failure(attempt, exc.message, response_status=exc.status)
        return STOP
    except MemoryError:
        # Recorded below, once this block has released the traceback and with it
        # the frames still holding what was allocated.
        output = OUT_OF_MEMORY
    except Exception as exc:  # noqa: BLE001 - an unexpected error is a permanent failure, never a stuck run
        logger.exception("step %s of run %s raised unexpectedly", step_run.key, run.pk)
        recording.record_failure(attempt, f"{type(exc).__name__}: {exc}")
        return STOP
    if output is OUT_OF_MEMORY:
        limit = settings.POTAFLOW_WORKER_MEMORY_LIMIT_MB
        recording.record_failure(
            attempt, f"the step ran out of memory (the worker's limit is {limit} MiB, POTAFLOW_WORKER_MEMORY_LIMIT_MB)"
        )
        return STOP
    follower = _follower(run, step_run, in_flow=in_flow)
    if follower is not None:
        return _hand_over(attempt, output, follower, in_flow=in_flow)
    finished = recording.record_success(attempt, output, completes=not in_flow)
    if finished:
        return STOP
    if in_flow:
        return PROCEED if flow.after_success(run, step_run) else STOP
    return PROCEED


def _action_context(
    attempt: Attempt,
    spec: dict[str, Any],
    context: dict[str, Any],
    config: dict[str, Any],
    credential: StepCredential | None,
    *,
    in_flow: bool,
) -> ActionContext:
    run, step_run = attempt.run, attempt.step_run
    return ActionContext(
        run_id=str(run.pk),
        workflow_id=run.workflow_id,
        organization_id=run.workflow.organization_id,
        step_key=step_run.key,
        attempt=attempt.number,
        idempotency_key=(
            flow.idempotency_key(run.pk, flow.path_of(step_run))
            if in_flow
            else idempotency_key(run.pk, step_run.position)
        ),
        timeout_seconds=policy(spec, "timeout_seconds"),
        credential=credential.fields if credential else None,
        credential_kind=credential.kind if credential else None,
        template_context=context,
        raw_config=config,
        files=RunFileAccess(organization_id=run.workflow.organization_id, run_id=run.pk),
        connection=credential.connection if credential else None,
    )


def _hand_over(
    attempt: Attempt, output: Any, follower: tuple[int, dict[str, Any]], *, in_flow: bool
) -> Attempt | StepOutcome:
    """Record this step's success and claim the next one for this task (one statement on PostgreSQL).

    The next step keeps every guarantee of a step with its own message: its own attempt row, this
    message's id as claim token (a redelivery of the message takes it over when this worker died),
    a lease, and a retry through the broker when it fails (``StepOutcome.position``).
    """
    run, step_run = attempt.run, attempt.step_run
    if connection.vendor != "postgresql":
        run.__dict__.pop(OUTPUTS_SEEN, None)
        if recording.record_success(attempt, output, completes=False):
            return STOP
        return StepOutcome(inline_next=follower[0], inline_key=str(follower[1].get("key")))
    ahead: list[recording.Computed] = []
    finished_at = None
    if not in_flow:  # a flow run's templates read scoped outputs from the database
        attempt.finished, finished_at = time.monotonic(), timezone.now()
        ahead, follower = _compute_ahead(attempt, output, follower)
    position, spec = follower
    key = str(spec.get("key"))
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds())
    handed = recording.record_success_and_claim(
        attempt,
        output,
        next_position=position,
        next_key=key,
        lease=lease,
        durable=not runs_in_process(spec),
        ahead=ahead,
        finished_at=finished_at if ahead else None,
    )
    if not handed.owned:
        return STOP
    seen = run.__dict__.get(OUTPUTS_SEEN)
    if seen is not None and not in_flow:
        seen[step_run.key] = {"output": attempt.output, "status": StepRunStatus.SUCCEEDED}
        if handed.ahead_recorded:
            for computed in ahead:
                seen[computed.attempt.step_run.key] = {"output": computed.output, "status": StepRunStatus.SUCCEEDED}
    if not handed.ahead_recorded:
        # One of them was not pending any more: the ordinary claim of the first says why.
        first = ahead[0].attempt.step_run
        return StepOutcome(inline_next=first.position, inline_key=first.key)
    if handed.step_pk is None:
        # Not pending (a duplicate took it, the run ended, or a flow row is missing): the ordinary claim says why.
        if in_flow and not flow.after_success(run, step_run):
            return STOP
        return StepOutcome(inline_next=position, inline_key=key)
    run.last_progress_at = now
    following = StepRun(
        id=handed.step_pk,
        run=run,
        position=position,
        key=handed.key,
        action_type=str(spec.get("action_type") or ""),
        path=handed.path,
        parent_id=handed.parent_id,
        error_path=handed.error_path,
        status=StepRunStatus.RUNNING,
        attempts=handed.attempts,
        claim_token=step_run.claim_token,
        started_at=now,
        lease_expires_at=lease,
    )
    bind_log_context(step=handed.key, attempt=handed.attempts)
    return Attempt(step_run=following, run=run)


def _compute_ahead(
    attempt: Attempt, output: Any, follower: tuple[int, dict[str, Any]]
) -> tuple[list[recording.Computed], tuple[int, dict[str, Any]]]:
    """A straight run's steps after this one that compute quickly and purely (``policy.computes_ahead``),
    computed now, before they are claimed, from the outputs in memory; and the step to claim after them.

    They are recorded with this step's success and the next step's claim in one statement
    (``recording.record_success_and_claim``), so a row of transforms and a filter costs one write,
    not two per step. Computing before claiming is safe because it has no effect: if the
    statement finds one of them no longer pending, nothing computed here is kept. A step whose
    computation raises (a filter that filters, a template error) is not computed ahead: it is the
    step claimed next, and runs the ordinary way, which records what happens. The last step of
    the run is never computed ahead (its record completes the run), nor one whose next step this
    message may not take (``_follower``'s rule).
    """
    run = attempt.run
    by_position = {s.get("position"): s for s in run.definition.get("steps", [])}
    earlier: dict[str, Any] = {
        attempt.step_run.key: {
            "output": attempt.scrub(cap_output(output, attempt.output_limit)),
            "status": StepRunStatus.SUCCEEDED,
        }
    }
    computed: list[recording.Computed] = []
    while computes_ahead(follower[1]):
        position, spec = follower
        after = by_position.get(position + 1)
        if after is None or (not runs_in_process(after) and _message_left_process.get()):
            break
        result = _compute(run, position, spec, earlier)
        if result is None:
            break
        computed.append(result)
        earlier[result.attempt.step_run.key] = {"output": result.output, "status": StepRunStatus.SUCCEEDED}
        follower = (position + 1, dict(after))
    return computed, follower


def _compute(run: Run, position: int, spec: dict[str, Any], earlier: Mapping[str, Any]) -> recording.Computed | None:
    """Run a step that only computes, without claiming it; None when it raised (see ``_compute_ahead``)."""
    started_at, started = timezone.now(), time.monotonic()
    step_run = StepRun(run=run, position=position, key=str(spec.get("key")), status=StepRunStatus.RUNNING, attempts=1)
    ahead = Attempt(step_run=step_run, run=run)
    try:
        action = get_action(spec["action_type"])
        context = build_context(run, spec, earlier=earlier)
        config = templating.prepare_config(action, spec.get("config") or {})
        ahead.rendered = templating.render_value(config, context)
        ahead.request = action.request_summary(ahead.rendered) if isinstance(ahead.rendered, dict) else None
        output = action.run(ahead.rendered, _action_context(ahead, spec, context, config, None, in_flow=False))
    except Exception:  # noqa: BLE001 - not computed ahead: the ordinary run of the step records what it raises
        return None
    limit = int(getattr(settings, action.output_limit_setting)) if action.output_limit_setting else None
    return recording.Computed(
        attempt=ahead,
        output=cap_output(output, limit),
        started_at=started_at,
        finished_at=timezone.now(),
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def _decide(attempt: Attempt, spec: dict[str, Any]) -> None:
    """A control step: render its own expressions (never its nested steps) and let the flow decide."""
    # The same preparation as every action's config (and the dry run's): nested step lists left
    # out, a bare ``items`` or path condition read as ``{{ ... }}``, conditions by the condition rule.
    own = templating.prepare_config(get_action(spec["action_type"]), spec.get("config") or {})
    # Earlier outputs are read at once only if its own expressions name ``steps`` (its nested lists
    # always hold the word: a branch after a loop of 1,000 items read them all for nothing).
    context = build_context(attempt.run, {**spec, "config": own}, attempt.step_run)
    try:
        attempt.rendered = templating.render_value(own, context)
    except templating.TemplateError as exc:
        raise PermanentError(f"template error: {exc.message}") from None
    flow.decide(attempt, spec, attempt.rendered, context)


def _retry_or_give_up(
    attempt: Attempt,
    spec: dict[str, Any] | None,
    message: str,
    retry_after: float | None,
    outcome: str,
    *,
    response_status: int | None = None,
) -> StepOutcome:
    if attempt.number > policy(spec, "max_retries"):
        recording.record_failure(
            attempt,
            f"{message} (gave up after {attempt.number} attempts)",
            outcome=outcome,
            dead_letter=True,
            response_status=response_status,
        )
        return STOP
    delay = retry_delay(spec, attempt.number, retry_after)
    if not recording.record_retry(attempt, message, delay, outcome=outcome, response_status=response_status):
        return STOP
    return StepOutcome(retry_in=delay)


def build_context(
    run: Run,
    spec: dict[str, Any] | None = None,
    step_run: StepRun | None = None,
    *,
    earlier: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The template context: trigger payload, earlier outputs, run and workflow.

    The earlier outputs are read when the step's config mentions ``steps``
    (or no ``spec`` is given); otherwise they are read only if the action looks
    at ``ActionContext.template_context["steps"]``. ``earlier``: outputs this task
    holds that the database does not have yet (steps computed ahead), over those it has.
    """
    steps: Mapping[str, Any] = EarlierOutputs(run)
    if earlier:
        steps = ChainMap(dict(earlier), steps)  # type: ignore[arg-type]
    if step_run is None and (spec is None or references_earlier_steps(spec)):  # a flow run's are scoped below
        steps = dict(steps)
    workflow = run.definition.get("workflow", {})
    context = {
        "trigger": run.payload,
        "steps": steps,
        "run": {
            "id": str(run.pk),
            "trigger": run.trigger,
            "created_at": run.created_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
        },
        "workflow": {
            "id": run.workflow_id,
            "name": workflow.get("name", ""),
            "version": run.workflow_version,
        },
    }
    if step_run is not None:  # an instance of a flow run: scoped outputs, item/index, failure, resume URLs
        flow.extend_context(context, run, step_run, eager=spec is None or references_earlier_steps(spec))
    return context


def references_earlier_steps(spec: dict[str, Any]) -> bool:
    """Can the step's config read earlier outputs? A template names ``steps`` to do so."""
    return "steps" in json.dumps(spec.get("config") or {})


class EarlierOutputs(Mapping[str, Any]):
    """``steps.<key>`` -> ``{"output", "status"}`` of the run's succeeded steps, read on first use."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._loaded: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._loaded is None:
            # Read once per task: the steps this task runs in process after it add theirs (``_hand_over``).
            known = self._run.__dict__.get(OUTPUTS_SEEN)
            if known is None:
                known = {
                    key: {"output": output, "status": StepRunStatus.SUCCEEDED}
                    for key, output in self._run.step_runs.filter(status=StepRunStatus.SUCCEEDED)
                    .order_by("position")
                    .values_list("key", "output")
                }
                self._run.__dict__[OUTPUTS_SEEN] = known
            self._loaded = known
        return self._loaded

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def _action_or_none(spec: dict[str, Any] | None) -> Action | None:
    try:
        return get_action((spec or {}).get("action_type", ""))
    except UnknownAction:
        return None


def _credential_for(run: Run, spec: dict[str, Any], action: Action) -> StepCredential | None:
    """The step's credential in clear (a connection's token refreshed if due) and its secret values."""
    credential_id = spec.get("credential_id")
    if credential_id is None:
        if action.credential_required:
            raise PermanentError(f"the {action.name} action needs a credential and the step has none")
        return None
    credential = Credential.objects.filter(pk=credential_id, organization_id=run.workflow.organization_id).first()
    if credential is None:
        raise PermanentError(f"credential {credential_id} no longer exists")
    return credential_for_step(credential, timeout=policy(spec, "timeout_seconds"))
