"""The management UI for workflows and runs (organization-scoped for non-superusers).

``workflow`` (workflows, their steps, "Run now", templates), ``run`` (read-only
run history, replay), ``forms`` and ``widgets`` (the pieces both use). Importing
the package registers both admins.
"""

from django.contrib import admin
from django_celery_beat import models as beat_models

from . import run, workflow

__all__ = ["run", "workflow"]

# Beat's tables are driven by the workflows (``schedules.schedule_sync``): not
# editable by hand, since a PeriodicTask edited there would drift from its
# workflow. ``admin.autodiscover()`` imports django_celery_beat's admin before
# this one (INSTALLED_APPS order), so they are registered by now. This lives
# with the admin rather than in ``apps.ready`` because the admin loads with the
# URLs only (SimpleAdminConfig), which keeps it out of worker and beat.
for _model in (
    beat_models.PeriodicTask,
    beat_models.IntervalSchedule,
    beat_models.CrontabSchedule,
    beat_models.SolarSchedule,
    beat_models.ClockedSchedule,
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
