"""The management UI for workflows and runs (organization-scoped for non-superusers).

Writes go through ``workflows.services`` like everywhere else: the Step inline
is validated as a whole definition (templates, step references, credentials)
before anything is saved, and saving bumps the version and syncs the schedule.
Runs are read-only history with two actions: "Replay" and "Run now".

Extension points for later polish: ``StepInline`` / ``StepRunInline`` (fields,
widgets), ``WorkflowAdmin.list_display``, ``RunAdmin.list_display`` and the
``*_action`` methods, which only call services.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html

from accounts.admin_mixins import OrganizationScopedAdmin
from accounts.models import Role
from integrations.models import Credential
from integrations.registry import all_actions

from . import services
from .models import Run, RunTrigger, Step, StepRun, Workflow

STEP_FIELDS = (
    "position",
    "key",
    "action_type",
    "config",
    "credential",
    "max_retries",
    "backoff_seconds",
    "backoff_max_seconds",
    "timeout_seconds",
)


class _ParentPermissionsMixin:
    """Inline permissions follow the parent admin's organization role checks."""

    def _parent_admin(self):
        return self.admin_site._registry[self.parent_model]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._parent_admin().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        parent = self._parent_admin()
        return parent.has_change_permission(request, obj) if obj else parent.has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request, obj)


# -- workflows -------------------------------------------------------------------------
class StepForm(forms.ModelForm):
    action_type = forms.ChoiceField(choices=())

    class Meta:
        model = Step
        fields = STEP_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["action_type"].choices = [(name, name) for name in sorted(all_actions())]
        self.fields["position"].required = False


class StepFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        """Validate the whole definition with the service, before anything is saved."""
        super().clean()
        if any(self.errors):
            return
        try:
            services.workflow_validate(workflow=self.instance, steps=self.step_specs())
        except services.WorkflowInvalid as exc:
            raise ValidationError(
                [f"{field}: {message}" for field, msgs in exc.errors.items() for message in msgs]
            ) from None

    def step_specs(self) -> list[dict[str, Any]]:
        rows = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE") and form.cleaned_data.get("key")
        ]
        rows.sort(key=lambda data: data.get("position") if data.get("position") is not None else 10_000)
        return [{f: data.get(f) for f in STEP_FIELDS if f != "position"} for data in rows]


class StepInline(_ParentPermissionsMixin, admin.TabularInline):
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


@admin.register(Workflow)
class WorkflowAdmin(OrganizationScopedAdmin):
    inlines = [StepInline]
    list_display = ("name", "organization", "trigger_type", "is_active", "version", "updated_at")
    list_filter = ("trigger_type", "is_active", "organization")
    search_fields = ("name", "description")
    readonly_fields = ("version", "webhook_link", "created_by", "created_at", "updated_at")
    fields = (
        "organization",
        "name",
        "description",
        "is_active",
        "trigger_type",
        "webhook_link",
        "webhook_secret",
        "schedule",
        "timezone",
        "version",
        "created_by",
        "created_at",
        "updated_at",
    )
    actions = ["run_now_action"]

    @admin.display(description="Webhook URL")
    def webhook_link(self, workflow: Workflow) -> str:
        if not workflow.pk or workflow.trigger_type != "webhook":
            return "-"
        from .api import webhook_url

        return format_html("<code>{}</code>", webhook_url(workflow))

    def save_model(self, request: HttpRequest, obj: Workflow, form: Any, change: bool) -> None:
        """Saved in save_related, together with the steps, by the service."""

    def save_related(self, request: HttpRequest, form: Any, formsets: list, change: bool) -> None:
        workflow: Workflow = form.instance
        step_formset = next((fs for fs in formsets if isinstance(fs, StepFormSet)), None)
        steps = step_formset.step_specs() if step_formset is not None else None
        fields = {name: getattr(workflow, name) for name in services.WORKFLOW_FIELDS}
        if change:
            services.workflow_update(workflow=workflow, steps=steps, **fields)
        else:
            created = services.workflow_create(
                organization=workflow.organization, created_by=request.user, steps=steps or [], **fields
            )
            workflow.pk, workflow.version, workflow.webhook_token = created.pk, created.version, created.webhook_token

    def construct_change_message(self, request: HttpRequest, form: Any, formsets: list, add: bool) -> list:
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
            payload = services.run_now_payload(body={}, user=request.user)
            services.run_accept(workflow=workflow, trigger=RunTrigger.MANUAL, payload=payload)
            started += 1
        self.message_user(request, f"Started {started} run(s).", messages.SUCCESS)


# -- runs ---------------------------------------------------------------------------------
class StepRunInline(_ParentPermissionsMixin, admin.TabularInline):
    model = StepRun
    fields = (
        "position",
        "key",
        "action_type",
        "status",
        "attempts",
        "error",
        "output",
        "rendered_config",
        "started_at",
        "finished_at",
        "duration_ms",
        "next_attempt_at",
        "reused",
    )
    readonly_fields = fields
    ordering = ("position",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(OrganizationScopedAdmin):
    organization_field = "workflow__organization"
    inlines = [StepRunInline]
    list_display = ("id", "workflow", "status", "dead_lettered", "trigger", "created_at", "duration_display")
    list_filter = ("status", "dead_lettered", "trigger", "workflow")
    list_select_related = ("workflow",)
    search_fields = ("=id", "idempotency_key", "workflow__name")
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "workflow",
        "workflow_version",
        "status",
        "dead_lettered",
        "trigger",
        "error",
        "idempotency_key",
        "replay_of",
        "created_at",
        "started_at",
        "finished_at",
        "last_progress_at",
        "payload",
        "definition",
    )
    fields = readonly_fields
    actions = ["replay_action", "run_now_action"]

    @admin.display(description="Duration")
    def duration_display(self, run: Run) -> str:
        return f"{run.duration_ms} ms" if run.duration_ms is not None else "-"

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return self._has_role(request, Role.EDITOR)

    @admin.action(description="Replay (failed, dead-lettered or filtered runs)", permissions=["replay"])
    def replay_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        replayed = 0
        for run in queryset:
            if not self._has_role(request, Role.EDITOR, run):
                continue
            try:
                services.run_replay(run=run)
                replayed += 1
            except services.WorkflowInvalid as exc:
                self.message_user(request, f"Run {run.pk}: {exc}", messages.WARNING)
        self.message_user(request, f"Replayed {replayed} run(s).", messages.SUCCESS)

    @admin.action(description="Run now (the workflow again, with this run's payload)", permissions=["replay"])
    def run_now_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        started = 0
        for run in queryset.select_related("workflow"):
            if not self._has_role(request, Role.EDITOR, run):
                continue
            services.run_accept(workflow=run.workflow, trigger=RunTrigger.MANUAL, payload=run.payload)
            started += 1
        self.message_user(request, f"Started {started} run(s).", messages.SUCCESS)
