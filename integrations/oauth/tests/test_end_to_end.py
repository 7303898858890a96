"""Connections through the real engine: webhook-less manual runs -> the Celery worker -> the actions,
with the local Slack, Google and generic authorization servers.

- a workflow posts to Slack and appends a row with connections; tokens expire between two runs and
  each is refreshed exactly once (Google proactively, Slack on its ``token_expired``);
- revoked at the provider: the step fails once with "reconnect Google in Credentials", no retries,
  the replay is refused, the workflow page says so; reconnect (same id) and the replay succeeds;
- the worker killed right after the provider rotated the refresh token: the step comes back and
  the connection is marked needs-reconnect, with one more refresh and no loop;
- no token in anything recorded.

The peers live for the module so the worker (told their URLs in its environment) starts once.
"""

import json

import pytest
from django.test import Client

from integrations.models import Connection, Credential
from integrations.oauth.tokens import stored_tokens
from integrations.services import credential_create
from testing.network import FakeGoogle, FakeOAuthProvider, FakeSlack, worker_network_guard_env
from testing.worker import wait_for, wait_for_run
from workflows.models import Run, StepAttempt, StepRun, TriggerType
from workflows.services import run_accept, workflow_create

from .support import BASE_URL, connect

pytestmark = pytest.mark.slow
SHEET = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"


@pytest.fixture(scope="module")
def providers():
    servers = {"slack": FakeSlack().start(), "google": FakeGoogle().start(), "acme": FakeOAuthProvider().start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def celery_worker_env(providers):
    env = worker_network_guard_env()
    env.update(providers["slack"].oauth_settings)
    env.update(providers["google"].oauth_urls)
    env["POTAFLOW_ALLOW_PRIVATE_DESTINATIONS"] = "127.0.0.1"
    return env


@pytest.fixture
def stack(celery_worker, providers, settings, world):
    """The worker is up, the providers start each test afresh, this process points at them too."""
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    settings.POTAFLOW_BASE_URL = BASE_URL
    for name, value in {**providers["slack"].oauth_settings, **providers["google"].oauth_urls}.items():
        setattr(settings, name, value)
    for server in providers.values():
        server.reset()
        server.init_oauth()
    providers["slack"].posted.clear()
    providers["slack"].rotate_tokens(expires_in=3600)
    providers["google"].sheets[SHEET] = {"Orders": []}
    admin = Client()
    admin.force_login(world.users["admin"])
    return {**providers, "admin": admin}


def run_now(workflow, payload: dict | None = None) -> Run:
    run, _ = run_accept(workflow=workflow, trigger=TriggerType.MANUAL, payload=payload or {})
    return wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)


def recorded_text(run: Run) -> str:
    """Everything stored about a run: payload, step runs and attempts."""
    rows = [
        *Run.objects.filter(pk=run.pk).values(),
        *StepRun.objects.filter(run=run).values(),
        *StepAttempt.objects.filter(step_run__run=run).values(),
    ]
    return json.dumps(rows, default=str)


def secrets_of(credential: Credential) -> list[str]:
    return [t for t in stored_tokens(Connection.objects.get(pk=credential.pk)).values() if len(t) > 8]


def test_a_workflow_posts_to_slack_and_appends_a_row_refreshing_each_token_once(world, stack):
    slack, google, admin = stack["slack"], stack["google"], stack["admin"]
    connect(admin, "/app/credentials/connect/slack_oauth/", slack)
    connect(admin, "/app/credentials/connect/google_oauth/", google)
    slack_conn = Credential.objects.get(kind="slack_oauth")
    google_conn = Credential.objects.get(kind="google_oauth")
    workflow = workflow_create(
        organization=world.acme,
        name="Orders",
        steps=[
            {"key": "notify", "action_type": "slack.message", "credential": slack_conn.pk,
             "config": {"channel": "#general", "text": "Order {{ trigger.id }}"}},
            {"key": "log", "action_type": "sheets.append_row", "credential": google_conn.pk,
             "config": {"spreadsheet": SHEET, "worksheet": "Orders", "values": ["{{ trigger.id }}"]}},
        ],
    )  # fmt: skip
    first = run_now(workflow, {"id": 1})
    assert first.status == "succeeded", list(first.step_runs.values_list("error", flat=True))
    assert (slack.refreshes, google.refreshes) == (0, 0)
    old = secrets_of(slack_conn) + secrets_of(google_conn)

    # Between the runs both access tokens expire: Google's as PotaFlow knows it, Slack's only at Slack.
    slack.expire_access_tokens()
    google.expire_access_tokens()
    Connection.objects.filter(pk=google_conn.pk).update(expires_at="2000-01-01T00:00:00Z")
    second = run_now(workflow, {"id": 2})
    assert second.status == "succeeded", list(second.step_runs.values_list("error", flat=True))
    assert (slack.refreshes, google.refreshes) == (1, 1)
    assert [p["text"] for p in slack.posted] == ["Order 1", "Order 2"]
    assert google.sheets[SHEET]["Orders"] == [[1], [2]]
    assert all(a.attempts == 1 for a in second.step_runs.all())  # the refresh happened inside the one attempt
    new = secrets_of(slack_conn) + secrets_of(google_conn)
    for run in (first, second):
        text = recorded_text(run)
        assert not [t for t in old + new if t in text], "a token was recorded"


