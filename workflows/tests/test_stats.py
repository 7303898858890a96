"""GET /api/stats/: last-24-hour figures, organization-scoped, percentiles by nearest rank."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from workflows.models import Run, RunStatus
from workflows.services import workflow_create, workflow_current_version

pytestmark = pytest.mark.django_db


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def add_run(workflow, status, *, seconds=None, age=timedelta(minutes=5), dead=False):
    created = timezone.now() - age
    started = created if seconds is not None else None
    finished = created + timedelta(seconds=seconds) if seconds is not None else None
    return Run.objects.create(
        workflow=workflow,
        workflow_version=workflow.version,
        version=workflow_current_version(workflow),
        trigger="manual",
        status=status,
        dead_lettered=dead,
        created_at=created,
        started_at=started,
        finished_at=finished,
    )


@pytest.fixture
def history(org, other_org):
    a = workflow_create(organization=org, name="A")
    b = workflow_create(organization=org, name="B")
    foreign = workflow_create(organization=other_org, name="Foreign")
    for seconds in range(1, 11):  # 10 succeeded runs of A lasting 1..10 s
        add_run(a, RunStatus.SUCCEEDED, seconds=seconds)
    add_run(a, RunStatus.FAILED, seconds=20, dead=True)
    add_run(a, RunStatus.FILTERED, seconds=0.5)
    add_run(a, RunStatus.RUNNING)
    add_run(b, RunStatus.FAILED, seconds=30)
    add_run(b, RunStatus.QUEUED)
    add_run(a, RunStatus.FAILED, seconds=99, age=timedelta(hours=25))  # outside the window
    for _ in range(5):
        add_run(foreign, RunStatus.FAILED, seconds=500)  # another organization's
    return a, b, foreign


def test_it_counts_statuses_rates_and_percentiles_of_the_callers_organizations(viewer, history):
    response = client_for(viewer).get("/api/stats/")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["workflow"] is None
    assert data["by_status"] == {"queued": 1, "running": 1, "succeeded": 10, "failed": 2, "filtered": 1, "waiting": 0}
    assert data["total"] == 15 and data["dead_lettered"] == 1
    assert data["success_rate"] == round(10 / 12, 4)
    # 13 finished durations: 0.5, 1..10, 20, 30 s. Nearest rank: p50 = 7th = 6 s, p95 = 13th = 30 s.
    assert data["duration_ms"] == {"count": 13, "p50": 6000, "p95": 30000}


def test_one_workflow(viewer, history):
    _a, b, _ = history
    data = client_for(viewer).get(f"/api/stats/?workflow={b.pk}").json()
    assert data["workflow"] == b.pk
    assert data["by_status"] == {"queued": 1, "running": 0, "succeeded": 0, "failed": 1, "filtered": 0, "waiting": 0}
    assert data["success_rate"] == 0.0 and data["duration_ms"] == {"count": 1, "p50": 30000, "p95": 30000}


def test_no_runs_gives_zeros_and_nulls(viewer, org):
    data = client_for(viewer).get("/api/stats/").json()
    assert data["total"] == 0 and data["success_rate"] is None
    assert data["duration_ms"] == {"count": 0, "p50": None, "p95": None}


def test_another_organizations_workflow_is_404_and_a_bad_id_400(viewer, history):
    _, _, foreign = history
    response = client_for(viewer).get(f"/api/stats/?workflow={foreign.pk}")
    assert response.status_code == 404 and "detail" in response.json()
    response = client_for(viewer).get("/api/stats/?workflow=abc")
    assert response.status_code == 400 and "workflow" in response.json()["errors"]


def test_the_outsider_sees_only_their_own(outsider, history):
    data = client_for(outsider).get("/api/stats/").json()
    assert data["by_status"]["failed"] == 5 and data["total"] == 5


def test_anonymous_is_401():
    assert APIClient().get("/api/stats/").status_code == 401
