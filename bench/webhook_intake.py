"""Webhook intake benchmark: gunicorn + Celery worker on PostgreSQL + Redis, loopback only.

Creates a workflow with one ``transform`` step (services layer), fires
``--requests`` webhooks at ``POST /hooks/<token>`` from a thread pool and prints
intake throughput, accept latency (send -> 202) and end-to-end latency
(send -> run finished), plus RSS of the processes. Bounded in count and time;
every process it starts is stopped on exit. See bench/README.md.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/potaflow_bench \\
    BENCH_BROKER_URL=redis://127.0.0.1:6379/15 .venv/bin/python bench/webhook_intake.py
"""

import argparse
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/potaflow_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/15"
LOOPBACK = "127.0.0.1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="webhooks to send (max 20000) [500]")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads [16]")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes [2]")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery prefork processes [2]")
    parser.add_argument("--timeout", type=float, default=120.0, help="wall-clock limit for load + completion [120]")
    args = parser.parse_args()
    args.requests = max(1, min(args.requests, 20_000))
    args.concurrency = max(1, min(args.concurrency, 64))
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def ensure_loopback(url: str, what: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"{what} must point at loopback (127.0.0.1), not {host!r}")


def redact(url: str) -> str:
    """The URL without credentials, for the report."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


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


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


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


def main() -> int:
    args = parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    broker_url = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER)
    ensure_loopback(db_url, "BENCH_DATABASE_URL")
    ensure_loopback(broker_url, "BENCH_BROKER_URL")
    var_dir = Path(tempfile.mkdtemp(prefix="potaflow-bench-"))

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
        "POTAFLOW_WORKER_CONCURRENCY": str(args.worker_concurrency),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    sys.path.insert(0, str(BASE_DIR))

    ensure_database(db_url)
    import django

    django.setup()
    import redis
    from django.core.management import call_command

    from accounts.models import User
    from accounts.services import organization_create
    from workflows.models import Run
    from workflows.services import workflow_create

    redis.Redis.from_url(broker_url).flushdb()  # the bench's own Redis db: no stale messages
    call_command("migrate", verbosity=0, interactive=False)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S%f")
    owner = User.objects.create_user(email=f"bench-{stamp}@example.com", password=None)
    organization = organization_create(name=f"bench {stamp}", owner=owner)
    workflow = workflow_create(
        organization=organization,
        name="bench: webhook -> transform",
        trigger_type="webhook",
        steps=[
            {
                "key": "shape",
                "action_type": "transform",
                "config": {"value": {"email": "{{ trigger.body.email }}", "n2": "{{ trigger.body.n * 2 }}"}},
            }
        ],
    )

    port = free_port()
    url = f"http://{LOOPBACK}:{port}/hooks/{workflow.webhook_token}"
    procs = Processes(var_dir)
    started_at = time.monotonic()
    try:
        web = procs.start(
            "web",
            [str(BIN / "gunicorn"), "potaflow.wsgi:application", "--bind", f"{LOOPBACK}:{port}"]
            + ["--workers", str(args.web_workers), "--no-control-socket", "--log-level", "warning"],
            env,
        )
        worker = procs.start(
            "worker",
            [str(BIN / "celery"), "-A", "potaflow", "worker", "-l", "info", "--without-mingle", "--without-gossip"],
            env,
        )
        import requests

        deadline = time.monotonic() + 60
        while True:
            if web.poll() is not None or worker.poll() is not None:
                raise SystemExit(f"a process exited early:\n{procs.log('web')}\n{procs.log('worker')}")
            try:
                healthy = requests.get(f"http://{LOOPBACK}:{port}/healthz", timeout=5).status_code == 200
            except requests.RequestException:  # not listening yet, or a worker still booting
                healthy = False
            if healthy and " ready." in procs.log("worker"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready within 60 s:\n{procs.log('web')}\n{procs.log('worker')}")
            time.sleep(0.3)

        local = threading.local()

        def fire(i: int) -> tuple[float, float, int, str | None]:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            sent_wall, t0 = time.time(), time.perf_counter()
            try:
                response = session.post(url, json={"email": f"user{i}@example.com", "n": i}, timeout=30)
            except requests.RequestException as exc:
                return sent_wall, time.perf_counter() - t0, 0, f"{type(exc).__name__}"
            elapsed = time.perf_counter() - t0
            run_id = response.json().get("run_id") if response.status_code == 202 else None
            return sent_wall, elapsed, response.status_code, run_id

        # Warm-up: connections, imports and caches in every process (not measured).
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(fire, range(min(50, args.requests))))

        load_start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(fire, range(args.requests)))
        load_seconds = time.perf_counter() - load_start

        accepted = {run_id: sent for sent, _, status, run_id in results if status == 202 and run_id}
        statuses: dict[int, int] = {}
        for _, _, status, _ in results:
            statuses[status] = statuses.get(status, 0) + 1
        accept_ms = [elapsed * 1000 for _, elapsed, status, _ in results if status == 202]

        finished: dict[str, tuple[str, dt.datetime]] = {}
        hard_deadline = started_at + args.timeout
        pending = set(accepted)
        while pending and time.monotonic() < hard_deadline:
            done = Run.objects.filter(pk__in=list(pending), finished_at__isnull=False).values_list(
                "pk", "status", "finished_at"
            )
            for pk, status, finished_at in done:
                finished[str(pk)] = (status, finished_at)
                pending.discard(str(pk))
            if pending:
                time.sleep(0.25)
        e2e_ms = [(finished_at.timestamp() - accepted[pk]) * 1000 for pk, (_, finished_at) in finished.items()]
        outcome: dict[str, int] = {}
        for status, _ in finished.values():
            outcome[status] = outcome.get(status, 0) + 1

        rss = {"web (gunicorn, all processes)": rss_mb(web.pid), "worker (celery, all processes)": rss_mb(worker.pid)}
        report = {
            "conditions": {
                "cpu_cores": os.cpu_count(),
                "requests": args.requests,
                "client_threads": args.concurrency,
                "gunicorn_workers": args.web_workers,
                "celery_concurrency": args.worker_concurrency,
                "database": redact(db_url),
                "broker": redact(broker_url),
                "steps_per_run": 1,
            },
            "http_statuses": statuses,
            "intake_throughput_rps": round(len(accept_ms) / load_seconds, 1),
            "accept_latency_ms": {
                p: round(percentile(accept_ms, q), 1) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))
            }
            | {"max": round(max(accept_ms, default=float("nan")), 1)},
            "runs": {"accepted": len(accepted), "finished": len(finished), "unfinished": len(pending)}
            | {f"status_{k}": v for k, v in sorted(outcome.items())},
            "end_to_end_latency_ms": {
                p: round(percentile(e2e_ms, q), 1) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))
            }
            | {"max": round(max(e2e_ms, default=float("nan")), 1)},
            "completion_throughput_runs_per_s": round(
                len(finished)
                / max(1e-9, (max((f.timestamp() for _, f in finished.values()), default=0) - min(accepted.values()))),
                1,
            )
            if finished
            else 0,
            "rss_mib": {k: round(v, 1) for k, v in rss.items()},
        }
        print(json.dumps(report, indent=2))
        return 0 if not pending and statuses.get(202, 0) == args.requests else 1
    finally:
        procs.stop()


if __name__ == "__main__":
    sys.exit(main())
