"""Dispatch and execution of runs.

``dispatch(run_id)`` sends a Celery chain of ``execute_step(run_id, position)``
for the steps still to do; messages hold ids only, outputs travel through the
database. ``run_step`` executes one step and tells the task what follows:
go on with the chain, stop it, or retry after a delay.

Delivery is at least once (acks_late, reject on worker loss, a recovery
sweeper), so execution is idempotent: a step is *claimed* with a conditional
update before it runs, a succeeded step is never executed again, and a message
for a run that no longer exists is dropped with a log line.

Claim rules for a message about step N:
- ``pending``: claimed.
- ``retrying``: claimed when its next attempt is due (the retry message).
- ``running``: the attempt in progress may be dead, or very much alive (a long
  step, a queue backlog). Re-claimed only
  * by the very message that claimed it, coming back redelivered (its worker
    died: Redis restores it after the visibility timeout, a killed pool child's
    message is requeued at once by ``reject_on_worker_lost``): the message id
    is the step's ``claim_token``. kombu's virtual transports (filesystem) do
    not flag redeliveries; there a message only comes back when rejected.
  * by the recovery sweeper (``force``) once the attempt started longer ago
    than the step's hard time limit: by then Celery has killed it anyway.
  Anything else is a duplicate, dropped. A step re-claimed this way more than
  its ``max_retries`` times is failed and dead-lettered (it keeps killing its
  worker: out of memory, hard time limit) instead of being run again.
- ``succeeded``: not executed; the chain goes on only if the next step has not
  started (the worker died between finishing and sending the next message).
- ``failed``/``skipped`` or a finished run: dropped.

An attempt records its outcome only while it still owns the step (status
``running`` with the attempt number it claimed), so a late finisher never
overwrites a newer attempt. Claiming moves the run's ``last_progress_at`` to the
attempt's hard time limit: the sweeper leaves a step alone while it may run.
"""

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import chain
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from integrations.actions.base import ActionContext
from integrations.errors import PermanentError, RetryableError, RunFiltered
from integrations.registry import UnknownAction, get_action
from integrations.storable import clean_text, storable

from . import templating
from .models import STEP_DEFAULTS, UNFINISHED_RUN_STATUSES, Run, RunStatus, StepRun, StepRunStatus
from .services import prepare_config

logger = logging.getLogger(__name__)

# Soft/hard Celery time limits beyond the step's own timeout_seconds (which the
# action enforces on its I/O): a hung handler is interrupted, never stuck forever.
SOFT_LIMIT_GRACE_SECONDS = 5.0
HARD_LIMIT_GRACE_SECONDS = 15.0
# A retry message may arrive a little before next_attempt_at (clock skew, ETA rounding).
RETRY_EARLY_TOLERANCE = timedelta(seconds=2)
RETRY_AFTER_CAP_SECONDS = 3600.0
TRUNCATION_MARKER = "_potaflow_truncated"
# kombu transports whose requeued messages carry no ``redelivered`` flag.
TRANSPORTS_WITHOUT_REDELIVERED_FLAG = ("filesystem", "memory")


def policy(spec: dict | None, field: str) -> float:
    """A step's retry/time setting from its definition snapshot, or the default."""
    value = (spec or {}).get(field)
    return float(STEP_DEFAULTS[field] if value is None else value)


def time_limit(spec: dict | None) -> float:
    """Seconds after which Celery kills an attempt of this step (hard time limit)."""
    return policy(spec, "timeout_seconds") + HARD_LIMIT_GRACE_SECONDS


def visibility_margin(visibility_timeout: float) -> float:
    """Room kept below the broker's visibility timeout (clock skew, worker hand-over)."""
    return min(60.0, visibility_timeout * 0.25)


def max_retry_delay() -> float:
    """The longest retry countdown that cannot be redelivered while a worker holds it.

    Redis hands an unacknowledged message (a retry waiting for its ETA is one)
    to another worker after ``visibility_timeout`` seconds; every delay stays
    below it, with a margin.
    """
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    visibility = options.get("visibility_timeout")
    if not visibility:
        return RETRY_AFTER_CAP_SECONDS
    return max(1.0, min(RETRY_AFTER_CAP_SECONDS, float(visibility) - visibility_margin(float(visibility))))


