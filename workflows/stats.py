"""``GET /api/stats/``: what a dashboard needs about the last 24 hours of runs.

Runs by status, dead-lettered count, success rate and p50/p95 run duration,
over the caller's organizations (optionally one ``?workflow=<id>``: another
organization's workflow is a 404, as everywhere). Percentiles are computed in
the database by ordering on the duration and reading one row at the rank
(nearest-rank method), so the same code runs on PostgreSQL and SQLite and
never loads a day of runs into memory.
"""

import math
from datetime import timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import scope_to_user

from .models import Run, RunStatus, Workflow

WINDOW = timedelta(hours=24)


def _percentile(durations: QuerySet, count: int, fraction: float) -> int | None:
    """Nearest-rank percentile of an ordered duration queryset of ``count`` rows, in ms."""
    if count == 0:
        return None
    index = max(math.ceil(fraction * count), 1) - 1
    value = durations[index : index + 1].values_list("duration", flat=True).first()
    return int(value.total_seconds() * 1000) if value is not None else None


def run_stats(runs: QuerySet, *, now: Any = None) -> dict[str, Any]:
    """Aggregate ``runs`` (already scoped) created in the 24 h before ``now``."""
    now = now or timezone.now()
    since = now - WINDOW
    window = runs.filter(created_at__gte=since, created_at__lte=now)
    counts = dict(window.order_by().values_list("status").annotate(n=Count("pk")))
    by_status = {status: counts.get(status, 0) for status in RunStatus.values}
    decided = by_status[RunStatus.SUCCEEDED] + by_status[RunStatus.FAILED]
    durations = (
        window.filter(started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        .order_by("duration", "pk")
    )
    finished = durations.count()
    return {
        "window_start": since,
        "window_end": now,
        "total": sum(by_status.values()),
        "by_status": by_status,
        "dead_lettered": window.filter(dead_lettered=True).count(),
        "success_rate": round(by_status[RunStatus.SUCCEEDED] / decided, 4) if decided else None,
        "duration_ms": {
            "count": finished,
            "p50": _percentile(durations, finished, 0.50),
            "p95": _percentile(durations, finished, 0.95),
        },
    }


class ByStatusSerializer(serializers.Serializer):
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    filtered = serializers.IntegerField()


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
