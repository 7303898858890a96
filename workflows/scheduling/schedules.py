"""Keep django-celery-beat in step with schedule workflows.

One ``PeriodicTask`` per schedule workflow, named ``potaflow-workflow-<id>``,
calling ``workflows.fire_schedule(workflow_id=...)`` on a ``CrontabSchedule``
in the workflow's time zone. The service layer calls ``schedule_sync`` after
every create/update and ``schedule_remove`` on delete; beat (``workflows.scheduling.scheduler``,
a django-celery-beat ``DatabaseScheduler``) notices ``save()``/``delete()`` by itself
and sends the due firings of a minute as ``workflows.fire_schedules`` batches.
"""

import json
import zoneinfo

from celery.schedules import crontab
from croniter import croniter
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from ..models import TriggerType, Workflow

FIRE_TASK = "workflows.fire_schedule"
# What beat's scheduler (workflows.scheduling.scheduler) sends instead: the due firings of one
# minute, many workflows a message.
FIRE_BATCH_TASK = "workflows.fire_schedules"


class ScheduleError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_cron(expression: str) -> tuple[str, str, str, str, str]:
    """Split and check a 5-field cron expression (minute hour day-of-month month day-of-week)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            "schedule",
            f"{expression!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week); "
            f"it has {len(fields)} field(s)",
        )
    if not croniter.is_valid(" ".join(fields)):
        raise ScheduleError("schedule", f"{expression!r} is not a valid cron expression")
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        # What beat will actually evaluate: reject what croniter accepts but Celery cannot parse.
        crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week)
    except Exception as exc:  # noqa: BLE001 - celery raises several types for bad fields
        raise ScheduleError("schedule", f"{expression!r} is not a valid cron expression: {exc}") from None
    return minute, hour, day_of_month, month, day_of_week


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("timezone", f"{name!r} is not a known IANA time zone (e.g. 'Europe/Paris')") from None


def schedule_sync(workflow: Workflow) -> PeriodicTask | None:
    """Create, update or remove the workflow's PeriodicTask to match the workflow."""
    if workflow.trigger_type != TriggerType.SCHEDULE:
        schedule_remove(workflow)
        return None
    minute, hour, day_of_month, month, day_of_week = parse_cron(workflow.schedule)
    tz = check_timezone(workflow.timezone)
    crontab_row, _ = CrontabSchedule.objects.get_or_create(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month,
        day_of_week=day_of_week,
        timezone=tz,
    )
    task = PeriodicTask.objects.filter(name=workflow.periodic_task_name).first() or PeriodicTask(
        name=workflow.periodic_task_name
    )
    task.task = FIRE_TASK
    task.crontab = crontab_row
    task.interval = None
    task.kwargs = json.dumps({"workflow_id": workflow.pk})
    task.enabled = workflow.is_active
    task.description = f"PotaFlow schedule of workflow {workflow.pk} ({workflow.name})"
    task.save()  # save(), not update(): DatabaseScheduler watches saves
    return task


def schedule_remove(workflow: Workflow) -> None:
    for task in PeriodicTask.objects.filter(name=workflow.periodic_task_name):
        task.delete()
