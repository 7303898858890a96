"""The Insights member page: the figures of ``workflows.ops.insights`` for the current organization or one
of its workflows, drawn as charts (uPlot, vendored) with a table view of each. Views only translate."""

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from workflows.admin.widgets import human_duration
from workflows.models import Workflow
from workflows.ops.insights import COUNTED_STATUSES, WINDOWS, insights

from . import selectors
from .views import _base


def _change(now: float | None, before: float | None) -> str:
    """ "+12 %" beside a figure: how it moved since the previous period ("" when either is missing)."""
    if now is None or before is None:
        return ""
    if before == 0:
        return "new" if now else ""
    change = round((now - before) / before * 100)
    return f"{change:+d} %"


@require_GET
@login_required
def insights_page(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None:
        return render(request, "webui/no_organization.html", _base(request, None))
    asked = request.GET.get("window", "")
    window = asked if asked in WINDOWS else "24h"
    workflows = list(Workflow.objects.filter(organization_id=membership.organization_id).order_by("name", "id"))
    workflow = None
    if request.GET.get("workflow", "").isdigit():
        workflow, membership = selectors.workflow_for(request.user, request.GET["workflow"])  # another org's: 404
    data = insights(
        organization_ids=[membership.organization_id], workflow_id=workflow.pk if workflow else None, window=window
    )
    totals, before = data["totals"], data["previous"]["totals"]
    cards: list[dict[str, Any]] = [
        {
            "name": "Runs",
            "value": f"{totals['runs']:,}",
            "was": f"{before['runs']:,}",
            "change": _change(totals["runs"], before["runs"]),
        },
        {
            "name": "Failure rate",
            "value": "–" if data["failure_rate"] is None else f"{data['failure_rate'] * 100:.1f} %",
            "was": "–"
            if data["previous"]["failure_rate"] is None
            else f"{data['previous']['failure_rate'] * 100:.1f} %",
            "change": _change(data["failure_rate"], data["previous"]["failure_rate"]),
        },
        {
            "name": "Duration p50",
            "value": human_duration(data["p50_ms"]),
            "was": human_duration(data["previous"]["p50_ms"]),
            "change": _change(data["p50_ms"], data["previous"]["p50_ms"]),
        },
        {
            "name": "Duration p95",
            "value": human_duration(data["p95_ms"]),
            "was": human_duration(data["previous"]["p95_ms"]),
            "change": _change(data["p95_ms"], data["previous"]["p95_ms"]),
        },
        {
            "name": "Dead letters",
            "value": f"{totals['dead_lettered']:,}",
            "was": f"{before['dead_lettered']:,}",
            "change": _change(totals["dead_lettered"], before["dead_lettered"]),
        },
    ]
    chart = {
        "grain": data["grain"],
        "statuses": list(COUNTED_STATUSES),
        "buckets": [
            {
                **{k: b[k] for k in (*COUNTED_STATUSES, "runs", "dead_lettered", "p50_ms", "p95_ms", "failure_rate")},
                "t": int(b["start"].timestamp()),
            }
            for b in data["buckets"]
        ],
    }
    for bucket in data["buckets"]:
        bucket["p50_text"], bucket["p95_text"] = human_duration(bucket["p50_ms"]), human_duration(bucket["p95_ms"])
    context = _base(
        request,
        membership,
        nav="insights",
        data=data,
        cards=cards,
        chart=chart,
        window=window,
        windows=list(WINDOWS),
        workflows=workflows,
        workflow=workflow,
        statuses=COUNTED_STATUSES,
    )
    return render(request, "webui/insights.html", context)
