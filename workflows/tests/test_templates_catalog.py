"""Every built-in template, imported as a user would and run by a real worker against the local peers.

A user creates the credentials the template names, imports it, fills in the
placeholders its description mentions (a URL, a spreadsheet, a secret) and
activates it; then an event goes through the real webhook, or a schedule firing.
"""

import hashlib
import hmac
import json

import pytest
from django.test import Client
from django.utils import timezone

from integrations.services import credential_create
from testing.network import (
    FakeGoogle,
    FakeSlack,
    RecordingHTTPServer,
    Reply,
    SMTPServer,
    service_account_key,
    worker_network_guard_env,
)
from testing.worker import wait_for_run
from workflows import portability
from workflows.models import STEP_SPEC_FIELDS, Run
from workflows.services import run_schedule_fire, workflow_update

pytestmark = pytest.mark.slow

GITHUB_SECRET = "a-github-webhook-secret-0123456789"  # noqa: S105 - test value


@pytest.fixture(scope="module")
def peers():
    servers = {
        "http": RecordingHTTPServer().start(),
        "slack": FakeSlack().start(),
        "google": FakeGoogle().start(),
        "smtp": SMTPServer().start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def celery_worker_env(peers):
    env = worker_network_guard_env()
    env.update(
        {
            "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1",
            "POTAFLOW_SLACK_API_URL": peers["slack"].api_url,
            "POTAFLOW_GOOGLE_SHEETS_API_URL": peers["google"].sheets_url,
            "POTAFLOW_GOOGLE_DRIVE_API_URL": peers["google"].drive_url,
        }
    )
    return env


@pytest.fixture
def stack(celery_worker, peers, settings, fernet_keys):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    for name in ("http", "slack", "google"):
        peers[name].reset()
    peers["slack"].posted.clear()
    peers["smtp"].messages.clear()
    return peers


def use(slug, org, credentials=None, *, configure=None, **changes):
    """Import the template, fill in what ``configure`` sets in step configs, activate it."""
    workflow = portability.workflow_import(
        organization=org, document=portability.template(slug).document, credentials=credentials
    )
    assert workflow.is_active is False
    steps = [
        {**{field: getattr(step, field) for field in STEP_SPEC_FIELDS}, "credential": step.credential_id}
        for step in workflow.steps.order_by("position")
    ]
    for step in steps:
        step["config"].update((configure or {}).get(step["key"], {}))
    return workflow_update(workflow=workflow, steps=steps, is_active=True, **changes)


def hook(workflow, body, headers=None):
    raw = json.dumps(body).encode()
    response = Client().post(
        f"/hooks/{workflow.webhook_token}", data=raw, content_type="application/json", headers=headers or {}
    )
    assert response.status_code == 202, response.content
    return wait_for_run(response.json()["run_id"], {"succeeded", "failed", "filtered"}, timeout=60)


def slack_credential(org, name="slack"):
    return credential_create(organization=org, name=name, kind="slack_bot_token", secret={"token": "xoxb-test-token"})


def test_webhook_to_slack_message(stack, org):
    slack_credential(org)
    workflow = use("webhook-slack", org)
    run = hook(workflow, {"message": "deploy finished"})
    assert run.status == "succeeded", run.error
    assert stack["slack"].posted == [{"channel": "#general", "text": "New event: deploy finished"}]


def test_daily_schedule_http_fetch_email_summary(stack, org):
    http, smtp = stack["http"], stack["smtp"]
    http.route("GET", "/status.json", Reply(200, {"queue": 3, "healthy": True}))
    credential_create(organization=org, name="mail", kind="smtp", secret={
        "host": "127.0.0.1", "port": smtp.port, "username": "mailer", "password": "s3cret", "security": "none",
        "from_email": "robot@acme.test"})  # fmt: skip
    workflow = use(
        "daily-http-email",
        org,
        configure={"fetch": {"url": f"{http.url}/status.json"}, "mail": {"to": ["ops@acme.test"]}},
    )
    assert workflow.schedule == "0 8 * * *"
    run = run_schedule_fire(workflow_id=workflow.pk, fired_at=timezone.now())
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)
    assert run.status == "succeeded", list(run.step_runs.values_list("key", "error"))
    (mail,) = smtp.messages
    message = mail.message()
    assert mail.rcpt_tos == ["ops@acme.test"] and message["Subject"] == "Daily summary: HTTP 200"
    assert '{"healthy": true, "queue": 3}' in message.get_body(("plain",)).get_content()


