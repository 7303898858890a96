import json
import time
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from testing.worker import wait_for_run
from workflows.execution.definitions import definitions
from workflows.intake.webhooks import sign
from workflows.models import Run, StepRun, TriggerType, Workflow
from workflows.services import (
    run_now_payload,
    run_schedule_fire,
    workflow_create,
    workflow_delete,
    workflow_rotate_webhook_token,
    workflow_update,
)
from workflows.tests.handlers import calls

STEPS = [{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}}]


@pytest.fixture
def hook_wf(org):
    return workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)


def url(wf):
    return f"/hooks/{wf.webhook_token}"


def post(path, **headers):
    return Client().post(path, data="{}", content_type="application/json", headers=headers)


@pytest.mark.django_db
def test_json_body_is_accepted_with_202_and_recorded(hook_wf):
    response = Client().post(
        url(hook_wf) + "?source=crm&tag=a&tag=b",
        data=json.dumps({"email": "a@example.com"}),
        content_type="application/json",
        headers={"X-Trace": "abc", "Authorization": "Bearer secret-token"},
    )
    assert response.status_code == 202
    run = Run.objects.get(pk=response.json()["run_id"])
    assert run.trigger == "webhook" and run.status == "queued"
    assert run.payload["body"] == {"email": "a@example.com"}
    assert run.payload["method"] == "POST"
    assert run.payload["query"] == {"source": "crm", "tag": ["a", "b"]}
    assert run.payload["headers"]["x-trace"] == "abc"
    assert run.payload["headers"]["authorization"] == "[redacted]"


@pytest.mark.django_db
def test_webhook_schedule_and_manual_payloads_have_one_shape(hook_wf, org):
    webhook = Run.objects.get(pk=post(url(hook_wf) + "?a=1").json()["run_id"]).payload
    cron = workflow_create(
        organization=org, name="Cron", trigger_type=TriggerType.SCHEDULE, schedule="* * * * *", steps=STEPS
    )
    scheduled = run_schedule_fire(workflow_id=cron.pk, fired_at=datetime(2026, 1, 1, 9, 30, tzinfo=UTC)).payload
    manual = run_now_payload(body={"x": 1})
    common = {"method", "headers", "query", "body"}
    assert common <= set(webhook) and common <= set(scheduled) and common <= set(manual)
    assert (webhook["method"], webhook["query"], webhook["body"], webhook["content_type"]) == (
        "POST", {"a": "1"}, {}, "application/json"
    )  # fmt: skip
    assert (scheduled["method"], scheduled["headers"], scheduled["query"]) == (None, {}, {})
    assert scheduled["fired_at"] == "2026-01-01T09:30:00+00:00" == scheduled["body"]["fired_at"]
    assert (manual["method"], manual["headers"], manual["query"], manual["body"]) == (None, {}, {}, {"x": 1})


