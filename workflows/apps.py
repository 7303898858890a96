from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        # System checks, and the beat-side signal that stamps schedule firings
        # (connected in every process, beat included, not only where tasks run).
        from . import checks, tasks  # noqa: F401
