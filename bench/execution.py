"""Execution: drain a preloaded backlog of runs with the default worker configuration; plus a Celery baseline.

On a fresh PostgreSQL database and its own redis-server: ``--runs`` runs of a
1-step workflow (``http.request`` POST to a fast local keep-alive server) are
accepted through ``run_accept`` with no worker running (their messages queue
in Redis), then the Procfile's worker starts and the script waits until every
run is final: completed runs/s and steps/s. The same for a 5-step workflow
(transform -> filter -> http -> transform -> http) and the **5-step-local**
workflow of issue 19 (3 transforms -> filter -> http); ``--only flow`` (not in the default set):
issue 19's chaos flow, branch -> for_each 5 items (parallel 2) -> http. Then the **execution
baseline**: a plain Celery task (bench/baseline_tasks.py: one SELECT, one
UPDATE, one HTTP POST to the same server) with the same worker settings and
concurrency. Engine overhead per step from the StepAttempt rows. Prints a table
and one JSON line per figure.

    .venv/bin/python bench/execution.py --runs 5000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BIN, BenchStack, emit, log, percentile, table
from stack import worker_pool

HERE = Path(__file__).resolve().parent
TARGETS = {
    "1-step": ">= 500 runs/s and >= 50 % of baseline",
    "5-step": ">= 150 runs/s",
    "5-step-local": ">= 3x the figure before inline steps (issue 19)",
    "overhead": "<= 3 ms median",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000, help="preloaded runs per workflow [5000]")
    parser.add_argument("--timeout", type=float, default=600, help="longest wait for a drain, seconds [600]")
    parser.add_argument("--database-url", default=benchlib.DEFAULT_DB)
    parser.add_argument("--only", choices=["1-step", "5-step", "5-step-local", "flow", "baseline"], action="append")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VAL", help="for the workers (PotaFlow's and the baseline's)"
    )
    parser.add_argument("--profile-worker", type=int, default=0, help="print the worker pids and wait N s")
    parser.add_argument(
        "--idle-organizations",
        type=int,
        default=0,
        help="other organizations with no work (the multi-tenant claim path: one organization alone) [0]",
    )
    return parser.parse_args(argv)


def analyze() -> None:
    """Planner statistics for the preloaded tables, as autovacuum keeps them on a live install.

    The drain starts seconds after thousands of rows were inserted into fresh tables, before
    autovacuum's first ANALYZE: the planner then believed a workflow had a dozen runs and read all
    of them for "has this organization a parked step?" (11.6 ms per step instead of 0.04 ms, -35 %
    runs/s with idle organizations). What is measured is the steady state, not that minute.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def preload(workflow: Any, runs: int) -> float:
    from workflows.models import RunTrigger
    from workflows.services import run_accept

    started = time.monotonic()
    for n in range(runs):
        run_accept(workflow=workflow, trigger=RunTrigger.WEBHOOK, payload={"body": benchlib.event_body(n, 256)})
    return time.monotonic() - started


