"""Reads for the member pages, all scoped to the signed-in user's organizations."""

from datetime import timedelta
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.http import Http404, HttpRequest
from django.utils import timezone

from accounts.models import Membership, Role
from accounts.selectors import roles_at_least
from workflows.models import Run, RunStatus, StepRun, Workflow


def memberships(user) -> list[Membership]:
    return list(Membership.objects.filter(user=user).select_related("organization").order_by("organization__name"))


def current_membership(request: HttpRequest) -> Membership | None:
    """The organization the pages show: ``?org=<id>`` (remembered in the session), else the last one, else the first."""
    mine = memberships(request.user)
    if not mine:
        return None
    wanted = request.GET.get("org") or request.session.get("pf_org")
    chosen = next((m for m in mine if str(m.organization_id) == str(wanted)), mine[0])
    if request.session.get("pf_org") != chosen.organization_id:  # a session write only when it changes
        request.session["pf_org"] = chosen.organization_id
    return chosen


def membership_in(user, organization_id: int) -> Membership:
    """The user's membership in an object's organization; 404 when there is none (never 403)."""
    membership = Membership.objects.filter(user=user, organization_id=organization_id).first()
    if membership is None:
        raise Http404("Not found in your organizations.")
    return membership


def workflow_for(user, pk: Any) -> tuple[Workflow, Membership]:
    workflow = Workflow.objects.select_related("organization").filter(pk=pk).first() if str(pk).isdigit() else None
    if workflow is None:
        raise Http404("No such workflow in your organizations.")
    return workflow, membership_in(user, workflow.organization_id)


def run_for(user, run_id: Any) -> tuple[Run, Membership]:
    run = Run.objects.select_related("workflow", "workflow__organization", "replay_of").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run in your organizations.")
    return run, membership_in(user, run.workflow.organization_id)


def can_edit(membership: Membership) -> bool:
    return membership.has_role(Role.EDITOR)


def workflow_rows(organization_id: int, search: str = "") -> QuerySet:
    """Workflows with their last run and their runs and failures in the last 24 hours."""
    since = timezone.now() - timedelta(hours=24)
    latest = Run.objects.filter(workflow=OuterRef("pk")).order_by("-created_at")
    rows = Workflow.objects.filter(organization_id=organization_id)
    if search:
        rows = rows.filter(Q(name__icontains=search) | Q(description__icontains=search))
    return rows.annotate(
        runs_24h=Count("runs", filter=Q(runs__created_at__gte=since)),
        failures_24h=Count("runs", filter=Q(runs__created_at__gte=since, runs__status=RunStatus.FAILED)),
        last_status=Subquery(latest.values("status")[:1]),
        last_run_at=Subquery(latest.values("created_at")[:1]),
        last_run_id=Subquery(latest.values("id")[:1]),
    ).order_by("name", "id")


def run_rows(organization_id: int, *, workflow: str = "", status: str = "", dead: str = "") -> QuerySet[Run]:
    """The organization's runs, newest first, filtered; paged by ``RunListPaginator``, then ``with_replays``."""
    runs = Run.objects.filter(workflow__organization_id=organization_id).order_by("-created_at", "-id")
    if workflow.isdigit():
        runs = runs.filter(workflow_id=int(workflow))
    if status in RunStatus.values:
        runs = runs.filter(status=status)
    if dead == "1":
        runs = runs.filter(dead_lettered=True)
    return runs


def with_replays(page_runs: QuerySet[Run]) -> QuerySet[Run]:
    """A page's runs with their workflow, replay count and latest replay (for that page's rows only)."""
    return page_runs.select_related("workflow").annotate(
        replay_count=Count("replays"),
        latest_replay=Subquery(Run.objects.filter(replay_of=OuterRef("pk")).order_by("-created_at").values("id")[:1]),
    )