@dataclass(frozen=True)
class StepOutcome:
    proceed: bool = False
    retry_in: float | None = None


STOP = StepOutcome(proceed=False)
PROCEED = StepOutcome(proceed=True)


# -- dispatch ------------------------------------------------------------------
def dispatch(run_id: Any, *, force: bool = False) -> int:
    """Send the chain of the run's unfinished steps; returns how many steps were sent.

    ``force`` (recovery) lets the first message re-claim a step left ``running``
    or ``retrying`` by a message that was lost.
    """

    try:
        run = Run.objects.get(pk=run_id)
    except (Run.DoesNotExist, ValidationError):
        logger.warning("dispatch: run %s does not exist; nothing sent", run_id)
        return 0
    if run.is_finished:
        return 0
    todo = list(
        run.step_runs.filter(
            status__in=[StepRunStatus.PENDING, StepRunStatus.RUNNING, StepRunStatus.RETRYING]
        ).order_by("position")
    )
    if not todo:
        _finish_if_complete(run)
        return 0
    return dispatch_recorded(run, [step_run.position for step_run in todo], force=force)


def dispatch_recorded(run: Run, positions: list[int], *, force: bool = False) -> int:
    """Send the chain of ``positions`` of ``run``, a run whose state the caller knows.

    ``run_accept`` calls it right after commit with the steps it just wrote, so
    the webhook's hot path does not read them back; ``dispatch`` after reading them.
    """
    from .tasks import execute_step

    specs = {s["position"]: s for s in run.definition.get("steps", [])}
    signatures = []
    for index, position in enumerate(positions):
        spec = specs.get(position)
        kwargs = {"force": True} if force and index == 0 else {}
        signatures.append(
            execute_step.si(str(run.pk), position, **kwargs).set(
                soft_time_limit=policy(spec, "timeout_seconds") + SOFT_LIMIT_GRACE_SECONDS,
                time_limit=time_limit(spec),
            )
        )
    chain(*signatures).apply_async()
    logger.info("dispatched run %s from step %s (%d step(s))", run.pk, positions[0], len(positions))
    return len(positions)


def recover_stalled_runs(*, stalled_after: float | None = None) -> list[str]:
    """Re-dispatch unfinished runs with no progress for ``stalled_after`` seconds.

    Covers lost messages (broker restarted empty, a web process that died
    between commit and send). Runs waiting for a retry are not stalled: their
    ``last_progress_at`` is the time of the next attempt; nor are runs with a
    step in progress: theirs is the attempt's hard time limit.
    """
    if stalled_after is None:
        stalled_after = settings.POTAFLOW_STALLED_AFTER_SECONDS
    now = timezone.now()
    cutoff = now - timedelta(seconds=stalled_after)
    recovered = []
    stalled = Run.objects.filter(status__in=UNFINISHED_RUN_STATUSES, last_progress_at__lt=cutoff)
    for run_id, seen in stalled.values_list("pk", "last_progress_at")[:500]:
        # Claim the recovery so two sweepers never re-dispatch the same run.
        if not Run.objects.filter(pk=run_id, last_progress_at=seen).update(last_progress_at=now):
            continue
        logger.warning("recovering stalled run %s (no progress since %s)", run_id, seen.isoformat())
        dispatch(run_id, force=True)
        recovered.append(str(run_id))
    return recovered


