from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        # System checks, the beat-side signal that stamps schedule firings, and the
        # hook that keeps /metrics counters when runs are deleted (connected in every
        # process, beat and workers included, not only where tasks or views run).
        from . import checks, tasks  # noqa: F401
