"""The management UI for workflows and runs (organization-scoped for non-superusers).

``workflow`` (workflows, their steps, "Run now", templates), ``run`` (read-only
run history, replay), ``forms`` and ``widgets`` (the pieces both use). Importing
the package registers both admins.
"""

from . import run, workflow

__all__ = ["run", "workflow"]