def _specs(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every step spec of a definition's step list, nested ones included (branch paths, loops)."""
    out: list[dict[str, Any]] = []
    for spec in steps:
        out.append(spec)
        config = spec.get("config") or {}
        if spec.get("action_type") == "branch":
            for path in config.get("paths") or []:
                out.extend(_specs(path.get("steps") or []))
            out.extend(_specs(config.get("otherwise") or []))
        elif spec.get("action_type") == "for_each":
            out.extend(_specs(config.get("steps") or []))
    return out


def _branch_trails(steps: list[dict[str, Any]], trail: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """For each step key, the branch paths it sits on, outermost first: ``("route/order",)``."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in steps:
        key = str(spec.get("key"))
        out[key] = trail
        config = spec.get("config") or {}
        if spec.get("action_type") == "branch":
            for path in config.get("paths") or []:
                out.update(_branch_trails(path.get("steps") or [], (*trail, f"{key}/{path.get('name')}")))
            out.update(_branch_trails(config.get("otherwise") or [], (*trail, f"{key}/otherwise")))
        elif spec.get("action_type") == "for_each":
            out.update(_branch_trails(config.get("steps") or [], trail))
    return out


def in_flow_order(run: Run, step_runs: list[StepRun]) -> list[StepRun]:
    """Step instances in the order of the definition (depth first), a loop's iterations by index, the error
    path last: ``route``, ``lines``, ``lines[0]/ratio``, ``lines[1]/ratio``..."""
    definition = run.definition or {}
    order = {
        spec.get("key"): i
        for i, spec in enumerate(_specs([*(definition.get("steps") or []), *(definition.get("on_failure") or [])]))
    }

    def key(step: StepRun) -> list[tuple[int, int]]:
        parts = (getattr(step, "path", "") or step.key).split("/")
        out = []
        for scope in parts[:-1]:  # "lines[3]"
            name, _, index = scope.partition("[")
            out.append((order.get(name, len(order)), int(index.rstrip("]") or 0)))
        out.append((order.get(step.key, len(order)), -1))
        return out

    trails = _branch_trails([*(definition.get("steps") or []), *(definition.get("on_failure") or [])])
    ordered = sorted(step_runs, key=key)
    for step in ordered:  # what the run page shows of each instance's place in the tree (display only)
        path = getattr(step, "path", "") or step.key
        step.trail = " › ".join((*trails.get(step.key, ()), path))  # type: ignore[attr-defined]
        step.depth = min(len(trails.get(step.key, ())) + path.count("/"), 5)  # type: ignore[attr-defined]
    return ordered


def run_flow(run: Run, step_runs: list[StepRun]) -> dict[str, Any]:
    """What the run page draws: the definition the run executed, each step instance's outcome (by its
    path, ``lines[3]/append`` in loops), and the approvals it waits for."""
    definition = run.definition or {}
    specs = {s.get("key"): s for s in _specs([*(definition.get("steps") or []), *(definition.get("on_failure") or [])])}
    instances = []
    approvals = []
    for step in step_runs:
        path = getattr(step, "path", "") or step.key
        last = list(step.attempt_log.all())[-1:] if step.attempts else []
        instance = {
            "key": step.key,
            "path": path,
            "status": step.status,
            "attempts": step.attempts,
            "outcome": last[0].outcome if last else "",
            "loop_total": getattr(step, "loop_total", None),
            "loop_finished": getattr(step, "loop_finished", None),
            "iterations": _iterations(step),
            # Only what the drawing needs of an output: the path(s) a branch took.
            "output": step.output if step.action_type == "branch" else None,
        }
        instances.append(instance)
        spec = specs.get(step.key) or {}
        if (
            step.status == "waiting"
            and step.action_type == "wait"
            and (spec.get("config") or {}).get("kind") == "approval"
        ):
            approvals.append({"key": step.key, "path": path})
    return {
        "steps": definition.get("steps") or [],
        "on_failure": definition.get("on_failure") or [],
        "trigger": {"label": run.get_trigger_display(), "summary": f"{run.get_trigger_display().lower()} event"},
        "instances": instances,
        "status": run.status,
        "approvals": approvals,
    }


def _iterations(step: StepRun) -> list[dict[str, Any]] | None:
    """A loop instance's iterations (index and status), where the engine keeps them (issue 19)."""
    rows = getattr(step, "iterations", None)
    if step.action_type != "for_each" or rows is None:
        return None
    return [{"index": i, "status": status} for i, status in rows.order_by("index").values_list("index", "status")]


def approvers(organization_id: int) -> list[str]:
    """Who may approve or refuse a waiting run: the organization's editors, admins and owners."""
    return list(
        Membership.objects.filter(organization_id=organization_id, role__in=roles_at_least(Role.EDITOR))
        .order_by("user__email")
        .values_list("user__email", flat=True)
    )
