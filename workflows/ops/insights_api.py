"""``GET /api/insights/``: Insights' figures for a window, per organization or per workflow.

The figures come from ``workflows.ops.insights`` (rollup tables, not runs); this module is the
endpoint and its schema. ``?workflow=<id>``: that workflow (another organization's is a 404);
``?organization=<id>``: that organization (yours only); neither: all your organizations.
"""

from typing import cast

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.selectors import organization_ids_for

from ..models import Workflow
from .insights import COUNTED_STATUSES, WINDOWS, insights

_COUNTS = {status: serializers.IntegerField() for status in COUNTED_STATUSES}
_FIGURES = {
    "runs": serializers.IntegerField(help_text="Finished runs (every status counted)."),
    "dead_lettered": serializers.IntegerField(),
    "timed_runs": serializers.IntegerField(help_text="Runs with a start and an end time (their durations count)."),
    "duration_ms_sum": serializers.IntegerField(help_text="Sum of those runs' durations, in whole ms per run."),
}
TotalsSerializer = type("InsightsTotalsSerializer", (serializers.Serializer,), {**_COUNTS, **_FIGURES})
BucketSerializer = type(
    "InsightsBucketSerializer",
    (serializers.Serializer,),
    {
        "start": serializers.DateTimeField(help_text="Start of the hour or day (UTC) the runs were received in."),
        **_COUNTS,
        **_FIGURES,
        "failure_rate": serializers.FloatField(allow_null=True),
        "p50_ms": serializers.IntegerField(allow_null=True),
        "p95_ms": serializers.IntegerField(allow_null=True),
    },
)


class ErrorCountSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="First line of the error, at most 200 characters.")
    count = serializers.IntegerField()


class FailingStepSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    workflow_name = serializers.CharField(allow_null=True, help_text="Null once the workflow is deleted.")
    step = serializers.CharField(help_text="The step's key.")
    action_type = serializers.CharField()
    failures = serializers.IntegerField(help_text="Failed step instances (a loop's iterations count one each).")
    top_errors = ErrorCountSerializer(many=True, help_text="The most frequent error texts.")


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    buckets = BucketSerializer(many=True)
    totals = TotalsSerializer()
    failure_rate = serializers.FloatField(allow_null=True)
    p50_ms = serializers.IntegerField(allow_null=True)
    p95_ms = serializers.IntegerField(allow_null=True)


class InsightsSerializer(PeriodSerializer):
    workflow = serializers.IntegerField(allow_null=True)
    window = serializers.ChoiceField(choices=list(WINDOWS))
    grain = serializers.CharField(help_text="hour (24h) or day (7d, 30d): the width of a bucket.")
    previous = PeriodSerializer(help_text="The period of the same length just before.")
    top_failing_steps = FailingStepSerializer(many=True)


def _id(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if not value.isdigit() or len(value) > 18:
        raise serializers.ValidationError({name: [f"A {name} id is a positive whole number."]})
    return int(value)


class InsightsView(APIView):
    """Runs over time by status, failure rate, p50/p95 duration, dead letters and the steps failing most."""

    @extend_schema(
        summary="Insights: runs over time for a window, with the period before it",
        description=(
            "Counted from rollups written as runs finish (finished runs only, by the hour or day they were "
            "received in, UTC); kept after retention prunes the runs. p50/p95 are within 2.5 % of exact."
        ),
        parameters=[
            OpenApiParameter("workflow", OpenApiTypes.INT, description="Only this workflow (404 when not yours)."),
            OpenApiParameter(
                "organization", OpenApiTypes.INT, description="Only this organization (404 when not yours)."
            ),
            OpenApiParameter("window", OpenApiTypes.STR, enum=list(WINDOWS), default="24h"),
        ],
        responses={
            200: InsightsSerializer,
            400: OpenApiResponse(description="window is not 24h, 7d or 30d; an id is not a number."),
            404: OpenApiResponse(description="No such workflow or organization in yours."),
        },
    )
    def get(self, request: Request) -> Response:
        window = request.query_params.get("window") or "24h"
        if window not in WINDOWS:
            raise serializers.ValidationError({"window": [f"Choose one of {', '.join(WINDOWS)}, not {window[:20]!r}."]})
        workflow_id, organization_id = _id(request, "workflow"), _id(request, "organization")
        user = cast(User, request.user)  # IsAuthenticated (the default permission) let only users in
        organizations = [row["organization_id"] for row in organization_ids_for(user)]
        if organization_id is not None:
            if organization_id not in organizations:
                raise Http404("No organization with this id among yours.")
            organizations = [organization_id]
        if workflow_id is not None:
            owner = Workflow.objects.filter(pk=workflow_id).values_list("organization_id", flat=True).first()
            if owner is None or owner not in organizations:
                raise Http404("No workflow with this id in your organizations.")
            organizations = [owner]
        data = insights(organization_ids=organizations, workflow_id=workflow_id, window=window)
        return Response(InsightsSerializer(data).data)