def test_revoked_then_the_step_fails_once_the_replay_waits_for_reconnect(world, stack):
    google, admin = stack["google"], stack["admin"]
    connect(admin, "/app/credentials/connect/google_oauth/", google)
    credential = Credential.objects.get(kind="google_oauth")
    workflow = workflow_create(
        organization=world.acme,
        name="Sheet log",
        steps=[{"key": "log", "action_type": "sheets.append_row", "credential": credential.pk, "max_retries": 3,
                "config": {"spreadsheet": SHEET, "values": ["x"]}}],
    )  # fmt: skip
    google.revoke_all()  # the user removed PotaFlow's access in their Google account
    run = run_now(workflow)
    step = run.step_runs.get()
    assert run.status == "failed"
    assert "reconnect Google in Credentials" in step.error
    assert step.attempts == 1  # permanent: no retries burnt
    assert Connection.objects.get(pk=credential.pk).status == "needs_reconnect"

    replay = world.client("editor").post(f"/api/runs/{run.pk}/replay/", {}, format="json")
    assert replay.status_code == 400
    assert "reconnect Google in Credentials" in json.dumps(replay.json())
    editor = Client()
    editor.force_login(world.users["editor"])
    assert "reconnect Google in Credentials" in editor.get(f"/app/workflows/{workflow.pk}/").content.decode()
    assert "Needs reconnect" in admin.get("/app/credentials/").content.decode()
    metrics = Client().get("/metrics").content.decode()
    assert 'potaflow_connections{kind="google_oauth",status="needs_reconnect"} 1.0' in metrics

    connect(admin, f"/app/credentials/{credential.pk}/connect/", google)  # reconnect: same id
    assert Credential.objects.filter(kind="google_oauth").count() == 1
    replay = world.client("editor").post(f"/api/runs/{run.pk}/replay/", {}, format="json")
    assert replay.status_code in (200, 201, 202), replay.content
    done = wait_for_run(replay.json()["id"], {"succeeded", "failed"}, timeout=60)
    assert done.status == "succeeded", done.step_runs.get().error
    assert google.sheets[SHEET]["Orders"] == [["x"]]


# The killed worker's message comes back through Redis's redelivery at the restart; the file broker has
# none (beat's sweeper re-sends it there, and this test runs no beat).
@pytest.mark.services
def test_a_worker_killed_after_a_rotating_refresh_ends_in_needs_reconnect_not_a_loop(world, stack, celery_worker):
    acme = stack["acme"]
    credential = credential_create(organization=world.acme, name="Acme ID", kind="oauth2", secret=acme.secret())
    connect(stack["admin"], f"/app/credentials/{credential.pk}/connect/", acme)
    Connection.objects.filter(pk=credential.pk).update(expires_at="2000-01-01T00:00:00Z")
    # The provider rotates the refresh token, then the worker dies before reading the answer.
    acme.on_refresh = celery_worker.kill
    workflow = workflow_create(
        organization=world.acme,
        name="Me",
        steps=[{"key": "me", "action_type": "http.request", "credential": credential.pk, "max_retries": 3,
                "retry_backoff_seconds": 0.2, "config": {"url": f"{acme.url}/api/me"}}],
    )  # fmt: skip
    run, _ = run_accept(workflow=workflow, trigger=TriggerType.MANUAL, payload={})
    wait_for(lambda: acme.refreshes == 1 and not celery_worker.alive, timeout=30, message="the refresh and the kill")
    acme.on_refresh = None
    celery_worker.start()
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker)
    step = run.step_runs.get()
    assert run.status == "failed"
    assert "reconnect “Acme ID” in Credentials" in step.error
    assert Connection.objects.get(pk=credential.pk).status == "needs_reconnect"
    assert acme.refreshes == 2  # the lost one, and the one that found its refresh token dead: no loop