# -- execution -----------------------------------------------------------------
def run_step(
    run_id: Any, position: int, *, redelivered: bool = False, force: bool = False, message_id: str = ""
) -> StepOutcome:
    """Execute step ``position`` of run ``run_id`` once, recording everything.

    ``message_id`` identifies the delivering message (the Celery task id) and
    becomes the claim token; see the module docstring for who may claim what.
    """
    try:
        step_run = StepRun.objects.select_related("run").get(run_id=run_id, position=position)
    except (StepRun.DoesNotExist, ValidationError, ValueError):
        logger.warning("dropping message for run %s step %s: it does not exist (deleted?)", run_id, position)
        return STOP
    run = step_run.run
    if run.is_finished:
        logger.info("dropping message for run %s step %s: the run is already %s", run_id, position, run.status)
        return STOP
    if step_run.status == StepRunStatus.SUCCEEDED:
        return _after_duplicate_success(run, position)
    if step_run.status in (StepRunStatus.FAILED, StepRunStatus.SKIPPED):
        return STOP

    spec = _spec_for(run, position)
    now = timezone.now()
    status = step_run.status
    if status == StepRunStatus.RETRYING:
        claimable = step_run.next_attempt_at is None or step_run.next_attempt_at <= now + RETRY_EARLY_TOLERANCE
    elif status == StepRunStatus.RUNNING:
        claimable = _may_take_over(step_run, spec, now, redelivered=redelivered, force=force, message_id=message_id)
    else:
        claimable = status == StepRunStatus.PENDING
    if not claimable:
        logger.info("dropping duplicate message for run %s step %s (status %s)", run_id, position, status)
        return STOP

    if status == StepRunStatus.RUNNING and step_run.attempts > policy(spec, "max_retries"):
        # Every attempt so far died with its worker (or hit the hard time limit).
        message = f"worker lost or time limit exceeded; gave up after {step_run.attempts} attempts"
        _record_failure(run, step_run, step_run.rendered_config, message, time.monotonic(), dead_letter=True)
        return STOP

    # The sweeper leaves the run alone until this attempt's hard time limit has passed.
    busy_until = now + timedelta(seconds=time_limit(spec))
    claimed = StepRun.objects.filter(pk=step_run.pk, status=status, attempts=step_run.attempts).update(
        status=StepRunStatus.RUNNING,
        attempts=F("attempts") + 1,
        claim_token=message_id,
        started_at=now,
        finished_at=None,
        next_attempt_at=None,
    )
    if not claimed:
        logger.info("dropping duplicate message for run %s step %s (claimed meanwhile)", run_id, position)
        return STOP
    Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING, started_at=now)
    Run.objects.filter(pk=run.pk).update(last_progress_at=busy_until)
    step_run.refresh_from_db()
    run.refresh_from_db()
    return _execute(run, step_run)


def _spec_for(run: Run, position: int) -> dict | None:
    return next((s for s in run.definition.get("steps", []) if s["position"] == position), None)


def _may_take_over(
    step_run: StepRun, spec: dict | None, now: Any, *, redelivered: bool, force: bool, message_id: str
) -> bool:
    """May this message re-claim a step another attempt left ``running``?"""
    if force and step_run.started_at is not None:
        if step_run.started_at <= now - timedelta(seconds=time_limit(spec)):
            return True  # that attempt is past its hard time limit: dead
    if message_id and step_run.claim_token == message_id:
        # The message that claimed it is back, so its worker is gone.
        transport = settings.CELERY_BROKER_URL.split(":", 1)[0]
        return redelivered or transport in TRANSPORTS_WITHOUT_REDELIVERED_FLAG
    return False


def _after_duplicate_success(run: Run, position: int) -> StepOutcome:
    following = run.step_runs.filter(position__gt=position).order_by("position").first()
    if following is None:
        _finish_if_complete(run)
        return STOP
    return PROCEED if following.status == StepRunStatus.PENDING else STOP


def _execute(run: Run, step_run: StepRun) -> StepOutcome:
    started = time.monotonic()
    try:
        return _attempt(run, step_run, started)
    except Exception as exc:  # noqa: BLE001 - recording the outcome failed: fail for good, never stay running
        logger.exception("could not record the outcome of step %s of run %s", step_run.key, run.pk)
        message = f"the step's outcome could not be recorded: {type(exc).__name__}: {exc}"
        _record_failure(run, step_run, None, message, started, dead_letter=False)
        return STOP


