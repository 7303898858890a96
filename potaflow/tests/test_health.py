"""/healthz: 200 when the database and the broker answer, 503 when either does not.

The failure cases run in a subprocess, because both URLs are read once, when
settings load; the subprocess calls the real view through Django's test Client.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_database_is_unreachable(tmp_path):
    result = probe(tmp_path, DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_port()}/potaflow")
    assert result["status"] == 503
    assert result["body"]["status"] == "unavailable"
    assert result["body"]["database"].startswith("error: OperationalError")
    assert result["body"]["broker"] == "ok"


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
