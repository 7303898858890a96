"""The member pages: sign-in, workflow list, builder, runs. Views only translate.

Every organization member signs in here with the email and password of the
API (Django's session auth; the admin stays staff-only). What they may do is
their role in the object's organization: viewers read, editors build, test,
run and replay. Another organization's ids answer 404. The builder page is a
shell: its script edits the definition in the browser and saves through the
API (``PUT /api/workflows/<id>/``, session-authenticated with the CSRF
header), so saving goes through ``services.workflow_update`` with the API's
error shape (``steps[1].config.url``).
"""

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from integrations.models import Credential
from integrations.oauth.selectors import needing_reconnect
from integrations.registry import all_actions
from workflows import dry_run, live, services, versions
from workflows import selectors as workflow_selectors
from workflows.admin.widgets import cron_description, human_duration
from workflows.api import WorkflowSerializer
from workflows.files.download import file_response
from workflows.intake.signatures import SignatureScheme
from workflows.models import STEP_DEFAULTS, InDoubtPolicy, Run, RunStatus, StepRunStatus, TriggerType, Workflow
from workflows.pagination import RunListPaginator
from workflows.scheduling.cron import ScheduleError, next_firings, parse_cron
from workflows.validation import ReplayNotAllowed, WorkflowInvalid, limits

from . import selectors


def _base(request: HttpRequest, membership, **extra: Any) -> dict[str, Any]:
    return {
        "memberships": selectors.memberships(request.user),
        "membership": membership,
        "organization": membership.organization if membership else None,
        "can_edit": bool(membership and selectors.can_edit(membership)),
        **extra,
    }