def _attempt(run: Run, step_run: StepRun, started: float) -> StepOutcome:
    spec = _spec_for(run, step_run.position)
    rendered: Any = None
    try:
        if spec is None:
            raise PermanentError(f"step {step_run.position} is missing from the run's definition")
        try:
            action = get_action(spec["action_type"])
        except UnknownAction as exc:
            raise PermanentError(str(exc)) from None
        context = build_context(run)
        config = prepare_config(action, spec.get("config") or {})
        try:
            rendered = templating.render_value(config, context)
        except templating.TemplateError as exc:
            raise PermanentError(f"template error: {exc.message}") from None
        credential, credential_kind = _credential_for(run, spec, action)
        ctx = ActionContext(
            run_id=run.pk,
            workflow_id=run.workflow_id,
            organization_id=run.workflow.organization_id,
            step_key=step_run.key,
            attempt=step_run.attempts,
            timeout_seconds=policy(spec, "timeout_seconds"),
            credential=credential,
            credential_kind=credential_kind,
            template_context=context,
        )
        output = action.run(rendered, ctx)
    except RunFiltered as filtered:
        _record_filtered(run, step_run, rendered, filtered.output, started)
        return STOP
    except RetryableError as exc:
        return _record_retryable(run, step_run, spec or {}, rendered, exc.message, exc.retry_after, started)
    except SoftTimeLimitExceeded:
        message = f"timed out: still running after {policy(spec, 'timeout_seconds'):g} s"
        return _record_retryable(run, step_run, spec or {}, rendered, message, None, started)
    except PermanentError as exc:
        _record_failure(run, step_run, rendered, exc.message, started, dead_letter=False)
        return STOP
    except Exception as exc:  # noqa: BLE001 - an unexpected error is a permanent failure, never a stuck run
        logger.exception("step %s of run %s raised unexpectedly", step_run.key, run.pk)
        _record_failure(run, step_run, rendered, f"{type(exc).__name__}: {exc}", started, dead_letter=False)
        return STOP
    return _record_success(run, step_run, rendered, output, started)


def build_context(run: Run) -> dict[str, Any]:
    """The template context: trigger payload, earlier outputs, run and workflow."""
    steps = {
        sr.key: {"output": sr.output, "status": sr.status}
        for sr in run.step_runs.filter(status=StepRunStatus.SUCCEEDED).order_by("position")
    }
    workflow = run.definition.get("workflow", {})
    return {
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


def _credential_for(run: Run, spec: dict, action: Any) -> tuple[dict | None, str | None]:
    from integrations.models import Credential

    credential_id = spec.get("credential_id")
    if credential_id is None:
        if action.credential_required:
            raise PermanentError(f"the {action.name} action needs a credential and the step has none")
        return None, None
    credential = Credential.objects.filter(pk=credential_id, organization_id=run.workflow.organization_id).first()
    if credential is None:
        raise PermanentError(f"credential {credential_id} no longer exists")
    from integrations.services import credential_reveal

    return credential_reveal(credential), credential.kind


def backoff_delay(*, attempt: int, backoff_seconds: float, backoff_max_seconds: float) -> float:
    """Exponential backoff with +-20 % jitter: attempt 1 waits ~backoff, then x2 each time, capped."""
    base = backoff_seconds * (2 ** max(attempt - 1, 0))
    jittered = base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography
    return max(0.0, min(jittered, backoff_max_seconds))


# -- recording -----------------------------------------------------------------
def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def cap_output(output: Any) -> Any:
    """The output as storable JSON of at most POTAFLOW_STEP_OUTPUT_MAX_BYTES; mark what was cut.

    Storable as ``integrations.storable`` makes it: NUL and lone surrogates
    become U+FFFD, NaN/Infinity the strings "NaN"/"Infinity", anything else
    that is not JSON its ``str()``.
    """
    text = json.dumps(storable(output))
    limit = settings.POTAFLOW_STEP_OUTPUT_MAX_BYTES
    size = len(text.encode())
    if size <= limit:
        return json.loads(text)
    return {TRUNCATION_MARKER: True, "size_bytes": size, "preview": text[: max(limit - 200, 0)]}


def _storable_config(rendered: Any) -> Any:
    """The rendered config as stored (a template can render anything, even NUL)."""
    try:
        return storable(rendered)
    except RecursionError:
        return None


def _owned(step_run: StepRun):
    """The step, if this attempt still owns it (a newer claim changes status or attempts)."""
    return StepRun.objects.filter(pk=step_run.pk, status=StepRunStatus.RUNNING, attempts=step_run.attempts)


def _superseded(run: Run, step_run: StepRun) -> StepOutcome:
    logger.warning(
        "run %s step %s attempt %d finished after a newer attempt took over; its result is dropped",
        run.pk,
        step_run.key,
        step_run.attempts,
    )
    return STOP


def _store_success(step_run: StepRun, rendered: Any, output: Any, started: float, now: datetime) -> bool:
    """Mark the claimed attempt succeeded; False when a newer attempt owns the step."""
    return bool(
        _owned(step_run).update(
            status=StepRunStatus.SUCCEEDED,
            rendered_config=_storable_config(rendered),
            output=cap_output(output),
            error="",
            finished_at=now,
            duration_ms=_elapsed_ms(started),
        )
    )


def _record_success(run: Run, step_run: StepRun, rendered: Any, output: Any, started: float) -> StepOutcome:
    now = timezone.now()
    with transaction.atomic():
        if not _store_success(step_run, rendered, output, started, now):
            return _superseded(run, step_run)
        Run.objects.filter(pk=run.pk).update(last_progress_at=now)
        finished = _finish_if_complete(run)
    return STOP if finished else PROCEED


def _finish_if_complete(run: Run) -> bool:
    if run.step_runs.exclude(status=StepRunStatus.SUCCEEDED).exists():
        return False
    now = timezone.now()
    Run.objects.filter(pk=run.pk, status__in=UNFINISHED_RUN_STATUSES).update(
        status=RunStatus.SUCCEEDED,
        finished_at=now,
        last_progress_at=now,
        started_at=Coalesce(F("started_at"), Value(now)),
    )
    logger.info("run %s succeeded", run.pk)
    return True


def _record_filtered(run: Run, step_run: StepRun, rendered: Any, output: Any, started: float) -> None:
    now = timezone.now()
    with transaction.atomic():
        if not _store_success(step_run, rendered, output, started, now):
            _superseded(run, step_run)
            return
        _skip_rest(run, step_run.position)
        Run.objects.filter(pk=run.pk).update(status=RunStatus.FILTERED, finished_at=now, last_progress_at=now)
    logger.info("run %s filtered at step %s", run.pk, step_run.key)


def _record_failure(
    run: Run, step_run: StepRun, rendered: Any, message: str, started: float, *, dead_letter: bool
) -> None:
    now = timezone.now()
    message = clean_text(message)
    with transaction.atomic():
        updated = _owned(step_run).update(
            status=StepRunStatus.FAILED,
            rendered_config=_storable_config(rendered),
            error=message,
            finished_at=now,
            duration_ms=_elapsed_ms(started),
            next_attempt_at=None,
        )
        if not updated:
            _superseded(run, step_run)
            return
        _skip_rest(run, step_run.position)
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            dead_lettered=dead_letter,
            error=f"step {step_run.key!r} failed: {message}",
            finished_at=now,
            last_progress_at=now,
        )
    logger.warning("run %s failed at step %s: %s", run.pk, step_run.key, message)


