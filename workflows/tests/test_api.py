from datetime import datetime

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Organization, Role
from workflows.api import RunPagination
from workflows.models import Run, RunStatus, StepRun, StepRunStatus, TriggerType
from workflows.scheduling.cron import next_firings
from workflows.services import run_accept, workflow_create
from workflows.tests.conftest import make_user

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "shape", "action_type": "transform", "config": {"value": {"email": "{{ trigger.body.email }}"}}},
    {"key": "done", "action_type": "transform", "config": {"value": "{{ steps.shape.output.email }}"}},
]


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def wf(org):
    return workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)


def test_editor_creates_a_workflow_with_nested_steps(editor, org):
    body = {"name": "New", "trigger_type": "webhook", "steps": STEPS, "webhook_secret": "x" * 20}
    response = client_for(editor).post("/api/workflows/", body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["organization"] == org.pk and data["version"] == 1
    assert [s["key"] for s in data["steps"]] == ["shape", "done"] and data["steps"][1]["position"] == 1
    assert data["webhook_url"].startswith("http://testserver/hooks/") and "webhook_secret" not in data
    assert data["has_webhook_secret"] is True and data["created_by"] == "editor@example.com"


def test_update_replaces_steps_and_bumps_version(editor, wf):
    response = client_for(editor).patch(f"/api/workflows/{wf.pk}/", {"steps": STEPS[:1]}, format="json")
    assert response.status_code == 200
    assert response.json()["version"] == 2 and len(response.json()["steps"]) == 1
    response = client_for(editor).patch(f"/api/workflows/{wf.pk}/", {"name": "Renamed"}, format="json")
    assert response.json()["version"] == 3 and len(response.json()["steps"]) == 1


def test_a_template_referencing_an_unknown_step_is_400_naming_step_and_field(editor):
    steps = [{"key": "a", "action_type": "transform", "config": {"value": "{{ steps.ghost.output }}"}}]
    response = client_for(editor).post("/api/workflows/", {"name": "X", "steps": steps}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "steps[0].config.value" in body["errors"]
    assert "step 'a'" in body["detail"] and "'ghost'" in body["detail"]


def test_an_invalid_cron_is_400_naming_the_field(editor):
    body = {"name": "S", "trigger_type": "schedule", "schedule": "every day", "timezone": "UTC"}
    response = client_for(editor).post("/api/workflows/", body, format="json")
    assert response.status_code == 400
    assert "schedule" in response.json()["errors"] and "cron" in response.json()["detail"]
    body.update(schedule="0 9 * * *", timezone="Nowhere/City")
    response = client_for(editor).post("/api/workflows/", body, format="json")
    assert response.status_code == 400 and "timezone" in response.json()["errors"]


def test_a_schedule_workflow_lists_its_next_five_firings_by_posix_cron(editor, wf):
    body = {"name": "S", "trigger_type": "schedule", "schedule": "0 9 1 * 1", "timezone": "Europe/Berlin"}
    created = client_for(editor).post("/api/workflows/", body, format="json")
    assert created.status_code == 201, created.content
    before = [at.isoformat() for at in next_firings("0 9 1 * 1", "Europe/Berlin", count=5)]
    shown = client_for(editor).get(f"/api/workflows/{created.json()['id']}/").json()["next_firings"]
    after = [at.isoformat() for at in next_firings("0 9 1 * 1", "Europe/Berlin", count=5)]
    assert shown in (before, after)
    for text in shown:
        at = datetime.fromisoformat(text)
        assert at.utcoffset() is not None and (at.hour, at.minute) == (9, 0)
        assert at.day == 1 or at.weekday() == 0  # the 1st OR a Monday, as POSIX cron reads it
    # "@daily" is accepted and shown too; a webhook workflow has none.
    daily = client_for(editor).patch(f"/api/workflows/{created.json()['id']}/", {"schedule": "@daily"}, format="json")
    assert daily.status_code == 200 and all(
        t.endswith("T00:00:00+01:00") or t.endswith("T00:00:00+02:00") for t in daily.json()["next_firings"]
    )
    assert client_for(editor).get(f"/api/workflows/{wf.pk}/").json()["next_firings"] is None


def test_viewers_read_but_cannot_write_or_run(viewer, wf):
    client = client_for(viewer)
    assert client.get("/api/workflows/").json()["count"] == 1
    assert client.get(f"/api/workflows/{wf.pk}/").status_code == 200
    assert client.patch(f"/api/workflows/{wf.pk}/", {"name": "no"}, format="json").status_code == 403
    assert client.post(f"/api/workflows/{wf.pk}/run/", {}, format="json").status_code == 403
    assert client.post("/api/workflows/", {"name": "X"}, format="json").status_code == 403


def test_outsiders_get_404_for_foreign_ids(outsider, wf):
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    client = client_for(outsider)
    assert client.get(f"/api/workflows/{wf.pk}/").status_code == 404
    assert client.post(f"/api/workflows/{wf.pk}/run/", {}, format="json").status_code == 404
    assert client.get(f"/api/runs/{run.pk}/").status_code == 404
    assert client.post(f"/api/runs/{run.pk}/replay/", {}, format="json").status_code == 404
    assert client.get("/api/runs/").json()["results"] == []
    assert client.get("/api/runs/not-a-uuid/").status_code == 404


def test_create_in_a_foreign_or_ambiguous_organization_is_refused(editor, other_org, org):
    client = client_for(editor)
    response = client.post("/api/workflows/", {"name": "X", "organization": other_org.pk}, format="json")
    assert response.status_code == 400 and "organization" in response.json()["errors"]
    third = Organization.objects.create(name="Third", slug="third")
    Membership.objects.create(user=editor, organization=third, role=Role.OWNER)
    response = client.post("/api/workflows/", {"name": "X"}, format="json")
    assert response.status_code == 400 and "several" in response.json()["detail"]
    response = client.post("/api/workflows/", {"name": "X", "organization": third.pk}, format="json")
    assert response.status_code == 201 and response.json()["organization"] == third.pk


def test_manual_run_is_202_with_the_payload_as_body(editor, wf):
    response = client_for(editor).post(f"/api/workflows/{wf.pk}/run/", {"payload": {"email": "a@b.c"}}, format="json")
    assert response.status_code == 202
    run = Run.objects.get(pk=response.json()["run_id"])
    assert run.trigger == "manual" and run.payload["body"] == {"email": "a@b.c"}
    assert run.payload["requested_by"] == "editor@example.com"


def test_rotate_webhook_token_changes_the_url(editor, wf):
    before = client_for(editor).get(f"/api/workflows/{wf.pk}/").json()["webhook_url"]
    response = client_for(editor).post(f"/api/workflows/{wf.pk}/rotate-webhook-token/")
    assert response.status_code == 200 and response.json()["webhook_url"] != before


def test_runs_list_is_newest_first_and_filterable(viewer, wf, org):
    other = workflow_create(organization=org, name="Other", steps=STEPS)
    a, _ = run_accept(workflow=wf, trigger="manual", payload={})
    b, _ = run_accept(workflow=other, trigger="manual", payload={})
    c, _ = run_accept(workflow=wf, trigger="manual", payload={})
    Run.objects.filter(pk=a.pk).update(created_at=timezone.now() - timezone.timedelta(days=2))
    Run.objects.filter(pk=c.pk).update(status=RunStatus.FAILED, dead_lettered=True)
    client = client_for(viewer)
    ids = [r["id"] for r in client.get("/api/runs/").json()["results"]]
    assert ids == [str(c.pk), str(b.pk), str(a.pk)]
    assert [r["id"] for r in client.get(f"/api/runs/?workflow={wf.pk}").json()["results"]] == [str(c.pk), str(a.pk)]
    assert [r["id"] for r in client.get("/api/runs/?dead_lettered=true").json()["results"]] == [str(c.pk)]
    assert [r["id"] for r in client.get("/api/runs/?status=queued").json()["results"]] == [str(b.pk), str(a.pk)]
    since = (timezone.now() - timezone.timedelta(days=1)).isoformat()
    assert len(client.get("/api/runs/", {"created_after": since}).json()["results"]) == 2
    bad = client.get("/api/runs/?status=exploded")
    assert bad.status_code == 400 and "status" in bad.json()["errors"]


def test_run_detail_lists_its_steps(viewer, wf):
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"body": {}})
    data = client_for(viewer).get(f"/api/runs/{run.pk}/").json()
    assert data["status"] == "queued" and data["trigger"] == "manual" and data["replay_of"] is None
    assert [(s["key"], s["action_type"], s["status"], s["attempts"]) for s in data["steps"]] == [
        ("shape", "transform", "pending", 0),
        ("done", "transform", "pending", 0),
    ]


