"""Retention benchmark: do the run tables stop growing under a steady stream of runs? PostgreSQL, in-process.

Simulates ``--days`` days of ``--runs-per-day`` runs of a workflow whose
definition is ``--definition-kb`` KiB (accepted through ``run_accept``, the real
path; steps recorded as succeeded/failed/filtered with one attempt each), with
one pruning pass (``workflows.ops.retention.prune``) and a plain ``VACUUM`` (what
autovacuum does) per simulated day. Prints, per day, the rows kept and the
total relation size (heap + indexes + TOAST) of the run tables, then how much
the per-run copy of the definition would have cost. Bounded in days and runs;
messages go to an in-memory broker (nothing executes them). See bench/README.md.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/potaflow_bench_retention \\
        .venv/bin/python bench/retention.py --days 40 --runs-per-day 100
"""

import argparse
import datetime as dt
import os
import secrets
import sys
import time
import urllib.parse
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/potaflow_bench_retention"
TABLES = ("workflows_run", "workflows_steprun", "workflows_stepattempt", "workflows_workflowversion")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=40, help="simulated days (max 365) [40]")
    parser.add_argument("--runs-per-day", type=int, default=100, help="runs accepted per day (max 5000) [100]")
    parser.add_argument("--definition-kb", type=int, default=64, help="size of the workflow definition [64 KiB]")
    parser.add_argument("--succeeded-days", type=int, default=7, help="POTAFLOW_RETAIN_SUCCEEDED_DAYS [7]")
    parser.add_argument("--failed-days", type=int, default=30, help="POTAFLOW_RETAIN_FAILED_DAYS [30]")
    parser.add_argument("--filtered-days", type=int, default=3, help="POTAFLOW_RETAIN_FILTERED_DAYS [3]")
    args = parser.parse_args()
    args.days = max(1, min(args.days, 365))
    args.runs_per_day = max(1, min(args.runs_per_day, 5000))
    return args


def ensure_fresh_database(url: str) -> None:
    """The bench's own database, recreated: sizes are only comparable from empty tables."""
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"BENCH_DATABASE_URL must point at loopback, not {parts.hostname!r}")
    name = parts.path.lstrip("/")
    if not name.startswith("potaflow_bench"):
        sys.exit(f"refusing to recreate {name!r}: the bench database's name starts with potaflow_bench")
    admin_url = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def mib(n: int) -> str:
    return f"{n / 1024 / 1024:8.2f} MiB"


def main() -> None:
    args = parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    ensure_fresh_database(db_url)
    os.environ.update(
        {
            "DATABASE_URL": db_url,
            "CELERY_BROKER_URL": "memory://",
            "DJANGO_SETTINGS_MODULE": "potaflow.settings",
            "POTAFLOW_RETAIN_SUCCEEDED_DAYS": str(args.succeeded_days),
            "POTAFLOW_RETAIN_FAILED_DAYS": str(args.failed_days),
            "POTAFLOW_RETAIN_FILTERED_DAYS": str(args.filtered_days),
            "LOG_LEVEL": "WARNING",
        }
    )
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from accounts.models import User
    from accounts.services import organization_create
    from workflows.models import Run, RunStatus, StepAttempt, StepRun, StepRunStatus, WorkflowVersion
    from workflows.ops import retention
    from workflows.services import run_accept, workflow_create

    call_command("migrate", verbosity=0, interactive=False)
    owner = User.objects.create_user(email="bench-retention@example.com", password=None)
    organization = organization_create(name="bench retention", owner=owner)
    filler = secrets.token_urlsafe(args.definition_kb * 768)  # ~definition_kb KiB that TOAST cannot compress
    workflow = workflow_create(
        organization=organization,
        name="bench: retention",
        steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"filler": filler}}},
            {"key": "check", "action_type": "transform", "config": {"value": 1}},
        ],
    )
    definition_bytes = len(str(WorkflowVersion.objects.get(workflow=workflow).definition))
    # A day's mix: mostly succeeded, some failed, some filtered. No dead-lettered runs: they are kept
    # until someone replays or deletes them, so they grow with what people leave unresolved.
    mix = [RunStatus.SUCCEEDED] * 16 + [RunStatus.FAILED] * 2 + [RunStatus.FILTERED] * 2

    def sizes() -> int:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM " + ", ".join(TABLES))
            cursor.execute("SELECT sum(pg_total_relation_size(c)) FROM unnest(%s::regclass[]) c", [list(TABLES[:3])])
            return int(cursor.fetchone()[0])

    print(
        f"PostgreSQL {connection.pg_version // 10000}, {os.cpu_count()} cores; {args.runs_per_day} runs/day for "
        f"{args.days} days, definition {args.definition_kb} KiB; retention succeeded {args.succeeded_days} d, "
        f"failed {args.failed_days} d, filtered {args.filtered_days} d"
    )
    print(f"{'day':>4} {'runs':>8} {'step runs':>10} {'attempts':>9} {'versions':>8} {'run tables':>14} {'pruned':>7}")
    start = timezone.now()
    started = time.monotonic()
    accepted = pruned_total = 0
    for day in range(args.days):
        today = start + dt.timedelta(days=day)
        for index in range(args.runs_per_day):
            status = mix[index % len(mix)]
            run, _ = run_accept(workflow=workflow, trigger="webhook", payload={"body": {"n": index}})
            at = today + dt.timedelta(seconds=index)
            Run.objects.filter(pk=run.pk).update(status=status, created_at=at, started_at=at, finished_at=at)
            step_status = StepRunStatus.SUCCEEDED if status == RunStatus.SUCCEEDED else StepRunStatus.FAILED
            StepRun.objects.filter(run=run).update(status=step_status, output={"ok": True, "n": index})
            StepAttempt.objects.bulk_create(
                StepAttempt(step_run=step, number=1, outcome="succeeded", started_at=at)
                for step in StepRun.objects.filter(run=run)
            )
            accepted += 1
        report = retention.prune(now=today + dt.timedelta(hours=23))
        pruned_total += report.total_runs
        print(
            f"{day:>4} {Run.objects.count():>8} {StepRun.objects.count():>10} {StepAttempt.objects.count():>9} "
            f"{WorkflowVersion.objects.count():>8} {mib(sizes()):>14} {report.total_runs:>7}",
            flush=True,
        )
    print(
        f"{accepted} runs accepted, {pruned_total} pruned in {time.monotonic() - started:.0f} s. The definition "
        f"({definition_bytes / 1024:.0f} KiB) is stored once; copied into every run (before WorkflowVersion) the "
        f"{accepted} runs would have carried {mib(definition_bytes * accepted).strip()} of definitions "
        "(random text: TOAST cannot compress it)."
    )


if __name__ == "__main__":
    main()
