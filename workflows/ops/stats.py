"""``GET /api/stats/``: what a dashboard needs about the last 24 hours of runs.

Runs by status, dead-lettered count, success rate and p50/p95 run duration,
over the caller's organizations (optionally one ``?workflow=<id>``: another
organization's workflow is a 404, as everywhere). The figures are computed by
``selectors.run_stats``; this module is the endpoint and its schema.
"""

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import scope_to_user

from ..models import Run, RunStatus, Workflow
from ..selectors import run_stats

# One count per run status, the fields named by RunStatus itself.
ByStatusSerializer = type(
    "ByStatusSerializer", (serializers.Serializer,), {status: serializers.IntegerField() for status in RunStatus.values}
)


class DurationSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Finished runs with a start and end time.")
    p50 = serializers.IntegerField(allow_null=True, help_text="Median run duration in ms (null: no finished run).")
    p95 = serializers.IntegerField(allow_null=True, help_text="95th percentile run duration in ms.")


class StatsSerializer(serializers.Serializer):
    workflow = serializers.IntegerField(allow_null=True, help_text="The workflow filter, or null for all.")
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    total = serializers.IntegerField(help_text="Runs created in the window.")
    by_status = ByStatusSerializer()
    dead_lettered = serializers.IntegerField()
    success_rate = serializers.FloatField(
        allow_null=True,
        help_text="succeeded / (succeeded + failed), 0..1; filtered and unfinished runs count for neither. "
        "Null when no run has succeeded or failed yet.",
    )
    duration_ms = DurationSerializer()


class StatsView(APIView):
    """Dashboard figures for the last 24 hours of runs of your organizations."""

    @extend_schema(
        summary="Run statistics over the last 24 hours",
        parameters=[
            OpenApiParameter(
                "workflow", OpenApiTypes.INT, description="Only this workflow's runs (404 when not yours)."
            ),
        ],
        responses={
            200: StatsSerializer,
            400: OpenApiResponse(description="workflow is not a number."),
            404: OpenApiResponse(description="No such workflow in your organizations."),
        },
    )
    def get(self, request: Request) -> Response:
        runs = scope_to_user(Run.objects.all(), request.user, organization_field="workflow__organization")
        workflow_id = request.query_params.get("workflow")
        if workflow_id not in (None, ""):
            if not workflow_id.isdigit() or len(workflow_id) > 18:
                raise serializers.ValidationError({"workflow": ["A workflow id is a positive whole number."]})
            if not scope_to_user(Workflow.objects.filter(pk=int(workflow_id)), request.user).exists():
                raise Http404("No workflow with this id in your organizations.")
            runs = runs.filter(workflow_id=int(workflow_id))
        data = run_stats(runs)
        data["workflow"] = int(workflow_id) if workflow_id else None
        return Response(StatsSerializer(data).data)
