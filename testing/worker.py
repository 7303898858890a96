"""A REAL Celery worker (and beat) for end-to-end tests: no eager mode, no mocks.

Usage in any test module (the plugin is listed in the root ``conftest.py``)::

    import pytest
    from testing.worker import wait_for_run

    pytestmark = pytest.mark.slow

    def test_it_runs(celery_worker):            # implies a transactional database
        run, _ = run_accept(workflow=wf, trigger="manual", payload={...})
        run = wait_for_run(run.pk, {"succeeded"}, timeout=30)

What you get:

- ``celery_worker``: a ``celery -A potaflow worker`` subprocess (own process
  group) against the pytest-django test database (SQLite: the test file in
  ``VAR_DIR``; PostgreSQL: ``test_<name>``) and the test broker. It is started
  once per session and reused; it implies ``transactional_db`` because the
  worker only sees committed rows. ``.kill()`` sends SIGKILL to its whole process
  group, ``.start()``/``.restart()`` bring up a new one, ``.log_text()`` reads its log.
- Extra environment for the worker: override the ``celery_worker_env`` fixture
  (any scope) in your conftest or module, e.g.::

      @pytest.fixture
      def celery_worker_env():
          return {"POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1",
                  "POTAFLOW_SLACK_API_URL": "http://127.0.0.1:8025/api/"}

  The worker is restarted only when the requested environment differs from
  the running one. ``POTAFLOW_HANDLER_MODULES`` in it is appended to the test
  handler modules (``workflows.tests.handlers``); ``POTAFLOW_WORKER_CONCURRENCY``
  in it sets the pool size (default 2), for a test that needs many steps at once.
- ``start_beat(env=None)``: a ``celery beat`` subprocess with the scheduler
  the settings name (``CELERY_BEAT_SCHEDULER``, as in production), for the
  test that needs schedules to fire; stop it with ``.stop()``.
- ``broker_at(url)``: a context manager pointing this process's producers at
  another broker URL (a closed port to test a broker that is down).
- ``wait_for_run(run_id, statuses, timeout)``: polls the database until the run
  reaches one of ``statuses``; on timeout it fails showing the run, its steps
  and the worker log.
- System mail: the worker writes it as files in ``mail_folder()``
  (``EMAIL_URL=filemail://...``); ``testing.mailbox.wait_for_mail`` reads them.
  The worker signs with the test process's ``SECRET_KEY``, so mailed links
  work on the live server.
- ``TEST_FERNET_KEY``: the worker decrypts credentials with it; a test creating
  credentials sets ``settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]``.

Isolation: on the filesystem broker, the test process and the worker use
folders under ``<VAR_DIR>/pytest-worker/broker``, never the developer's
``var/broker`` a running ``make run`` consumes. On Redis, use your own
``CELERY_BROKER_URL`` database number. The worker runs with a short Redis
visibility timeout (``WORKER_VISIBILITY_TIMEOUT``) so a message of a killed
worker comes back in seconds: keep test steps and retry delays shorter than it.
When a test using the worker fails, the worker's log for that test is added
to the report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from testing.procfile import procfile_command

# A fixed Fernet key shared by the test process and the worker subprocess.
TEST_FERNET_KEY = "dGVzdC1rZXktZm9yLXBvdGFmbG93LXRlc3RzLW9ubHk="
TEST_HANDLER_MODULES = ["workflows.tests.handlers"]
WORKER_VISIBILITY_TIMEOUT = 6
BASE_DIR = Path(__file__).resolve().parent.parent


# -- configuration shared by the test process and its subprocesses -----------------
def test_var_dir() -> Path:
    from django.conf import settings

    path = Path(settings.VAR_DIR) / "pytest-worker"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_filesystem_broker() -> bool:
    from django.conf import settings

    return settings.CELERY_BROKER_URL.startswith("filesystem://")


def broker_transport_options() -> dict[str, Any]:
    """What the worker uses (and the in-process app too): see module docstring."""
    if is_filesystem_broker():
        # The worker's settings derive these from its POTAFLOW_VAR_DIR (= test_var_dir()).
        broker = test_var_dir() / "broker"
        folders = {name: broker / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "store_processed": False,
            "control_folder": str(folders["control"]),
            "polling_interval": 0.1,
        }
    return {
        "visibility_timeout": WORKER_VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }


def mail_folder() -> Path:
    """Where the worker's system mail lands (one file per connection; see ``testing.mailbox``)."""
    return test_var_dir() / "mail"


