"""Twenty steps, run at once by a real Celery worker, find the access token expired: the provider sees
exactly one refresh and every run succeeds with the new token. And a token refreshed in the middle
of a step (after a 401) is scrubbed from what is recorded, as the first one is.

The worker runs twenty pool processes (``POTAFLOW_WORKER_CONCURRENCY``) with no per-organization
cap, each taking one of twenty runs. The local provider holds its answer to the refresh until the
other nineteen steps are queued on the connection's row lock in PostgreSQL (read from
``pg_stat_activity``): the race is certain, not left to timing. Without the lock every step would
refresh, and with rotating refresh tokens all but one would find theirs dead.
"""

import json
import time

import pytest
from django.db import connection as db_connection

from integrations.models import Connection
from integrations.oauth.tokens import stored_tokens
from integrations.services import credential_create
from testing.network import Reply, worker_network_guard_env
from testing.worker import wait_for_run
from workflows.models import StepAttempt, StepRun, TriggerType
from workflows.services import run_accept, workflow_create

from .support import connect, login
from .test_tokens import expire_stored

pytestmark = pytest.mark.slow
STEPS = 20


@pytest.fixture
def celery_worker_env():
    env = worker_network_guard_env()
    env.update(
        POTAFLOW_ALLOW_PRIVATE_DESTINATIONS="127.0.0.1",
        POTAFLOW_WORKER_CONCURRENCY=str(STEPS),
        POTAFLOW_ORG_MAX_RUNNING_STEPS="0",  # one organization's twenty steps all at once
    )
    return env


def steps_waiting_for_the_row_lock() -> int:
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE %s",
            ["%integrations_connection%FOR UPDATE%"],
        )
        return int(cursor.fetchone()[0])


# Known gap (issue 17 notes): on SQLite + the file broker, 20 concurrent steps still made a second refresh
# that the provider refused (invalid_grant) although the refresh runs in an IMMEDIATE transaction; not
# diagnosed yet. PostgreSQL's row lock gives exactly one refresh (this test, CI's services leg).
@pytest.mark.services
def test_twenty_steps_of_a_real_worker_on_an_expired_token_make_exactly_one_refresh(world, oauth_app, celery_worker):
    credential = credential_create(organization=world.acme, name="Acme ID", kind="oauth2", secret=oauth_app.secret())
    connect(login(world.users["admin"]), f"/app/credentials/{credential.pk}/connect/", oauth_app)
    workflow = workflow_create(
        organization=world.acme,
        name="Me",
        steps=[{"key": "me", "action_type": "http.request", "credential": credential.pk,
                "config": {"url": f"{oauth_app.url}/api/me"}}],
    )  # fmt: skip
    oauth_app.expire_access_tokens()
    expire_stored(credential)
    waiting: list[int] = []

    def hold_the_answer() -> None:
        """The refresh is granted; answer once every other step waits for the lock (at most 20 s)."""
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                waiting.append(steps_waiting_for_the_row_lock())
                if waiting[-1] >= STEPS - 1:
                    return
                time.sleep(0.05)
        finally:
            db_connection.close()  # this peer thread's own connection

    oauth_app.on_refresh = hold_the_answer
    runs = [run_accept(workflow=workflow, trigger=TriggerType.MANUAL, payload={"n": n})[0] for n in range(STEPS)]
    done = [wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker) for run in runs]

    errors = [r.step_runs.get().error for r in done if r.status != "succeeded"]
    assert errors == [] and len(done) == STEPS
    assert max(waiting) == STEPS - 1  # all twenty were in flight together on the expired token
    assert oauth_app.refreshes == 1
    row = Connection.objects.get(pk=credential.pk)
    assert row.status == "connected" and row.refresh_count == 1
    calls = {r.headers["authorization"] for r in oauth_app.requests if r.path == "/api/me"}
    assert calls == {f"Bearer {stored_tokens(row)['access_token']}"}  # each step used the one new token
    assert len([r for r in oauth_app.requests if r.path == "/api/me"]) == STEPS  # no 401, no retry


def test_a_token_refreshed_mid_step_and_echoed_by_the_api_is_never_recorded(world, oauth_app, celery_worker):
    """The API refuses the stored token (401), the step refreshes and retries, the API echoes the new one."""
    credential = credential_create(organization=world.acme, name="Acme ID", kind="oauth2", secret=oauth_app.secret())
    connect(login(world.users["admin"]), f"/app/credentials/{credential.pk}/connect/", oauth_app)
    before = stored_tokens(Connection.objects.get(pk=credential.pk))

    def echo(request):
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if oauth_app.token_state(token) != "valid":
            return Reply(401, {"error": "invalid_token", "sent": request.headers.get("authorization")})
        return Reply(200, {"you_sent": request.headers.get("authorization"), "token": token})

    oauth_app.route("GET", "/api/echo", echo)
    oauth_app.expire_access_tokens()  # at the provider only: PotaFlow finds out from the 401
    workflow = workflow_create(
        organization=world.acme,
        name="Echo",
        steps=[{"key": "echo", "action_type": "http.request", "credential": credential.pk,
                "config": {"url": f"{oauth_app.url}/api/echo"}}],
    )  # fmt: skip
    run, _ = run_accept(workflow=workflow, trigger=TriggerType.MANUAL, payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker)
    assert run.status == "succeeded", run.step_runs.get().error
    after = stored_tokens(Connection.objects.get(pk=credential.pk))
    assert oauth_app.refreshes == 1 and after["access_token"] != before["access_token"]
    step = run.step_runs.get()
    assert step.output["body"] == {"you_sent": "Bearer [redacted]", "token": "[redacted]"}
    recorded = json.dumps(
        [*StepRun.objects.filter(run=run).values(), *StepAttempt.objects.filter(step_run__run=run).values()],
        default=str,
    )
    leaked = [name for name, value in {**before, **after}.items() if len(value) > 8 and value in recorded]
    assert leaked == []
