"""Failure notices with the real worker and an SMTP peer: fifty failures make ONE notice, then one digest."""

import time

import pytest
from django.utils import timezone

from accounts.models import Role
from workflows import notices, services
from workflows.models import FailureNoticeState, Run, RunStatus, TriggerType
from workflows.tasks import send_failure_digests

from .conftest import make_user

FAILURES = 50


@pytest.fixture
def celery_worker_env(smtp_server):
    # System mail through the SMTP peer (accounts.mail); the worker reads EMAIL_URL at start.
    return {"EMAIL_URL": f"smtp://127.0.0.1:{smtp_server.port}"}


def wait_until(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_fifty_failures_send_one_notice_then_one_digest(celery_worker, smtp_server, org, editor, viewer, calls_dir):
    admin = make_user(org, Role.ADMIN, "admin@example.com")
    workflow = services.workflow_create(
        organization=org,
        name="Order sync",
        trigger_type=TriggerType.MANUAL,
        steps=[
            {
                "key": "push",
                "action_type": "custom",
                "config": {"handler": "test.boom", "input": {"log": str(calls_dir / "boom.jsonl")}},
                "max_retries": 0,
            }
        ],
    )
    runs = [services.start_manual_run(workflow=workflow, body={"n": n}) for n in range(FAILURES)]
    wait_until(
        lambda: Run.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.FAILED).count() == FAILURES,
        what="50 failed runs",
    )
    wait_until(
        lambda: FailureNoticeState.objects.filter(workflow=workflow, pending_count=FAILURES - 1).exists(),
        what="49 failures counted for the digest",
    )
    time.sleep(0.5)  # a 2nd notice, were one wrongly sent, would have reached the peer by now
    # One message to each editor and above (the viewer hears nothing), for the first failure only.
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == sorted([admin.email, editor.email])
    notice = smtp_server.messages[0].message()
    assert str(notice["Subject"]).strip() == "PotaFlow: “Order sync” failed"
    body = notice.get_content()
    assert f"/app/runs/{runs[0].pk}/" in body or any(f"/app/runs/{r.pk}/" in body for r in runs)
    assert "boom: the remote said no" in body and "replay" in body.lower()
    # The notices never became runs of anything.
    assert Run.objects.count() == FAILURES

    # An hour later (moved back, not waited), beat's digest says how many more failed, in one message each.
    FailureNoticeState.objects.filter(workflow=workflow).update(last_sent_at=timezone.now() - notices._interval())
    send_failure_digests.delay()
    wait_until(lambda: len(smtp_server.messages) == 4, what="the digest")
    digest = smtp_server.messages[-1].message()
    assert str(digest["Subject"]).strip() == "PotaFlow: “Order sync” failed 49 more times"
    assert FailureNoticeState.objects.get(workflow=workflow).pending_count == 0


@pytest.mark.django_db
def test_notices_off_and_toggling_settings_make_no_new_version(org, editor):
    workflow = services.workflow_create(organization=org, name="Quiet", trigger_type=TriggerType.MANUAL)
    version = workflow.version
    services.workflow_update(workflow=workflow, notify_on_failure=False)
    services.workflow_update(workflow=workflow, is_active=False)
    workflow.refresh_from_db()
    assert (workflow.version, workflow.is_active, workflow.notify_on_failure) == (version, False, False)
    run = services.start_manual_run(workflow=workflow, body={})
    assert notices.run_failed(run.pk) == "nothing: notices are off for this workflow"


@pytest.mark.django_db
def test_a_slack_channel_gets_the_notice_when_one_is_set_up(org, editor, settings, fake_slack):
    """The Slack hook: the slack.message action's own code, with the organization's Slack credential."""
    from django.core import mail as outbox  # noqa: PLC0415 - only this test

    from integrations.services import credential_create  # noqa: PLC0415 - only this test
    from testing.worker import TEST_FERNET_KEY  # noqa: PLC0415 - only this test
    from workflows.validation import WorkflowInvalid  # noqa: PLC0415 - only this test

    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]
    settings.POTAFLOW_SLACK_API_URL = fake_slack.api_url
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    bot = credential_create(organization=org, name="bot", kind="slack_bot_token", secret={"token": "xoxb-test-token"})
    http = credential_create(
        organization=org, name="api", kind="http_bearer", secret={"token": "t", "allowed_hosts": ["example.com"]}
    )
    workflow = services.workflow_create(organization=org, name="Sync", trigger_type=TriggerType.MANUAL)
    with pytest.raises(WorkflowInvalid) as refused:
        services.workflow_update(workflow=workflow, notify_slack_channel="#alerts", notify_slack_credential_id=http.pk)
    assert "not http_bearer" in str(refused.value.errors["notify_slack_credential"])
    services.workflow_update(workflow=workflow, notify_slack_channel="#alerts", notify_slack_credential_id=bot.pk)
    run = services.start_manual_run(workflow=workflow, body={})
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error="step 'x' failed: HTTP 500")
    assert notices.run_failed(run.pk) == "notice sent"
    (request,) = fake_slack.requests
    assert request.json()["channel"] == "#alerts" and "HTTP 500" in request.json()["text"]
    assert f"/app/runs/{run.pk}/" in request.json()["text"]
    assert outbox.outbox == []  # Slack instead of e-mail
