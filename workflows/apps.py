from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        # Imported when the app is ready (models loaded): system checks, the beat-side signal that
        # stamps schedule firings, the hook that keeps /metrics counters when runs are deleted (in
        # every process, beat and workers included), and Insights' SQLite triggers, which step out
        # of every migrate's way (workflows.ops.insights_triggers).
        from django.db.models.signals import post_migrate, pre_migrate

        from . import checks, tasks  # noqa: F401
        from .ops import insights_triggers  # reads the models: only once the app registry is ready

        pre_migrate.connect(insights_triggers.drop_sqlite_triggers, sender=self, dispatch_uid="pf-insights-drop")
        post_migrate.connect(insights_triggers.create_sqlite_triggers, sender=self, dispatch_uid="pf-insights-make")
