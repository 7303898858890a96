"""Start from something, keep what you built: the template gallery, and duplicate, delete, export
and import on the member pages. The rules are ``workflows.portability``'s and ``workflows.services``'
(import checks the whole document and names every problem; imported and duplicated workflows start
inactive); viewers see the gallery and export, editors and above create and delete.
"""

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import signed_in
from integrations.models import Credential
from workflows import portability, services
from workflows.models import Run, RunStatus
from workflows.validation import WorkflowInvalid

from . import selectors
from .views import _base

# What a credential kind is, for people choosing a template ("needs a Slack connection").
KIND_WORDS = {
    "slack_bot_token": "a Slack connection",
    "smtp": "an e-mail (SMTP) account",
    "sendgrid_api_key": "a SendGrid account",
    "google_service_account": "a Google service account",
    "http_bearer": "an API token",
    "http_basic": "a user name and password for the API",
    "http_header": "an API key",
}
MAX_IMPORT_BYTES = 1024 * 1024  # an export document is a few KiB; the request body limit bounds it too


def _editor(request: HttpRequest) -> Any:
    membership = selectors.current_membership(request)
    if membership is None:
        raise Http404("You belong to no organization.")
    if not selectors.can_edit(membership):
        raise PermissionDenied("This needs the editor role.")
    return membership


def _template_card(template: portability.Template) -> dict[str, Any]:
    document = template.document
    meta = document.get("template") or {}
    return {
        "template": template,
        "trigger": document["workflow"]["trigger_type"],
        "steps": [{"key": s["key"], "action_type": s["action_type"]} for s in document["steps"]],
        "needs": [KIND_WORDS.get(c["kind"], f"a {c['kind']} credential") for c in template.credentials],
        "asks": meta.get("asks") or [],
    }


