"""The newcomer's path: ``make run`` on embedded defaults, log in, Ctrl-C.

The slow test runs the real ``make run`` (migrate, collectstatic,
ensure_admin, then honcho with the Procfile: gunicorn + Celery worker + beat)
with no DATABASE_URL / CELERY_BROKER_URL, in a fresh var dir on a free port,
then sends SIGINT to its process group exactly as a terminal's Ctrl-C does and
checks that every process it started is gone within a bound.

The ensure_admin tests pin the "password printed once" promise.
"""

import ast
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.core.management import call_command

from accounts.models import Membership, Role, User

BASE_DIR = Path(settings.BASE_DIR)
START_TIMEOUT = 120  # fresh SQLite: every migration, collectstatic, Argon2 hashing, three processes
STOP_BOUND = 20  # Makefile STOP_TIMEOUT (15 s) before honcho would SIGKILL, plus slack


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _embedded_defaults_env(var_dir: Path, port: int, admin_password: str) -> dict[str, str]:
    """The caller's environment minus everything that would move PotaFlow off its defaults."""
    dropped = {"DATABASE_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY", "CACHE_URL", "STATIC_ROOT", "PORT", "HOST"}
    # A parent `make test` would hand its jobserver to our `make run`.
    dropped |= {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    # DJANGO_*: e.g. DJANGO_ALLOW_ASYNC_UNSAFE set by the browser-test harness is no newcomer's setting.
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith(("POTAFLOW_", "DJANGO_"))}
    env.update(
        POTAFLOW_VAR_DIR=str(var_dir),
        POTAFLOW_ADMIN_EMAIL="newcomer@example.com",
        POTAFLOW_ADMIN_PASSWORD=admin_password,
        PYTHONUNBUFFERED="1",
    )
    return env


def _processes_with(marker: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment contains ``marker``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if (entry / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue  # a zombie has exited; only its parent's wait is missing
        except OSError:
            continue  # exited while we looked, or not ours to read
        found[int(entry.name)] = cmdline
    return found


def _wait_for_health(base_url: str, proc: subprocess.Popen, log_path: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make run exited with {proc.returncode} before /healthz answered:\n{log_path.read_text()}")
        try:
            response = requests.get(f"{base_url}/healthz", timeout=5)
            last = (response.status_code, response.text)
            if response.status_code == 200:
                return response.json()
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = exc  # not serving yet, or still importing Django on a loaded machine: ask again
        time.sleep(0.5)
    pytest.fail(f"/healthz never answered 200 within {START_TIMEOUT}s (last: {last}):\n{log_path.read_text()}")


def _wait_for_line(log_path: Path, pattern: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log_path.read_text(errors="replace")):
            return
        time.sleep(0.3)
    pytest.fail(f"{pattern!r} never appeared in the make run output:\n{log_path.read_text()}")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed (.ci/run installs it)")
def test_make_run_serves_admin_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    port = _free_port()
    password = "A-newcomer-password-42"
    env = _embedded_defaults_env(var_dir, port, password)
    log_path = tmp_path / "make-run.log"
    base_url = f"http://127.0.0.1:{port}"
    marker = f"POTAFLOW_VAR_DIR={var_dir}"

    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"VENV={sys.prefix}", f"PORT={port}", "HOST=127.0.0.1"],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a shell job in a terminal
        )
    try:
        health = _wait_for_health(base_url, proc, log_path)
        assert {k: health[k] for k in ("status", "database", "broker")} == {
            "status": "ok",
            "database": "ok",
            "broker": "ok",
        }
        assert (var_dir / "potaflow.sqlite3").exists(), "the embedded default is SQLite in POTAFLOW_VAR_DIR"
        assert (var_dir / "broker" / "queue").is_dir(), "the embedded default is the filesystem broker"
        _wait_for_line(log_path, r"worker\.1 .*celery@\S+ ready", timeout=60)
        _wait_for_line(log_path, r"beat\.1 .*beat: Starting", timeout=60)
        # The sign-in comes last, once the three processes are up (issue 21): not pushed off the screen.
        _wait_for_line(log_path, r"PotaFlow is up: ", timeout=30)
        output = log_path.read_text(errors="replace")
        assert f"http://127.0.0.1:{port}/" in output, "make run prints the URL to open"
        box = output.index("PotaFlow is up: ")
        assert box > output.index(" ready.") and box > output.index("beat: Starting")
        assert "Admin (staff) sign-in:  newcomer@example.com" in output[box:]

        # The admin login page, with its stylesheet served by whitenoise under gunicorn.
        session = requests.Session()
        login = session.get(f"{base_url}/admin/login/", timeout=10)
        assert login.status_code == 200
        stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', login.text)
        assert "/static/admin/css/base.css" in stylesheets
        css = session.get(f"{base_url}/static/admin/css/base.css", timeout=10)
        assert css.status_code == 200
        assert css.headers["Content-Type"].startswith("text/css")
        assert "body" in css.text and len(css.content) > 1000

        # The admin created by ensure_admin can log in through the real form.
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        logged_in = session.post(
            f"{base_url}/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": "newcomer@example.com", "password": password},
            headers={"Referer": f"{base_url}/admin/login/"},
            timeout=30,
        )
        assert logged_in.status_code == 200
        assert logged_in.url == f"{base_url}/admin/", logged_in.text[:2000]
        assert "Site administration" in logged_in.text

        running = _processes_with(marker)
        commands = " | ".join(running.values())
        assert "gunicorn" in commands and " worker" in commands and " beat" in commands, commands

        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run still running {STOP_BOUND}s after Ctrl-C:\n{log_path.read_text()}")
        while _processes_with(marker) and time.monotonic() - started < STOP_BOUND:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        leftovers = _processes_with(marker)
        assert not leftovers, f"orphans after Ctrl-C: {leftovers}"
        assert elapsed < STOP_BOUND
        output = log_path.read_text(errors="replace")
        assert "SIGKILL" not in output, f"a process had to be killed instead of stopping:\n{output}"
        for name in ("web.1", "worker.1", "beat.1"):
            assert re.search(rf"{re.escape(name)} stopped \(rc=0\)", output), f"{name} did not exit cleanly:\n{output}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in _processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------
