"""The run admin: read-only history with "Replay" and "Run again" actions.

The run list stays flat however large the table grows: no per-row aggregate,
no ``date_hierarchy`` (its DISTINCT dates and MIN/MAX read the whole table),
filters whose choices come from small tables, only the listed columns
selected, an estimated count once the list is large, and every filter served
by an index in the list's order (``Run.Meta.indexes``).
"""

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from accounts.admin_mixins import OrganizationScopedAdmin, ParentPermissionsInlineMixin
from accounts.models import Role
from accounts.permissions import signed_in

from .. import selectors, services
from ..execution import recording
from ..models import Run, StepRun
from ..pagination import RunListPaginator
from .widgets import human_duration, pretty_json, status_badge

# The list's columns and what they read: nothing else of a run is selected for the list.
RUN_LIST_COLUMNS = (
    "id",
    "status",
    "workflow",
    "workflow__name",
    "trigger",
    "dead_lettered",
    "created_at",
    "started_at",
    "finished_at",
)


def _cut(label: str, value: Any) -> str:
    """A stored value's label, saying when it was truncated to the storage cap."""
    return f"{label} (truncated: too large to store)" if recording.is_truncated(value) else label


class RunChangeList(ChangeList):
    """The run list selects only the columns it shows (a run's payload can be megabytes)."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        return super().get_queryset(request, exclude_parameters).only(*RUN_LIST_COLUMNS)


class WorkflowListFilter(admin.SimpleListFilter):
    """The workflow filter, its choices read from the workflows table (not DISTINCT over the runs)."""

    title = "workflow"
    parameter_name = "workflow__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # Query-string values: Django compares str(lookup) with the parameter anyway.
        return [(str(w.pk), str(w)) for w in selectors.workflows_visible_to(signed_in(request.user)).only("name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(workflow_id=self.value()) if self.value() else queryset


class StepRunInline(ParentPermissionsInlineMixin, admin.TabularInline):
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
    ordering = ("position",)
    extra = 0
    can_delete = False

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
        "dead_lettered",
        "live_link",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        "dead_lettered",
        "trigger",
        WorkflowListFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("workflow",)
    list_per_page = 100
    paginator = RunListPaginator
    show_full_result_count = False  # a second COUNT over the whole table on every filtered page
    show_facets = admin.ShowFacets.NEVER  # "Show counts": a COUNT per filter choice over the whole table
    search_fields = ("=id", "idempotency_key", "workflow__name")
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
    actions = ["replay_action", "run_again_action"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("workflow")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return RunChangeList

    @admin.display(description="Run", ordering="created_at")
    def short_id(self, run: Run) -> str:
        return str(run.pk)[:8]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, run: Run) -> str:
        return status_badge(run.status)

    @admin.display(description="Live")
    def live_link(self, run: Run) -> str:
        return format_html('<a href="{}">watch live</a>', reverse("workflows:run-live", kwargs={"run_id": run.pk}))

    @admin.display(description="Trigger payload")
    def payload_json(self, run: Run) -> str:
        return pretty_json(run.payload, "payload", open=True)

    @admin.display(description="Definition (snapshot)")
    def definition_json(self, run: Run) -> str:
        return pretty_json(run.definition, "definition")

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

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.replay_view)
        replay = path("<uuid:object_id>/replay/", view, name="workflows_run_replay")
        return [replay, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        # The "Replay" button: shown exactly when ``Run.is_replayable`` (the one rule) and the user may replay.
        can_replay = run is not None and run.is_replayable and self._has_role(request, Role.EDITOR, run)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "can_replay": can_replay})

    def replay_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The change page's "Replay" button (as it ran): the new run's page, or this one with the refusal."""
        run = self.get_object(request, object_id)  # scoped first: another organization's run is a 404 to any method
        if run is None:
            raise Http404("No run with this id in your organizations.")
        if not self._has_role(request, Role.EDITOR, run):
            raise PermissionDenied("Replaying needs the editor role.")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            replay = services.run_replay(run=run)
        except services.WorkflowInvalid as exc:
            self.message_user(request, f"This run cannot be replayed: {exc}", messages.ERROR)
            return redirect("admin:workflows_run_change", run.pk)
        self.message_user(request, "Replayed as it ran: this is the new run.", messages.SUCCESS)
        return redirect("admin:workflows_run_change", replay.pk)

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
                services.start_manual_run(
                    workflow=run.workflow, body=(run.payload or {}).get("body"), user=signed_in(request.user)
                )
            except services.PayloadInvalid as exc:
                self.message_user(request, f"Run {run.pk}: {exc.message}", messages.WARNING)
            else:
                started += 1
        self.message_user(request, f"Started {started} run(s).", messages.SUCCESS)
