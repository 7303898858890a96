"""The workflow admin: a workflow with its Step inline, "Run now", templates and token rotation.

Writes go through ``workflows.services`` like everywhere else: the Step inline
is validated as a whole definition (templates, step references, credentials)
before anything is saved, and saving bumps the version and syncs the schedule.
"New from template" imports a built-in template (``workflows.portability``).

The product-UI polish (status badges, pretty JSON, cron preview, webhook URL
with copy button, "Run now" with a payload, token rotation, errors on the
field they concern) uses ``widgets`` (HTML pieces) and ``forms`` (forms, error
placement) and the templates in ``templates/admin/workflows/``.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms.formsets import BaseFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.admin_mixins import OrganizationScopedAdmin, ParentPermissionsInlineMixin
from accounts.models import Role
from accounts.permissions import signed_in
from integrations.models import Credential

from .. import portability, selectors, services
from ..api import webhook_url
from ..models import RunStatus, Step, TriggerType, Workflow
from ..validation import WORKFLOW_FIELDS
from .forms import (
    STEP_FIELDS,
    RunNowForm,
    StepForm,
    StepFormSet,
    TemplateImportForm,
    WorkflowForm,
    action_reference,
    action_schemas,
)
from .widgets import schedule_preview, status_badge, webhook_url_field


class RunSummary(TypedDict):
    """What ``selectors.with_run_summary`` annotates each workflow of the list with."""

    last_run_status: str | None
    last_run_at: datetime | None
    runs_last_24h: int


if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    SummarisedWorkflow = WithAnnotations[Workflow, RunSummary]


class StepInline(ParentPermissionsInlineMixin, admin.TabularInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    fields = STEP_FIELDS
    ordering = ("position",)
    extra = 1

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "credential" and not request.user.is_superuser:
            editable = self._parent_admin().editable_organizations(request)
            kwargs["queryset"] = Credential.objects.filter(organization__in=editable)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


VIEWER_READONLY = ("organization", "name", "description", "is_active", "trigger_type", "schedule", "timezone")


class LastRunStatusFilter(admin.SimpleListFilter):
    title = "last run"
    parameter_name = "last_run"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(status, status) for status in RunStatus.values] + [("never", "never run")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "never":
            return queryset.filter(last_run_status__isnull=True)
        if self.value():
            return queryset.filter(last_run_status=self.value())
        return queryset


@admin.register(Workflow)
class WorkflowAdmin(OrganizationScopedAdmin):
    form = WorkflowForm
    inlines = [StepInline]
    list_display = (
        "name",
        "organization",
        "trigger_type",
        "is_active",
        "last_run",
        "runs_24h",
        "version",
        "updated_at",
    )
    list_filter = ("trigger_type", "is_active", LastRunStatusFilter, ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "description")
    readonly_fields = (
        "version",
        "webhook_link",
        "webhook_secret_status",
        "schedule_preview",
        "action_reference",
        "created_by",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("organization", "name", "description", "is_active")}),
        (
            "Trigger",
            {
                "fields": (
                    "trigger_type",
                    "webhook_link",
                    "webhook_secret_status",
                    "signature_scheme",
                    "webhook_secret",
                    "remove_webhook_secret",
                    "webhook_secret_previous",
                    "remove_webhook_secret_previous",
                    "hmac_header",
                    "hmac_algorithm",
                    "hmac_encoding",
                    "hmac_prefix",
                    "webhook_body_as_file",
                    "schedule",
                    "schedule_preview",
                    "timezone",
                )
            },
        ),
        ("History", {"fields": ("version", "created_by", "created_at", "updated_at"), "classes": ("collapse",)}),
        ("Action reference", {"fields": ("action_reference",), "classes": ("collapse",)}),
    )
    actions = ["run_now_action"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return selectors.with_run_summary(super().get_queryset(request).select_related("organization"))

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Workflow | None:
        workflow = super().get_object(request, object_id, from_field)
        if workflow is not None:
            # The "Webhook URL" row shows the absolute URL, which needs this request's host.
            workflow.absolute_webhook_url = webhook_url(workflow, request)
        return workflow

    def get_fieldsets(self, request: HttpRequest, obj: Workflow | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # Read-only: no secret input, and only the saved trigger type's fields.
            keep: dict[str, set[str]] = {
                # No webhook URL for viewers: it is the capability to trigger runs.
                TriggerType.WEBHOOK: {"webhook_secret_status", "signature_scheme"},
                TriggerType.SCHEDULE: {"schedule", "schedule_preview", "timezone"},
            }
            trigger_fields = {"trigger_type", *keep.get(obj.trigger_type, set())}
            fieldsets = [
                (name, {**opts, "fields": tuple(f for f in opts["fields"] if name != "Trigger" or f in trigger_fields)})
                for name, opts in fieldsets
            ]
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Workflow | None = None) -> Any:
        if obj is not None and not self.has_change_permission(request, obj):
            return (*self.readonly_fields, *VIEWER_READONLY)
        return self.readonly_fields

    @admin.display(description="Last run", ordering="last_run_at")
    def last_run(self, workflow: "SummarisedWorkflow") -> str:
        status = getattr(workflow, "last_run_status", None)
        if not status:
            return "never"
        when = timezone.localtime(workflow.last_run_at).strftime("%Y-%m-%d %H:%M")
        return format_html("{} {}", status_badge(status), when)

    @admin.display(description="Runs (24 h)", ordering="runs_last_24h")
    def runs_24h(self, workflow: "SummarisedWorkflow") -> int:
        return workflow.runs_last_24h

    @admin.display(description="Webhook URL")
    def webhook_link(self, workflow: Workflow) -> str:
        if not workflow.pk:
            return "Shown here once the workflow is saved."
        return webhook_url_field(getattr(workflow, "absolute_webhook_url", None) or webhook_url(workflow))

    @admin.display(description="Signing")
    def webhook_secret_status(self, workflow: Workflow) -> str:
        if not workflow.pk:
            return "–"
        if not workflow.webhook_secret:
            return "not set (requests are not signed)"
        status = f"set (requests must be signed), scheme: {workflow.get_signature_scheme_display()}"
        return status + ("; the previous secret is accepted too" if workflow.webhook_secret_previous else "")

    @admin.display(description="Schedule preview")
    def schedule_preview(self, workflow: Workflow) -> str:
        return schedule_preview(workflow.schedule or "", workflow.timezone or "UTC")

    @admin.display(description="Actions and their config schemas")
    def action_reference(self, workflow: Workflow) -> str:
        return action_reference()

    # -- pages ---------------------------------------------------------------------
    def get_urls(self) -> list:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        view = self.admin_site.admin_view
        return [
            path("templates/", view(self.templates_view), name=f"{prefix}_templates"),
            path("templates/<slug:slug>/", view(self.from_template_view), name=f"{prefix}_from_template"),
            path("<path:object_id>/run/", view(self.run_now_view), name=f"{prefix}_run_now"),
            path("<path:object_id>/rotate-token/", view(self.rotate_token_view), name=f"{prefix}_rotate_token"),
            *super().get_urls(),
        ]

    def changeform_view(self, request: HttpRequest, object_id=None, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "pf_action_schemas": action_schemas()}
        if object_id:
            obj = self.get_object(request, object_id)
            extra_context["pf_can_run"] = obj is not None and self.has_change_permission(request, obj)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _editable_object(self, request: HttpRequest, object_id: str) -> Workflow:
        workflow = self.get_object(request, object_id)
        if workflow is None:
            raise Http404("No workflow with this id in your organizations.")
        if not self.has_change_permission(request, workflow):
            raise PermissionDenied
        return workflow

    def run_now_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._editable_object(request, object_id)
        form = RunNowForm(request.POST or None, initial={"payload": {}})
        if request.method == "POST" and form.is_valid():
            try:
                run = services.start_manual_run(
                    workflow=workflow, body=form.cleaned_data["payload"], user=signed_in(request.user)
                )
            except services.PayloadInvalid as exc:
                form.add_error("payload", exc.message)
            else:
                self.message_user(request, f"Run {run.pk} started.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("workflows:run-live", kwargs={"run_id": run.pk}))
        context = {**self.admin_site.each_context(request), "title": f"Run “{workflow}” now", "opts": self.opts}
        return render(request, "admin/workflows/workflow/run_now.html", {**context, "workflow": workflow, "form": form})

    def templates_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "title": "New workflow from a template", "opts": self.opts}
        return render(
            request, "admin/workflows/workflow/templates.html", {**context, "templates": portability.templates()}
        )

    def from_template_view(self, request: HttpRequest, slug: str) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        template = portability.template(slug)
        if template is None:
            raise Http404("No such template.")
        organizations = self.editable_organizations(request).order_by("name")
        credentials = Credential.objects.filter(organization__in=organizations).select_related("organization")
        form = TemplateImportForm(
            request.POST or None,
            initial={"name": template.document["workflow"]["name"], "organization": organizations.first()},
            organizations=organizations,
            references=template.credentials,
            credentials=list(credentials.order_by("organization__name", "name")),
        )
        problems: list[str] = []
        if request.method == "POST" and form.is_valid():
            try:
                workflow = portability.workflow_import(
                    organization=form.cleaned_data["organization"],
                    document=template.document,
                    created_by=signed_in(request.user),
                    name=form.cleaned_data["name"],
                    credentials=form.credential_mapping(),
                )
            except services.WorkflowInvalid as exc:
                problems = [f"{field}: {message}" for field, messages in exc.errors.items() for message in messages]
            else:
                self.message_user(
                    request,
                    f"“{workflow}” created from the template, inactive: fill in its settings, then activate it.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
        context = {**self.admin_site.each_context(request), "title": f"New from “{template.title}”", "opts": self.opts}
        return render(
            request,
            "admin/workflows/workflow/from_template.html",
            {**context, "template": template, "form": form, "problems": problems},
        )

    def rotate_token_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._editable_object(request, object_id)
        if request.method == "POST":
            services.workflow_rotate_webhook_token(workflow=workflow)
            self.message_user(request, "New webhook URL; the old one no longer works.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
        context = {**self.admin_site.each_context(request), "title": "Rotate the webhook URL", "opts": self.opts}
        return render(request, "admin/workflows/workflow/rotate_token.html", {**context, "workflow": workflow})

    def save_model(self, request: HttpRequest, obj: Workflow, form: Any, change: bool) -> None:
        """Saved in save_related, together with the steps, by the service."""

    def save_related(self, request: HttpRequest, form: Any, formsets: list, change: bool) -> None:
        workflow: Workflow = form.instance  # webhook_secret: WorkflowForm kept the stored one when left empty
        step_formset = next((fs for fs in formsets if isinstance(fs, StepFormSet)), None)
        steps = step_formset.step_specs() if step_formset is not None else None
        fields = {name: getattr(workflow, name) for name in WORKFLOW_FIELDS}
        if change:
            services.workflow_update(workflow=workflow, steps=steps, **fields)
        else:
            created = services.workflow_create(
                organization=workflow.organization, created_by=signed_in(request.user), steps=steps or [], **fields
            )
            workflow.pk, workflow.version, workflow.webhook_token = created.pk, created.version, created.webhook_token

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: "Iterable[BaseFormSet[Any]]", add: bool = False
    ) -> list[dict[str, dict[str, list[str]]]]:
        # The steps were replaced as a whole by the service, not saved form by form.
        message = super().construct_change_message(request, form, [], add)
        if any(fs.has_changed() for fs in formsets):
            message.append({"changed": {"fields": ["steps"]}})
        return message

    def delete_model(self, request: HttpRequest, obj: Workflow) -> None:
        services.workflow_delete(workflow=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for workflow in queryset:
            services.workflow_delete(workflow=workflow)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return self._has_role(request, Role.EDITOR)

    @admin.action(description="Run now (empty payload)", permissions=["run"])
    def run_now_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        started = 0
        for workflow in queryset:
            if not self._has_role(request, Role.EDITOR, workflow):
                continue
            services.start_manual_run(workflow=workflow, body={}, user=signed_in(request.user))  # {} is always storable
            started += 1
        self.message_user(request, f"Started {started} run(s).", messages.SUCCESS)
