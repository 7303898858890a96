"""The one place that writes the outcome of a step attempt.

An attempt is opened (``open_attempt``) in the transaction that claims the
step, before anything is sent, and closed with its outcome here: the step
row, its ``StepAttempt`` row and the run change together. A write only lands
while the attempt still owns the step (status ``running`` with the attempt
number it claimed): a late finisher never overwrites a newer attempt; its
own attempt row is marked ``superseded`` instead.

Everything stored passes through a ``Scrubber`` first, so a secret of the
step's credential never lands in an output, error, rendered config or
attempt record, whatever the destination echoed.
"""

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, JSONField, Model, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.redaction import REDACTED
from integrations.storable import clean_text, storable

from ..models import UNFINISHED_RUN_STATUSES, AttemptOutcome, Run, RunStatus, StepAttempt, StepRun, StepRunStatus

logger = logging.getLogger(__name__)

TRUNCATION_MARKER = "_potaflow_truncated"
RESPONSE_EXCERPT_CHARS = 500
WORKER_HOST = socket.gethostname()[:255]


# -- what is stored ------------------------------------------------------------
@dataclass(frozen=True)
class Scrubber:
    """Replaces the given secret strings with ``[redacted]`` anywhere in a JSON value."""

    secrets: tuple[str, ...] = ()

    def __call__(self, value: Any) -> Any:
        if not self.secrets:
            return value
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


NO_SECRETS = Scrubber()


def cap_output(output: Any, limit: int | None = None) -> Any:
    """The output as storable JSON of at most ``limit`` bytes (POTAFLOW_STEP_OUTPUT_MAX_BYTES by
    default, an action's own setting when it has one); mark what was cut.

    Storable as ``integrations.storable`` makes it: NUL and lone surrogates
    become U+FFFD, NaN/Infinity the strings "NaN"/"Infinity", anything else
    that is not JSON its ``str()``.
    """
    text = json.dumps(storable(output))
    limit = limit or settings.POTAFLOW_STEP_OUTPUT_MAX_BYTES
    size = len(text.encode())
    if size <= limit:
        return json.loads(text)
    return {TRUNCATION_MARKER: True, "size_bytes": size, "preview": text[: max(limit - 200, 0)]}


def is_truncated(value: Any) -> bool:
    """Was this stored value cut by ``cap_output`` (the API and the admin say so)?"""
    return isinstance(value, dict) and value.get(TRUNCATION_MARKER) is True


def _storable_config(rendered: Any) -> Any:
    """The rendered config as stored (a template can render anything, even NUL)."""
    try:
        return storable(rendered)
    except RecursionError:
        return None


@dataclass
class Attempt:
    """The attempt in progress, as the engine knows it: what it is, what it sent, when it started."""

    step_run: StepRun
    run: Run
    started: float = field(default_factory=time.monotonic)
    scrub: Scrubber = NO_SECRETS
    rendered: Any = None
    request: dict[str, Any] | None = None
    output_limit: int | None = None  # the action's own bound on its stored output (Action.output_limit_setting)
    output: Any = None  # the stored output once recorded (a step run in the same task may read it)
    finished: float | None = None  # when its action returned, if it is recorded later (monotonic)
    # Several organizations (``ask_parked``): the record of its success also says whether its
    # organization has parked steps (``parked``), so ``fairness.slot_freed`` need not ask again.
    ask_parked: bool = False
    parked: bool | None = None

    @property
    def number(self) -> int:
        return self.step_run.attempts

    def elapsed_ms(self) -> int:
        return int(((self.finished or time.monotonic()) - self.started) * 1000)

    def stored_config(self) -> Any:
        # Capped like outputs: a template may render up to POTAFLOW_TEMPLATE_MAX_CHARS per string.
        return self.scrub(cap_output(_storable_config(self.rendered)))

    def stored_request(self) -> Any:
        return self.scrub(_storable_config(self.request)) if self.request is not None else None


def open_attempt(step_run: StepRun, number: int, now: datetime) -> None:
    """Record that attempt ``number`` starts now (inside the claiming transaction)."""
    StepAttempt.objects.create(
        step_run=step_run,
        number=number,
        started_at=now,
        worker_host=WORKER_HOST,
        worker_pid=os.getpid(),
    )