# ensure_admin: the password is printed once, and works
# ---------------------------------------------------------------------------
GENERATED = re.compile(r"Generated password: (\S+)")


def _ensure_admin() -> str:
    out = StringIO()
    call_command("ensure_admin", stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_ensure_admin_prints_a_generated_password_once_and_it_logs_in(settings, client) -> None:
    settings.POTAFLOW_ADMIN_EMAIL = "First.Admin@Example.com"
    settings.POTAFLOW_ADMIN_PASSWORD = ""

    first = _ensure_admin()
    match = GENERATED.search(first)
    assert match, first
    password = match.group(1)
    assert len(password) >= 16

    second = _ensure_admin()
    assert password not in second
    assert "Generated password" not in second
    assert User.objects.filter(is_superuser=True).count() == 1

    user = User.objects.get(email="first.admin@example.com")
    assert user.is_staff and user.is_superuser
    assert user.password.startswith("argon2")
    assert client.login(email="first.admin@example.com", password=password)
    assert client.get("/admin/").status_code == 200
    membership = Membership.objects.get(user=user)
    assert (membership.organization.name, membership.role) == ("Default", Role.OWNER)


@pytest.mark.django_db
def test_ensure_admin_leaves_the_sign_in_for_make_run_to_print_last(settings, client, tmp_path) -> None:
    settings.POTAFLOW_ADMIN_EMAIL = "first@example.com"
    settings.POTAFLOW_ADMIN_PASSWORD = ""
    signin = tmp_path / "signin"
    out = StringIO()
    call_command("ensure_admin", "--signin-file", str(signin), stdout=out, stderr=StringIO())
    assert "Generated password" not in out.getvalue()  # not printed early, among start-up lines
    assert oct(signin.stat().st_mode & 0o777) == "0o600"
    password = GENERATED.search(signin.read_text()).group(1)
    assert client.login(email="first@example.com", password=password)
    call_command("ensure_admin", "--signin-file", str(signin), stdout=StringIO(), stderr=StringIO())
    assert password not in signin.read_text() and "changepassword first@example.com" in signin.read_text()


@pytest.mark.django_db
def test_ensure_admin_uses_and_follows_the_configured_password(settings, client) -> None:
    settings.POTAFLOW_ADMIN_EMAIL = "ops@example.com"
    settings.POTAFLOW_ADMIN_PASSWORD = "Configured-pass-2024"

    first = _ensure_admin()
    assert "Generated password" not in first and "Configured-pass-2024" not in first
    assert client.login(email="ops@example.com", password="Configured-pass-2024")

    settings.POTAFLOW_ADMIN_PASSWORD = "Rotated-pass-2025"
    assert "password updated" in _ensure_admin()
    assert not client.login(email="ops@example.com", password="Configured-pass-2024")
    assert client.login(email="ops@example.com", password="Rotated-pass-2025")
    assert Membership.objects.filter(user__email="ops@example.com").count() == 1, "no second Default organization"


@pytest.mark.django_db
def test_ensure_admin_creates_nobody_when_a_superuser_exists_and_no_password_is_set(settings) -> None:
    User.objects.create_superuser(email="already@example.com", password="Whatever-pass-2024")
    settings.POTAFLOW_ADMIN_EMAIL = "admin@example.com"
    settings.POTAFLOW_ADMIN_PASSWORD = ""

    output = _ensure_admin()
    assert "Generated password" not in output
    assert "already@example.com" in output
    assert not User.objects.filter(email="admin@example.com").exists()


# ---------------------------------------------------------------------------
# .env.example documents every variable settings.py reads
# ---------------------------------------------------------------------------
def _variables_read_by_settings() -> set[str]:
    """Names passed to ``env(...)``, ``env.bool(...)`` etc. in potaflow/settings.py."""
    tree = ast.parse((BASE_DIR / "potaflow" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        func = node.func
        is_env = (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"
        )
        if is_env and isinstance(node.args[0].value, str):
            names.add(node.args[0].value)
    return names


def test_env_example_documents_every_setting_variable() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (BASE_DIR / ".env.example").read_text(), re.M))
    read = _variables_read_by_settings()
    assert len(read) > 20, read  # the parser found the env(...) calls at all
    assert read - documented == set(), "add these to .env.example, with a comment"