def drain(stack: BenchStack, workflow: Any, runs: int, args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection
    from django.db.models import Max, Min

    from workflows.models import Run, StepAttempt

    worker = stack.start("worker")
    rss_idle = benchlib.rss_mb(worker.pid)
    if args.profile_worker:
        log(
            f"worker group pid {worker.pid}; children {benchlib.children_of(worker.pid)};"
            f" waiting {args.profile_worker} s"
        )
    started = time.monotonic()
    deadline = started + args.timeout
    rss_load = 0.0
    while time.monotonic() < deadline:
        pending = Run.objects.filter(workflow=workflow).exclude(status__in=benchlib.FINAL).count()
        rss_load = max(rss_load, benchlib.rss_mb(worker.pid))
        if pending == 0:
            break
        time.sleep(0.5)
    wall = time.monotonic() - started
    stack.stop_service("worker")
    qs = Run.objects.filter(workflow=workflow)
    by_status = dict(
        qs.values_list("status").annotate(n=__import__("django.db.models", fromlist=["Count"]).Count("id"))
    )
    # From the first step's start to the last run's finish (database clock of this host).
    first = StepAttempt.objects.filter(step_run__run__workflow=workflow).aggregate(t=Min("started_at"))["t"]
    span = {"first": first, "last": qs.aggregate(t=Max("finished_at"))["t"]}
    done = sum(v for k, v in by_status.items() if k in benchlib.FINAL)
    seconds = (span["last"] - span["first"]).total_seconds() if done and span["first"] else float("nan")
    attempts = StepAttempt.objects.filter(step_run__run__workflow=workflow).count()
    overhead = step_overhead(connection, workflow.pk)
    return {
        "runs": runs,
        "final": done,
        "by_status": by_status,
        "drain_wall_s": round(wall, 1),
        "seconds": round(seconds, 2),
        "runs_per_s": round(done / seconds, 1) if done else 0,
        "steps_per_s": round(attempts / seconds, 1) if done else 0,
        "attempts": attempts,
        "worker_rss_idle_mib": round(rss_idle, 1),
        "worker_rss_load_mib": round(rss_load, 1),
        **overhead,
    }


def step_overhead(connection: Any, workflow_id: int) -> dict[str, Any]:
    """From StepAttempt: time of an attempt outside its action, and the gap between consecutive steps."""
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT extract(epoch FROM a.finished_at - a.started_at) * 1000 - a.duration_ms,
                   extract(epoch FROM lead(a.started_at) OVER w - a.finished_at) * 1000,
                   a.duration_ms
            FROM workflows_stepattempt a
            JOIN workflows_steprun s ON s.id = a.step_run_id
            JOIN workflows_run r ON r.id = s.run_id
            WHERE r.workflow_id = %s AND a.finished_at IS NOT NULL
            WINDOW w AS (PARTITION BY s.run_id ORDER BY s.position, a.number)
            """,
            [workflow_id],
        )
        rows = cur.fetchall()
    inside = [float(r[0]) for r in rows if r[0] is not None]
    gaps = [float(r[1]) for r in rows if r[1] is not None]
    action = [float(r[2]) for r in rows if r[2] is not None]
    return {
        "in_attempt_overhead_ms_p50": round(percentile(inside, 50), 2),
        "in_attempt_overhead_ms_p99": round(percentile(inside, 99), 2),
        "gap_between_steps_ms_p50": round(percentile(gaps, 50), 1) if gaps else None,
        "gap_between_steps_ms_p99": round(percentile(gaps, 99), 1) if gaps else None,
        "action_ms_p50": round(percentile(action, 50), 2),
        "action_ms_p99": round(percentile(action, 99), 2),
    }


def baseline(stack: BenchStack, sink: benchlib.Sink, runs: int, args: argparse.Namespace) -> dict[str, Any]:
    import json

    from celery import Celery
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench_baseline_item (id bigint PRIMARY KEY, payload jsonb NOT NULL, status int,"
            " started_at timestamptz, finished_at timestamptz)"
        )
        cur.execute(
            "INSERT INTO bench_baseline_item (id, payload) SELECT g, %s::jsonb FROM generate_series(1, %s) g",
            [json.dumps(benchlib.event_body(0, 256)), runs],
        )
    app = Celery("baseline-client", broker=stack.redis.url)
    app.conf.task_serializer = "json"
    with app.producer_or_acquire() as producer:
        for n in range(1, runs + 1):
            app.send_task("baseline.step", args=[n], producer=producer)
    stack.env |= {"BENCH_BASELINE_DSN": stack.database_url, "BENCH_SINK_URL": sink.url}
    argv = [str(BIN / "celery"), "--workdir", str(HERE), "-A", "baseline_tasks", "worker", "-l", "info"]
    pool = worker_pool()
    bounds = pool.autoscale_bounds(  # PotaFlow's pool rule (potaflow.celery_worker applies it there)
        int(stack.env.get("POTAFLOW_WORKER_CONCURRENCY") or pool.DEFAULT_CONCURRENCY),
        int(stack.env.get("POTAFLOW_WORKER_MIN_CONCURRENCY") or pool.DEFAULT_MIN_CONCURRENCY),
    )
    if bounds is not None:
        argv += ["--autoscale", f"{bounds[0]},{bounds[1]}"]
    env = {k: v for k, v in stack.env.items() if k != "DJANGO_SETTINGS_MODULE"}  # a plain Celery app
    worker = stack.start("worker", argv, name="baseline-worker", env=env)
    rss_idle = benchlib.rss_mb(worker.pid)
    started = time.monotonic()
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM bench_baseline_item WHERE finished_at IS NULL")
            if cur.fetchone()[0] == 0:
                break
        time.sleep(0.5)
    wall = time.monotonic() - started
    stack.stop_service("baseline-worker")
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(finished_at), extract(epoch FROM max(finished_at) - min(started_at)) FROM bench_baseline_item"
        )
        done, seconds = cur.fetchone()
    seconds = float(seconds or 0)
    return {
        "runs": runs,
        "final": done,
        "drain_wall_s": round(wall, 1),
        "seconds": round(seconds, 2),
        "runs_per_s": round(done / seconds, 1) if seconds else 0,
        "steps_per_s": round(done / seconds, 1) if seconds else 0,
        "worker_rss_idle_mib": round(rss_idle, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = set(args.only or ["1-step", "5-step", "5-step-local", "baseline"])
    extra = dict(item.split("=", 1) for item in args.env)
    os.environ.update(extra)  # stack_concurrency() reads POTAFLOW_WORKER_CONCURRENCY from here
    stack = BenchStack(args.database_url, extra_env=extra)
    results: dict[str, dict[str, Any]] = {}
    sink = benchlib.Sink()
    try:
        stack.setup()
        org = benchlib.create_org()
        for n in range(max(0, min(args.idle_organizations, 100))):
            benchlib.create_org(email=f"idle{n}@example.com")
        workloads = (
            ("1-step", benchlib.one_step_steps),
            ("5-step", benchlib.five_step_steps),
            ("5-step-local", benchlib.five_step_local_steps),
            ("flow", benchlib.flow_steps),
        )
        for name, steps in workloads:
            if name not in only:
                continue
            workflow = benchlib.create_workflow(org, f"bench execution {name}", steps(sink.url))
            # Warm-up: a few runs drained first (imports, connections), not measured.
            preload(workflow, 20)
            stack.start("worker")
            benchlib.wait_until(
                lambda wf=workflow: not wf.runs.exclude(status__in=benchlib.FINAL).exists(), timeout=60, what="warm-up"
            )
            stack.stop_service("worker")
            workflow.runs.all().delete()
            seconds = preload(workflow, args.runs)
            analyze()
            log(f"{name}: preloaded {args.runs} runs in {seconds:.1f} s ({args.runs / seconds:.0f}/s); draining")
            results[name] = drain(stack, workflow, args.runs, args)
            results[name]["preload_runs_per_s"] = round(args.runs / seconds, 1)
            log(f"{name}: {results[name]}")
        if "baseline" in only:
            results["baseline"] = baseline(stack, sink, args.runs, args)
            log(f"baseline: {results['baseline']}")
    finally:
        stack.stop()
        sink.stop()
    report(results, args)
    return 0


def stack_concurrency() -> str:
    """The most pool processes of the worker as the bench ran it (potaflow.worker_pool's default)."""
    return os.environ.get("POTAFLOW_WORKER_CONCURRENCY", str(worker_pool().DEFAULT_CONCURRENCY))


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    base = results.get("baseline", {}).get("runs_per_s")
    rows = []
    for name, r in results.items():
        ratio = r["runs_per_s"] / base if base and name != "baseline" else None
        r["ratio_to_baseline"] = round(ratio, 3) if ratio is not None else None
        rows.append(
            (name, f"{r['final']}/{r['runs']}", r["runs_per_s"], r["steps_per_s"],
             "" if ratio is None else f"{ratio:.0%}",
             r.get("in_attempt_overhead_ms_p50", ""), r.get("in_attempt_overhead_ms_p99", ""),
             r.get("gap_between_steps_ms_p50", ""), r.get("gap_between_steps_ms_p99", ""),
             r.get("action_ms_p50", ""), r["worker_rss_idle_mib"], r.get("worker_rss_load_mib", ""))
        )  # fmt: skip
    idle = f", {args.idle_organizations} idle other organization(s)" if args.idle_organizations else ""
    print(f"\nExecution (backlog of {args.runs} runs each, default worker config{idle}, {benchlib.machine()})")
    table(
        rows,
        ("workload", "final", "runs/s", "steps/s", "÷ baseline", "attempt ovh p50 ms", "p99", "gap p50 ms", "gap p99",
         "action p50 ms", "worker RSS idle", "RSS load"),
    )  # fmt: skip
    print(f"targets: 1-step {TARGETS['1-step']}; 5-step {TARGETS['5-step']}; overhead {TARGETS['overhead']}")
    print("gap = next step's attempt start - this attempt's finish; with a backlog it includes queue wait")
    concurrency = int(stack_concurrency())
    for name, r in results.items():
        if r["steps_per_s"]:
            wall = 1000 * concurrency / r["steps_per_s"]
            r["wall_per_step_ms"] = round(wall, 1)
            r["wall_minus_action_ms"] = round(wall - r["action_ms_p50"], 1) if "action_ms_p50" in r else None
            print(
                f"{name}: wall time per step per pool process = {concurrency} / steps/s = {wall:.1f} ms"
                + (f"; minus the action's median = {r['wall_minus_action_ms']} ms" if "action_ms_p50" in r else "")
            )
    for name, r in results.items():
        target = TARGETS.get(name, "")
        emit(
            "execution",
            f"{name}.runs_per_s",
            r["runs_per_s"],
            "1/s",
            target,
            ratio=r.get("ratio_to_baseline"),
            final=r["final"],
        )
        emit("execution", f"{name}.steps_per_s", r["steps_per_s"], "1/s")
        if r.get("wall_per_step_ms") is not None:
            emit(
                "execution",
                f"{name}.wall_per_step_ms",
                r["wall_per_step_ms"],
                "ms",
                "" if name == "baseline" else TARGETS["overhead"] + " (minus the action)",
                minus_action=r.get("wall_minus_action_ms"),
            )
        if "in_attempt_overhead_ms_p50" in r:
            emit(
                "execution",
                f"{name}.overhead_in_attempt_ms",
                r["in_attempt_overhead_ms_p50"],
                "ms",
                TARGETS["overhead"],
                p99=r["in_attempt_overhead_ms_p99"],
            )
            emit(
                "execution",
                f"{name}.gap_between_steps_ms",
                r["gap_between_steps_ms_p50"],
                "ms",
                p99=r["gap_between_steps_ms_p99"],
            )
        emit(
            "execution",
            f"{name}.worker_rss_idle_mib",
            r["worker_rss_idle_mib"],
            "MiB",
            load=r.get("worker_rss_load_mib"),
        )


if __name__ == "__main__":
    raise SystemExit(main())