def test_replay_is_201_for_failed_runs_and_400_otherwise(editor, viewer, wf):
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    response = client_for(editor).post(f"/api/runs/{run.pk}/replay/", {}, format="json")
    assert response.status_code == 400 and "queued" in response.json()["detail"]
    StepRun.objects.filter(run=run, position=0).update(status=StepRunStatus.SUCCEEDED, output={"email": "x"})
    StepRun.objects.filter(run=run, position=1).update(status=StepRunStatus.FAILED)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, dead_lettered=True)
    assert client_for(viewer).post(f"/api/runs/{run.pk}/replay/", {}, format="json").status_code == 403
    response = client_for(editor).post(f"/api/runs/{run.pk}/replay/", {}, format="json")
    assert response.status_code == 201
    data = response.json()
    assert data["replay_of"] == str(run.pk) and data["trigger"] == "replay"
    assert [s["status"] for s in data["steps"]] == ["succeeded", "pending"]
    response = client_for(editor).post(f"/api/runs/{run.pk}/replay/", {"from_step": "nope"}, format="json")
    assert response.status_code == 400 and "from_step" in response.json()["errors"]


def test_delete_removes_the_workflow(editor, wf):
    assert client_for(editor).delete(f"/api/workflows/{wf.pk}/").status_code == 204
    assert client_for(editor).get(f"/api/workflows/{wf.pk}/").status_code == 404