def _record_retryable(
    run: Run,
    step_run: StepRun,
    spec: dict,
    rendered: Any,
    message: str,
    retry_after: float | None,
    started: float,
) -> StepOutcome:
    if step_run.attempts > policy(spec, "max_retries"):
        _record_failure(
            run,
            step_run,
            rendered,
            f"{message} (gave up after {step_run.attempts} attempts)",
            started,
            dead_letter=True,
        )
        return STOP
    if retry_after is not None:
        delay = max(float(retry_after), 0.0)
    else:
        delay = backoff_delay(
            attempt=step_run.attempts,
            backoff_seconds=policy(spec, "backoff_seconds"),
            backoff_max_seconds=policy(spec, "backoff_max_seconds"),
        )
    delay = min(delay, max_retry_delay())
    now = timezone.now()
    next_attempt = now + timedelta(seconds=delay)
    message = clean_text(message)
    with transaction.atomic():
        updated = _owned(step_run).update(
            status=StepRunStatus.RETRYING,
            rendered_config=_storable_config(rendered),
            error=message,
            finished_at=now,
            duration_ms=_elapsed_ms(started),
            next_attempt_at=next_attempt,
        )
        if not updated:
            return _superseded(run, step_run)
        # Waiting for a retry is progress: the sweeper leaves the run alone until then.
        Run.objects.filter(pk=run.pk).update(last_progress_at=next_attempt)
    logger.info(
        "run %s step %s: attempt %d failed (%s); retry in %.2f s",
        run.pk,
        step_run.key,
        step_run.attempts,
        message,
        delay,
    )
    return StepOutcome(retry_in=delay)


def _skip_rest(run: Run, position: int) -> None:
    StepRun.objects.filter(run=run, position__gt=position).exclude(status=StepRunStatus.SUCCEEDED).update(
        status=StepRunStatus.SKIPPED
    )
