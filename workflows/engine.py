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
- ``running``: only by a redelivered message (the worker that had it died) or
  by the recovery sweeper (``force``); anything else is a duplicate, dropped.
- ``succeeded``: not executed; the chain goes on only if the next step has not
  started (the worker died between finishing and sending the next message).
- ``failed``/``skipped`` or a finished run: dropped.
"""

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import chain
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from integrations.actions.base import ActionContext
from integrations.errors import PermanentError, RetryableError, RunFiltered
from integrations.registry import UnknownAction, get_action

from . import templating
from .models import UNFINISHED_RUN_STATUSES, Run, RunStatus, StepRun, StepRunStatus
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
    from .tasks import execute_step

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
    specs = {s["position"]: s for s in run.definition.get("steps", [])}
    signatures = []
    for index, step_run in enumerate(todo):
        timeout = float(specs.get(step_run.position, {}).get("timeout_seconds") or 30.0)
        kwargs = {"force": True} if force and index == 0 else {}
        signatures.append(
            execute_step.si(str(run.pk), step_run.position, **kwargs).set(
                soft_time_limit=timeout + SOFT_LIMIT_GRACE_SECONDS,
                time_limit=timeout + HARD_LIMIT_GRACE_SECONDS,
            )
        )
    chain(*signatures).apply_async()
    logger.info("dispatched run %s from step %s (%d step(s))", run.pk, todo[0].position, len(todo))
    return len(todo)


def recover_stalled_runs(*, stalled_after: float | None = None) -> list[str]:
    """Re-dispatch unfinished runs with no progress for ``stalled_after`` seconds.

    Covers lost messages (broker restarted empty, a web process that died
    between commit and send). Runs waiting for a retry are not stalled: their
    ``last_progress_at`` is the time of the next attempt.
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
def run_step(run_id: Any, position: int, *, redelivered: bool = False, force: bool = False) -> StepOutcome:
    """Execute step ``position`` of run ``run_id`` once, recording everything."""
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

    now = timezone.now()
    claimable = Q(status=StepRunStatus.PENDING) | Q(
        status=StepRunStatus.RETRYING, next_attempt_at__lte=now + RETRY_EARLY_TOLERANCE
    )
    if redelivered or force:
        claimable |= Q(status__in=[StepRunStatus.RUNNING, StepRunStatus.RETRYING])
    claimed = StepRun.objects.filter(claimable, pk=step_run.pk, attempts=step_run.attempts).update(
        status=StepRunStatus.RUNNING,
        attempts=F("attempts") + 1,
        started_at=now,
        finished_at=None,
        next_attempt_at=None,
    )
    if not claimed:
        logger.info("dropping duplicate message for run %s step %s (status %s)", run_id, position, step_run.status)
        return STOP
    Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING, started_at=now)
    Run.objects.filter(pk=run.pk).update(last_progress_at=now)
    step_run.refresh_from_db()
    run.refresh_from_db()
    return _execute(run, step_run)


def _after_duplicate_success(run: Run, position: int) -> StepOutcome:
    following = run.step_runs.filter(position__gt=position).order_by("position").first()
    if following is None:
        _finish_if_complete(run)
        return STOP
    return PROCEED if following.status == StepRunStatus.PENDING else STOP


def _execute(run: Run, step_run: StepRun) -> StepOutcome:
    spec = next((s for s in run.definition.get("steps", []) if s["position"] == step_run.position), None)
    started = time.monotonic()
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
            timeout_seconds=float(spec.get("timeout_seconds") or 30.0),
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
        message = f"timed out: still running after {float((spec or {}).get('timeout_seconds') or 30.0):g} s"
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
    """Keep outputs JSON and at most POTAFLOW_STEP_OUTPUT_MAX_BYTES; mark what was cut."""
    text = json.dumps(output, default=str)
    limit = settings.POTAFLOW_STEP_OUTPUT_MAX_BYTES
    size = len(text.encode())
    if size <= limit:
        return json.loads(text)
    return {TRUNCATION_MARKER: True, "size_bytes": size, "preview": text[: max(limit - 200, 0)]}


def _record_success(run: Run, step_run: StepRun, rendered: Any, output: Any, started: float) -> StepOutcome:
    now = timezone.now()
    with transaction.atomic():
        StepRun.objects.filter(pk=step_run.pk).update(
            status=StepRunStatus.SUCCEEDED,
            rendered_config=rendered,
            output=cap_output(output),
            error="",
            finished_at=now,
            duration_ms=_elapsed_ms(started),
        )
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
        StepRun.objects.filter(pk=step_run.pk).update(
            status=StepRunStatus.SUCCEEDED,
            rendered_config=rendered,
            output=cap_output(output),
            error="",
            finished_at=now,
            duration_ms=_elapsed_ms(started),
        )
        _skip_rest(run, step_run.position)
        Run.objects.filter(pk=run.pk).update(status=RunStatus.FILTERED, finished_at=now, last_progress_at=now)
    logger.info("run %s filtered at step %s", run.pk, step_run.key)


def _record_failure(
    run: Run, step_run: StepRun, rendered: Any, message: str, started: float, *, dead_letter: bool
) -> None:
    now = timezone.now()
    with transaction.atomic():
        StepRun.objects.filter(pk=step_run.pk).update(
            status=StepRunStatus.FAILED,
            rendered_config=rendered,
            error=message,
            finished_at=now,
            duration_ms=_elapsed_ms(started),
            next_attempt_at=None,
        )
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
    max_retries = int(spec.get("max_retries", 3))
    if step_run.attempts > max_retries:
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
        delay = min(max(float(retry_after), 0.0), RETRY_AFTER_CAP_SECONDS)
    else:
        delay = backoff_delay(
            attempt=step_run.attempts,
            backoff_seconds=float(spec.get("backoff_seconds", 2.0)),
            backoff_max_seconds=float(spec.get("backoff_max_seconds", 300.0)),
        )
    now = timezone.now()
    next_attempt = now + timedelta(seconds=delay)
    with transaction.atomic():
        StepRun.objects.filter(pk=step_run.pk).update(
            status=StepRunStatus.RETRYING,
            rendered_config=rendered,
            error=message,
            finished_at=now,
            duration_ms=_elapsed_ms(started),
            next_attempt_at=next_attempt,
        )
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