def configure_test_broker() -> None:
    """Point this process's Celery app at the test broker (called at session start)."""
    from potaflow.celery import app

    app.conf.broker_transport_options = broker_transport_options()
    _reset_producer_pool(app)


def _reset_producer_pool(app: Any) -> None:
    # Only forget them: kombu's global producer pools are keyed by broker URL and
    # the previous URL's pool is used again afterwards, so it must stay open.
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None


def test_database_url() -> str:
    """A DATABASE_URL for the test database pytest-django created (call after django_db_setup)."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    if s["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError(f"the test worker does not know how to reach a {s['ENGINE']} database")
    auth = quote(s.get("USER") or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{quote(s['NAME'], safe='')}"


_pgbouncer: Any = None


def worker_database_url() -> tuple[str, dict[str, str]]:
    """The worker's (and beat's) DATABASE_URL and what goes with it.

    With ``POTAFLOW_TEST_PGBOUNCER=1`` (CI's PgBouncer leg) they reach the test
    database through a ``pgbouncer`` of the session's own in transaction pooling
    (``testing.services.PgBouncer``: two server connections, handed out in turn),
    with ``POTAFLOW_PGBOUNCER=true``, as a deployment behind PgBouncer would.
    """
    global _pgbouncer  # noqa: PLW0603 - one PgBouncer per test session, started on first use
    url = test_database_url()
    if os.environ.get("POTAFLOW_TEST_PGBOUNCER", "") not in ("1", "true") or not url.startswith("postgres://"):
        return url, {}
    from django.db import connection  # noqa: PLC0415 - after Django's setup (pytest-django)

    if _pgbouncer is None:
        import atexit  # noqa: PLC0415 - only on this leg

        from testing.services import PgBouncer  # noqa: PLC0415 - only on this leg

        s = connection.settings_dict
        _pgbouncer = PgBouncer(s.get("HOST") or "127.0.0.1", int(s.get("PORT") or 5432)).start()
        atexit.register(_pgbouncer.stop)
    return _pgbouncer.url(quote(connection.settings_dict["NAME"], safe="")), {"POTAFLOW_PGBOUNCER": "true"}


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    from django.conf import settings

    extra = dict(extra or {})
    handler_modules = TEST_HANDLER_MODULES + [m for m in extra.pop("POTAFLOW_HANDLER_MODULES", "").split(",") if m]
    database_url, database_env = worker_database_url()
    env = dict(os.environ)
    env.update(database_env)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "potaflow.settings",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "POTAFLOW_VAR_DIR": str(test_var_dir()),
            "POTAFLOW_BROKER_VISIBILITY_TIMEOUT": str(WORKER_VISIBILITY_TIMEOUT),
            "POTAFLOW_BROKER_RESTORE_INTERVAL": "1",
            "POTAFLOW_BROKER_RESTORE_THROTTLE": "1",
            "POTAFLOW_HANDLER_MODULES": ",".join(handler_modules),
            "POTAFLOW_FERNET_KEYS": TEST_FERNET_KEY,
            "DEBUG": "false",
            # The test process's key: links the worker mails (verification, reset, invitations) are signed
            # with it, and the live server checks them.
            "SECRET_KEY": settings.SECRET_KEY,
            # System mail as files the tests read (accounts.mail), whatever the developer's EMAIL_URL.
            "EMAIL_URL": f"filemail://{mail_folder()}",
            "CONN_MAX_AGE": "0",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


# -- processes ---------------------------------------------------------------------
class CeleryProcess:
    """A celery subprocess in its own process group, logging to a file."""

    kind = "worker"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._log_file = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_marker(self) -> str:
        raise NotImplementedError

    def process_env(self) -> dict[str, str]:
        """The extra environment the process starts with."""
        return dict(self.extra_env)

    def start(self, timeout: float = 60) -> CeleryProcess:
        self.log_path = test_var_dir() / f"{self.kind}-{uuid.uuid4().hex[:8]}.log"
        self._log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=BASE_DIR,
            env=subprocess_env(self.process_env()),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes the pool children too
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_marker() in self.log_text():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery {self.kind} exited with {self.proc.returncode}:\n{self.log_text()[-5000:]}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"celery {self.kind} not ready after {timeout} s:\n{self.log_text()[-5000:]}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, as when a machine dies."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> CeleryProcess:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


class WorkerProcess(CeleryProcess):
    kind = "worker"

    @property
    def concurrency(self) -> int:
        """Pool processes: 2, or ``POTAFLOW_WORKER_CONCURRENCY`` of the extra environment -- a fixed pool of
        that many (a test that needs N steps at once gets N processes from the start); production's pool
        grows to it (potaflow/worker_pool.py, tested with ``ProcfileWorkerProcess``)."""
        return int(self.extra_env.get("POTAFLOW_WORKER_CONCURRENCY") or 2)

    def process_env(self) -> dict[str, str]:
        return {"POTAFLOW_WORKER_MIN_CONCURRENCY": str(self.concurrency), **self.extra_env}

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "potaflow", "worker",
            "--loglevel=INFO", f"--concurrency={self.concurrency}", "--pool=prefork",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
            "--hostname", f"pytest-{uuid.uuid4().hex[:6]}@%h",
        ]  # fmt: skip

    def ready_marker(self) -> str:
        return " ready."


class ProcfileWorkerProcess(WorkerProcess):
    """The worker exactly as the Procfile starts it (``make run``): its own pool settings, no ``-c``."""

    def process_env(self) -> dict[str, str]:
        return dict(self.extra_env)

    def command(self) -> list[str]:
        return procfile_command("worker")

    def pool_processes(self) -> list[int]:
        """The pids of its pool's processes now."""
        assert self.proc is not None
        pids: list[int] = []
        # Each thread's children: the autoscaler forks from its own thread where the broker has no event loop.
        for children in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            try:
                pids += [int(pid) for pid in children.read_text().split()]
            except OSError:
                continue
        return pids


class BeatProcess(CeleryProcess):
    kind = "beat"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "potaflow", "beat", "--loglevel=INFO",
            "--max-interval", "1",
        ]  # fmt: skip

    def ready_marker(self) -> str:
        return "beat: Starting..."


