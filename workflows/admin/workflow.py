"""The management UI for workflows and runs (organization-scoped for non-superusers).

Writes go through ``workflows.services`` like everywhere else: the Step inline
is validated as a whole definition (templates, step references, credentials)
before anything is saved, and saving bumps the version and syncs the schedule.
Runs are read-only history with two actions: "Replay" and "Run now".
"New from template" imports a built-in template (``workflows.portability``).

The product-UI polish (status badges, pretty JSON, cron preview, webhook URL
with copy button, "Run now" with a payload, token rotation, errors on the
field they concern) uses ``admin_widgets`` (HTML pieces) and ``admin_forms``
(forms, error placement) and the templates in ``templates/admin/workflows/``.
"""

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_celery_beat import models as beat_models

from accounts.admin_mixins import OrganizationScopedAdmin
from accounts.models import Role
from integrations.models import Credential

from . import portability, recording, services
from .admin_forms import (
    STEP_FIELDS,
    STEP_PATH_RE,
    PrettyJSONField,
    RunNowForm,
    TemplateImportForm,
    action_choices,
    action_reference,
    action_schemas,
    attach_errors,
)
from .admin_widgets import human_duration, pretty_json, schedule_preview, status_badge, webhook_url_field
from .api import webhook_url
from .models import Run, RunTrigger, Step, StepRun, Workflow
from .signatures import SIGNING_FIELDS


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


def _cut(label: str, value: Any) -> str:
    """A stored value's label, saying when it was truncated to the storage cap."""
    return f"{label} (truncated: too large to store)" if recording.is_truncated(value) else label


# -- workflows -------------------------------------------------------------------------
class StepForm(forms.ModelForm):
    action_type = forms.ChoiceField(choices=(), help_text="From the action registry.")
    config = PrettyJSONField(
        required=False,
        initial=dict,  # an empty row shows {} (not null) and stays "unchanged" until edited
        help_text="JSON object; strings may hold templates such as {{ trigger.body.email }}. "
        "The chosen action's schema is shown below.",
    )

    class Meta:
        model = Step
        fields = STEP_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A blank first choice: an untouched extra row must post "", or Django sees it as changed.
        self.fields["action_type"].choices = [("", "— choose an action —"), *action_choices()]
        self.fields["position"].required = False
        self.fields["position"].help_text = "Order of execution (renumbered from 0 on save)."


class StepFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        """Validate the whole definition with the service, before anything is saved.

        Rows with field errors of their own take part with what they have, so the
        other rows' real problems (templates, references) are shown in the same
        round; a service message is dropped where the row's field already has an error.
        """
        super().clean()
        ordered = self.ordered_forms()
        try:
            services.workflow_validate(workflow=self.instance, steps=self.step_specs())
        except services.WorkflowInvalid as exc:
            # Workflow-level problems (schedule, secret...) are shown by WorkflowForm itself.
            step_errors = {
                path: msgs
                for path, msgs in exc.errors.items()
                if path.startswith("steps") and not _already_reported(path, ordered)
            }
            leftovers = attach_errors(step_errors, workflow_form=None, step_forms=ordered)
            if leftovers:
                raise ValidationError(leftovers) from None

    def ordered_forms(self) -> list[forms.Form]:
        """The step forms in execution order: ``step_specs()[i]`` comes from ``ordered_forms()[i]``.

        An untouched extra row is not a step; a row someone started is, even with errors.
        """
        rows = [
            form
            for index, form in enumerate(self.forms)
            if (index < self.initial_form_count() or form.has_changed()) and not self._should_delete_form(form)
        ]
        position = lambda form: form.cleaned_data.get("position")  # noqa: E731
        rows.sort(key=lambda form: position(form) if position(form) is not None else 10_000)
        return rows

    def step_specs(self) -> list[dict[str, Any]]:
        return [{f: form.cleaned_data.get(f) for f in STEP_FIELDS if f != "position"} for form in self.ordered_forms()]