def close_lost_attempt(step_run: StepRun, outcome: str, message: str, now: datetime) -> None:
    """Close the attempt a dead worker left open (called by whoever takes the step over)."""
    started = step_run.started_at or now
    StepAttempt.objects.filter(step_run=step_run, number=step_run.attempts, outcome="").update(
        outcome=outcome,
        finished_at=now,
        duration_ms=max(int((now - started).total_seconds() * 1000), 0),
        error=message,
    )


def _close_attempt(
    attempt: Attempt, outcome: str, now: datetime, *, error: str = "", output: Any = None, status: int | None = None
) -> None:
    output_status, excerpt = _response_facts(output)
    status = status if status is not None else output_status
    StepAttempt.objects.filter(step_run_id=attempt.step_run.pk, number=attempt.number).update(
        outcome=outcome,
        finished_at=now,
        duration_ms=attempt.elapsed_ms(),
        error=error,
        request=attempt.stored_request(),
        response_status=status,
        response_excerpt=attempt.scrub(excerpt),
    )


def _response_facts(output: Any) -> tuple[int | None, str]:
    """An HTTP-like output's status and the start of its body, for the attempt record."""
    if not isinstance(output, dict):
        return None, ""
    status = output.get("status")
    status = status if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599 else None
    body = output.get("body")
    if body is None:
        return status, ""
    text = body if isinstance(body, str) else json.dumps(storable(body))
    return status, clean_text(text[:RESPONSE_EXCERPT_CHARS])


def _owned(attempt: Attempt) -> QuerySet[StepRun]:
    """The step, if this attempt still owns it (a newer claim changes status or attempts)."""
    return StepRun.objects.filter(pk=attempt.step_run.pk, status=StepRunStatus.RUNNING, attempts=attempt.number)


def _superseded(attempt: Attempt, what: str) -> None:
    """This attempt finished after another took the step over: keep its trace, drop its result."""
    StepAttempt.objects.filter(step_run_id=attempt.step_run.pk, number=attempt.number).update(
        outcome=AttemptOutcome.SUPERSEDED,
        finished_at=timezone.now(),
        duration_ms=attempt.elapsed_ms(),
        error=f"finished ({what}) after a newer attempt had taken the step over; its result was not used",
    )
    logger.warning(
        "run %s step %s attempt %d finished (%s) after a newer attempt took over; its result is dropped",
        attempt.run.pk,
        attempt.step_run.key,
        attempt.number,
        what,
    )