@require_GET
@login_required
def workflow_list(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None:
        return render(request, "webui/no_organization.html", _base(request, None))
    search = request.GET.get("q", "").strip()
    rows = list(selectors.workflow_rows(membership.organization_id, search))
    return render(
        request, "webui/workflow_list.html", _base(request, membership, rows=rows, search=search, nav="workflows")
    )


@require_POST
@login_required
def workflow_set_active(request: HttpRequest, pk: int) -> HttpResponse:
    workflow, membership = selectors.workflow_for(request.user, pk)
    if not selectors.can_edit(membership):
        raise PermissionDenied("Switching a workflow on or off needs the editor role.")
    active = request.POST.get("active") == "1"
    try:
        services.workflow_update(workflow=workflow, is_active=active)
    except WorkflowInvalid as exc:
        messages.error(request, f"“{workflow.name}” cannot be switched: {exc}")
    else:
        messages.success(request, f"“{workflow.name}” is now {'active' if active else 'off'}.")
    return redirect(reverse("webui:workflows") + f"?org={workflow.organization_id}")


def _builder_data(request: HttpRequest, workflow: Workflow | None, membership) -> dict[str, Any]:
    org_id = membership.organization_id
    credentials = [
        {"id": c.pk, "name": c.name, "kind": c.kind}
        for c in Credential.objects.filter(organization_id=org_id).order_by("name")
    ]
    sample_trigger = None
    outputs: dict[str, Any] = {}
    if workflow is not None:
        latest = Run.objects.filter(workflow=workflow).order_by("-created_at").values_list("payload", flat=True).first()
        sample_trigger = latest
        outputs = dry_run.last_outputs(workflow)
        data: dict[str, Any] = WorkflowSerializer(workflow, context={"request": request}).data
    else:
        data = {
            "id": None,
            "organization": org_id,
            "name": "",
            "description": "",
            "is_active": False,
            "trigger_type": TriggerType.WEBHOOK,
            "signature_scheme": SignatureScheme.STANDARD,
            "schedule": "",
            "timezone": "UTC",
            "steps": [],
            "on_failure": [],
            "version": 0,
            "notify_on_failure": True,
        }
    return {
        "workflow": data,
        "organization": org_id,
        "actions": {name: action.describe() for name, action in sorted(all_actions().items())},
        "expression_fields": {name: list(action.expression_fields) for name, action in all_actions().items()},
        "credentials": credentials,
        "can_edit": selectors.can_edit(membership),
        "step_defaults": STEP_DEFAULTS,
        "step_limits": limits(),
        "in_doubt_choices": [["", "Action's default"], *[[v, label] for v, label in InDoubtPolicy.choices]],
        "signature_schemes": [[v, label] for v, label in SignatureScheme.choices],
        "sample": {"trigger": sample_trigger, "outputs": outputs},
        "urls": {
            "api_list": reverse("workflows:workflow-list"),
            "api_detail": reverse("workflows:workflow-detail", args=[workflow.pk]) if workflow else None,
            "test": reverse("workflows:workflow-test", args=[workflow.pk]) if workflow else None,
            "test_unsaved": reverse("workflows:workflow-test-unsaved"),
            "listen": reverse("workflows:workflow-listen", args=[workflow.pk]) if workflow else None,
            "samples": reverse("workflows:workflow-samples", args=[workflow.pk]) if workflow else None,
            "rotate": reverse("workflows:workflow-rotate-webhook-token", args=[workflow.pk]) if workflow else None,
            "run": reverse("workflows:workflow-run", args=[workflow.pk]) if workflow else None,
            "check_template": reverse("workflows:template-check"),
            "schedule_preview": reverse("webui:schedule-preview"),
            "builder": reverse("webui:builder", args=[0]).rsplit("0/", 1)[0],
            "run_page": reverse("webui:run", args=["00000000-0000-0000-0000-000000000000"]),
        },
    }


@require_GET
@login_required
def builder(request: HttpRequest, pk: int) -> HttpResponse:
    workflow, membership = selectors.workflow_for(request.user, pk)
    history = versions.version_history(workflow)
    recent = list(Run.objects.filter(workflow=workflow).order_by("-created_at")[:10])
    used = workflow.steps.filter(credential__isnull=False).values_list("credential_id", flat=True)
    context = _base(
        request,
        membership,
        workflow=workflow,
        reconnect_notices=list(needing_reconnect(list(used), workflow.organization_id).values()),
        builder_data=_builder_data(request, workflow, membership),
        versions=history,
        recent_runs=recent,
        nav="workflows",
    )
    return render(request, "webui/builder.html", context)


@require_GET
@login_required
def builder_new(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None:
        raise Http404("You belong to no organization.")
    if not selectors.can_edit(membership):
        raise PermissionDenied("Creating a workflow needs the editor role.")
    context = _base(
        request, membership, workflow=None, builder_data=_builder_data(request, None, membership), nav="workflows"
    )
    return render(request, "webui/builder.html", context)


@require_POST
@login_required
def version_restore(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    workflow, membership = selectors.workflow_for(request.user, pk)
    if not selectors.can_edit(membership):
        raise PermissionDenied("Restoring a version needs the editor role.")
    try:
        restored = versions.version_restore(workflow=workflow, number=number)
    except WorkflowInvalid as exc:
        messages.error(request, f"Version {number} cannot be restored: {exc}")
    else:
        messages.success(request, f"Version {number}'s steps restored as version {restored.version}.")
    return redirect("webui:builder", pk=workflow.pk)


@require_GET
@login_required
def schedule_preview(request: HttpRequest) -> JsonResponse:
    cron, tz = request.GET.get("cron", ""), request.GET.get("tz", "") or "UTC"
    try:
        parse_cron(cron)
    except ScheduleError as exc:
        return JsonResponse({"valid": False, "error": exc.message, "description": "", "next": []})
    times = next_firings(cron, tz)
    if not times:
        return JsonResponse({"valid": False, "error": f"Unknown time zone {tz!r}.", "description": "", "next": []})
    return JsonResponse(
        {
            "valid": True,
            "error": "",
            "description": cron_description(cron),
            "next": [t.strftime("%a %Y-%m-%d %H:%M %Z") for t in times],
        }
    )


@require_GET
@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None:
        return render(request, "webui/no_organization.html", _base(request, None))
    filters = {k: request.GET.get(k, "") for k in ("workflow", "status", "dead")}
    page = RunListPaginator(selectors.run_rows(membership.organization_id, **filters), 50).get_page(
        request.GET.get("page")
    )
    page.object_list = list(
        selectors.with_replays(cast("QuerySet[Run]", page.object_list))
    )  # the paginator's page of runs
    for run in page.object_list:
        run.duration_text = human_duration(run.duration_ms)
    workflows = Workflow.objects.filter(organization_id=membership.organization_id).order_by("name")
    context = _base(
        request,
        membership,
        page=page,
        filters=filters,
        workflows=workflows,
        statuses=RunStatus.choices,
        nav="runs",
    )
    return render(request, "webui/run_list.html", context)


@require_GET
@login_required
def run_page(request: HttpRequest, run_id: Any) -> HttpResponse:
    run, membership = selectors.run_for(request.user, run_id)
    steps = selectors.in_flow_order(run, list(run.step_runs.order_by("position").prefetch_related("attempt_log")))
    # The template reads these two display attributes off each step (not model fields).
    for step in steps:
        step.duration_text = human_duration(step.duration_ms)  # type: ignore[attr-defined]
        step.attempt_rows = [  # type: ignore[attr-defined]
            {"attempt": attempt, "duration_text": human_duration(attempt.duration_ms)}
            for attempt in step.attempt_log.all()
        ]
    failing = [s for s in steps if s.status == StepRunStatus.FAILED]
    flow = selectors.run_flow(run, steps)
    context = _base(
        request,
        membership,
        run=run,
        steps=steps,
        failing=failing,
        replays=list(run.replays.order_by("created_at")),
        run_duration=human_duration(run.duration_ms),
        replayable=run.is_replayable,
        definition_changed=run.workflow_version != run.workflow.version,
        state_url=reverse("workflows:run-live-state", kwargs={"run_id": run.pk}),
        flow=flow,
        approvals=flow["approvals"],
        approvers=selectors.approvers(run.workflow.organization_id) if flow["approvals"] else [],
        detail_url=reverse("workflows:run-detail", args=[run.pk]),
        approve_url=f"{reverse('workflows:run-detail', args=[run.pk])}approve/",
        nav="runs",
        files=list(workflow_selectors.run_files(run)),
    )
    return render(request, "webui/run_page.html", context)


@require_GET
@never_cache
@login_required
def run_live(request: HttpRequest, run_id: Any) -> HttpResponse:
    """The live view in the member layout (``workflows.live`` serves its state and the admin's own)."""
    run, membership = selectors.run_for(request.user, run_id)
    state = live.run_state(run)
    for step in state["steps"]:
        step["duration_text"] = human_duration(step["duration_ms"])
    context = _base(
        request,
        membership,
        run=run,
        state=state,
        run_duration=human_duration(state["duration_ms"]),
        state_url=reverse("workflows:run-live-state", kwargs={"run_id": run.pk}),
        poll_interval_ms=live.POLL_INTERVAL_MS,
        replays=list(run.replays.order_by("created_at")),
        nav="runs",
    )
    return render(request, "webui/run_live.html", context)


@require_GET
@login_required
def run_file(request: HttpRequest, run_id: Any, file_id: Any) -> HttpResponseBase:
    """A run's file for a member of its organization (any role); 404 for everyone else."""
    run, _membership = selectors.run_for(request.user, run_id)
    row = workflow_selectors.run_file_for(run, file_id)
    if row is None:
        raise Http404("No such file in this run.")
    return file_response(row)


@require_POST
@login_required
def run_replay(request: HttpRequest, run_id: Any) -> HttpResponse:
    run, membership = selectors.run_for(request.user, run_id)
    if not selectors.can_edit(membership):
        raise PermissionDenied("Replaying needs the editor role.")
    version = request.POST.get("version", "original")
    try:
        replay = services.run_replay(run=run, version=version)
    except ReplayNotAllowed as exc:
        messages.error(request, f"This run cannot be replayed: {exc}")
        return redirect("webui:run", run_id=run.pk)
    how = "with the current version" if version == "current" else "as it ran"
    messages.success(request, f"Replayed {how}: this is the new run.")
    if request.POST.get("then") == "live":
        return redirect("webui:run-live", run_id=replay.pk)
    return redirect("webui:run", run_id=replay.pk)