def test_webhook_to_google_sheets_row(stack, org):
    google = stack["google"]
    google.sheets["sheet-leads"] = {"Sheet1": []}
    credential_create(
        organization=org,
        name="google",
        kind="google_service_account",
        secret={"key": service_account_key(google.token_uri)},
    )
    workflow = use("webhook-sheets", org, configure={"row": {"spreadsheet": "sheet-leads"}})
    run = hook(workflow, {"email": "ada@example.com", "name": "Ada"})
    assert run.status == "succeeded", run.error
    ((created_at, address, name),) = google.sheets["sheet-leads"]["Sheet1"]
    assert (address, name) == ("ada@example.com", "Ada") and created_at == run.created_at.isoformat()


def test_webhook_filter_http_forward(stack, org):
    http = stack["http"]
    http.route("POST", "/large", Reply(202, {"queued": True}))
    workflow = use("webhook-filter-forward", org, configure={"forward": {"url": f"{http.url}/large"}})
    small = hook(workflow, {"amount": 5, "id": "o-1"})
    large = hook(workflow, {"amount": 500, "id": "o-2"})
    assert (small.status, large.status) == ("filtered", "succeeded")
    # The template promises "the others end as filtered runs": an event without amount too (issue 17),
    # not a failed, dead-lettered run; the filter's output says what was undefined.
    lacking = hook(workflow, {"id": "o-3"})
    assert (lacking.status, lacking.dead_lettered) == ("filtered", False), lacking.error
    note = lacking.step_runs.get(key="only_large").output["note"]
    assert "'amount' is undefined" in note and "false" in note
    (forwarded,) = http.requests
    assert forwarded.json() == {"amount": 500, "id": "o-2"}


def test_github_push_to_slack_with_the_github_signature(stack, org):
    slack = stack["slack"]
    slack.channels["C0DEV"] = "dev"
    slack.bot_member_of.add("C0DEV")
    slack_credential(org, name="team-bot")
    workflow = use("github-push-slack", org, credentials={"slack": _cred(org, "team-bot")},
                   webhook_secret=GITHUB_SECRET)  # fmt: skip
    assert workflow.signature_scheme == "github"
    push = {
        "ref": "refs/heads/main",
        "compare": "https://github.com/acme/app/compare/a...b",
        "pusher": {"name": "ada"},
        "repository": {"full_name": "acme/app"},
        "commits": [{"id": "a"}, {"id": "b"}],
    }

    def headers(body, event, delivery):
        digest = hmac.new(GITHUB_SECRET.encode(), json.dumps(body).encode(), hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery}

    run = hook(workflow, push, headers(push, "push", "d-1"))
    assert run.status == "succeeded", run.error
    assert slack.posted == [
        {"channel": "#dev", "text": "ada pushed 2 commit(s) to acme/app (refs/heads/main): "
                                    "https://github.com/acme/app/compare/a...b"}
    ]  # fmt: skip
    ping = {"zen": "Keep it logically awesome."}
    assert hook(workflow, ping, headers(ping, "ping", "d-2")).status == "filtered"
    unsigned = Client().post(f"/hooks/{workflow.webhook_token}", data=push, content_type="application/json")
    assert unsigned.status_code in (401, 403) and Run.objects.filter(workflow=workflow).count() == 2


def _cred(org, name):
    return org.credentials.get(name=name).pk