def start_worker(env: Mapping[str, str] | None = None) -> WorkerProcess:
    """An extra worker (the caller stops it); most tests want the ``celery_worker`` fixture."""
    return WorkerProcess(env).start()  # type: ignore[return-value]


def start_beat(env: Mapping[str, str] | None = None) -> BeatProcess:
    """Celery beat with the settings' scheduler against the test database; call ``.stop()``."""
    return BeatProcess(env).start()  # type: ignore[return-value]


class IsolatedBroker:
    """A broker no other process uses, for tests that empty or restart it.

    Redis: a ``redis-server`` of its own on a free loopback port. Filesystem:
    folders of its own. ``env`` is what a worker needs to use it; while the
    ``with`` block lasts, this process's Celery app sends there too.
    """

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self._server: subprocess.Popen | None = None
        self._folder: Path | None = None
        self._saved: tuple[str, dict] | None = None

    def __enter__(self) -> IsolatedBroker:
        from potaflow.celery import app

        self._saved = (app.conf.broker_url, dict(app.conf.broker_transport_options or {}))
        if is_filesystem_broker():
            self._folder = test_var_dir() / f"isolated-{uuid.uuid4().hex[:8]}"
            options = broker_transport_options()
            for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
                sub = {"data_folder_in": "queue", "data_folder_out": "queue"}.get(key, key.split("_")[0])
                options[key] = str(self._folder / "broker" / sub)
                Path(options[key]).mkdir(parents=True, exist_ok=True)
            self.env = {"POTAFLOW_VAR_DIR": str(self._folder)}
            app.conf.broker_transport_options = options
        else:
            port = _free_port()
            self._server = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.url = f"redis://127.0.0.1:{port}/0"
            wait_for(self._redis_up, timeout=10, message="the isolated redis-server")
            self.env = {"CELERY_BROKER_URL": self.url}
            app.conf.broker_write_url = self.url  # what producers use; broker_url is derived once
        _reset_producer_pool(app)
        return self

    def _redis_up(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.ConnectionError:
            return False

    def flush(self) -> None:
        """Lose every message, as a broker restarted empty would."""
        if self._folder is not None:
            for message in (self._folder / "broker" / "queue").glob("*"):
                message.unlink(missing_ok=True)
        else:
            import redis

            redis.Redis.from_url(self.url).flushall()

    def message_count(self) -> int:
        if self._folder is not None:
            return len(list((self._folder / "broker" / "queue").glob("*.msg")))
        import redis

        return int(redis.Redis.from_url(self.url).llen("celery"))

    def __exit__(self, *exc: object) -> None:
        from potaflow.celery import app

        if self._saved is not None:
            app.conf.broker_write_url = None  # back to the one derived from broker_url
            app.conf.broker_transport_options = self._saved[1]
            _reset_producer_pool(app)
        if self._server is not None:
            self._server.terminate()
            self._server.wait(10)


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """This process's Celery app sends to ``url`` (e.g. a closed port) inside the block only."""
    from potaflow.celery import app

    saved = dict(app.conf.broker_transport_options or {})
    app.conf.broker_write_url = url
    app.conf.broker_transport_options = {}
    _reset_producer_pool(app)
    try:
        yield
    finally:
        app.conf.broker_write_url = None  # back to the one derived from broker_url
        app.conf.broker_transport_options = saved
        _reset_producer_pool(app)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- waiting -------------------------------------------------------------------------
def wait_for_run(run_id: Any, statuses: Iterable[str] = ("succeeded",), timeout: float = 30, worker: Any = None):
    """Poll until the run's status is one of ``statuses``; return the fresh Run."""
    from workflows.models import Run

    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        run = Run.objects.filter(pk=run_id).first()
        if run is not None and run.status in wanted:
            return run
        time.sleep(0.1)
    steps = list(run.step_runs.values("key", "status", "attempts", "error")) if run else []
    log = worker.log_text()[-4000:] if worker is not None else ""
    pytest.fail(
        f"run {run_id} is {getattr(run, 'status', 'missing')} after {timeout} s, expected one of {sorted(wanted)}; "
        f"steps: {steps}\n{log}"
    )


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {message}")


# -- pytest wiring ---------------------------------------------------------------------
class _WorkerManager:
    def __init__(self) -> None:
        self.worker: WorkerProcess | None = None

    def ensure(self, env: Mapping[str, str]) -> WorkerProcess:
        env = dict(env)
        if self.worker is not None and (self.worker.extra_env != env or not self.worker.alive):
            self._discard()
        if self.worker is None:
            self.worker = WorkerProcess(env)
            self.worker.start()
        return self.worker

    def stop(self) -> None:
        self._discard()

    def _discard(self) -> None:
        """Kill the worker no test uses any more: its tests' rows are gone, so nothing it still held
        matters, and a warm shutdown waited up to 20 s for a step of a test already over."""
        if self.worker is not None:
            self.worker.kill()
            self.worker.stop()  # closes its log
            self.worker = None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        from django.conf import settings

        settings.CELERY_BROKER_URL  # noqa: B018 - raises when Django is not configured
    except Exception:  # noqa: BLE001 - not a Django test session
        return
    configure_test_broker()
    if is_filesystem_broker():
        # Messages left by an earlier, interrupted session are not ours to run.
        for stale in (test_var_dir() / "broker" / "queue").glob("*.msg"):
            stale.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def _celery_worker_manager(request, django_db_setup, django_db_blocker):
    manager = _WorkerManager()
    request.config._potaflow_worker_manager = manager
    yield manager
    manager.stop()


QUIESCE_SECONDS = 5.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Before a test's database is flushed, let the session worker go quiet.

    The worker outlives the tests that started it and takes whatever any later
    test sends (a webhook test need not ask for it). A step it is executing
    while pytest-django truncates the tables can deadlock with the TRUNCATE.
    So: drop the messages still queued (no new claim starts), then wait a
    little for steps in progress to finish.
    """
    manager = getattr(item.config, "_potaflow_worker_manager", None)
    worker = manager.worker if manager is not None else None
    marker = item.get_closest_marker("django_db")
    uses_committed_rows = bool(
        {"transactional_db", "live_server", "celery_worker"} & set(getattr(item, "fixturenames", ()))
    ) or (marker is not None and marker.kwargs.get("transaction", False))
    if worker is not None and worker.alive and uses_committed_rows:
        _quiesce(worker)
    if uses_committed_rows:
        _flush_survives_deadlocks()
    yield


def _quiesce(worker: WorkerProcess) -> None:
    # Imported here: this plugin loads before Django is set up (conftest's pytest_plugins).
    from django.utils import timezone

    from potaflow.celery import app
    from workflows.models import StepRun

    try:
        app.control.purge()
        deadline = time.monotonic() + QUIESCE_SECONDS
        while time.monotonic() < deadline:
            if not StepRun.objects.filter(status="running", lease_expires_at__gt=timezone.now()).exists():
                break
            time.sleep(0.1)
        # A step that just finished may still be recording (its run's final update, Insights' triggers):
        # wait until no other session of the test database is inside a statement or a transaction.
        while time.monotonic() < deadline and _busy_sessions():
            time.sleep(0.05)
    except Exception:  # noqa: BLE001 - best effort: the flush reports its own problems
        return


def _flush_survives_deadlocks() -> None:
    """Retry the flush that ends a transactional test when PostgreSQL chose it as a deadlock's victim.

    A process outside the test (the session worker, a gunicorn a module started) may still take a
    message it had prefetched before ``_quiesce`` purged the queue, and lock the run tables in the
    other order than TRUNCATE. PostgreSQL then aborts the TRUNCATE: the test harness's statement,
    not the product's, so trying it again once the other transaction is through is the fix.
    """
    # Imported here: this plugin loads before Django is set up (conftest's pytest_plugins).
    from django.db import OperationalError
    from django.test import TransactionTestCase

    if getattr(TransactionTestCase._fixture_teardown, "_pf_retries", False):
        return
    original = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self) -> None:
        for attempt in range(5):
            try:
                original(self)
                return
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    _fixture_teardown._pf_retries = True  # type: ignore[attr-defined]
    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[method-assign]


def _busy_sessions() -> int:
    from django.db import connection  # this plugin loads before Django is set up

    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')"
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def celery_worker_env() -> dict[str, str]:
    """Extra environment for the worker subprocess; override it to add variables."""
    return {}


@pytest.fixture
def celery_worker(request, transactional_db, _celery_worker_manager, celery_worker_env) -> WorkerProcess:
    worker = _celery_worker_manager.ensure(celery_worker_env)
    request.node._celery_worker_log_offset = (worker, len(worker.log_text()))
    return worker


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = getattr(item, "_celery_worker_log_offset", None)
    if marker is None or not report.failed:
        return
    worker, offset = marker
    text = worker.log_text()[offset:]
    if text:
        report.sections.append(("celery worker log", text[-20000:]))
