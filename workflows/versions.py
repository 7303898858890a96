"""Version history of a workflow, derived from what is already stored (no table of its own).

Every save bumps ``Workflow.version`` and every run keeps a snapshot of the
definition it executed (``Run.definition``), so the versions that ran are
known exactly: ``version_history`` lists the current version and each
earlier version seen in a run (newest first), and ``version_restore`` saves
the steps of one of them as a new version through ``services.workflow_update``.
A version that was saved but never ran is not recoverable this way.

Isolated on purpose: when a ``WorkflowVersion`` table lands (it records every
save), these two functions read from it instead and the pages do not change.
Trigger settings (type, schedule, signing) are not in a run's snapshot, so a
restore brings back the steps only.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min

from . import services
from .models import Run, Workflow
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
    current = services.workflow_definition(workflow)["steps"]
    stats = {
        row["workflow_version"]: row
        for row in Run.objects.filter(workflow=workflow)
        .values("workflow_version")
        .annotate(runs=Count("id"), first=Min("created_at"), last=Max("created_at"))
        .order_by("-workflow_version")[:limit]
    }
    versions = [
        Version(
            number=workflow.version,
            steps=current,
            current=True,
            saved_at=workflow.updated_at,
            runs=stats.get(workflow.version, {}).get("runs", 0),
            first_run_at=stats.get(workflow.version, {}).get("first"),
            last_run_at=stats.get(workflow.version, {}).get("last"),
        )
    ]
    for number, row in sorted(stats.items(), reverse=True):
        if number == workflow.version:
            continue
        definition = (
            Run.objects.filter(workflow=workflow, workflow_version=number)
            .order_by("-created_at")
            .values_list("definition", flat=True)
            .first()
        )
        versions.append(
            Version(
                number=number,
                steps=(definition or {}).get("steps", []),
                runs=row["runs"],
                first_run_at=row["first"],
                last_run_at=row["last"],
            )
        )
    for version in versions:
        version.step_keys = [f"{s['key']} ({s['action_type']})" for s in version.steps]
    return versions


def version_restore(*, workflow: Workflow, number: int) -> Workflow:
    """Save the steps of version ``number`` as the workflow's new version (validated as any save)."""
    if number == workflow.version:
        return workflow
    definition = (
        Run.objects.filter(workflow=workflow, workflow_version=number)
        .order_by("-created_at")
        .values_list("definition", flat=True)
        .first()
    )
    if definition is None:
        raise WorkflowInvalid({"version": [f"Version {number} of this workflow is not known (no run executed it)."]})
    steps = [
        {
            **{k: v for k, v in s.items() if k not in ("position", "credential_id")},
            "credential": s.get("credential_id"),
        }
        for s in definition.get("steps", [])
    ]
    return services.workflow_update(workflow=workflow, steps=steps)