# -- outcomes ------------------------------------------------------------------
def _finish_attempt(
    attempt: Attempt,
    step_status: str,
    outcome: str,
    now: datetime,
    *,
    output: Any = None,
    error: str = "",
    next_attempt_at: datetime | None = None,
    response_status: int | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Write the step row and close the attempt row (inside the caller's transaction).

    False when a newer attempt owns the step: then only this attempt's own row
    changes (``superseded``) and the caller must not touch the run.
    """
    fields: dict[str, Any] = {
        "status": step_status,
        "rendered_config": attempt.stored_config(),
        "error": error,
        "finished_at": now,
        "duration_ms": attempt.elapsed_ms(),
        "next_attempt_at": next_attempt_at,
        "lease_expires_at": None,
    }
    if step_status in (StepRunStatus.SUCCEEDED, StepRunStatus.FILTERED, StepRunStatus.WAITING):
        fields["output"] = output
    fields.update(extra or {})
    if not _owned(attempt).update(**fields):
        _superseded(attempt, f"{outcome}: {error}" if error else outcome)
        return False
    _close_attempt(attempt, outcome, now, error=error, output=output, status=response_status)
    return True


def record_success(attempt: Attempt, output: Any, *, completes: bool = True) -> bool:
    """Store the output; True when the chain stops here (the run is complete, or another attempt owns it).

    ``completes=False`` (a flow run, ``workflows.execution.flow``): the run's completion is decided
    from the tree, not by this step; True then only says another attempt owns the step.
    """
    now = timezone.now()
    stored = attempt.scrub(cap_output(output, attempt.output_limit))
    if connection.vendor == "postgresql":
        return _record_success_at_once(attempt, stored, now, completes=completes)
    with transaction.atomic():
        if not _finish_attempt(attempt, StepRunStatus.SUCCEEDED, AttemptOutcome.SUCCEEDED, now, output=stored):
            return True
        Run.objects.filter(pk=attempt.run.pk).update(last_progress_at=now)
        return finish_if_complete(attempt.run) if completes else False


def record_decision(attempt: Attempt, status: str, output: Any, **fields: Any) -> bool:
    """A control step decided (``workflows.execution.flow``): its attempt succeeded; the step is
    ``succeeded`` or ``waiting`` (its nested steps, a delay, a wait) with ``fields`` (wake_at, loop
    counts...). Inside the caller's transaction; False when another attempt owns the step."""
    now = timezone.now()
    stored = attempt.scrub(cap_output(output, attempt.output_limit))
    if not _finish_attempt(attempt, status, AttemptOutcome.SUCCEEDED, now, output=stored, extra=fields):
        return False
    Run.objects.filter(pk=attempt.run.pk).update(last_progress_at=now)
    return True


# The succeeded attempt's step row (if the attempt still owns it: ``done``) and attempt row
# (``closed``): the first two parts of each statement below that records a success.
_DONE_AND_CLOSED = """
    UPDATE workflows_steprun
       SET status = %(step_succeeded)s, rendered_config = %(config)s::jsonb, error = '', finished_at = %(now)s,
           duration_ms = %(duration)s, next_attempt_at = NULL, lease_expires_at = NULL, output = %(output)s::jsonb
     WHERE id = %(step)s AND status = %(step_running)s AND attempts = %(number)s
    RETURNING id
), closed AS (
    UPDATE workflows_stepattempt
       SET outcome = %(attempt_succeeded)s, finished_at = %(now)s, duration_ms = %(duration)s, error = '',
           request = %(request)s::jsonb, response_status = %(status)s, response_excerpt = %(excerpt)s
     WHERE step_run_id IN (SELECT id FROM done) AND number = %(number)s
"""

# A succeeded attempt in one statement (one round trip, one commit): the step
# row if the attempt still owns it, then its attempt row and its run. Only the
# run's last step can complete it (steps run in order; a replay reuses a
# prefix), so only then is "every other step succeeded" checked.
_RECORD_SUCCESS_SQL = """
WITH done AS ({done_and_closed}), progressed AS (
    UPDATE workflows_run AS r
       SET last_progress_at = %(now)s{complete_sets}
     WHERE r.id = %(run)s AND EXISTS (SELECT 1 FROM done)
)
SELECT EXISTS (SELECT 1 FROM done), {complete},
       -- the run's status before this statement (a CTE's writes are not visible here)
       (SELECT status IN (%(run_queued)s, %(run_running)s) FROM workflows_run WHERE id = %(run)s),
       -- with several organizations: has this one parked steps to wake now its slot frees
       -- (``fairness.slot_freed``; a step parked after this statement is woken by its parker)
       %(organization)s::bigint IS NOT NULL AND EXISTS (
           SELECT 1 FROM workflows_steprun AS ps
             JOIN workflows_run AS pr ON pr.id = ps.run_id
             JOIN workflows_workflow AS pw ON pw.id = pr.workflow_id
            WHERE ps.parked_at IS NOT NULL AND pw.organization_id = %(organization)s)
"""
_OTHERS_SUCCEEDED = (
    "NOT EXISTS (SELECT 1 FROM workflows_steprun AS o"
    " WHERE o.run_id = %(run)s AND o.id <> %(step)s AND o.status <> %(step_succeeded)s)"
)
_RECORD_SUCCESS_STEP = _RECORD_SUCCESS_SQL.format(done_and_closed=_DONE_AND_CLOSED, complete_sets="", complete="false")
_RECORD_SUCCESS_LAST_STEP = _RECORD_SUCCESS_SQL.format(
    done_and_closed=_DONE_AND_CLOSED,
    complete_sets=f"""
         , status = CASE WHEN r.status IN (%(run_queued)s, %(run_running)s) AND {_OTHERS_SUCCEEDED}
                         THEN %(run_succeeded)s ELSE r.status END
         , finished_at = CASE WHEN r.status IN (%(run_queued)s, %(run_running)s) AND {_OTHERS_SUCCEEDED}
                              THEN %(now)s ELSE r.finished_at END
         , started_at = COALESCE(r.started_at, %(now)s)""",
    complete=_OTHERS_SUCCEEDED,
)


# Status values come from their TextChoices, as parameters (the SQL above names none).
_STATUSES = {
    "step_running": StepRunStatus.RUNNING.value,
    "step_succeeded": StepRunStatus.SUCCEEDED.value,
    "attempt_succeeded": AttemptOutcome.SUCCEEDED.value,
    "run_queued": RunStatus.QUEUED.value,
    "run_running": RunStatus.RUNNING.value,
    "run_succeeded": RunStatus.SUCCEEDED.value,
}


def _done_params(attempt: Attempt, stored: Any, now: datetime) -> dict[str, Any]:
    """The parameters of ``_DONE_AND_CLOSED``: the succeeded attempt's step and attempt rows."""
    status, excerpt = _response_facts(stored)
    return {
        "step": attempt.step_run.pk,
        "number": attempt.number,
        "run": attempt.run.pk,
        "now": now,
        "duration": attempt.elapsed_ms(),
        "config": json_or_null(attempt.stored_config()),
        "output": json_or_null(stored),
        "request": json_or_null(attempt.stored_request()),
        "status": status,
        "excerpt": attempt.scrub(excerpt),
    }


def _record_success_at_once(attempt: Attempt, stored: Any, now: datetime, *, completes: bool) -> bool:
    positions = [s.get("position") for s in attempt.run.definition.get("steps", [])]
    last = completes and (not positions or attempt.step_run.position >= max(p for p in positions if p is not None))
    params = {
        **_done_params(attempt, stored, now),
        "organization": attempt.run.workflow.organization_id if attempt.ask_parked else None,
        **_STATUSES,
    }
    with connection.cursor() as cursor:
        cursor.execute(_RECORD_SUCCESS_LAST_STEP if last else _RECORD_SUCCESS_STEP, params)
        owned, complete, was_unfinished, parked = cursor.fetchone()
    if attempt.ask_parked:
        attempt.parked = bool(parked)
    if not owned:
        _superseded(attempt, AttemptOutcome.SUCCEEDED)
        return True
    if complete and was_unfinished:
        logger.info("run %s succeeded", attempt.run.pk)
    return bool(complete)


# A succeeded attempt handing over to the next step of its chain that runs in the same task
# (``engine``: a step that only computes): the step row and its attempt row as above, then the
# next step claimed -- only if this attempt still owned its step and the next one is pending --
# with its attempt opened, in one statement. The organization's running-step count does not
# change (one step of this task ends, the next starts), so no limit is checked here.
# Committed without waiting for the disk (synchronous_commit off for this statement only) when the
# next step only computes: the task always ends with a durable write (its last step's outcome,
# before the chain's next message is sent) that flushes this one with it; a database crash before
# that loses only the record of computations, which the run does again (its first step is still
# ``running`` under this message's claim). The fsync per statement was the largest cost of a step.
# The run's last_progress_at moves only when no next step was claimed: a running step keeps the
# sweeper away from the run (its lease says whether it is alive), and that column is indexed, so
# each write of it was a new entry in every index of the run table.
# A next step that leaves the process is claimed durably: its claim must outlive a database crash
# before it calls out (``durable``), or a redelivery would find it pending and call again.
_HAND_OVER_SQL = """
WITH no_wait AS (
    SELECT set_config(
        'synchronous_commit', CASE WHEN %(durable)s THEN current_setting('synchronous_commit') ELSE 'off' END, true
    ) AS setting
), done AS ({done_and_closed}{ahead}), claimed AS (
    UPDATE workflows_steprun AS s
       SET status = %(step_running)s, attempts = s.attempts + 1, claim_token = %(token)s, started_at = %(claimed_at)s,
           finished_at = NULL, next_attempt_at = NULL, lease_expires_at = %(lease)s
      FROM workflows_run AS r
     WHERE s.run_id = %(run)s AND s.position = %(next_position)s AND s.key = %(next_key)s
       AND s.status = %(step_pending)s AND r.id = s.run_id
       AND (r.status IN (%(run_queued)s, %(run_running)s, %(run_waiting)s) OR s.error_path)
       AND EXISTS (SELECT 1 FROM done){ahead_all}
    RETURNING s.id, s.key, s.attempts, s.path, s.parent_id, s.error_path
), opened AS (
    INSERT INTO workflows_stepattempt
           (step_run_id, number, outcome, started_at, error, response_excerpt, worker_host, worker_pid)
    SELECT id, attempts, '', %(claimed_at)s, '', '', %(host)s, %(pid)s FROM claimed
), progressed AS (
    UPDATE workflows_run SET last_progress_at = %(claimed_at)s
     WHERE id = %(run)s AND EXISTS (SELECT 1 FROM done) AND NOT EXISTS (SELECT 1 FROM claimed)
)
SELECT EXISTS (SELECT 1 FROM done), claimed.id, claimed.key, claimed.attempts, claimed.path, claimed.parent_id,
       claimed.error_path, {ahead_count}
  FROM no_wait LEFT JOIN claimed ON true
"""
# Steps computed ahead (``engine._compute_ahead``: steps that only compute, computed before they
# were claimed from the outputs in memory), recorded in the same statement: each goes from
# ``pending`` straight to ``succeeded`` with its attempt row, all of them or none (one that is not
# pending any more -- a message of another worker has it -- leaves them all, and the next step, to
# the ordinary claim). The next step is claimed only when all were recorded.
_AHEAD = """
), ahead_values AS (
    SELECT * FROM jsonb_to_recordset(%(ahead)s::jsonb) AS a(
        position integer, key text, config jsonb, output jsonb, request jsonb, status integer, excerpt text,
        started timestamptz, finished timestamptz, duration integer)
), ahead AS (
    UPDATE workflows_steprun AS s
       SET status = %(step_succeeded)s, attempts = s.attempts + 1, claim_token = %(token)s, started_at = a.started,
           finished_at = a.finished, duration_ms = a.duration, rendered_config = a.config, output = a.output,
           error = '', next_attempt_at = NULL, lease_expires_at = NULL
      FROM ahead_values AS a, workflows_run AS r
     WHERE s.run_id = %(run)s AND s.position = a.position AND s.key = a.key AND s.status = %(step_pending)s
       AND r.id = s.run_id AND r.status IN (%(run_queued)s, %(run_running)s)
       AND EXISTS (SELECT 1 FROM done)
       AND (SELECT count(*) FROM workflows_steprun AS p, ahead_values AS v
             WHERE p.run_id = %(run)s AND p.position = v.position AND p.status = %(step_pending)s)
           = %(ahead_count)s
    RETURNING s.id, s.attempts, a.request, a.status, a.excerpt, a.started, a.finished, a.duration
), ahead_attempts AS (
    INSERT INTO workflows_stepattempt
           (step_run_id, number, outcome, started_at, finished_at, duration_ms, error, request, response_status,
            response_excerpt, worker_host, worker_pid)
    SELECT id, attempts, %(attempt_succeeded)s, started, finished, duration, '', request, status, excerpt,
           %(host)s, %(pid)s
      FROM ahead
"""
_HAND_OVER = _HAND_OVER_SQL.format(done_and_closed=_DONE_AND_CLOSED, ahead="", ahead_all="", ahead_count="0")
_HAND_OVER_AHEAD = _HAND_OVER_SQL.format(
    done_and_closed=_DONE_AND_CLOSED,
    ahead=_AHEAD,
    ahead_all="\n       AND (SELECT count(*) FROM ahead) = %(ahead_count)s",
    ahead_count="(SELECT count(*) FROM ahead)",
)


@dataclass(frozen=True)
class HandedOver:
    """The next step as ``record_success_and_claim`` claimed it (None fields: not claimed)."""

    owned: bool
    step_pk: int | None = None
    key: str = ""
    attempts: int = 0
    path: str = ""
    parent_id: int | None = None
    error_path: bool = False
    ahead_recorded: bool = True  # every step computed ahead was recorded (none given: True)


@dataclass(frozen=True)
class Computed:
    """A step computed ahead of its claim (``engine._compute_ahead``): what its attempt did."""

    attempt: Attempt  # its step (position, key), rendered config and request summary
    output: Any  # as stored: capped (no credential, so nothing to scrub)
    started_at: datetime
    finished_at: datetime
    duration_ms: int

    def as_row(self) -> dict[str, Any]:
        status, excerpt = _response_facts(self.output)
        return {
            "position": self.attempt.step_run.position,
            "key": self.attempt.step_run.key,
            "config": self.attempt.stored_config(),
            "output": self.output,
            "request": self.attempt.stored_request(),
            "status": status,
            "excerpt": excerpt,
            "started": self.started_at.isoformat(),
            "finished": self.finished_at.isoformat(),
            "duration": self.duration_ms,
        }


def record_success_and_claim(
    attempt: Attempt,
    output: Any,
    *,
    next_position: int,
    next_key: str,
    lease: datetime,
    durable: bool = False,
    ahead: Sequence[Computed] = (),
    finished_at: datetime | None = None,
) -> HandedOver:
    """Store the output and claim the next step of the chain for this same task, in one statement
    (PostgreSQL). ``owned`` False: a newer attempt owns the step (nothing written but this
    attempt's ``superseded`` row). ``step_pk`` None: the next step was not pending (the caller
    claims it the ordinary way, which says why). ``ahead``: the steps between this one and the
    next, computed already, recorded as succeeded in the same statement (all or none:
    ``ahead_recorded``); ``finished_at``: when this step's action returned, if that was before them."""
    claimed_at = timezone.now()
    now = finished_at or claimed_at
    stored = attempt.scrub(cap_output(output, attempt.output_limit))
    params = {
        **_done_params(attempt, stored, now),
        "token": attempt.step_run.claim_token,
        "lease": lease,
        "claimed_at": claimed_at,
        "next_position": next_position,
        "next_key": next_key,
        "host": WORKER_HOST,
        "pid": os.getpid(),
        "step_pending": StepRunStatus.PENDING.value,
        "run_waiting": RunStatus.WAITING.value,
        "durable": durable,
        "ahead": json.dumps([computed.as_row() for computed in ahead]),
        "ahead_count": len(ahead),
        **_STATUSES,
    }
    with connection.cursor() as cursor:
        cursor.execute(_HAND_OVER_AHEAD if ahead else _HAND_OVER, params)
        owned, step_pk, key, attempts, path, parent_id, error_path, recorded = cursor.fetchone()
    if not owned:
        _superseded(attempt, AttemptOutcome.SUCCEEDED)
        return HandedOver(owned=False)
    attempt.output = stored
    return HandedOver(
        owned=True,
        step_pk=step_pk,
        key=key or "",
        attempts=attempts or 0,
        path=path or "",
        parent_id=parent_id,
        error_path=bool(error_path),
        ahead_recorded=recorded == len(ahead),
    )


def json_from_db(model: type[Model], field: str, value: Any) -> Any:
    """A JSON column read by raw SQL, decoded as the ORM would (its decoder, psycopg's text form)."""
    json_field = model._meta.get_field(field)
    assert isinstance(json_field, JSONField)  # noqa: S101 - a programming error, not input
    # None: no key transform applies to a whole column (django-stubs type the argument as an Expression).
    return json_field.from_db_value(value, None, connection)  # type: ignore[arg-type]


def json_or_null(value: Any) -> str | None:
    """A JSONField's value as the database gets it: None is SQL NULL, anything else JSON text."""
    return None if value is None else json.dumps(value)


def record_filtered(attempt: Attempt, output: Any) -> None:
    """A filter step stopped the run: the step is ``filtered`` (its attempt succeeded), the rest is skipped,
    the run is ``filtered``. In a flow run, a filter inside a loop's iteration ends that iteration only
    (``flow.on_filtered``)."""
    from . import flow  # deferred: flow imports this module

    now = timezone.now()
    stored = attempt.scrub(cap_output(output, attempt.output_limit))
    with transaction.atomic():
        if not _finish_attempt(attempt, StepRunStatus.FILTERED, AttemptOutcome.SUCCEEDED, now, output=stored):
            return
        if flow.is_flow_run(attempt.run):
            flow.on_filtered(attempt.run, attempt.step_run, now)
            return
        _skip_rest(attempt.run, attempt.step_run.position)
        Run.objects.filter(pk=attempt.run.pk).update(status=RunStatus.FILTERED, finished_at=now, last_progress_at=now)
    logger.info("run %s filtered at step %s", attempt.run.pk, attempt.step_run.key)


def record_failure(
    attempt: Attempt,
    message: str,
    *,
    outcome: str = AttemptOutcome.PERMANENT_ERROR,
    dead_letter: bool = False,
    response_status: int | None = None,
) -> None:
    """The step failed for good: the run fails (dead-lettered when retries ran out or a person must decide)."""
    now = timezone.now()
    message = attempt.scrub(clean_text(message))
    with transaction.atomic():
        if not _finish_attempt(
            attempt, StepRunStatus.FAILED, outcome, now, error=message, response_status=response_status
        ):
            return
        fail_run(attempt.run, attempt.step_run, message, now, dead_letter=dead_letter)
    logger.warning("run %s failed at step %s: %s", attempt.run.pk, attempt.step_run.key, message)


def record_retry(
    attempt: Attempt, message: str, delay: float, *, outcome: str, response_status: int | None = None
) -> bool:
    """The attempt failed and the step will be tried again in ``delay`` seconds; False if superseded."""
    now = timezone.now()
    next_attempt = now + timedelta(seconds=delay)
    message = attempt.scrub(clean_text(message))
    with transaction.atomic():
        if not _finish_attempt(
            attempt,
            StepRunStatus.RETRYING,
            outcome,
            now,
            error=message,
            next_attempt_at=next_attempt,
            response_status=response_status,
        ):
            return False
        # Waiting for a retry is progress: the sweeper leaves the run alone until then.
        Run.objects.filter(pk=attempt.run.pk).update(last_progress_at=next_attempt)
    logger.info(
        "run %s step %s: attempt %d failed (%s); retry in %.2f s",
        attempt.run.pk,
        attempt.step_run.key,
        attempt.number,
        message,
        delay,
    )
    return True


def fail_unattempted(run: Run, step_run: StepRun, message: str, *, dead_letter: bool) -> None:
    """Fail a step without a new attempt (its last one was lost and may not be repeated)."""
    now = timezone.now()
    with transaction.atomic():
        StepRun.objects.filter(pk=step_run.pk).update(
            status=StepRunStatus.FAILED,
            error=message,
            finished_at=now,
            next_attempt_at=None,
            lease_expires_at=None,
        )
        fail_run(run, step_run, message, now, dead_letter=dead_letter)
    logger.warning("run %s failed at step %s: %s", run.pk, step_run.key, message)


def fail_run(run: Run, step_run: StepRun, message: str, now: datetime, *, dead_letter: bool) -> None:
    """Fail the run; once that is committed, the workflow's failure notice is queued (``workflows.notices``).

    In a flow run (issue 19) the failure may be absorbed (``continue_on_error``, a loop's
    ``on_item_failure: continue``, a step of the error path); when the run fails, what was under
    way is closed and the workflow's ``on_failure`` steps start (``flow.on_run_failed``).
    """
    # Deferred: flow imports this module (it records decisions through it).
    from . import flow

    if flow.is_flow_run(run):
        if flow.absorb_failure(run, step_run, message):
            return
        transaction.on_commit(lambda: _notice_later(run.pk))
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            dead_lettered=dead_letter,
            error=f"step {step_run.key!r} failed: {message}",
            finished_at=now,
            last_progress_at=now,
        )
        flow.on_run_failed(run, step_run)
        return
    transaction.on_commit(lambda: _notice_later(run.pk))
    _skip_rest(run, step_run.position)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED,
        dead_lettered=dead_letter,
        error=f"step {step_run.key!r} failed: {message}",
        finished_at=now,
        last_progress_at=now,
    )


def _notice_later(run_id: Any) -> None:
    # Deferred: tasks imports the engine, which imports this module.
    from ..tasks import notify_run_failed

    try:
        notify_run_failed.delay(str(run_id))
    except Exception:  # noqa: BLE001 - the failure is recorded; a notice lost to a broker outage is only logged
        logger.exception("run %s failed; its failure notice could not be queued", run_id)


def finish_if_complete(run: Run) -> bool:
    """Mark the run succeeded when every step has; True when it is (or already was) finished."""
    if run.step_runs.exclude(status=StepRunStatus.SUCCEEDED).exists():
        return False
    now = timezone.now()
    updated = Run.objects.filter(pk=run.pk, status__in=UNFINISHED_RUN_STATUSES).update(
        status=RunStatus.SUCCEEDED,
        finished_at=now,
        last_progress_at=now,
        started_at=Coalesce(F("started_at"), Value(now)),
    )
    if updated:
        logger.info("run %s succeeded", run.pk)
    return True


def _skip_rest(run: Run, position: int) -> None:
    StepRun.objects.filter(run=run, position__gt=position).exclude(status=StepRunStatus.SUCCEEDED).update(
        status=StepRunStatus.SKIPPED
    )