def _already_reported(path: str, step_forms: list[forms.Form]) -> bool:
    """True when the service's ``steps[i].field`` message repeats an error the row's form already shows."""
    match = STEP_PATH_RE.match(path)
    if not match or int(match.group(1)) >= len(step_forms):
        return False
    form = step_forms[int(match.group(1))]
    field = match.group(2)
    return bool(form.errors) and (field in form.errors or field not in form.fields)


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


class WorkflowForm(forms.ModelForm):
    """Workflow fields, checked by the service; the webhook secret is write-only."""

    webhook_secret = forms.CharField(
        required=False,
        max_length=128,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only (at least 16 characters). Leave empty to keep the current one.",
    )
    remove_webhook_secret = forms.BooleanField(required=False, help_text="Accept unsigned webhook requests again.")
    webhook_secret_previous = forms.CharField(
        required=False,
        max_length=128,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. While senders move to a new secret, the previous one is accepted too. "
        "Leave empty to keep the current one.",
    )
    remove_webhook_secret_previous = forms.BooleanField(
        required=False, help_text="Stop accepting the previous secret (rotation finished)."
    )

    class Meta:
        model = Workflow
        fields = (
            *("organization", "name", "description", "is_active", "trigger_type", "webhook_secret"),
            *SIGNING_FIELDS,
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stored_secret = self.instance.webhook_secret if self.instance.pk else ""
        self._stored_previous = self.instance.webhook_secret_previous if self.instance.pk else ""
        # A form posted without them (an older page, a script) keeps the model defaults.
        for name in ("signature_scheme", "hmac_algorithm", "hmac_encoding"):
            if name in self.fields:
                self.fields[name].required = False

    def _clean_choice(self, name: str) -> str:
        return self.cleaned_data.get(name) or Workflow._meta.get_field(name).get_default()

    def clean_signature_scheme(self) -> str:
        return self._clean_choice("signature_scheme")

    def clean_hmac_algorithm(self) -> str:
        return self._clean_choice("hmac_algorithm")

    def clean_hmac_encoding(self) -> str:
        return self._clean_choice("hmac_encoding")

    def clean_webhook_secret(self) -> str:
        value = self.cleaned_data.get("webhook_secret") or ""
        if self.data.get(self.add_prefix("remove_webhook_secret")):
            return ""
        return value or self._stored_secret

    def clean_webhook_secret_previous(self) -> str:
        value = self.cleaned_data.get("webhook_secret_previous") or ""
        if self.data.get(self.add_prefix("remove_webhook_secret_previous")) or self.data.get(
            self.add_prefix("remove_webhook_secret")
        ):
            return ""
        return value or self._stored_previous

    def _post_clean(self) -> None:
        super()._post_clean()
        try:
            services.workflow_validate(workflow=self.instance, steps=[])
        except services.WorkflowInvalid as exc:
            leftovers = attach_errors(exc.errors, workflow_form=self, step_forms=[])
            for message in leftovers:
                self.add_error(None, message)


VIEWER_READONLY = ("organization", "name", "description", "is_active", "trigger_type", "schedule", "timezone")


def start_manual_run(*, workflow: Workflow, body: Any, request: HttpRequest) -> Run:
    """A manual run requested in the admin ("Run now", "Run again"): the same call as the API's.

    Inactive workflows run too: "inactive" switches their webhook and schedule
    off, and running one by hand is how it gets tried. Raises ``services.PayloadInvalid``.
    """
    payload = services.run_now_payload(body=body, user=request.user)
    run, _ = services.run_accept(workflow=workflow, trigger=RunTrigger.MANUAL, payload=payload)
    return run


class LastRunStatusFilter(admin.SimpleListFilter):
    title = "last run"
    parameter_name = "last_run"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s, s) for s in ("succeeded", "failed", "running", "queued", "filtered")] + [("never", "never run")]

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
        last = Run.objects.filter(workflow=OuterRef("pk")).order_by("-created_at")
        since = timezone.now() - timedelta(hours=24)
        return (
            super()
            .get_queryset(request)
            .select_related("organization")
            .annotate(
                last_run_status=Subquery(last.values("status")[:1]),
                last_run_at=Subquery(last.values("created_at")[:1]),
                runs_last_24h=Count("runs", filter=Q(runs__created_at__gte=since)),
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: Workflow | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # Read-only: no secret input, and only the saved trigger type's fields.
            keep = {
                # No webhook URL for viewers: it is the capability to trigger runs.
                "webhook": {"webhook_secret_status", "signature_scheme"},
                "schedule": {"schedule", "schedule_preview", "timezone"},
            }
            trigger_fields = {"trigger_type", *keep.get(obj.trigger_type, set())}
            fieldsets = [
                (name, {**opts, "fields": tuple(f for f in opts["fields"] if name != "Trigger" or f in trigger_fields)})
                for name, opts in fieldsets
            ]
        link = self._webhook_link_for(request)
        return [
            (name, {**opts, "fields": tuple(link if f == "webhook_link" else f for f in opts["fields"])})
            for name, opts in fieldsets
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Workflow | None = None) -> Any:
        fields = tuple(self._webhook_link_for(request) if f == "webhook_link" else f for f in self.readonly_fields)
        if obj is not None and not self.has_change_permission(request, obj):
            return (*fields, *VIEWER_READONLY)
        return fields

    def _webhook_link_for(self, request: HttpRequest) -> Any:
        """The "Webhook URL" row as a callable bound to this request (the absolute URL needs its host).

        get_fieldsets and get_readonly_fields must name the very same object, so
        it is made once per request and kept on the request itself.
        """
        bound = getattr(request, "_pf_webhook_link", None)
        if bound is None:

            def webhook_link(workflow: Workflow) -> str:
                return self.webhook_link(workflow, request)

            webhook_link.short_description = "Webhook URL"
            request._pf_webhook_link = bound = webhook_link
        return bound

    @admin.display(description="Last run", ordering="last_run_at")
    def last_run(self, workflow: Workflow) -> str:
        if not getattr(workflow, "last_run_status", None):
            return "never"
        when = timezone.localtime(workflow.last_run_at).strftime("%Y-%m-%d %H:%M")
        return format_html("{} {}", status_badge(workflow.last_run_status), when)

    @admin.display(description="Runs (24 h)", ordering="runs_last_24h")
    def runs_24h(self, workflow: Workflow) -> int:
        return workflow.runs_last_24h

    @admin.display(description="Webhook URL")
    def webhook_link(self, workflow: Workflow, request: HttpRequest | None = None) -> str:
        if not workflow.pk:
            return "Shown here once the workflow is saved."

        return webhook_url_field(webhook_url(workflow, request))

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
                run = start_manual_run(workflow=workflow, body=form.cleaned_data["payload"], request=request)
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
                    created_by=request.user,
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
            start_manual_run(workflow=workflow, body={}, request=request)  # {} is always storable
            started += 1
        self.message_user(request, f"Started {started} run(s).", messages.SUCCESS)


# -- runs ---------------------------------------------------------------------------------
class StepRunInline(_ParentPermissionsMixin, admin.TabularInline):
    model = StepRun
    fields = (
        "position",
        "key",
        "action_type",
        "status_badge",
        "attempts",
        "error_text",
        "attempt_list",
        "output_json",
        "rendered_config_json",
        "started_at",
        "duration",
        "next_attempt_at",
        "reused",
    )
    readonly_fields = fields

    @admin.display(description="Duration")
    def duration(self, step_run: StepRun) -> str:
        return human_duration(step_run.duration_ms)

    @admin.display(description="Status")
    def status_badge(self, step_run: StepRun) -> str:
        return status_badge(step_run.status)

    @admin.display(description="Error")
    def error_text(self, step_run: StepRun) -> str:
        return format_html('<span class="pf-error">{}</span>', step_run.error or "")

    @admin.display(description="Every attempt")
    def attempt_list(self, step_run: StepRun) -> str:
        items = format_html_join(
            "",
            '<li data-outcome="{}">#{} {} · {}{}</li>',
            (
                (
                    a.outcome or "running",
                    a.number,
                    a.get_outcome_display() if a.outcome else "running",
                    human_duration(a.duration_ms),
                    f" — {a.error}" if a.error else "",
                )
                for a in step_run.attempt_log.all()
            ),
        )
        return format_html('<ol class="pf-attempts">{}</ol>', items)

    @admin.display(description="Output")
    def output_json(self, step_run: StepRun) -> str:
        return pretty_json(step_run.output, _cut("output", step_run.output))

    @admin.display(description="Rendered config")
    def rendered_config_json(self, step_run: StepRun) -> str:
        return pretty_json(step_run.rendered_config, _cut("rendered config", step_run.rendered_config))

    ordering = ("position",)
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("attempt_log")

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
    list_display = (
        "short_id",
        "status_badge",
        "workflow",
        "trigger",
        "started_at",
        "duration_display",
        "attempts",
        "dead_lettered",
        "live_link",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        "dead_lettered",
        "trigger",
        ("workflow", admin.RelatedOnlyFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("workflow",)
    search_fields = ("=id", "idempotency_key", "workflow__name")
    date_hierarchy = "created_at"
    fields = (  # the live view is the "Watch live" button above the form
        "id",
        "workflow",
        "workflow_version",
        "status_badge",
        "dead_lettered",
        "trigger",
        "error",
        "idempotency_key",
        "replay_of",
        "created_at",
        "started_at",
        "finished_at",
        "last_progress_at",
        "payload_json",
        "definition_json",
    )
    readonly_fields = fields  # a run is history: nothing on its page is editable

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super().get_queryset(request).select_related("workflow").annotate(total_attempts=Sum("step_runs__attempts"))
        )

    @admin.display(description="Run", ordering="created_at")
    def short_id(self, run: Run) -> str:
        return str(run.pk)[:8]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, run: Run) -> str:
        return status_badge(run.status)

    @admin.display(description="Attempts", ordering="total_attempts")
    def attempts(self, run: Run) -> int:
        return getattr(run, "total_attempts", None) or 0

    @admin.display(description="Live")
    def live_link(self, run: Run) -> str:
        return format_html('<a href="{}">watch live</a>', reverse("workflows:run-live", kwargs={"run_id": run.pk}))

    @admin.display(description="Trigger payload")
    def payload_json(self, run: Run) -> str:
        return pretty_json(run.payload, "payload", open=True)

    @admin.display(description="Definition (snapshot)")
    def definition_json(self, run: Run) -> str:
        return pretty_json(run.definition, "definition")

    actions = ["replay_action", "run_again_action"]

    @admin.display(description="Duration")
    def duration_display(self, run: Run) -> str:
        return human_duration(run.duration_ms)

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

    @admin.action(description="Run again with the same payload (a new manual run)", permissions=["replay"])
    def run_again_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        """A new manual run of each run's workflow (its current definition) with the same trigger body.

        Only the body is reused, as "Run now" would send it: the original
        request's headers, query and method belonged to that delivery.
        """
        started = 0
        for run in queryset.select_related("workflow"):
            if not self._has_role(request, Role.EDITOR, run):
                continue
            try:
                start_manual_run(workflow=run.workflow, body=(run.payload or {}).get("body"), request=request)
            except services.PayloadInvalid as exc:
                self.message_user(request, f"Run {run.pk}: {exc.message}", messages.WARNING)
            else:
                started += 1
        self.message_user(request, f"Started {started} run(s).", messages.SUCCESS)


# Beat's tables are driven by the workflows (schedules.schedule_sync): a PeriodicTask
# edited by hand would drift from its workflow, so the workflow page is the only place.
for _model in (
    beat_models.PeriodicTask,
    beat_models.IntervalSchedule,
    beat_models.CrontabSchedule,
    beat_models.SolarSchedule,
    beat_models.ClockedSchedule,
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
