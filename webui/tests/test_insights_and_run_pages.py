"""The Insights page and the run page's flow data through Django's test client: scope, 404s, CSP-safe markup."""

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Membership, Organization, Role, User
from workflows.models import Run, RunStatus
from workflows.services import run_accept, workflow_create, workflow_current_version

pytestmark = pytest.mark.django_db


def member(org, role, email):
    user = User.objects.create_user(email=email, password="pw-long-enough-123")
    Membership.objects.create(user=user, organization=org, role=role)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def setup():
    acme = Organization.objects.create(name="Acme", slug="acme")
    other = Organization.objects.create(name="Other", slug="other")
    mine = workflow_create(organization=acme, name="Mine")
    theirs = workflow_create(organization=other, name="Theirs")
    now = timezone.now()
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        Run.objects.create(
            workflow=mine, workflow_version=1, version=workflow_current_version(mine), trigger="manual",
            status=status, created_at=now, started_at=now, finished_at=now + timedelta(milliseconds=250),
        )  # fmt: skip
    return acme, mine, theirs, member(acme, Role.VIEWER, "vi@acme.test")


def test_the_insights_page_shows_the_organization_and_one_workflow_and_404s_another_organizations(setup):
    _, mine, theirs, viewer = setup
    html = viewer.get("/app/insights/").content.decode()
    assert 'data-figure="runs"' in html and re.search(
        r'data-figure="runs">.*?<strong class="pf-figure-value">2</strong>', html, re.S
    )
    assert "50.0 %" in html  # the failure rate
    chart = json.loads(
        re.search(r'<script id="pf-insights-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    )
    assert len(chart["buckets"]) == 24 and sum(b["failed"] for b in chart["buckets"]) == 1
    assert "<script>" not in html and " style=" not in html  # nothing inline (CSP)
    week = viewer.get(f"/app/insights/?workflow={mine.pk}&window=7d").content.decode()
    assert "Insights: <a" in week and "Last 7d" in week and week.count("<tr><td><time") == 14  # 7 days, 2 tables
    assert viewer.get(f"/app/insights/?workflow={theirs.pk}").status_code == 404
    assert viewer.get("/app/insights/?window=1y").status_code == 200  # an unknown window falls back to 24h
    assert Client().get("/app/insights/").status_code == 302  # signed out: to the login page


def test_the_run_page_carries_its_definition_and_instances_for_the_drawing(setup):
    acme, _mine, _, viewer = setup
    flow = workflow_create(
        organization=acme,
        name="Two steps",
        steps=[{"key": "shape", "action_type": "transform", "config": {"value": {"n": 1}}},
               {"key": "check", "action_type": "filter", "config": {"condition": "trigger.body.n > 1"}}],
    )  # fmt: skip
    run, _ = run_accept(workflow=flow, trigger="manual", payload={"body": {}})
    html = viewer.get(f"/app/runs/{run.pk}/").content.decode()
    data = json.loads(
        re.search(r'<script id="pf-run-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    )
    assert [s["key"] for s in data["steps"]] == ["shape", "check"]
    assert [(i["path"], i["status"]) for i in data["instances"]] == [("shape", "pending"), ("check", "pending")]
    assert data["approvals"] == [] and 'id="pf-approvals"' not in html
    assert 'id="pf-run-flow"' in html and 'data-detail-url="/api/runs/' in html
