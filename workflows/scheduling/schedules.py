"""Keep django-celery-beat in step with schedule workflows.

One ``PeriodicTask`` per schedule workflow, named ``potaflow-workflow-<id>``,
calling ``workflows.fire_schedule(workflow_id=...)`` on a ``CrontabSchedule``
in the workflow's time zone (the row's fields only: when it fires is the cron rule of
``workflows.scheduling.cron``, which beat's scheduler asks). The service layer calls ``schedule_sync`` after
every create/update and ``schedule_remove`` on delete; beat (``workflows.scheduling.scheduler``,
a django-celery-beat ``DatabaseScheduler``) notices ``save()``/``delete()`` by itself
and sends the due firings of a minute as ``workflows.fire_schedules`` batches.
"""

import json

from django_celery_beat.models import CrontabSchedule, PeriodicTask

from ..models import TriggerType, Workflow
from .cron import ScheduleError, check_timezone, parse_cron

# The cron rule's parser and errors are reached through here too (validation).
__all__ = [
    "FIRE_BATCH_TASK",
    "FIRE_TASK",
    "ScheduleError",
    "check_timezone",
    "parse_cron",
    "schedule_remove",
    "schedule_sync",
]

FIRE_TASK = "workflows.fire_schedule"
# What beat's scheduler (workflows.scheduling.scheduler) sends instead: the due firings of one
# minute, many workflows a message.
FIRE_BATCH_TASK = "workflows.fire_schedules"


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
