from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        # System checks, the beat-side signal that stamps schedule firings, and the
        # hook that keeps /metrics counters when runs are deleted (connected in every
        # process, beat and workers included, not only where tasks or views run).
        from . import checks, metrics, tasks  # noqa: F401

        self._unregister_beat_admin()

    @staticmethod
    def _unregister_beat_admin() -> None:
        """Beat's tables are driven by the workflows (``schedules.schedule_sync``): not editable by hand.

        A PeriodicTask edited by hand would drift from its workflow, so the
        workflow page is the only place. ``django.contrib.admin`` comes first in
        INSTALLED_APPS, so its autodiscovery has registered them by now.
        """
        from django.contrib import admin  # deferred: the admin site is only complete once apps are ready
        from django_celery_beat import models as beat_models  # deferred: models load after the app registry

        for model in (
            beat_models.PeriodicTask,
            beat_models.IntervalSchedule,
            beat_models.CrontabSchedule,
            beat_models.SolarSchedule,
            beat_models.ClockedSchedule,
        ):
            if admin.site.is_registered(model):
                admin.site.unregister(model)
