"""Celery tasks: thin. Ids in, one engine/service call, nothing else."""

import logging
from datetime import UTC, datetime

from celery import shared_task

from . import engine

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="workflows.execute_step",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the step's own retry policy bounds retries (engine)
    ignore_result=True,
)
def execute_step(self, run_id: str, position: int, force: bool = False) -> None:
    delivery_info = self.request.delivery_info or {}
    outcome = engine.run_step(run_id, position, redelivered=bool(delivery_info.get("redelivered")), force=force)
    if outcome.retry_in is not None:
        # Same message again later, with the rest of the chain attached.
        raise self.retry(countdown=outcome.retry_in, max_retries=None, kwargs={})
    if not outcome.proceed:
        self.request.chain = None  # stop the chain: the run is finished or someone else has it


@shared_task(name="workflows.fire_schedule", acks_late=True, ignore_result=True)
def fire_schedule(workflow_id: int) -> None:
    from .services import run_schedule_fire

    run_schedule_fire(workflow_id=workflow_id, fired_at=datetime.now(tz=UTC))


@shared_task(name="workflows.recover_stalled_runs", ignore_result=True)
def recover_stalled_runs() -> None:
    engine.recover_stalled_runs()
