"""Services behind the builder: replay with the current version, test runs (dry_run), version history."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.services import credential_create
from testing.network import Reply
from workflows import dry_run, versions
from workflows.models import Run, RunStatus, StepRun, StepRunStatus, TestRun, TriggerType
from workflows.services import WorkflowInvalid, run_accept, run_replay, workflow_create, workflow_update

pytestmark = pytest.mark.django_db


def http_steps(url: str) -> list[dict]:
    return [
        {"key": "shape", "action_type": "transform", "config": {"value": {"email": "{{ trigger.body.email }}"}}},
        {"key": "check", "action_type": "filter", "config": {"condition": "trigger.body.amount > 10"}},
        {
            "key": "notify",
            "action_type": "http.request",
            "config": {"method": "POST", "url": url, "body": {"email": "{{ steps.shape.output.email }}"}},
        },
    ]


def failed_run(wf, *, failed_at: int) -> Run:
    run, _ = run_accept(workflow=wf, trigger="webhook", payload={"body": {"email": "a@b.c", "amount": 50}})
    StepRun.objects.filter(run=run, position__lt=failed_at).update(status=StepRunStatus.SUCCEEDED, output={"ok": 1})
    StepRun.objects.filter(run=run, position=failed_at).update(status=StepRunStatus.FAILED, error="HTTP 404")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, dead_lettered=True)
    run.refresh_from_db()
    return run


# -- replay: as it ran, or with the current version ---------------------------------------
def test_replay_with_the_current_version_runs_the_fixed_step_and_reuses_the_earlier_outputs(org):
    wf = workflow_create(organization=org, name="W", steps=http_steps("https://broken.example.com/x"))
    run = failed_run(wf, failed_at=2)
    workflow_update(workflow=wf, steps=http_steps("https://fixed.example.com/x"))
    assert wf.version == 2

    as_it_ran = run_replay(run=run)
    assert as_it_ran.workflow_version == 1
    assert as_it_ran.definition["steps"][2]["config"]["url"] == "https://broken.example.com/x"

    current = run_replay(run=run, version="current")
    assert current.workflow_version == 2 and current.replay_of == run
    assert current.definition["steps"][2]["config"]["url"] == "https://fixed.example.com/x"
    rows = list(current.step_runs.order_by("position").values_list("key", "status", "reused", "output"))
    assert rows == [
        ("shape", "succeeded", True, {"ok": 1}),
        ("check", "succeeded", True, {"ok": 1}),
        ("notify", "pending", False, None),
    ]


def test_replay_with_the_current_version_matches_steps_by_key_when_they_moved(org):
    wf = workflow_create(organization=org, name="W", steps=http_steps("https://broken.example.com/x"))
    run = failed_run(wf, failed_at=2)
    steps = http_steps("https://fixed.example.com/x")
    steps.insert(1, {"key": "extra", "action_type": "transform", "config": {"value": 1}})
    workflow_update(workflow=wf, steps=steps)
    replay = run_replay(run=run, version="current")
    rows = list(replay.step_runs.order_by("position").values_list("key", "status", "reused"))
    # "extra" never ran: execution starts there, and everything after it runs again
    assert rows == [
        ("shape", "succeeded", True),
        ("extra", "pending", False),
        ("check", "pending", False),
        ("notify", "pending", False),
    ]


def test_replay_refuses_an_unknown_version(org):
    wf = workflow_create(organization=org, name="W", steps=http_steps("https://a.example.com/"))
    run = failed_run(wf, failed_at=2)
    with pytest.raises(WorkflowInvalid) as exc:
        run_replay(run=run, version="latest")
    assert "version" in exc.value.errors


def test_replay_api_takes_the_version(org, editor, viewer):
    from rest_framework.test import APIClient

    wf = workflow_create(organization=org, name="W", steps=http_steps("https://broken.example.com/x"))
    run = failed_run(wf, failed_at=2)
    workflow_update(workflow=wf, steps=http_steps("https://fixed.example.com/x"))
    client = APIClient()
    client.force_authenticate(viewer)
    assert client.post(f"/api/runs/{run.pk}/replay/", {"version": "current"}, format="json").status_code == 403
    client.force_authenticate(editor)
    response = client.post(f"/api/runs/{run.pk}/replay/", {"version": "current"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["workflow_version"] == 2
    response = client.post(f"/api/runs/{run.pk}/replay/", {"version": "newest"}, format="json")
    assert response.status_code == 400 and "version" in response.json()["errors"]


# -- dry_run -------------------------------------------------------------------------------------
def test_dry_run_runs_transform_and_filter_and_previews_the_http_call_without_sending(
    org, settings, http_server, fernet_keys
):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    credential = credential_create(
        organization=org,
        name="crm",
        kind="http_bearer",
        secret={"token": "s3cret-token-value", "allowed_hosts": "127.0.0.1"},
    )
    steps = http_steps(f"{http_server.url}/contacts")
    steps[2]["credential"] = credential.pk
    steps[2]["config"]["headers"] = {"X-Api-Key": "abc", "X-Trace": "{{ trigger.body.email }}"}
    wf = workflow_create(organization=org, name="W", trigger_type=TriggerType.WEBHOOK, steps=steps)

    result = dry_run.dry_run(workflow=wf, payload={"email": "ann@example.com", "amount": 50})
    assert result["outcome"] == "completed"
    shape, check, notify = result["steps"]
    assert shape["status"] == "ok" and shape["output"] == {"email": "ann@example.com"}
    assert check["status"] == "ok" and check["output"]["passed"] is True
    assert notify["status"] == "preview" and notify["output"] is None
    sent = notify["would_send"]
    assert sent["method"] == "POST" and sent["url"] == f"{http_server.url}/contacts"
    assert sent["headers"]["Authorization"] == f"Bearer {dry_run.MASK}"
    assert sent["headers"]["X-Api-Key"] == dry_run.MASK
    assert sent["headers"]["X-Trace"] == "ann@example.com"
    assert json.loads(sent["body"]) == {"email": "ann@example.com"}
    assert "s3cret-token-value" not in json.dumps(result)
    assert http_server.requests == []  # nothing was sent

    # One step for real, on request: the destination receives it, with the credential.
    http_server.route("POST", "/contacts", Reply(201, {"id": 7}))
    result = dry_run.dry_run(workflow=wf, payload={"email": "ann@example.com", "amount": 50}, send_step="notify")
    notify = result["steps"][2]
    assert notify["status"] == "sent" and notify["output"]["body"] == {"id": 7}
    assert len(http_server.requests) == 1
    assert http_server.requests[0].headers["authorization"] == "Bearer s3cret-token-value"
    assert json.loads(http_server.requests[0].body) == {"email": "ann@example.com"}


def test_dry_run_stops_at_a_false_filter_and_reports_template_errors(org):
    wf = workflow_create(organization=org, name="W", steps=http_steps("https://crm.example.com/c"))
    result = dry_run.dry_run(workflow=wf, payload={"email": "a@b.c", "amount": 5})
    assert result["outcome"] == "filtered"
    assert [s["status"] for s in result["steps"]] == ["ok", "filtered", "skipped"]

    result = dry_run.dry_run(workflow=wf, payload={"amount": 50})  # no email: the template cannot render
    assert result["outcome"] == "error"
    assert result["steps"][0]["status"] == "error" and "email" in result["steps"][0]["error"]


def test_dry_run_of_unsaved_steps_validates_them_like_a_save(org):
    wf = workflow_create(organization=org, name="W", steps=[])
    with pytest.raises(WorkflowInvalid) as exc:
        dry_run.dry_run(workflow=wf, payload={}, steps=http_steps("not a url"))
    assert "steps[2].config.url" in exc.value.errors
    result = dry_run.dry_run(workflow=wf, payload={"email": "x@y.z", "amount": 11}, steps=http_steps("https://a.b/c"))
    assert result["steps"][2]["would_send"]["url"] == "https://a.b/c"


@pytest.mark.slow
def test_test_endpoint_needs_the_editor_role_and_hides_other_organizations(
    celery_worker, org, editor, viewer, outsider
):
    from rest_framework.test import APIClient

    wf = workflow_create(organization=org, name="W", steps=http_steps("https://crm.example.com/c"))
    client = APIClient()
    body = {"payload": {"email": "a@b.c", "amount": 20}}
    client.force_authenticate(outsider)
    assert client.post(f"/api/workflows/{wf.pk}/test/", body, format="json").status_code == 404
    client.force_authenticate(viewer)
    assert client.post(f"/api/workflows/{wf.pk}/test/", body, format="json").status_code == 403
    client.force_authenticate(editor)
    response = client.post(f"/api/workflows/{wf.pk}/test/", body, format="json")  # run by the worker
    assert response.status_code == 200
    assert response.json()["steps"][2]["would_send"]["url"] == "https://crm.example.com/c"
    client.force_authenticate(outsider)  # another organization's test result is a 404 too
    test = TestRun.objects.get(workflow=wf)
    assert client.get(f"/api/workflows/{wf.pk}/test/{test.pk}/").status_code == 404
    client.force_authenticate(editor)
    assert client.get(f"/api/workflows/{wf.pk}/test/{test.pk}/").json() == response.json()
    bad = {**body, "steps": http_steps("ftp://x")}
    response = client.post(f"/api/workflows/{wf.pk}/test/", bad, format="json")
    assert response.status_code == 400 and "steps[2].config.url" in response.json()["errors"]


def test_template_check_endpoint_uses_the_save_time_validator(editor, viewer):
    from rest_framework.test import APIClient

    client = APIClient()
    assert client.post("/api/templates/check/", {"template": "{{ x }}"}, format="json").status_code == 401
    client.force_authenticate(viewer)  # only builders need it
    assert client.post("/api/templates/check/", {"template": "{{ x }}"}, format="json").status_code == 403
    client.force_authenticate(editor)
    ok = client.post(
        "/api/templates/check/", {"template": "{{ steps.a.output.x }}", "earlier_steps": ["a"]}, format="json"
    )
    assert ok.json() == {"valid": True, "error": ""}
    later = client.post(
        "/api/templates/check/", {"template": "{{ steps.b.output }}", "earlier_steps": ["a"]}, format="json"
    )
    assert later.json()["valid"] is False and "'b'" in later.json()["error"]
    syntax = client.post("/api/templates/check/", {"template": "{{ trigger.body. }}"}, format="json")
    assert syntax.json()["valid"] is False and "syntax" in syntax.json()["error"]


# -- versions -------------------------------------------------------------------------------------
def test_version_history_lists_every_stored_version_with_its_runs_and_restores_one(org):
    wf = workflow_create(organization=org, name="W", steps=http_steps("https://one.example.com/"))
    run_accept(workflow=wf, trigger="manual", payload={"body": {}})
    workflow_update(workflow=wf, steps=http_steps("https://two.example.com/"))
    workflow_update(workflow=wf, name="W renamed")  # version 3, never ran
    history = versions.version_history(wf)
    assert [(v.number, v.current, v.runs) for v in history] == [(3, True, 0), (2, False, 0), (1, False, 1)]
    assert history[2].steps[2]["config"]["url"] == "https://one.example.com/"
    assert history[1].steps[2]["config"]["url"] == "https://two.example.com/"  # saved, never ran: still stored

    restored = versions.version_restore(workflow=wf, number=1)
    assert restored.version == 4
    assert wf.steps.get(key="notify").config["url"] == "https://one.example.com/"
    with pytest.raises(WorkflowInvalid):
        versions.version_restore(workflow=wf, number=99)  # never stored


def test_template_checks_and_test_runs_are_throttled_per_user_naming_the_setting(editor, settings):
    from rest_framework.test import APIClient

    settings.POTAFLOW_TEMPLATE_CHECK_RATE = "2/min"
    settings.POTAFLOW_TEST_RUN_RATE = "0/min"  # refused before any worker is asked
    client = APIClient()
    client.force_authenticate(editor)
    answers = [client.post("/api/templates/check/", {"template": "{{ 1 }}"}, format="json") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "POTAFLOW_TEMPLATE_CHECK_RATE" in answers[2].json()["detail"] and answers[2]["Retry-After"]
    wf = workflow_create(organization=editor.memberships.first().organization, name="W", steps=[])
    refused = client.post(f"/api/workflows/{wf.pk}/test/", {"payload": {}}, format="json")
    assert refused.status_code == 429 and "POTAFLOW_TEST_RUN_RATE" in refused.json()["detail"]
    # A test of unsaved steps (a new workflow) is the same rate: it was not throttled at all.
    unsaved = client.post("/api/workflows/test/", {"payload": {}, "steps": []}, format="json")
    assert unsaved.status_code == 429 and "POTAFLOW_TEST_RUN_RATE" in unsaved.json()["detail"]
    assert not TestRun.objects.exists()


def test_an_organization_has_at_most_its_concurrent_test_runs(org, editor, settings):
    from workflows.services import TestRunLimited, test_run_start

    settings.POTAFLOW_TEST_RUN_MAX_CONCURRENT = 2
    wf = workflow_create(organization=org, name="W", steps=[])
    for _ in range(2):
        test_run_start(workflow=wf, user=editor, payload={})  # queued: no worker in this test
    with pytest.raises(TestRunLimited, match="POTAFLOW_TEST_RUN_MAX_CONCURRENT"):
        test_run_start(workflow=wf, user=editor, payload={})
    TestRun.objects.update(created_at=timezone.now() - timedelta(hours=1))  # lost: no longer counted
    test_run_start(workflow=wf, user=editor, payload={})
