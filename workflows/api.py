"""REST API for workflows and runs (serializers + viewsets; the logic is in services/engine).

- ``/api/workflows/``: CRUD with nested ``steps`` (a list replaces all steps,
  positions from list order); ``POST .../<id>/run/`` (manual run) and
  ``POST .../<id>/rotate-webhook-token/``.
- ``GET /api/workflows/<id>/export/``: the workflow as a portable document
  (``workflows.portability``: credentials by name and kind, never secrets);
  ``POST /api/workflows/import/``: a new, inactive workflow from one.
- ``/api/templates/``: the built-in templates (each an export document).
- ``/api/runs/``: history, newest first, filters ``workflow``, ``status``,
  ``dead_lettered``, ``created_after``, keyset pages (``?cursor=``, see
  ``RunPagination``); ``/api/runs/<id>/`` with its steps;
  ``POST /api/runs/<id>/replay/`` (optional ``{"from_step": "<key or instance path>"}``).

Viewers read; editors and above write, run and replay. Another
organization's ids are 404.
"""

import uuid
from typing import Any, NoReturn, cast

from django import forms
from django.conf import settings
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from accounts.models import Role
from accounts.permissions import OrganizationScopedMixin, OrgRole, signed_in
from accounts.selectors import organization_ids_for
from accounts.throttles import SettingRateThrottle
from core.errors import error_body

from . import portability, samples, selectors, services, templating
from .execution import flow, recording
from .files import links
from .flow.schema import definition_schema
from .models import (
    STEP_DEFAULTS,
    InDoubtPolicy,
    Run,
    RunFile,
    RunStatus,
    RunTrigger,
    StepAttempt,
    StepRun,
    StepRunStatus,
    TestRun,
    TriggerType,
    Workflow,
    WorkflowSample,
)
from .scheduling.cron import next_firings


# -- serializers ---------------------------------------------------------------------
class StepSerializer(serializers.Serializer):
    position = serializers.IntegerField(read_only=True)
    key = serializers.CharField(max_length=64)
    action_type = serializers.CharField(max_length=64)
    config = serializers.JSONField(required=False, default=dict)
    credential = serializers.IntegerField(required=False, allow_null=True, default=None, source="credential_id")
    max_retries = serializers.IntegerField(required=False, default=int(STEP_DEFAULTS["max_retries"]))
    backoff_seconds = serializers.FloatField(required=False, default=STEP_DEFAULTS["backoff_seconds"])
    backoff_max_seconds = serializers.FloatField(required=False, default=STEP_DEFAULTS["backoff_max_seconds"])
    timeout_seconds = serializers.FloatField(required=False, default=STEP_DEFAULTS["timeout_seconds"])
    on_in_doubt = serializers.ChoiceField(
        choices=InDoubtPolicy.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="When an attempt's outcome is unknown (worker lost mid-call): retry or dead_letter. "
        "Blank: the action's default (retry when it makes repeats safe).",
    )
    continue_on_error = serializers.BooleanField(
        required=False,
        default=False,
        help_text="When the step fails (after its retries), record the failure and go on instead of failing the run.",
    )


class WorkflowSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(
        source="organization_id",
        required=False,
        help_text="On create: an organization where you are editor or above (default: your only one).",
    )
    steps = StepSerializer(many=True, required=False)
    on_failure = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text="The error path: steps (the same shape as steps, nested ones too) run once when a run fails, "
        "with failure.step, failure.error and failure.attempts in their templates.",
    )
    webhook_secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=128, help_text="Never returned."
    )
    has_webhook_secret = serializers.SerializerMethodField()
    webhook_secret_previous = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=128,
        help_text="Also accepted while senders move to a new webhook_secret (rotation). Never returned.",
    )
    has_webhook_secret_previous = serializers.SerializerMethodField()
    webhook_url = serializers.SerializerMethodField()
    next_firings = serializers.SerializerMethodField(
        help_text="Schedule workflows: the next five firing times (ISO 8601 with offset, in the workflow's time "
        "zone), from the cron rule beat fires by (POSIX cron). null for other triggers."
    )
    created_by = serializers.EmailField(source="created_by.email", read_only=True, default=None, allow_null=True)
    notify_slack_credential = serializers.IntegerField(
        source="notify_slack_credential_id",
        required=False,
        allow_null=True,
        help_text="A slack_bot_token credential: failure notices go to notify_slack_channel instead of e-mail.",
    )

    class Meta:
        model = Workflow
        fields = [
            "id",
            "organization",
            "name",
            "description",
            "is_active",
            "trigger_type",
            "webhook_url",
            "webhook_secret",
            "has_webhook_secret",
            "signature_scheme",
            "webhook_secret_previous",
            "has_webhook_secret_previous",
            "hmac_header",
            "hmac_algorithm",
            "hmac_encoding",
            "hmac_prefix",
            "webhook_body_as_file",
            "schedule",
            "timezone",
            "next_firings",
            "version",
            "notify_on_failure",
            "notify_slack_channel",
            "notify_slack_credential",
            "steps",
            "on_failure",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["version", "created_at", "updated_at"]

    def get_has_webhook_secret(self, workflow: Workflow) -> bool:
        return bool(workflow.webhook_secret)

    def get_has_webhook_secret_previous(self, workflow: Workflow) -> bool:
        return bool(workflow.webhook_secret_previous)

    @extend_schema_field(serializers.ListField(child=serializers.DateTimeField(), allow_null=True))
    def get_next_firings(self, workflow: Workflow) -> list[str] | None:
        if workflow.trigger_type != TriggerType.SCHEDULE:
            return None
        return [at.isoformat() for at in next_firings(workflow.schedule or "", workflow.timezone or "UTC", count=5)]

    def get_webhook_url(self, workflow: Workflow) -> str | None:
        """The URL is the capability to trigger runs: editors and above only (``null`` for viewers)."""
        if workflow.trigger_type != TriggerType.WEBHOOK or not self._may_trigger(workflow.organization_id):
            return None
        return webhook_url(workflow, self.context.get("request"))

    def _may_trigger(self, organization_id: int) -> bool:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return False
        if "editable_organization_ids" not in self.context:  # once per response, not once per workflow
            # DRF's context is the dict every serializer of the response shares.
            self.context["editable_organization_ids"] = set(  # type: ignore[index]  # stubs: a read-only Mapping
                organization_ids_for(user, minimum_role=Role.EDITOR).values_list("organization_id", flat=True)
            )
        return organization_id in self.context["editable_organization_ids"]


def webhook_url(workflow: Workflow, request: Any = None) -> str:
    path = reverse("workflows:webhook", kwargs={"token": workflow.webhook_token})
    if request is not None:
        return request.build_absolute_uri(path)
    return settings.POTAFLOW_BASE_URL.rstrip("/") + path


# -- export documents (for the schema: the service checks documents itself, reporting every problem) --
class CredentialReferenceSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()


class ExportStepSerializer(StepSerializer):
    position = None  # type: ignore[assignment]  # None is how DRF drops an inherited field
    credential = CredentialReferenceSerializer(  # type: ignore[assignment]  # by name and kind, not an id
        allow_null=True, required=False, help_text="The credential by name and kind (never its secret), or null."
    )


class ExportWorkflowSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(required=False, allow_blank=True)
    trigger_type = serializers.ChoiceField(choices=TriggerType.choices)
    schedule = serializers.CharField(required=False, allow_blank=True)
    timezone = serializers.CharField(required=False)
    signature_scheme = serializers.CharField(required=False)
    hmac_header = serializers.CharField(required=False, allow_blank=True)
    hmac_algorithm = serializers.CharField(required=False)
    hmac_encoding = serializers.CharField(required=False)
    hmac_prefix = serializers.CharField(required=False, allow_blank=True)
    webhook_body_as_file = serializers.BooleanField(required=False)
    webhook_secret_set = serializers.BooleanField(
        required=False, help_text="Informative: the exported workflow had a webhook secret (never exported)."
    )


class ExportDocumentSerializer(serializers.Serializer):
    potaflow_export = serializers.IntegerField(
        help_text=f"Format version: {portability.EXPORT_FORMAT} (format 1 documents, without nested steps or "
        "on_failure, still import)."
    )
    exported_at = serializers.DateTimeField(required=False)
    # DRF's metaclass takes declared fields off the class: this one only shares the name of Field.source.
    source = serializers.DictField(  # type: ignore[assignment]  # a field, not Field.source
        required=False, help_text="Informative: the exported workflow's id and version."
    )
    template = serializers.DictField(required=False, help_text="Built-in templates: title and description.")
    workflow = ExportWorkflowSerializer()
    steps = ExportStepSerializer(many=True)
    on_failure = ExportStepSerializer(
        many=True, required=False, help_text="Format 2: the error path (steps run once when a run fails)."
    )


class ImportOptionsSerializer(serializers.Serializer):
    organization = serializers.IntegerField(
        required=False, help_text="Where to create it: an organization where you are editor or above."
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=150, help_text="Overrides workflow.name.")
    credentials = serializers.DictField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Credential reference name -> id of one of your credentials of that kind "
        "(default: your credential with the reference's name and kind).",
    )


class WorkflowImportSerializer(ExportDocumentSerializer):
    import_options = ImportOptionsSerializer(required=False, help_text="Import options (not part of an export).")

    def get_fields(self):
        fields = super().get_fields()
        fields["import"] = fields.pop("import_options")
        return fields


