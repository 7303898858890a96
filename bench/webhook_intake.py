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
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stack import (
    BASE_DIR,
    BIN,
    LOOPBACK,
    Processes,
    ensure_database,
    ensure_loopback,
    free_port,
    percentile,
    production_env,
    redact,
    rss_mb,
)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/potaflow_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/15"


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


def main() -> int:
    args = parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    broker_url = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER)
    ensure_loopback(db_url, "BENCH_DATABASE_URL")
    ensure_loopback(broker_url, "BENCH_BROKER_URL")
    var_dir = Path(tempfile.mkdtemp(prefix="potaflow-bench-"))

    env = production_env(
        db_url=db_url,
        broker_url=broker_url,
        var_dir=var_dir,
        extra={"POTAFLOW_WORKER_CONCURRENCY": str(args.worker_concurrency)},
    )
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
            [
                str(BIN / "gunicorn"),
                "potaflow.wsgi:application",
                "--bind",
                f"{LOOPBACK}:{port}",
                "--workers",
                str(args.web_workers),
                "--no-control-socket",
                "--log-level",
                "warning",
            ],
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
