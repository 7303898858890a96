"""The management UI for workflows and runs (organization-scoped for non-superusers).

``workflow`` (workflows, their steps, "Run now", templates), ``run`` (read-only
run history, replay), ``forms`` and ``widgets`` (the pieces both use). Importing
the package registers both admins.
"""

from django.contrib import admin
from django_celery_beat import models as beat_models

from . import run, workflow

__all__ = ["hide_beat_tables", "run", "workflow"]


def hide_beat_tables() -> None:
    """Beat's tables are driven by the workflows (``schedules.schedule_sync``): not editable by hand.

    A PeriodicTask edited there would drift from its workflow. Called by
    ``potaflow.urls`` right after ``admin.autodiscover()`` has registered
    django_celery_beat's admin (whatever imported which admin module first).
    The admin loads with the URLs only (SimpleAdminConfig), which keeps it out
    of worker and beat, so this cannot live in ``apps.ready``.
    """
    for model in (
        beat_models.PeriodicTask,
        beat_models.IntervalSchedule,
        beat_models.CrontabSchedule,
        beat_models.SolarSchedule,
        beat_models.ClockedSchedule,
    ):
        if admin.site.is_registered(model):
            admin.site.unregister(model)
