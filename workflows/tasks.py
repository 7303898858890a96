"""Celery tasks: thin. They translate Celery's facts (delivery flags, task ids,
beat headers) into plain arguments and make one engine, dispatch or service call."""

import logging
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from celery.signals import before_task_publish
from django.conf import settings

from core.broker import broker_countdown

from . import notices, services
from .execution import dispatch, engine, flow
from .ops import retention
from .scheduling import schedules

logger = logging.getLogger(__name__)

# Header beat's message carries: when the firing was sent (see stamp_schedule_time).
SCHEDULED_AT_HEADER = "potaflow_scheduled_at"
# kombu transports whose requeued messages carry no ``redelivered`` flag: there a
# message only comes back when it was rejected (its worker was lost).
TRANSPORTS_WITHOUT_REDELIVERED_FLAG = ("filesystem", "memory")


@shared_task(
    bind=True,
    name=dispatch.EXECUTE_STEP_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the step's own retry policy bounds retries (engine)
    ignore_result=True,
)
def execute_step(self, run_id: str, position: int, force: bool = False) -> None:
    delivery_info = self.request.delivery_info or {}
    transport = settings.CELERY_BROKER_URL.split(":", 1)[0]
    outcome = engine.run_step(
        run_id,
        position,
        may_be_redelivery=bool(delivery_info.get("redelivered")) or transport in TRANSPORTS_WITHOUT_REDELIVERED_FLAG,
        force=force,
        message_id=self.request.id or "",
    )
    if outcome.retry_in is not None:
        # Same message again later (same id, the rest of the chain attached); about the step that
        # asked for it, which may be one this task ran in process after its own (engine.run_step).
        if outcome.position is not None and outcome.position != position:
            countdown = broker_countdown(outcome.retry_in)
            raise self.retry(args=(run_id, outcome.position), kwargs={}, countdown=countdown, max_retries=None)
        raise self.retry(countdown=broker_countdown(outcome.retry_in), max_retries=None)
    if not outcome.proceed:
        self.request.chain = None  # stop the chain: the run is finished or someone else has it


@shared_task(bind=True, name="workflows.fire_schedule", acks_late=True, ignore_result=True)
def fire_schedule(self, workflow_id: int) -> None:
    services.run_schedule_fire(workflow_id=workflow_id, fired_at=scheduled_time(self.request))


@shared_task(name=schedules.FIRE_BATCH_TASK, acks_late=True, ignore_result=True)
def fire_schedules(workflow_ids: list[int], scheduled_at: str) -> None:
    """Beat's batch of the firings due at ``scheduled_at`` (workflows.scheduling.scheduler)."""
    services.run_schedule_fire_many(workflow_ids=workflow_ids, fired_at=_minute(scheduled_at))


def _minute(raw: Any) -> datetime:
    """An ISO time from beat, to the minute; now when it is missing or malformed."""
    when = None
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            logger.warning("schedule firing: ignoring a malformed scheduled time %r", raw)
    if when is None or when.tzinfo is None:
        when = datetime.now(tz=UTC)
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def scheduled_time(request: Any) -> datetime:
    """The minute a cron firing was for: from the header beat's message carries, else now.

    Beat sends a firing when it is due (cron has minute resolution), so the
    minute of sending is the scheduled minute, however late a worker runs it
    or how often the message is redelivered.
    """
    raw = getattr(request, SCHEDULED_AT_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        SCHEDULED_AT_HEADER
    )
    return _minute(raw)


@before_task_publish.connect(sender="workflows.fire_schedule", dispatch_uid="potaflow-stamp-schedule-time")
def stamp_schedule_time(headers: dict | None = None, **kwargs: Any) -> None:
    """In beat: stamp the send time on a firing (Celery puts no send time on messages)."""
    if headers is not None and headers.get("celery_beat_task") and SCHEDULED_AT_HEADER not in headers:
        headers[SCHEDULED_AT_HEADER] = datetime.now(tz=UTC).isoformat()


@shared_task(name="workflows.recover_stalled_runs", ignore_result=True)
def recover_stalled_runs() -> None:
    dispatch.recover_stalled_runs()


@shared_task(name="workflows.wake_waits", ignore_result=True)
def wake_waits() -> int:
    """Beat: resume the delays and waits that are due (durable: the database says when, not a countdown)."""
    return flow.wake_due()


@shared_task(name="workflows.prune_runs", ignore_result=True)
def prune_runs() -> None:
    retention.prune()


@shared_task(
    name=services.EXECUTE_TEST_RUN_TASK,
    # Acknowledged on receipt: a test that sends for real is never sent twice by a redelivery.
    acks_late=False,
    ignore_result=True,
    soft_time_limit=settings.POTAFLOW_TEST_RUN_TIMEOUT_SECONDS + 10,
    time_limit=settings.POTAFLOW_TEST_RUN_TIMEOUT_SECONDS + 20,
)
def execute_test_run(test_id: str) -> None:
    services.test_run_execute(test_id)


@shared_task(name="workflows.notify_run_failed", ignore_result=True)
def notify_run_failed(run_id: str) -> str:
    """A run failed: its workflow's failure notice, or a count for the next digest (``workflows.notices``)."""
    return notices.run_failed(run_id)


@shared_task(name="workflows.send_failure_digests", ignore_result=True)
def send_failure_digests() -> int:
    """Beat: the digests of failures that waited ``POTAFLOW_FAILURE_NOTICE_INTERVAL_SECONDS``."""
    return notices.send_digests()