@pytest.mark.django_db
def test_form_and_raw_bodies_are_accepted(hook_wf):
    form = Client().post(url(hook_wf), data="a=1&b=two", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 202
    assert Run.objects.get(pk=form.json()["run_id"]).payload["body"] == {"a": "1", "b": "two"}
    raw = Client().post(url(hook_wf), data="hello, world", content_type="text/plain")
    assert Run.objects.get(pk=raw.json()["run_id"]).payload["body"] == "hello, world"


@pytest.mark.django_db
def test_unknown_token_and_inactive_workflow_are_404(hook_wf):
    response = Client().post("/hooks/not-a-real-token-at-all", data="{}", content_type="application/json")
    assert response.status_code == 404 and "No active webhook" in response.json()["detail"]
    workflow_update(workflow=hook_wf, is_active=False)
    assert Client().post(url(hook_wf), data="{}", content_type="application/json").status_code == 404
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_a_rotated_token_retires_the_old_url(hook_wf):
    old = url(hook_wf)
    workflow_rotate_webhook_token(workflow=hook_wf)
    assert Client().post(old, data="{}", content_type="application/json").status_code == 404
    assert Client().post(url(hook_wf), data="{}", content_type="application/json").status_code == 202


@pytest.mark.django_db
def test_an_edited_workflow_runs_its_new_definition_from_the_next_event(hook_wf):
    first = Run.objects.get(pk=post(url(hook_wf)).json()["run_id"])  # the cached definition is version 1's
    workflow_update(workflow=hook_wf, steps=[{"key": "renamed", "action_type": "transform", "config": {"value": 1}}])
    second = Run.objects.get(pk=post(url(hook_wf)).json()["run_id"])
    assert (first.version.number, second.version.number) == (1, 2)
    assert [s["key"] for s in second.definition["steps"]] == ["renamed"]
    assert list(StepRun.objects.filter(run=second).values_list("key", flat=True)) == ["renamed"]
    assert [s["key"] for s in Run.objects.get(pk=first.pk).definition["steps"]] == ["t"]


@pytest.mark.django_db
def test_disabling_rotating_or_deleting_takes_effect_at_the_next_event(hook_wf):
    assert post(url(hook_wf)).status_code == 202  # workflow and definition now cached where they can be
    workflow_update(workflow=hook_wf, is_active=False)
    assert post(url(hook_wf)).status_code == 404
    workflow_update(workflow=hook_wf, is_active=True)
    old = url(hook_wf)
    assert post(old).status_code == 202
    workflow_rotate_webhook_token(workflow=hook_wf)
    assert post(old).status_code == 404
    assert post(url(hook_wf)).status_code == 202
    workflow_delete(workflow=Workflow.objects.get(pk=hook_wf.pk))
    assert post(url(hook_wf)).status_code == 404


@pytest.mark.django_db
def test_a_webhook_reads_the_workflow_and_its_definition_in_one_query(hook_wf):
    definitions.clear()
    with CaptureQueriesContext(connection) as cold:
        assert post(url(hook_wf)).status_code == 202
    with CaptureQueriesContext(connection) as warm:
        assert post(url(hook_wf), **{"Idempotency-Key": "evt_1"}).status_code == 202
    reads = [q["sql"] for q in warm.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 1 and "workflows_workflowversion" in reads[0]  # the workflow joined to its version
    # The first event of a version also reads its definition; the steps table is never read.
    assert len([q for q in cold.captured_queries if q["sql"].startswith("SELECT")]) == 2
    assert not any('workflows_step"' in q["sql"] for q in [*cold.captured_queries, *warm.captured_queries])
    if connection.vendor == "postgresql":  # the run and its step runs in one statement
        assert [q["sql"].split()[0] for q in warm.captured_queries] == ["SELECT", "WITH"]


@pytest.mark.django_db
def test_oversized_body_is_413(hook_wf, settings):
    settings.POTAFLOW_WEBHOOK_MAX_BYTES = 100
    response = Client().post(url(hook_wf), data=json.dumps({"x": "y" * 200}), content_type="application/json")
    assert response.status_code == 413
    assert "limit is 100 bytes" in response.json()["detail"]
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_a_body_longer_than_its_content_length_claims_is_413(hook_wf, settings):
    """The actual bytes read count, not only the header."""
    settings.POTAFLOW_WEBHOOK_MAX_BYTES = 100
    from io import BytesIO

    from django.core.handlers.wsgi import WSGIRequest

    from workflows.intake.webhooks import hook

    body = b'{"x": "' + b"y" * 300 + b'"}'
    request = WSGIRequest(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": url(hook_wf),
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": BytesIO(body),
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
        }
    )
    request.META["CONTENT_LENGTH"] = "10"  # lies after Django sized the stream
    response = hook(request, hook_wf.webhook_token)
    assert response.status_code == 413 and "bytes, the limit is 100" in json.loads(response.content)["detail"]


@pytest.mark.django_db
def test_malformed_json_is_400_naming_the_problem(hook_wf):
    response = Client().post(url(hook_wf), data='{"email": ', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON body: Expecting value at line 1 column 11")
    assert Run.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Idempotency-Key", "webhook-id"])
def test_the_same_idempotency_key_twice_gives_one_run(hook_wf, header):
    first = Client().post(url(hook_wf), data="{}", content_type="application/json", headers={header: "evt_1"})
    second = Client().post(url(hook_wf), data="{}", content_type="application/json", headers={header: "evt_1"})
    other = Client().post(url(hook_wf), data="{}", content_type="application/json", headers={header: "evt_2"})
    assert first.status_code == 202 and second.status_code == 200
    assert second.json() == {"run_id": first.json()["run_id"], "duplicate": True}
    assert other.status_code == 202 and other.json()["run_id"] != first.json()["run_id"]
    assert Run.objects.count() == 2 and StepRun.objects.count() == 2  # a duplicate writes no step run either


@pytest.mark.django_db
def test_signed_webhooks_are_verified(org):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    wf = workflow_create(
        organization=org, name="Signed", trigger_type=TriggerType.WEBHOOK, webhook_secret=secret, steps=STEPS
    )
    body = b'{"type": "invoice.paid"}'
    now = str(int(time.time()))

    def post(signature, timestamp=now, msg_id="msg_1"):
        headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
        return Client().post(url(wf), data=body, content_type="application/json", headers=headers)

    good = sign(secret, "msg_1", now, body)
    assert post(f"v1,bogus {good}").status_code == 202
    bad = post(sign(secret, "msg_1", now, b"tampered"))
    assert bad.status_code == 401 and "no v1 signature matches" in bad.json()["detail"]
    old = str(int(time.time()) - 3600)
    stale = post(sign(secret, "msg_2", old, body), timestamp=old, msg_id="msg_2")
    assert stale.status_code == 401 and "webhook-timestamp" in stale.json()["detail"]
    missing = Client().post(url(wf), data=body, content_type="application/json")
    assert missing.status_code == 401 and "headers are required" in missing.json()["detail"]
    assert Run.objects.count() == 1


@pytest.mark.slow
def test_a_webhook_drives_a_three_step_chain_to_success(celery_worker, org, tmp_path):
    log = tmp_path / "calls.jsonl"
    wf = workflow_create(
        organization=org,
        name="Signup",
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {
                "key": "contact",
                "action_type": "transform",
                "config": {"value": {"email": "{{ trigger.body.email | lower }}", "plan": "{{ trigger.query.plan }}"}},
            },
            {
                "key": "crm",
                "action_type": "custom",
                "config": {"handler": "test.echo", "input": {"log": str(log), "contact": "{{ steps.contact.output }}"}},
            },
            {
                "key": "summary",
                "action_type": "transform",
                "config": {"value": "{{ steps.crm.output.input.contact.email }} on {{ steps.contact.output.plan }}"},
            },
        ],
    )
    response = Client().post(
        url(wf) + "?plan=pro", data=json.dumps({"email": "Ann@Example.COM"}), content_type="application/json"
    )
    assert response.status_code == 202
    run = wait_for_run(response.json()["run_id"], {"succeeded", "failed"}, worker=celery_worker)
    assert run.status == "succeeded", run.error
    steps = {s.key: s for s in run.step_runs.all()}
    assert steps["contact"].output == {"email": "ann@example.com", "plan": "pro"}
    assert steps["crm"].output["input"]["contact"] == {"email": "ann@example.com", "plan": "pro"}
    assert steps["summary"].output == "ann@example.com on pro"
    assert all(s.status == "succeeded" and s.duration_ms is not None and s.attempts == 1 for s in steps.values())
    assert len(calls(log)) == 1