def test_a_member_of_two_orgs_sees_both(org, other_org, wf):
    both = make_user(org, Role.VIEWER, "both@example.com")
    Membership.objects.create(user=both, organization=other_org, role=Role.VIEWER)
    workflow_create(organization=other_org, name="Theirs", steps=[])
    assert client_for(both).get("/api/workflows/").json()["count"] == 2


def test_runs_list_pages_by_cursor_without_a_count(viewer, wf, monkeypatch):
    """Keyset pages: following ``next`` visits every run once, newest first, and no page counts the table."""
    monkeypatch.setattr(RunPagination, "page_size", 2)
    now = timezone.now()
    runs = [run_accept(workflow=wf, trigger="manual", payload={})[0] for _ in range(5)]
    for age, run in enumerate(runs):  # the last two share a created_at: the id orders them
        Run.objects.filter(pk=run.pk).update(created_at=now - timezone.timedelta(minutes=min(age, 3)))
    client = client_for(viewer)
    page = client.get("/api/runs/", {"workflow": wf.pk}).json()
    assert "count" not in page and page["previous"] is None
    seen, pages = [r["id"] for r in page["results"]], 1
    while page["next"]:
        assert "cursor=" in page["next"] and "page=" not in page["next"]
        page = client.get(page["next"]).json()
        seen += [r["id"] for r in page["results"]]
        pages += 1
    assert seen == [str(r.pk) for r in Run.objects.filter(workflow=wf).order_by("-created_at", "-id")]
    assert (len(seen), pages) == (5, 3)


def test_a_cursor_that_is_not_one_of_the_lists_is_a_400_naming_it(viewer, wf):
    """It was a 404 (DRF's answer), undocumented in the schema: schemathesis found it."""
    response = client_for(viewer).get("/api/runs/", {"cursor": "A\U0009e10c\u0511"})
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "cursor": ["Not a cursor of this list: follow the next/previous links as given."]
    }


def test_create_without_the_editor_role_anywhere_is_a_403_saying_so(viewer):
    response = client_for(viewer).post("/api/workflows/", {"name": "X"}, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "Creating a workflow needs the editor role in an organization.", "errors": {}}


def test_a_workflow_cannot_move_to_another_organization(editor, wf, other_org):
    Membership.objects.create(user=editor, organization=other_org, role=Role.EDITOR)
    response = client_for(editor).patch(f"/api/workflows/{wf.pk}/", {"organization": other_org.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"organization": ["A workflow cannot move to another organization."]}
    wf.refresh_from_db()
    assert wf.organization_id != other_org.pk
    # Naming its own organization is no move.
    same = client_for(editor).patch(f"/api/workflows/{wf.pk}/", {"organization": wf.organization_id}, format="json")
    assert same.status_code == 200, same.json()