class TemplateSerializer(serializers.Serializer):
    slug = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    trigger_type = serializers.CharField()
    credentials = CredentialReferenceSerializer(many=True, help_text="Credentials its steps refer to.")
    document = ExportDocumentSerializer(help_text="POST it to /api/workflows/import/ to create the workflow.")


class RunPayloadSerializer(serializers.Serializer):
    payload = serializers.JSONField(required=False, default=dict, help_text="Becomes trigger.body.")


class RunAcceptedSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()


class ApproveSerializer(serializers.Serializer):
    step = serializers.CharField(max_length=64, help_text="The key of the waiting wait step (kind approval).")
    approved = serializers.BooleanField(help_text="true approves, false refuses.")


class ReplaySerializer(serializers.Serializer):
    from_step = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=512,
        help_text="Start at this step key; a step inside a loop is named by its instance's path (lines[1]/ratio). "
        "By default the replay starts at the first step that did not succeed; what succeeded before is reused.",
    )
    version = serializers.ChoiceField(
        choices=[("original", "original"), ("current", "current")],
        required=False,
        default="original",
        help_text='"original": the definition the run executed (as it ran); "current": the workflow as it is now '
        "(fix a step, then replay), from the first step that did not succeed.",
    )


class TestRunSerializer(serializers.Serializer):
    payload = serializers.JSONField(required=False, default=dict, help_text="Becomes trigger.body.")
    steps = StepSerializer(many=True, required=False, help_text="Test these (unsaved) steps instead of the saved ones.")
    on_failure = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text="Test with this (unsaved) error path instead of the saved one: it runs when the test fails.",
    )
    send_step = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Key of one side-effecting step to send for real; the others are only previewed.",
    )


class UnsavedTestRunSerializer(serializers.Serializer):
    organization = serializers.IntegerField(
        required=False, help_text="Where the workflow will be created: an organization where you are editor or above."
    )
    payload = serializers.JSONField(required=False, default=dict, help_text="Becomes trigger.body.")
    steps = StepSerializer(many=True, required=False, default=list)
    on_failure = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text="Test with this (unsaved) error path instead of the saved one: it runs when the test fails.",
    )


class ListeningSerializer(serializers.Serializer):
    listening_until = serializers.DateTimeField()
    webhook_url = serializers.CharField()


class SampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowSample
        fields = ["id", "name", "source", "created_at", "payload"]
        read_only_fields = fields


class SampleListSerializer(serializers.Serializer):
    listening_until = serializers.DateTimeField(allow_null=True, help_text="Set while listening for a test event.")
    results = SampleSerializer(many=True)


class SampleCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    body = serializers.JSONField(help_text="The trigger body of the sample.")


class TestStepResultSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="Its place in its own step list.")
    key = serializers.CharField()
    path = serializers.CharField(
        help_text="The step instance: its key, under the branch paths and loop items it is in "
        "(route/vip/notify, rows[0]/append, on_failure/tell)."
    )
    action_type = serializers.CharField()
    status = serializers.ChoiceField(
        choices=["ok", "preview", "sent", "filtered", "error", "skipped"],
        help_text="ok: ran (no side effects); preview: would send (see would_send); sent: sent for real.",
    )
    rendered_config = serializers.JSONField(allow_null=True)
    output = serializers.JSONField(allow_null=True)
    output_source = serializers.CharField(allow_null=True, help_text='"last successful run" when borrowed.')
    would_send = serializers.JSONField(allow_null=True, help_text="What would be sent, secrets masked.")
    error = serializers.CharField(allow_blank=True)


class TestResultSerializer(serializers.Serializer):
    trigger = serializers.JSONField()
    outcome = serializers.ChoiceField(choices=["completed", "filtered", "error"])
    sent = serializers.CharField(allow_null=True)
    steps = TestStepResultSerializer(many=True)
    detail = serializers.CharField(required=False, help_text="Why the test itself failed (outcome error, no steps).")


class TestPendingSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["queued", "running"])
    url = serializers.CharField(help_text="GET it until it answers 200 with the result.")
    detail = serializers.CharField()


class TestRunThrottle(SettingRateThrottle):
    scope = "test_run"
    rate_setting = "POTAFLOW_TEST_RUN_RATE"


class TemplateCheckThrottle(SettingRateThrottle):
    scope = "template_check"
    rate_setting = "POTAFLOW_TEMPLATE_CHECK_RATE"


def throttled_naming_the_setting(throttle: type[SettingRateThrottle], what: str, wait: float | None) -> NoReturn:
    """DRF's 429 (with Retry-After), saying which limit and which setting."""
    rate = getattr(settings, throttle.rate_setting)
    raise exceptions.Throttled(wait=wait, detail=f"Too many {what}: at most {rate} per user ({throttle.rate_setting}).")