@require_GET
@login_required
def template_gallery(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None:
        return render(request, "webui/no_organization.html", _base(request, None))
    cards = [_template_card(t) for t in portability.templates()]
    return render(request, "webui/templates.html", _base(request, membership, cards=cards, nav="templates"))


@require_http_methods(["GET", "POST"])
@login_required
def template_use(request: HttpRequest, slug: str) -> HttpResponse:
    """Ask for what the template needs (a name, its credentials, what it asks), then open the builder."""
    membership = _editor(request)
    template = portability.template(slug)
    if template is None:
        raise Http404("No such template.")
    card = _template_card(template)
    document = json.loads(json.dumps(template.document))  # a copy to fill in
    steps = {s["key"]: s for s in document["steps"]}
    references = [
        {
            **ref,
            "words": KIND_WORDS.get(ref["kind"], ref["kind"]),
            "choices": list(
                Credential.objects.filter(organization_id=membership.organization_id, kind=ref["kind"]).order_by("name")
            ),
        }
        for ref in template.credentials
    ]
    values: dict[str, Any] = {
        "name": request.POST.get("name", template.title),
        "asks": {
            f"{a['step']}.{a['field']}": request.POST.get(f"ask_{a['step']}.{a['field']}")
            or steps[a["step"]]["config"].get(a["field"], "")
            for a in card["asks"]
        },
    }
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        for ask in card["asks"]:
            steps[ask["step"]]["config"][ask["field"]] = values["asks"][f"{ask['step']}.{ask['field']}"].strip()
        mapping = {str(ref["name"]): request.POST.get(f"credential_{ref['name']}", "") for ref in references}
        try:
            workflow = portability.workflow_import(
                organization=membership.organization,
                document=document,
                created_by=signed_in(request.user),
                name=values["name"].strip() or template.title,
                credentials={k: v for k, v in mapping.items() if v},
            )
        except WorkflowInvalid as exc:
            errors = exc.errors
        else:
            messages.success(
                request,
                f"“{workflow.name}” created from the template, switched off: look it over, test it, then switch it on.",
            )
            return redirect("webui:builder", pk=workflow.pk)
    context = _base(
        request,
        membership,
        card=card,
        references=references,
        values=values,
        errors=errors,
        error_list=[f"{path}: {' '.join(msgs)}" for path, msgs in errors.items()],
        nav="templates",
    )
    return render(request, "webui/template_use.html", context, status=400 if errors else 200)


@require_POST
@login_required
def workflow_duplicate(request: HttpRequest, pk: int) -> HttpResponse:
    workflow, membership = selectors.workflow_for(request.user, pk)
    if not selectors.can_edit(membership):
        raise PermissionDenied("Duplicating needs the editor role.")
    try:
        copy = portability.workflow_import(
            organization=workflow.organization,
            document=portability.workflow_export(workflow),
            created_by=signed_in(request.user),
            name=f"Copy of {workflow.name}"[:150],
        )
    except WorkflowInvalid as exc:
        messages.error(request, f"Could not duplicate: {exc}")
        return redirect("webui:builder", pk=workflow.pk)
    messages.success(request, f"Duplicated as “{copy.name}” (switched off; it has its own webhook URL).")
    return redirect("webui:builder", pk=copy.pk)


@require_GET
@login_required
def workflow_export(request: HttpRequest, pk: int) -> HttpResponse:
    workflow, _membership = selectors.workflow_for(request.user, pk)
    response = JsonResponse(
        portability.workflow_export(workflow), json_dumps_params={"indent": 2, "ensure_ascii": False}
    )
    filename = "".join(c if c.isalnum() or c in "-_" else "-" for c in workflow.name.lower()).strip("-") or "workflow"
    response["Content-Disposition"] = f'attachment; filename="{filename}.potaflow.json"'
    return response


def _retention() -> list[tuple[str, int]]:
    return [
        ("succeeded", settings.POTAFLOW_RETAIN_SUCCEEDED_DAYS),
        ("failed", settings.POTAFLOW_RETAIN_FAILED_DAYS),
        ("filtered", settings.POTAFLOW_RETAIN_FILTERED_DAYS),
    ]


@require_http_methods(["GET", "POST"])
@login_required
def workflow_delete(request: HttpRequest, pk: int) -> HttpResponse:
    workflow, membership = selectors.workflow_for(request.user, pk)
    if not selectors.can_edit(membership):
        raise PermissionDenied("Deleting needs the editor role.")
    if request.method == "POST":
        name, organization_id = workflow.name, workflow.organization_id
        services.workflow_delete(workflow=workflow)
        messages.success(request, f"“{name}” and its runs were deleted.")
        return redirect(reverse("webui:workflows") + f"?org={organization_id}")
    runs = Run.objects.filter(workflow=workflow)
    context = _base(
        request,
        membership,
        workflow=workflow,
        run_count=runs.count(),
        unfinished=runs.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count(),
        retention=_retention(),
        nav="workflows",
    )
    return render(request, "webui/workflow_delete.html", context)


@require_POST
@login_required
def workflow_import(request: HttpRequest) -> HttpResponse:
    membership = _editor(request)
    upload = request.FILES.get("document")
    back = reverse("webui:workflows") + f"?org={membership.organization_id}"
    if upload is None:
        messages.error(request, "Choose an export file (.json) to import.")
        return redirect(back)
    if upload.size is not None and upload.size > MAX_IMPORT_BYTES:
        messages.error(
            request, f"That file is {upload.size:,} bytes; an export document is at most {MAX_IMPORT_BYTES:,}."
        )
        return redirect(back)
    try:
        document = json.loads(upload.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        messages.error(request, f"“{upload.name}” is not a PotaFlow export (not JSON: {exc}).")
        return redirect(back)
    try:
        workflow = portability.workflow_import(
            organization=membership.organization, document=document, created_by=signed_in(request.user)
        )
    except WorkflowInvalid as exc:
        problems = "; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in exc.errors.items())
        messages.error(request, f"“{upload.name}” was not imported: {problems}")
        return redirect(back)
    messages.success(
        request, f"Imported “{workflow.name}” (switched off: set its secret if it had one, then switch it on)."
    )
    return redirect("webui:builder", pk=workflow.pk)
