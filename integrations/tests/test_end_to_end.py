"""Every action through the real engine: webhook -> Celery worker -> action -> recorded StepRun.

The local peers live for the whole module so the worker (which is told their
URLs through its environment) starts once. The worker runs with the socket
guard installed (``worker_network_guard_env``). A plugin distribution is built
in a temporary directory and put on both processes' path.
"""

import json
import sys
import textwrap
from pathlib import Path

import pytest
from django.test import Client

from integrations import registry
from integrations.services import credential_create
from testing import network
from testing.network import (
    FakeGoogle,
    FakeSendGrid,
    FakeSlack,
    RecordingHTTPServer,
    Reply,
    SMTPServer,
    service_account_key,
    worker_network_guard_env,
)
from testing.worker import wait_for_run
from workflows.models import TriggerType
from workflows.services import workflow_create

pytestmark = pytest.mark.slow

PLUGIN = """
from integrations.base import Action


class Ping(Action):
    name = "acme.ping"
    title = "Ping (plugin)"
    description = "Answers pong; shipped by a third-party distribution."
    config_schema = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}

    def run(self, config, ctx):
        return {"pong": config["message"], "run_id": ctx.run_id, "step": ctx.step_key}


class Probe(Action):
    # Tries to leave loopback: proves the worker runs under the test socket guard.

    name = "acme.probe"

    def run(self, config, ctx):
        import socket

        try:
            socket.create_connection(("10.255.255.1", 9), timeout=1)
        except BaseException as exc:
            return {"refused_by": type(exc).__name__}
        return {"refused_by": None}
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """A tiny installed distribution: a package plus its .dist-info with a potaflow.actions entry point."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "acme_potaflow").mkdir()
    (root / "acme_potaflow" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "acme_potaflow-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-potaflow\nVersion: 0.1\n")
    entry_points = "[potaflow.actions]\nacme.ping = acme_potaflow:Ping\nacme.probe = acme_potaflow:Probe\n"
    (info / "entry_points.txt").write_text(entry_points)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    registry.reset()


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    servers = {
        "http": RecordingHTTPServer().start(),
        "internal": RecordingHTTPServer(host="127.0.0.2").start(),
        "slack": FakeSlack().start(),
        "sendgrid": FakeSendGrid().start(),
        "google": FakeGoogle().start(),
        "smtp": SMTPServer().start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def celery_worker_env(peers, plugin_dir):
    env = worker_network_guard_env()
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{plugin_dir}"
    env.update(
        {
            "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1",
            "POTAFLOW_SLACK_API_URL": peers["slack"].api_url,
            "POTAFLOW_SENDGRID_API_URL": peers["sendgrid"].url,
            "POTAFLOW_GOOGLE_SHEETS_API_URL": peers["google"].sheets_url,
            "POTAFLOW_GOOGLE_DRIVE_API_URL": peers["google"].drive_url,
        }
    )
    return env


@pytest.fixture
def stack(celery_worker, peers, settings):
    """The worker is up; the peers start each test empty; the test process allows loopback too."""
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    for name in ("http", "internal", "slack", "sendgrid", "google"):
        peers[name].reset()
    peers["slack"].posted.clear()
    peers["sendgrid"].sent.clear()
    peers["smtp"].messages.clear()
    return peers


def fire(organization, steps, body):
    """Create a webhook workflow, POST the event to its hook, and wait for the run to finish."""
    wf = workflow_create(organization=organization, name="E2E", trigger_type=TriggerType.WEBHOOK, steps=steps)
    response = Client().post(f"/hooks/{wf.webhook_token}", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    run = wait_for_run(response.json()["run_id"], {"succeeded", "failed"}, timeout=60)
    return run, list(run.step_runs.order_by("position"))


def test_http_request_end_to_end(stack, organization):
    http = stack["http"]
    http.route("POST", "/orders", Reply(201, {"order": "ok"}))
    cred = credential_create(
        organization=organization,
        name="api",
        kind="http_bearer",
        secret={"token": "tk-1", "allowed_hosts": ["127.0.0.1"]},
    )
    run, (step,) = fire(
        organization,
        [{"key": "call", "action_type": "http.request", "credential": cred.pk,
          "config": {"method": "POST", "url": f"{http.url}/orders", "body": {"email": "{{ trigger.body.email }}"}}}],
        {"email": "ada@example.com"},
    )  # fmt: skip
    assert run.status == "succeeded", step.error
    assert step.output["status"] == 201
    assert step.output["body"] == {"order": "ok"}
    (req,) = http.requests
    assert req.json() == {"email": "ada@example.com"}
    assert req.headers["authorization"] == "Bearer tk-1"
    assert "tk-1" not in json.dumps(step.rendered_config)


def test_http_request_to_a_blocked_destination_fails_and_sends_nothing(stack, organization):
    internal = stack["internal"]  # 127.0.0.2 is not on the worker's allow-list
    run, (step,) = fire(
        organization,
        [{"key": "call", "action_type": "http.request", "config": {"url": f"http://127.0.0.2:{internal.port}/admin"},
          "max_retries": 0}],
        {},
    )  # fmt: skip
    assert run.status == "failed"
    assert step.status == "failed"
    assert "blocked destination" in step.error
    assert internal.requests == []


def test_slack_message_end_to_end(stack, organization):
    cred = credential_create(organization=organization, name="bot", kind="slack_bot_token",
                             secret={"token": "xoxb-test-token"})  # fmt: skip
    run, (step,) = fire(
        organization,
        [{"key": "notify", "action_type": "slack.message", "credential": cred.pk,
          "config": {"channel": "#general", "text": "New order {{ trigger.body.id }}"}}],
        {"id": 42},
    )  # fmt: skip
    assert run.status == "succeeded", step.error
    assert step.output["channel"] == "C0123456789"
    assert stack["slack"].posted == [{"channel": "#general", "text": "New order 42"}]


def test_email_over_smtp_end_to_end(stack, organization):
    smtp = stack["smtp"]
    cred = credential_create(organization=organization, name="mail", kind="smtp", secret={
        "host": "127.0.0.1", "port": smtp.port, "username": "mailer", "password": "s3cret", "security": "none",
        "from_email": "robot@acme.test"})  # fmt: skip
    run, (step,) = fire(
        organization,
        [{"key": "mail", "action_type": "email.send", "credential": cred.pk,
          "config": {"to": "{{ trigger.body.email }}", "subject": "Hi {{ trigger.body.name }}", "text": "Welcome!",
                     "html": "<p>Welcome!</p>"}}],
        {"email": "ada@example.com", "name": "Ada"},
    )  # fmt: skip
    assert run.status == "succeeded", step.error
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["ada@example.com"]
    assert mail.message()["Subject"] == "Hi Ada"
    assert mail.message()["Message-ID"] == step.output["message_id"]


def test_email_over_sendgrid_end_to_end(stack, organization):
    cred = credential_create(organization=organization, name="sg", kind="sendgrid_api_key",
                             secret={"api_key": "SG.test-key", "from_email": "robot@acme.test"})  # fmt: skip
    run, (step,) = fire(
        organization,
        [{"key": "mail", "action_type": "email.send", "credential": cred.pk,
          "config": {"to": ["{{ trigger.body.email }}"], "subject": "Receipt", "text": "Thanks"}}],
        {"email": "grace@example.com"},
    )  # fmt: skip
    assert run.status == "succeeded", step.error
    (sent,) = stack["sendgrid"].sent
    assert sent["personalizations"] == [{"to": [{"email": "grace@example.com"}]}]
    assert step.output["message_id"]


def test_sheets_append_row_end_to_end(stack, organization):
    google = stack["google"]
    google.sheets["sheet-e2e"] = {"Leads": []}
    cred = credential_create(organization=organization, name="g", kind="google_service_account",
                             secret={"key": service_account_key(google.token_uri)})  # fmt: skip
    run, (step,) = fire(
        organization,
        [{"key": "row", "action_type": "sheets.append_row", "credential": cred.pk,
          "config": {"spreadsheet": "sheet-e2e", "worksheet": "Leads",
                     "values": ["{{ trigger.body.email }}", "{{ trigger.body.score }}"]}}],
        {"email": "ada@example.com", "score": 7},
    )  # fmt: skip
    assert run.status == "succeeded", step.error
    assert google.sheets["sheet-e2e"]["Leads"] == [["ada@example.com", 7]]
    assert step.output["updated_range"] == "Leads!A1:B1"


def test_a_plugin_action_is_listed_and_runs_in_a_workflow(stack, world):
    registry.reset()  # pick up the entry point installed by plugin_dir
    catalogue = world.client("viewer").get("/api/actions/").json()["actions"]
    ping = next(a for a in catalogue if a["name"] == "acme.ping")
    assert ping["title"] == "Ping (plugin)"
    assert ping["config_schema"]["required"] == ["message"]
    run, (step,) = fire(
        world.acme,
        [{"key": "ping", "action_type": "acme.ping", "config": {"message": "{{ trigger.body.say }}"}}],
        {"say": "hello"},
    )
    assert run.status == "succeeded", step.error
    assert step.output == {"pong": "hello", "run_id": step.output["run_id"], "step": "ping"}
    assert str(step.output["run_id"]) == str(run.pk)


def test_the_worker_runs_under_the_socket_guard(stack, world):
    registry.reset()
    _run, (step,) = fire(world.acme, [{"key": "probe", "action_type": "acme.probe", "config": {}}], {})
    assert step.output == {"refused_by": "NetworkGuardViolation"}
    assert "10.255.255.1" in network._guard_log_path.read_text()
    network._guard_log_path.unlink()  # expected here; any other violation fails its test