class TemplateCheckSerializer(serializers.Serializer):
    template = serializers.CharField(allow_blank=True, trim_whitespace=False)
    earlier_steps = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    names = serializers.ListField(
        child=serializers.ChoiceField(choices=["item", "index", "failure"]),
        required=False,
        default=list,
        help_text="Variables known where the template is: item and index in a loop body, failure in the error path.",
    )
    other_steps = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        default=list,
        max_length=1000,
        help_text="The definition's other step keys: readable only with a default (they may not have run).",
    )


class TemplateCheckResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)


class StepAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepAttempt
        fields = ["number", "outcome", "started_at", "finished_at", "duration_ms", "error", "response_status"]


class StepRunSerializer(serializers.ModelSerializer):
    attempt_log = StepAttemptSerializer(many=True, read_only=True, help_text="Every attempt, oldest first.")
    path = serializers.SerializerMethodField(
        help_text='Where the instance sits in the tree: its key, or "lines[3]/ratio" inside iteration 3 of loop lines.'
    )
    resume_url = serializers.SerializerMethodField(
        help_text="A waiting wait of kind webhook: POST JSON to it to resume the run (the body becomes the output)."
    )
    loop = serializers.SerializerMethodField(
        help_text="A for_each instance: {total, finished, iterations: [{index, status}]}; null otherwise."
    )
    truncated = serializers.SerializerMethodField(
        help_text="What was cut to POTAFLOW_STEP_OUTPUT_MAX_BYTES before it was stored (output, rendered_config); "
        "a cut value is {_potaflow_truncated: true, size_bytes, preview}."
    )

    def get_truncated(self, step_run: StepRun) -> list[str]:
        return [name for name in ("output", "rendered_config") if recording.is_truncated(getattr(step_run, name))]

    def get_path(self, step_run: StepRun) -> str:
        return flow.path_of(step_run)

    def get_resume_url(self, step_run: StepRun) -> str | None:
        if step_run.status != StepRunStatus.WAITING or not step_run.resume_token:
            return None
        return flow.resume_url(step_run.run_id, flow.path_of(step_run))

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_loop(self, step_run: StepRun) -> dict[str, Any] | None:
        if step_run.loop_total is None:
            return None
        return {
            "total": step_run.loop_total,
            "finished": step_run.loop_finished or 0,
            "iterations": [{"index": it.index, "status": it.status} for it in step_run.iterations.all()],
        }

    class Meta:
        model = StepRun
        fields = [
            "position",
            "key",
            "action_type",
            "status",
            "attempts",
            "rendered_config",
            "output",
            "error",
            "started_at",
            "finished_at",
            "duration_ms",
            "next_attempt_at",
            "reused",
            "truncated",
            "attempt_log",
            "path",
            "wake_at",
            "resume_url",
            "loop",
        ]


class RunSerializer(serializers.ModelSerializer):
    workflow_name = serializers.CharField(source="workflow.name", read_only=True)
    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)
    replayable = serializers.BooleanField(
        source="is_replayable", read_only=True, help_text="Whether a replay may be asked for (Run.is_replayable)."
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "workflow_version",
            "status",
            "dead_lettered",
            "trigger",
            "payload",
            "error",
            "idempotency_key",
            "replay_of",
            "replayable",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
        ]


class RunFileSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField(
        help_text="A signed link to the bytes, valid POTAFLOW_FILE_LINK_SECONDS (then 410: read the run again)."
    )

    def get_download_url(self, row: RunFile) -> str:
        return links.download_url(row, self.context.get("request"))

    class Meta:
        model = RunFile
        fields = ["id", "field", "origin", "name", "size", "content_type", "sha256", "created_at", "download_url"]


class RunDetailSerializer(RunSerializer):
    steps = StepRunSerializer(many=True, read_only=True, source="step_runs")
    files = serializers.SerializerMethodField(help_text="The run's files (uploads and files its steps wrote).")

    @extend_schema_field(RunFileSerializer(many=True))
    def get_files(self, run: Run) -> list[dict[str, Any]]:
        rows = selectors.run_files(run)
        return list(RunFileSerializer(rows, many=True, context=self.context).data)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "steps", "files"]


