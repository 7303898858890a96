"""/healthz: 200 when the database and the broker answer, 503 when either does not;
broker round-trip time and the oldest unfinished run's age; ?strict for alerting.

The failure cases run in a subprocess, because both URLs are read once, when
settings load; the subprocess calls the real view through Django's test Client.
"""

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

BASE_DIR = Path(__file__).resolve().parents[2]

PROBE = """
import json, django
django.setup()
from django.test import Client
response = Client().get("/healthz", headers={"host": "127.0.0.1"})
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def probe(tmp_path: Path, **env: str | None) -> dict:
    """Run the view in a fresh process; ``None`` removes a variable (back to the embedded default)."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "potaflow.settings", "DEBUG": "true"}
    environment.setdefault("POTAFLOW_VAR_DIR", str(tmp_path))
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.django_db
def test_healthz_is_200_when_database_and_broker_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("status", "database", "broker")} == {"status": "ok", "database": "ok", "broker": "ok"}
    assert 0 < body["broker_rtt_ms"] < 2000
    assert body["oldest_unfinished_run_age_seconds"] is None  # no run at all


def _run(org, status, age_seconds):
    from workflows.models import Run, TriggerType
    from workflows.services import workflow_create, workflow_current_version

    wf = workflow_create(organization=org, name=f"W {status} {age_seconds}", trigger_type=TriggerType.MANUAL)
    return Run.objects.create(
        workflow=wf,
        workflow_version=1,
        version=workflow_current_version(wf),
        trigger="manual",
        status=status,
        created_at=timezone.now() - timedelta(seconds=age_seconds),
    )


@pytest.fixture
def org(db):
    from accounts.models import Organization

    return Organization.objects.create(name="Acme", slug="acme")


def test_healthz_reports_the_oldest_unfinished_run_and_stays_200(client, org, settings):
    settings.POTAFLOW_HEALTH_MAX_RUN_AGE_SECONDS = 600
    _run(org, "succeeded", 7200)  # finished: not counted however old
    _run(org, "running", 90)
    _run(org, "queued", 3600)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert 3600 <= response.json()["oldest_unfinished_run_age_seconds"] < 3660


def test_strict_healthz_is_503_when_the_oldest_unfinished_run_is_too_old(client, org, settings):
    settings.POTAFLOW_HEALTH_MAX_RUN_AGE_SECONDS = 600
    young = _run(org, "queued", 30)
    response = client.get("/healthz?strict")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["max_run_age_seconds"] == 600

    _run(org, "running", 601)
    response = client.get("/healthz?strict")
    assert response.status_code == 503
    assert response.json()["status"] == "stalled"
    assert response.json()["database"] == "ok" and response.json()["broker"] == "ok"
    assert client.get("/healthz").status_code == 200  # load balancers keep the web process

    young.delete()
    settings.POTAFLOW_HEALTH_MAX_RUN_AGE_SECONDS = 3600
    assert client.get("/healthz?strict").status_code == 200


def test_healthz_is_503_when_the_database_is_unreachable(tmp_path):
    result = probe(tmp_path, DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_port()}/potaflow")
    assert result["status"] == 503
    assert result["body"]["status"] == "unavailable"
    assert result["body"]["database"].startswith("error: OperationalError")
    assert result["body"]["broker"] == "ok"
    assert result["body"]["oldest_unfinished_run_age_seconds"] is None


def test_healthz_is_503_when_the_broker_is_unreachable(tmp_path):
    # The database on its embedded default (SQLite in tmp_path), so only the broker is down.
    result = probe(
        tmp_path,
        POTAFLOW_VAR_DIR=str(tmp_path),
        DATABASE_URL=None,
        CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0",
    )
    assert result["status"] == 503
    assert result["body"]["database"] == "ok"
    assert result["body"]["broker"].startswith("error: ")
    assert result["body"]["broker_rtt_ms"] is None
