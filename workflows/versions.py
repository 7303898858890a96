"""Version history of a workflow, from its stored versions (``WorkflowVersion``).

Every save that changes the definition writes a version row, and runs point
at the version they executed: ``version_history`` lists the versions newest
first with how many runs executed each, and ``version_restore`` saves the
steps of one of them as a new version through ``services.workflow_update``.
Retention deletes superseded versions that no run uses, so an old version
that never ran may be gone. A version holds the steps (the trigger settings
live on the workflow), so a restore brings back the steps only.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min

from . import services
from .models import Workflow, WorkflowVersion
from .validation import WorkflowInvalid


@dataclass
class Version:
    number: int
    steps: list[dict[str, Any]]
    current: bool = False
    first_run_at: datetime | None = None
    last_run_at: datetime | None = None
    runs: int = 0
    saved_at: datetime | None = None
    step_keys: list[str] = field(default_factory=list)


def version_history(workflow: Workflow, *, limit: int = 50) -> list[Version]:
    services.workflow_current_version(workflow)  # a workflow saved before versions were stored gets its row
    rows = (
        WorkflowVersion.objects.filter(workflow=workflow)
        .annotate(run_count=Count("runs"), first=Min("runs__created_at"), last=Max("runs__created_at"))
        .order_by("-number")[:limit]
    )
    versions = [
        Version(
            number=row.number,
            steps=(row.definition or {}).get("steps", []),
            current=row.number == workflow.version,
            saved_at=row.created_at,
            runs=row.run_count,
            first_run_at=row.first,
            last_run_at=row.last,
        )
        for row in rows
    ]
    for version in versions:
        version.step_keys = [f"{s['key']} ({s['action_type']})" for s in version.steps]
    return versions


def version_restore(*, workflow: Workflow, number: int) -> Workflow:
    """Save the steps of version ``number`` as the workflow's new version (validated as any save)."""
    if number == workflow.version:
        return workflow
    row = WorkflowVersion.objects.filter(workflow=workflow, number=number).first()
    if row is None:
        raise WorkflowInvalid(
            {"version": [f"Version {number} of this workflow is not stored (pruned, or never saved)."]}
        )
    steps = [
        {
            **{k: v for k, v in s.items() if k not in ("position", "credential_id")},
            "credential": s.get("credential_id"),
        }
        for s in (row.definition or {}).get("steps", [])
    ]
    return services.workflow_update(
        workflow=workflow, steps=steps, on_failure=(row.definition or {}).get("on_failure") or []
    )