# -- views -----------------------------------------------------------------------------
class WorkflowViewSet(OrganizationScopedMixin, viewsets.ModelViewSet):
    queryset = Workflow.objects.select_related("organization", "created_by").prefetch_related("steps")
    serializer_class = WorkflowSerializer
    permission_classes = [OrgRole(read=Role.VIEWER, write=Role.EDITOR)]
    filterset_fields = ["organization", "trigger_type", "is_active"]
    ordering_fields = ["name", "created_at", "updated_at"]

    def perform_create(self, serializer: "BaseSerializer[Workflow]") -> None:
        user = signed_in(self.request.user)
        data = dict(serializer.validated_data)
        organization = selectors.organization_for_new_workflow(user, data.pop("organization_id", None))
        steps = [_step_spec(s) for s in data.pop("steps", [])]
        serializer.instance = services.workflow_create(organization=organization, created_by=user, steps=steps, **data)

    def perform_update(self, serializer: "BaseSerializer[Workflow]") -> None:
        workflow = cast(Workflow, serializer.instance)  # update() built the serializer around get_object()'s workflow
        data = dict(serializer.validated_data)
        organization_id = data.pop("organization_id", None)
        steps = data.pop("steps", None)
        if steps is not None:
            steps = [_step_spec(s) for s in steps]
        serializer.instance = services.workflow_update(
            workflow=workflow, steps=steps, organization_id=organization_id, **data
        )

    def perform_destroy(self, instance: Workflow) -> None:
        services.workflow_delete(workflow=instance)

    @extend_schema(
        request=RunPayloadSerializer,
        responses={202: RunAcceptedSerializer},
        summary="Run the workflow now (manual trigger)",
    )
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object()
        body = RunPayloadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.start_manual_run(
            workflow=workflow, body=body.validated_data["payload"], user=signed_in(request.user)
        )
        return Response({"run_id": str(run.pk)}, status=status.HTTP_202_ACCEPTED)

    def throttled(self, request: Request, wait: float | None) -> NoReturn:
        if self.action in ("test", "test_unsaved"):
            throttled_naming_the_setting(TestRunThrottle, "test runs", wait)
        # DRF passes None when the wait is unknown (its stubs say float).
        super().throttled(request, wait)  # type: ignore[arg-type]
        raise AssertionError("unreachable")  # DRF's throttled always raises

    @extend_schema(
        request=TestRunSerializer,
        responses={
            200: TestResultSerializer,
            202: TestPendingSerializer,
            429: OpenApiResponse(description="POTAFLOW_TEST_RUN_RATE per user or POTAFLOW_TEST_RUN_MAX_CONCURRENT."),
        },
        summary="Test with sample data: render every step, run transform/filter, show what others would send",
        description="Runs on a worker. The answer waits up to POTAFLOW_TEST_RUN_WAIT_SECONDS for the result (200); "
        "a longer test answers 202 with a url to GET until it answers 200.",
    )
    @action(detail=True, methods=["post"], throttle_classes=[TestRunThrottle])
    def test(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object()
        body = TestRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        steps = [_step_spec(s) for s in data["steps"]] if "steps" in data else None
        try:
            test = services.test_run_start(
                workflow=workflow,
                user=signed_in(request.user),
                payload=data["payload"],
                steps=steps,
                on_failure=data.get("on_failure"),
                send_step=data.get("send_step") or None,
            )
        except services.TestRunLimited as exc:
            raise exceptions.Throttled(wait=5, detail=str(exc)) from None
        test = selectors.test_run_result(test.pk, wait_seconds=settings.POTAFLOW_TEST_RUN_WAIT_SECONDS)
        return self._test_answer(request, workflow, test)

    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("test_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: TestResultSerializer, 202: TestPendingSerializer},
        summary="The result of a test run (202 while it runs)",
    )
    @action(detail=True, methods=["get"], url_path=r"test/(?P<test_id>[^/.]+)")
    def test_result(self, request: Request, pk: str | None = None, test_id: str | None = None) -> Response:
        workflow = self.get_object()  # first: another organization's workflow is a 404 whatever the test id
        try:
            test = selectors.test_run_result(uuid.UUID(str(test_id)))
        except (ValueError, TestRun.DoesNotExist):
            raise exceptions.NotFound("No such test run.") from None
        if test.workflow_id != workflow.pk:
            raise exceptions.NotFound("No such test run.")
        return self._test_answer(request, workflow, test)

    def _test_answer(self, request: Request, workflow: Workflow | None, test: TestRun) -> Response:
        if test.result is not None:
            return Response(test.result)
        if test.created_at < services.test_run_stale_before():
            detail = "The test run was not finished by a worker in time (is a worker running?)."
            return Response({"outcome": "error", "detail": detail, "steps": [], "trigger": None, "sent": None})
        if workflow is None:
            url = reverse("workflows:workflow-test-unsaved-result", kwargs={"test_id": test.pk})
        else:
            url = reverse("workflows:workflow-test-result", kwargs={"pk": workflow.pk, "test_id": test.pk})
        response = Response(
            {
                "id": str(test.pk),
                "status": test.status,
                "url": url,
                "detail": f"The test run is {test.status}: GET {url} until it answers 200.",
            },
            status=status.HTTP_202_ACCEPTED,
        )
        response["Location"] = url
        response["Retry-After"] = "1"
        return response

    @extend_schema(
        operation_id="workflows_test_unsaved",
        request=UnsavedTestRunSerializer,
        responses={
            200: TestResultSerializer,
            202: TestPendingSerializer,
            429: OpenApiResponse(description="POTAFLOW_TEST_RUN_RATE per user or POTAFLOW_TEST_RUN_MAX_CONCURRENT."),
        },
        summary="Test steps that are not saved yet (a new workflow) with sample data",
        description="As POST /api/workflows/<id>/test/, for the builder of a workflow that has no id yet: the steps "
        "are validated as saving would (same errors), then rendered and previewed by a worker; nothing is sent. "
        "A test still running after POTAFLOW_TEST_RUN_WAIT_SECONDS answers 202 with the URL to poll.",
    )
    @action(
        detail=False, methods=["post"], url_path="test", url_name="test-unsaved", throttle_classes=[TestRunThrottle]
    )
    def test_unsaved(self, request: Request) -> Response:
        body = UnsavedTestRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        organization = selectors.organization_for_new_workflow(signed_in(request.user), data.get("organization"))
        try:
            test = services.test_run_start(
                workflow=Workflow(organization=organization, name=services.UNSAVED_WORKFLOW_NAME),
                user=signed_in(request.user),
                payload=data["payload"],
                steps=[_step_spec(s) for s in data.get("steps", [])],
                on_failure=data.get("on_failure"),
            )
        except services.TestRunLimited as exc:
            raise exceptions.Throttled(wait=5, detail=str(exc)) from None
        test = selectors.test_run_result(test.pk, wait_seconds=settings.POTAFLOW_TEST_RUN_WAIT_SECONDS)
        return self._test_answer(request, None, test)

    @extend_schema(
        request=None,
        operation_id="workflows_test_unsaved_result",
        parameters=[OpenApiParameter("test_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: TestResultSerializer, 202: TestPendingSerializer},
        summary="The result of a test of unsaved steps (202 while it runs); only its creator reads it",
    )
    @action(detail=False, methods=["get"], url_path=r"test/(?P<test_id>[^/.]+)", url_name="test-unsaved-result")
    def test_unsaved_result(self, request: Request, test_id: str | None = None) -> Response:
        try:
            test = selectors.test_run_result(uuid.UUID(str(test_id)))
        except (ValueError, TestRun.DoesNotExist):
            raise exceptions.NotFound("No such test run.") from None
        if test.workflow_id is not None or test.created_by_id != request.user.pk:
            raise exceptions.NotFound("No such test run.")
        return self._test_answer(request, None, test)

    @extend_schema(
        request=None,
        responses={202: ListeningSerializer, 400: OpenApiResponse(description="Not a webhook workflow.")},
        summary="Listen for a test event: the next webhook is kept as a sample and NOT run",
        description="For POTAFLOW_LISTEN_SECONDS (300) the next request to the webhook URL — even while the workflow "
        "is inactive — is captured as a sample (GET .../samples/) instead of starting a run; its sender gets "
        '202 {"captured": true}. Editors and above.',
    )
    @action(detail=True, methods=["post"])
    def listen(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object()
        if workflow.trigger_type != TriggerType.WEBHOOK:
            raise serializers.ValidationError(
                {"trigger_type": ["Only a webhook workflow can listen for a test event."]}
            )
        until = samples.listen_start(workflow=workflow)
        return Response(
            {"listening_until": until, "webhook_url": webhook_url(workflow, request)}, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        methods=["GET"],
        request=None,
        responses={200: SampleListSerializer},
        summary="The workflow's samples (captured test events and saved ones), newest first",
    )
    @extend_schema(
        methods=["POST"],
        request=SampleCreateSerializer,
        responses={
            201: SampleSerializer,
            400: OpenApiResponse(description="No name, or a body that cannot be stored."),
        },
        summary="Save a named sample (its trigger body); the oldest beyond POTAFLOW_SAMPLES_PER_WORKFLOW go",
    )
    @action(detail=True, methods=["get", "post"], url_path="samples")
    def samples(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object()
        if request.method == "POST":
            body = SampleCreateSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            sample = samples.sample_save(
                workflow=workflow, name=body.validated_data["name"], body=body.validated_data["body"]
            )
            return Response(SampleSerializer(sample).data, status=status.HTTP_201_CREATED)
        data = SampleSerializer(samples.samples_of(workflow), many=True).data
        return Response({"listening_until": workflow.listening_until, "results": data})

    @extend_schema(request=None, responses={200: WorkflowSerializer}, summary="Give the workflow a new webhook URL")
    @action(detail=True, methods=["post"], url_path="rotate-webhook-token")
    def rotate_webhook_token(self, request: Request, pk: str | None = None) -> Response:
        workflow = services.workflow_rotate_webhook_token(workflow=self.get_object())
        return Response(self.get_serializer(workflow).data)

    @extend_schema(
        request=None,
        responses={200: ExportDocumentSerializer},
        summary="Export the workflow as a document (credentials by name and kind, no secrets, no webhook token)",
        description="A versioned JSON document (potaflow_export: 1) of the workflow's current definition: trigger "
        "settings and steps, each step's credential as {name, kind}. POST it to /api/workflows/import/.",
    )
    @action(detail=True, methods=["get"])
    def export(self, request: Request, pk: str | None = None) -> Response:
        return Response(portability.workflow_export(self.get_object()))

    @extend_schema(
        request=WorkflowImportSerializer,
        responses={
            201: WorkflowSerializer,
            400: OpenApiResponse(description="Every problem of the document at once, by document path."),
        },
        summary="Create an inactive workflow from an export document or a template",
        description="The body is an export document (or a template's document), optionally with an `import` object "
        "(organization, name, credentials). Credential references map to your organization's credentials by name "
        "and kind unless `import.credentials` maps them. Every problem is reported at once, by document path "
        "(`workflow.schedule`, `steps[1].credential`...). The workflow is created inactive: set its secret and "
        "activate it.",
    )
    @action(detail=False, methods=["post"], url_path="import")
    def import_document(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"document": ["An export document is a JSON object."]})
        document = {key: value for key, value in request.data.items() if key != "import"}
        options = ImportOptionsSerializer(data=request.data.get("import") or {})
        if not options.is_valid():
            raise serializers.ValidationError({"import": options.errors})
        organization = selectors.organization_for_new_workflow(
            signed_in(self.request.user), options.validated_data.get("organization")
        )
        workflow = portability.workflow_import(
            organization=organization,
            document=document,
            created_by=signed_in(request.user),
            name=options.validated_data.get("name") or None,
            credentials=options.validated_data.get("credentials"),
        )
        return Response(WorkflowSerializer(workflow, context={"request": request}).data, status=status.HTTP_201_CREATED)


def _step_spec(data: dict[str, Any]) -> dict[str, Any]:
    spec = dict(data)
    spec["credential"] = spec.pop("credential_id", None)
    return spec


class IdFilter(filters.NumberFilter):
    """A whole-number id: anything else (0.5, 1e122) is a 400, not a database error."""

    field_class = forms.IntegerField


class RunFilter(filters.FilterSet):
    workflow = IdFilter(field_name="workflow_id", min_value=1, max_value=2**63 - 1)
    status = filters.ChoiceFilter(choices=RunStatus.choices)
    trigger = filters.ChoiceFilter(choices=RunTrigger.choices)
    dead_lettered = filters.BooleanFilter()
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields = ["workflow", "status", "trigger", "dead_lettered", "created_after", "created_before"]


class RunPagination(CursorPagination):
    """Keyset pages (``?cursor=``, ``next``/``previous`` links, no ``count``): as fast on page 10,000 as on page 1.

    A page number needs ``COUNT(*)`` and an ``OFFSET`` scan, both growing with
    the runs table. The order is the list's index order (``Run.Meta.indexes``).
    """

    ordering = ("-created_at", "-id")
    page_size = settings.REST_FRAMEWORK["PAGE_SIZE"]

    def decode_cursor(self, request: Request) -> Any:
        # DRF answers a cursor it cannot read with a 404; it is bad input: a 400 naming the parameter.
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError(
                {"cursor": ["Not a cursor of this list: follow the next/previous links as given."]}
            ) from None


class RunViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Run.objects.select_related("workflow").order_by("-created_at", "-id")
    permission_classes = [OrgRole(read=Role.VIEWER, write=Role.EDITOR)]
    organization_field = "workflow__organization"
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"  # a malformed id is a 404, not a database error
    filterset_class = RunFilter
    pagination_class = RunPagination
    ordering_fields = ["created_at"]  # a keyset needs a non-null order: finished_at is null until a run ends

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            queryset = queryset.prefetch_related("step_runs__attempt_log", "step_runs__iterations")
        return queryset

    def get_serializer_class(self):
        return RunSerializer if self.action == "list" else RunDetailSerializer

    @extend_schema(
        request=ReplaySerializer,
        responses={201: RunDetailSerializer, 400: OpenApiResponse(description="The run cannot be replayed.")},
        summary="Replay a failed, dead-lettered or filtered run",
    )
    @action(detail=True, methods=["post"])
    def replay(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        body = ReplaySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        replay = services.run_replay(
            run=run,
            from_step=body.validated_data.get("from_step") or None,
            version=body.validated_data["version"],
        )
        replay = Run.objects.prefetch_related("step_runs__attempt_log").get(pk=replay.pk)
        return Response(RunDetailSerializer(replay, context={"request": request}).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ApproveSerializer,
        responses={
            200: RunDetailSerializer,
            403: OpenApiResponse(description="Approving needs the editor role."),
            404: OpenApiResponse(description="No such run, or no wait step of that key."),
            409: OpenApiResponse(description="The step is not waiting for an approval (decided already)."),
        },
        summary="Give or refuse a waiting approval",
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()  # editor or above (OrgRole's write role); a viewer gets 403
        body = ApproveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            services.run_approve(
                run=run,
                step=body.validated_data["step"],
                approved=body.validated_data["approved"],
                user=signed_in(request.user),
            )
        except flow.FlowError as exc:
            return Response(error_body(exc.message), status=exc.code)
        run = Run.objects.prefetch_related("step_runs__attempt_log", "step_runs__iterations").get(pk=run.pk)
        return Response(RunDetailSerializer(run, context={"request": request}).data)


class ResumeView(APIView):
    """A wait's resume URL (kind webhook): the unguessable token is the capability, no sign-in."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={
            202: OpenApiResponse(description="Resumed: the body is the wait step's output."),
            404: OpenApiResponse(description="No wait has this URL."),
            409: OpenApiResponse(description="Duplicate: resumed before (or timed out)."),
        },
        summary="Resume a run waiting at a wait step",
    )
    def post(self, request: Request, token: str) -> Response:
        try:
            row = services.run_resume_webhook(token=token, body=request.data)
        except flow.FlowError as exc:
            return Response(error_body(exc.message), status=exc.code)
        return Response({"run": str(row.run_id), "step": row.key, "path": flow.path_of(row)}, status=202)


class TemplateViewSet(viewsets.ViewSet):
    """The built-in templates: read-only, the same for everyone signed in."""

    lookup_field = "slug"
    lookup_value_regex = "[a-z0-9-]+"

    @staticmethod
    def _data(template: portability.Template) -> dict[str, Any]:
        return {
            "slug": template.slug,
            "title": template.title,
            "description": template.description,
            "trigger_type": template.trigger_type,
            "credentials": template.credentials,
            "document": template.document,
        }

    @extend_schema(responses={200: TemplateSerializer(many=True)}, summary="List the built-in workflow templates")
    def list(self, request: Request) -> Response:
        return Response([self._data(t) for t in portability.templates()])

    @extend_schema(responses={200: TemplateSerializer}, summary="One built-in workflow template")
    def retrieve(self, request: Request, slug: str | None = None) -> Response:
        template = portability.template(slug or "")
        if template is None:
            raise exceptions.NotFound("No such template.")
        return Response(self._data(template))


class IsEditorSomewhere(IsAuthenticated):
    """For checks only builders need: the editor role (or above) in at least one organization."""

    message = "This needs the editor role in an organization."

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and (
            organization_ids_for(signed_in(request.user), minimum_role=Role.EDITOR).exists()
        )


class DefinitionSchemaView(APIView):
    """The JSON Schema of a workflow definition (``workflows.flow.schema``): public, like the API's own schema."""

    permission_classes = [AllowAny]

    @extend_schema(
        summary="JSON Schema of a workflow definition (steps, nested steps, on_failure)",
        description="Draft 2020-12, built from the installed actions' config schemas; recursive for the nested "
        "step lists of branch and for_each. What a schema cannot say (unique keys, depth, template scope) is "
        "checked when a workflow is saved.",
        responses={(200, "application/schema+json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        return Response(definition_schema(), content_type="application/schema+json")


class TemplateCheckView(APIView):
    """The save-time template check, for one field (the builder calls it when a field loses focus)."""

    permission_classes = [IsEditorSomewhere]
    throttle_classes = [TemplateCheckThrottle]

    def throttled(self, request: Request, wait: float | None) -> NoReturn:
        throttled_naming_the_setting(TemplateCheckThrottle, "template checks", wait)

    @extend_schema(
        request=TemplateCheckSerializer,
        responses={
            200: TemplateCheckResultSerializer,
            429: OpenApiResponse(
                description="POTAFLOW_TEMPLATE_CHECK_RATE per user, or the server busy checking templates."
            ),
        },
        summary="Check one template as saving would",
    )
    def post(self, request: Request) -> Response:
        body = TemplateCheckSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # Parsing is CPU work in a web thread: an eighth of the threads at most (POTAFLOW_WEB_HEAVY_SLOTS).
        if not templating.check_slots.acquire(timeout=2):
            raise exceptions.Throttled(wait=1, detail="The server is busy checking templates: retry in a second.")
        try:
            templating.check_template(
                body.validated_data["template"],
                earlier_steps=body.validated_data["earlier_steps"],
                names=body.validated_data["names"],
                other_steps=body.validated_data["other_steps"],
            )
        except templating.TemplateError as exc:
            return Response({"valid": False, "error": exc.message})
        finally:
            templating.check_slots.release()
        return Response({"valid": True, "error": ""})
