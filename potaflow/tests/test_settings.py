"""Settings refuse unsafe production configurations; a proper one passes `check --deploy`."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parents[2]


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "POTAFLOW_VAR_DIR": str(tmp_path), **env}
    # Set by the browser tests for the live server; a deployment never has it.
    environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=120
    )


def test_it_refuses_to_start_with_debug_off_and_no_secret_key(tmp_path):
    result = run(["manage.py", "check"], tmp_path, DEBUG="false", SECRET_KEY="")
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_debug_on_without_secret_key_starts(tmp_path):
    result = run(["manage.py", "check"], tmp_path, DEBUG="true", SECRET_KEY="")
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_with_a_production_environment(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        tmp_path,
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="potaflow.example.com",
        DATABASE_URL="postgres://potaflow:secret@127.0.0.1:5432/potaflow",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        POTAFLOW_FERNET_KEYS=Fernet.generate_key().decode(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_warns_about_a_process_local_cache(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy"],
        tmp_path,
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="potaflow.example.com",
        POTAFLOW_FERNET_KEYS=Fernet.generate_key().decode(),
        CACHE_URL="locmemcache://",
    )
    assert "accounts.W001" in result.stdout + result.stderr
