"""Shared pieces of the scripts in bench/ (a helper module, not a benchmark).

Loopback checks, a database of the script's own, servers each in their own
process group (so a stop or a SIGKILL reaches their children), a private
``redis-server`` and the production-like environment the processes run with.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def worker_pool() -> types.ModuleType:
    """``potaflow/worker_pool.py`` (the worker's pool defaults and rule), loaded by its path: importing the
    ``potaflow`` package would read Django's settings before a script has set the environment they read."""
    spec = importlib.util.spec_from_file_location("potaflow_worker_pool", BASE_DIR / "potaflow" / "worker_pool.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def ensure_loopback(url: str, what: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        sys.exit(f"{what} must point at loopback (127.0.0.1), not {host!r}")


def redact(url: str) -> str:
    """The URL without credentials, for the report."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _admin_url(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


def ensure_database(url: str) -> None:
    """Create the database of ``url`` if it does not exist."""
    import psycopg
    from psycopg import sql

    admin_url, name = _admin_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(url: str, *, required_prefix: str) -> None:
    """Drop the database of ``url`` (closing its sessions); only names starting with ``required_prefix``."""
    import psycopg
    from psycopg import sql

    admin_url, name = _admin_url(url)
    if not name.startswith(required_prefix):
        sys.exit(f"refusing to drop database {name!r}: its name must start with {required_prefix!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def fresh_database(url: str, *, required_prefix: str) -> None:
    drop_database(url, required_prefix=required_prefix)
    ensure_database(url)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def serving(pids: list[int], port: int) -> list[int]:
    """Those of ``pids`` holding an ESTABLISHED TCP connection on local ``port`` (mid-request)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    busy = []
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            busy.append(pid)
    return busy


def rss_mb(root_pid: int) -> float:
    """Resident memory of ``root_pid`` and all its descendants, in MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kb, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def production_env(
    *, db_url: str, broker_url: str, var_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What web, worker and beat run with: DEBUG off, real keys, the given database and broker.

    POTAFLOW_* and DJANGO_* variables of the calling shell are not inherited
    (the script decides them); ``extra`` is applied last.
    """
    from cryptography.fernet import Fernet

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("POTAFLOW_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "potaflow.settings",
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": broker_url,
        "POTAFLOW_VAR_DIR": str(var_dir),
        # Production-like: no DEBUG query log, no SSL redirect on plain loopback HTTP.
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + Fernet.generate_key().decode(),
        "POTAFLOW_FERNET_KEYS": Fernet.generate_key().decode(),
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": LOOPBACK,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


def procfile_command(name: str, env: Mapping[str, str]) -> list[str] | None:
    """The Procfile's command for process type ``name`` as argv, ``${VAR:-default}`` expanded
    from ``env``, executables from this venv; None when the Procfile has no such line."""
    import re
    import shlex

    procfile = BASE_DIR / "Procfile"
    if not procfile.exists():
        return None
    for line in procfile.read_text().splitlines():
        key, sep, command = line.partition(":")
        if sep and key.strip() == name and not key.lstrip().startswith("#"):
            command = re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), command)
            argv = shlex.split(command)
            if argv and argv[0] == "exec":
                argv = argv[1:]
            if argv and (BIN / argv[0]).exists():
                argv[0] = str(BIN / argv[0])
            return argv or None
    return None


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:g} s")
        time.sleep(interval)


class Service:
    """One server process in its own process group, restartable; each start logs to a new file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env, self.log_dir = name, argv, dict(env), log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path: Path | None = None

    def start(self) -> Service:
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own executables
                self.argv, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, marker: str, timeout: float) -> None:
        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return marker in self.log()

        wait_until(ready, timeout=timeout, what=self.name)

    def kill_group(self) -> None:
        """SIGKILL the whole process group (the machine died), and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to the main process (it stops its children), SIGKILL to the group after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill_group()  # also whatever children outlived their parent


class RedisServer:
    """A ``redis-server`` of the script's own on a loopback port, no persistence."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port, self.log_dir = port, log_dir
        self.url = f"redis://{LOOPBACK}:{port}/0"
        self.service = Service(
            "redis",
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            os.environ,
            log_dir,
        )

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 10) -> None:
        self.service.start()
        wait_until(self.ping, timeout=timeout, what=f"redis-server on port {self.port}", interval=0.05)

    def stop(self) -> None:
        self.service.stop(timeout=5)

    def flushall(self) -> None:
        import redis

        redis.Redis.from_url(self.url, socket_timeout=5).flushall()

    def kill_clients(self) -> int:
        """Close every client connection but this one (a network blip); the data stays."""
        import redis

        return int(redis.Redis.from_url(self.url, socket_timeout=5).client_kill_filter(_type="normal", skipme=True))


class Processes:
    """The servers under test; each in its own process group so a stop reaches its children."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603 - our own executables
            argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
