import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Role, User
from workflows.models import Run, RunStatus, StepRun, StepRunStatus, Workflow
from workflows.pagination import RunListPaginator
from workflows.services import run_accept, workflow_create
from workflows.tests.conftest import make_user

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "shape", "action_type": "transform", "config": {"value": 1}},
    {"key": "done", "action_type": "transform", "config": {"value": "{{ steps.shape.output }}"}},
]


def staff(org, role, email):
    user = make_user(org, role, email)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


def inline_post(org, steps, **fields):
    data = {
        "organization": org.pk,
        "name": "From admin",
        "description": "",
        "is_active": "on",
        "trigger_type": "webhook",
        "webhook_secret": "",
        "schedule": "",
        "timezone": "UTC",
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    for i, step in enumerate(steps):
        data.update(
            {
                f"steps-{i}-position": str(i),
                f"steps-{i}-key": step["key"],
                f"steps-{i}-action_type": step["action_type"],
                f"steps-{i}-config": step["config"],
                f"steps-{i}-max_retries": "3",
                f"steps-{i}-backoff_seconds": "2",
                f"steps-{i}-backoff_max_seconds": "300",
                f"steps-{i}-timeout_seconds": "30",
            }
        )
    return data


def test_an_editor_adds_a_workflow_with_steps_through_the_service(org):
    client = staff(org, Role.EDITOR, "ed@example.com")
    steps = [
        {"key": "shape", "action_type": "transform", "config": '{"value": 1}'},
        {"key": "done", "action_type": "transform", "config": '{"value": "{{ steps.shape.output }}"}'},
    ]
    response = client.post("/admin/workflows/workflow/add/", inline_post(org, steps))
    assert response.status_code == 302, response.content.decode()[:3000]
    wf = Workflow.objects.get(name="From admin")
    assert wf.version == 1 and [s.key for s in wf.steps.all()] == ["shape", "done"]
    assert wf.created_by.email == "ed@example.com"


def test_the_admin_rejects_a_reference_to_an_unknown_step(org):
    client = staff(org, Role.EDITOR, "ed@example.com")
    steps = [{"key": "shape", "action_type": "transform", "config": '{"value": "{{ steps.ghost.output }}"}'}]
    response = client.post("/admin/workflows/workflow/add/", inline_post(org, steps))
    assert response.status_code == 200
    assert "ghost" in response.content.decode()
    assert not Workflow.objects.exists()


def test_runs_are_listed_with_steps_and_can_be_replayed(org):
    wf = workflow_create(organization=org, name="W", steps=STEPS)
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    StepRun.objects.filter(run=run, position=0).update(status=StepRunStatus.SUCCEEDED, output=1)
    StepRun.objects.filter(run=run, position=1).update(status=StepRunStatus.FAILED, error="it broke")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, dead_lettered=True)
    viewer = staff(org, Role.VIEWER, "view@example.com")
    assert viewer.get("/admin/workflows/run/?dead_lettered__exact=1").status_code == 200
    page = viewer.get(f"/admin/workflows/run/{run.pk}/change/")
    assert page.status_code == 200 and "it broke" in page.content.decode()
    refused = viewer.post("/admin/workflows/run/", {"action": "replay_action", "_selected_action": [str(run.pk)]})
    assert Run.objects.count() == 1 and refused.status_code == 200

    editor = staff(org, Role.EDITOR, "ed@example.com")
    response = editor.post("/admin/workflows/run/", {"action": "replay_action", "_selected_action": [str(run.pk)]})
    assert response.status_code == 302
    replay = Run.objects.get(replay_of=run)
    assert list(replay.step_runs.values_list("status", flat=True)) == ["succeeded", "pending"]


def test_admin_is_scoped_to_the_users_organizations(org, other_org):
    theirs = workflow_create(organization=other_org, name="Theirs", steps=STEPS)
    run, _ = run_accept(workflow=theirs, trigger="manual", payload={})
    client = staff(org, Role.OWNER, "owner@example.com")
    assert "Theirs" not in client.get("/admin/workflows/workflow/").content.decode()
    assert client.get(f"/admin/workflows/workflow/{theirs.pk}/change/").status_code == 404
    assert client.get(f"/admin/workflows/run/{run.pk}/change/").status_code == 404


def test_the_run_list_reads_no_step_runs_no_payload_and_no_date_range(org):
    """The admin run list stays flat as runs grow: no per-row aggregate, no date_hierarchy, narrow rows."""
    wf = workflow_create(organization=org, name="Listed", steps=STEPS)
    for n in range(3):
        run_accept(workflow=wf, trigger="manual", payload={"body": {"big": "x" * 1000, "n": n}})
    client = staff(org, Role.VIEWER, "list@example.com")
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/admin/workflows/run/")
    assert response.status_code == 200 and response.content.count(b"watch live") == 3
    sql = " ".join(q["sql"] for q in captured.captured_queries).lower()
    assert "workflows_steprun" not in sql and "date_trunc" not in sql and "min(" not in sql
    assert '"workflows_run"."payload"' not in sql
    assert b"_facets" not in response.content  # no "Show counts": a COUNT per filter choice
    filtered = client.get(f"/admin/workflows/run/?workflow__id__exact={wf.pk}")
    assert filtered.status_code == 200 and filtered.content.count(b"watch live") == 3


def test_the_run_list_paginator_pages_by_id_in_the_list_order(org):
    """A page's rows are looked up by id: the same runs, in the same order, as slicing the list."""
    wf = workflow_create(organization=org, name="Paged", steps=STEPS)
    for _ in range(7):
        run_accept(workflow=wf, trigger="manual", payload={})
    runs = Run.objects.order_by("-created_at", "-id")
    paginator = RunListPaginator(runs, 3)
    assert paginator.count == 7
    for number in (1, 2, 3):
        assert list(paginator.page(number).object_list) == list(runs[(number - 1) * 3 : number * 3])
