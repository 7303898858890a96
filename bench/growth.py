"""Growth: how list pages and beat behave as the tables grow.

(b) runs lists (default): ``GET /api/runs/?workflow=<id>`` (first page and a
deep page: keyset pages, so the deep page is the ``?cursor=`` DRF would put in
a ``next`` link at 90 % of the list) and the admin run list (first page and a deep page) with 1k, 100k
(and, with ``--max-runs 1000000``, 1M) runs in the table, bulk-inserted with
``generate_series`` (not through the services layer), then ANALYZE. Each
page is requested ``--requests`` times in a row by a logged-in superuser
(session cookie): p50/p99 client latency. The same sizes measure Insights
(``GET /api/insights/``, per workflow and per organization, 24h/7d/30d): the
inserted runs are finished ones, so the database's rollup triggers count them
as they are inserted (the insert time includes that), and Insights reads the
rollups, never the runs.

(a) schedules (optional, long: ``--schedules 10,1000``): N schedule workflows
firing every minute (``* * * * *``, one ``transform`` step) created through
the services layer, with web, worker and beat running; after
``--minutes`` minute boundaries per size: beat's CPU time per tick (from
/proc, beat's only job here is these firings) and firing lateness
(``run.created_at - fired_at``, the scheduled minute) p50/p99, and how many
firings became runs.

    .venv/bin/python bench/growth.py                      # runs lists: 1k, 100k
    .venv/bin/python bench/growth.py --max-runs 1000000   # + 1M (minutes of inserting)
    .venv/bin/python bench/growth.py --schedules 10,1000 --no-runs
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import benchlib
from benchlib import BenchStack, emit, log, percentile, table

TARGET_LIST = "flat: deep page p99 close to first page at every size"
TARGET_INSIGHTS = "Insights p99 < 200 ms at 1,000,000 runs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-runs", type=int, default=100_000, help="largest runs table: 1k, 100k, 1M up to it")
    parser.add_argument("--requests", type=int, default=30, help="requests per page and size [30]")
    parser.add_argument("--schedules", default="", help="comma-separated schedule counts, e.g. 10,1000,10000")
    parser.add_argument("--minutes", type=int, default=2, help="minute boundaries measured per schedule count [2]")
    parser.add_argument("--no-runs", action="store_true", help="skip the runs-list part")
    parser.add_argument(
        "--insights-workflows", type=int, default=200, help="then spread the runs over this many workflows [200]"
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=300, help="most seconds to wait for beat's start-up catch-up [300]"
    )
    parser.add_argument("--database-url", default=benchlib.DEFAULT_DB)
    return parser.parse_args(argv)


def login_cookie(email: str) -> tuple[str, str]:
    """A session for the organization's owner, made a superuser (admin) too."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import User

    user = User.objects.get(email=email)
    user.is_staff = user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return settings.SESSION_COOKIE_NAME, session.session_key


def insert_runs(workflow_id: int, start: int, stop: int, *, triggers: bool = True) -> float:
    """Insert finished runs ``start``..``stop``. Insights' rollup triggers count each as it is inserted;
    with ``triggers=False`` (bulk loads) they are off for the insert and the rollups are rebuilt after in
    one set-based pass (``insights.rebuild_rollups``): per-row triggers updating the same rollup rows
    many times in one statement grow their row versions within it, which is slow for 100k rows."""
    from django.db import connection, transaction

    from workflows.ops.insights import rebuild_rollups

    began = time.monotonic()
    with transaction.atomic(), connection.cursor() as cur:
        if not triggers:
            cur.execute("SET LOCAL session_replication_role = replica")  # no triggers for this load
        cur.execute(
            """
            INSERT INTO workflows_run (id, workflow_id, workflow_version, version_id, trigger, payload, status,
                                       dead_lettered, error, created_at, started_at, finished_at, last_progress_at)
            SELECT gen_random_uuid(), %s, 1,
                   (SELECT id FROM workflows_workflowversion WHERE workflow_id = %s AND number = 1), 'webhook',
                   jsonb_build_object('body', jsonb_build_object('n', g)),
                   (ARRAY['succeeded','succeeded','succeeded','failed','filtered'])[1 + g %% 5], false, '',
                   now() - make_interval(secs => g * 2.5), now() - make_interval(secs => g * 2.5 - 0.1),
                   now() - make_interval(secs => g * 2.5 - 0.2), now() - make_interval(secs => g * 2.5 - 0.2)
            FROM generate_series(%s, %s) g
            """,
            [workflow_id, workflow_id, start, stop - 1],
        )
    if not triggers:
        rebuild_rollups()
    with connection.cursor() as cur:
        cur.execute("ANALYZE workflows_run")
        cur.execute("ANALYZE workflows_runrollup")
    return time.monotonic() - began


def deep_cursor(workflow_id: int, fraction: float) -> str:
    """The ``cursor`` of the API runs list positioned ``fraction`` of the way down (newest first).

    DRF's CursorPagination encodes ``p=<created_at of the last row seen>``, as
    ``str()`` of the datetime; walking 18,000 ``next`` links to get there would
    measure the walk, not the page.
    """
    from workflows.models import Run

    runs = Run.objects.filter(workflow_id=workflow_id).order_by("-created_at", "-id")
    position = runs.values_list("created_at", flat=True)[int(runs.count() * fraction)]
    return base64.b64encode(urlencode({"p": str(position)}).encode()).decode()


def timed_get(session: Any, url: str, n: int) -> dict[str, Any]:
    samples, statuses, count = [], set(), None
    for _ in range(n):
        t0 = time.perf_counter()
        response = session.get(url, timeout=120)
        samples.append((time.perf_counter() - t0) * 1000)
        statuses.add(response.status_code)
        if response.headers.get("Content-Type", "").startswith("application/json"):
            count = response.json().get("count")
    return {
        "p50_ms": round(percentile(samples, 50), 1),
        "p99_ms": round(percentile(samples, 99), 1),
        "status": sorted(statuses),
        "count": count,
    }


def runs_lists(stack: BenchStack, args: argparse.Namespace) -> list[dict[str, Any]]:
    import requests

    org = benchlib.create_org()
    workflow = benchlib.create_workflow(org, "bench growth", benchlib.one_step_steps("http://127.0.0.1:9/unused"))
    cookie_name, cookie = login_cookie("bench@example.com")
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)  # as make run does (admin pages need it)
    stack.start("web")
    session = requests.Session()
    session.cookies.set(cookie_name, cookie)
    sizes = [s for s in (1_000, 100_000, 1_000_000) if s <= args.max_runs]
    rows, have = [], 0
    for size in sizes:
        # The first thousand through the triggers (as runs finish, one statement each here), the rest in bulk.
        seconds = insert_runs(workflow.pk, have, size, triggers=size <= 1_000)
        have = size
        how = "rollups by the triggers" if size <= 1_000 else "rollups rebuilt after"
        log(f"{size} runs in the table (inserted in {seconds:.1f} s, {how})")
        deep_api = max(1, int(size / 50 * 0.9))  # the page number the same position would have (50 a page)
        deep_admin = max(1, int(size / 100 * 0.9))
        cursor = quote(deep_cursor(workflow.pk, 0.9))
        pages = {
            "api first page": f"/api/runs/?workflow={workflow.pk}",
            f"api page ~{deep_api} (cursor)": f"/api/runs/?workflow={workflow.pk}&cursor={cursor}",
            "admin first page": "/admin/workflows/run/",
            f"admin page {deep_admin}": f"/admin/workflows/run/?p={deep_admin}",
        }
        for window in ("24h", "7d", "30d"):
            pages[f"insights workflow {window}"] = f"/api/insights/?workflow={workflow.pk}&window={window}"
            pages[f"insights organization {window}"] = f"/api/insights/?window={window}"
        for label, path in pages.items():
            session.get(stack.base_url + path, timeout=120)  # warm
            r = timed_get(session, stack.base_url + path, args.requests)
            rows.append({"runs": size, "page": label, **r})
            log(f"  {label}: p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms {r['status']}")
    if args.insights_workflows > 1:
        rows += insights_spread(stack, session, workflow, args)
    stack.stop_service("web")
    return rows


def insights_spread(stack: BenchStack, session: Any, workflow: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same runs spread over ``--insights-workflows`` workflows of the organization (its rollup rows
    multiply by as many): Insights per organization and per workflow, over HTTP and in process
    (``insights()`` alone: the database reads and the sums, without the web server's queueing)."""
    from django.db import connection, transaction

    from workflows.models import RunRollup
    from workflows.ops.insights import WINDOWS, insights, rebuild_rollups

    org_id = workflow.organization_id
    n = args.insights_workflows
    others = [
        benchlib.create_workflow(
            workflow.organization, f"bench growth {i}", benchlib.one_step_steps("http://127.0.0.1:9/unused")
        )
        for i in range(1, n)
    ]
    ids = [workflow.pk, *(w.pk for w in others)]
    began = time.monotonic()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")  # a bulk move: rollups rebuilt after
        cur.execute(
            "UPDATE workflows_run SET workflow_id = (%s::bigint[])[1 + abs(hashtext(id::text)) %% %s]", [ids, n]
        )
        cur.execute(
            "UPDATE workflows_run r SET version_id = v.id FROM workflows_workflowversion v"
            " WHERE v.workflow_id = r.workflow_id AND v.number = 1"
        )
    rebuild_rollups()
    with connection.cursor() as cur:
        cur.execute("ANALYZE workflows_run")
        cur.execute("ANALYZE workflows_runrollup")
    rollups = RunRollup.objects.count()
    log(f"runs spread over {n} workflows, rollups rebuilt ({rollups} rows) in {time.monotonic() - began:.0f} s")
    runs = args.max_runs  # every run, spread
    rows = []
    for window in WINDOWS:
        for scope, path, kwargs in (
            ("workflow", f"/api/insights/?workflow={ids[-1]}&window={window}", {"workflow_id": ids[-1]}),
            ("organization", f"/api/insights/?window={window}", {}),
        ):
            session.get(stack.base_url + path, timeout=120)
            r = timed_get(session, stack.base_url + path, args.requests)
            label = f"insights {scope} {window} ({n} workflows)"
            rows.append({"runs": runs, "page": label, **r})
            log(f"  {label}: p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms {r['status']}")
            samples = []
            for _ in range(args.requests * 3):
                t0 = time.perf_counter()
                insights(organization_ids=[org_id], window=window, **kwargs)
                samples.append((time.perf_counter() - t0) * 1000)
            label = f"insights() {scope} {window} ({n} workflows, in process)"
            rows.append({"runs": runs, "page": label, "p50_ms": round(percentile(samples, 50), 1),
                         "p99_ms": round(percentile(samples, 99), 1), "status": ["-"], "count": None})  # fmt: skip
            log(f"  {label}: p50 {rows[-1]['p50_ms']} ms p99 {rows[-1]['p99_ms']} ms")
    return rows


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / __import__("os").sysconf("SC_CLK_TCK")


def schedules(stack: BenchStack, args: argparse.Namespace) -> list[dict[str, Any]]:
    from workflows.models import UNFINISHED_RUN_STATUSES, Run, Workflow
    from workflows.services import workflow_create

    org = benchlib.create_org("bench-schedules@example.com")
    rows: list[dict[str, Any]] = []
    have = 0
    stack.start("worker")
    for size in [int(x) for x in args.schedules.split(",") if x.strip()]:
        began = time.monotonic()
        for n in range(have, size):
            workflow_create(
                organization=org,
                name=f"bench schedule {n}",
                trigger_type="schedule",
                schedule="* * * * *",
                timezone="UTC",
                steps=[{"key": "t", "action_type": "transform", "config": {"value": {"n": n}}}],
            )
        have = size
        log(f"{size} schedules (created in {time.monotonic() - began:.0f} s); starting beat")
        beat = stack.start("beat", name=f"beat-{size}")
        # Schedules created before the last minute boundary fire as soon as beat starts (their
        # minute passed): let those runs finish first, so the measured minutes start idle.
        settle_deadline = time.monotonic() + args.settle_timeout
        unfinished = Run.objects.filter(workflow__organization=org, status__in=UNFINISHED_RUN_STATUSES)
        time.sleep(3)
        while time.monotonic() < settle_deadline and unfinished.exists():
            time.sleep(2)
        log(f"  catch-up at beat start: {Run.objects.filter(workflow__organization=org).count()} runs so far")
        # Measure from the next minute boundary on, for --minutes boundaries.
        now = dt.datetime.now(dt.UTC)
        first = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        time.sleep(max(0.0, (first - dt.datetime.now(dt.UTC)).total_seconds() - 5))
        cpu0 = cpu_seconds(beat.pid)
        last = first + dt.timedelta(minutes=args.minutes - 1)
        time.sleep(max(0.0, (last - dt.datetime.now(dt.UTC)).total_seconds() + 55))
        cpu1 = cpu_seconds(beat.pid)
        stack.stop_service(f"beat-{size}")
        # Wait (bounded) for the worker to create the runs of the measured minutes.
        expected = size * args.minutes
        scheduled = Run.objects.filter(workflow__organization=org, created_at__gte=first - dt.timedelta(seconds=1))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and scheduled.count() < expected:
            time.sleep(2)
        lateness = []
        for created, payload in scheduled.values_list("created_at", "payload"):
            fired = dt.datetime.fromisoformat(payload["fired_at"])
            if first <= fired <= last:
                lateness.append((created - fired).total_seconds() * 1000)
        rows.append(
            {
                "schedules": size,
                "minutes": args.minutes,
                "beat_cpu_s_per_tick": round((cpu1 - cpu0) / args.minutes, 3),
                "firings": len(lateness),
                "expected": expected,
                "lateness_p50_ms": round(percentile(lateness, 50), 1),
                "lateness_p99_ms": round(percentile(lateness, 99), 1),
            }
        )
        log(f"  {rows[-1]}")
        Workflow.objects.filter(organization=org, is_active=True).count()
    stack.stop_service("worker")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = BenchStack(args.database_url)
    lists: list[dict[str, Any]] = []
    scheds: list[dict[str, Any]] = []
    try:
        stack.setup()
        if not args.no_runs:
            lists = runs_lists(stack, args)
        if args.schedules:
            scheds = schedules(stack, args)
    finally:
        stack.stop()
    if lists:
        print(f"\nRuns lists ({args.requests} sequential requests per row, {benchlib.machine()})")
        table(
            [(r["runs"], r["page"], r["p50_ms"], r["p99_ms"], r["status"], r["count"]) for r in lists],
            ("runs in table", "page", "p50 ms", "p99 ms", "HTTP", "API count"),
        )
        for r in lists:
            name = f"runs_list.{r['runs']}.{r['page'].replace(' ', '_')}"
            target = TARGET_INSIGHTS if r["page"].startswith("insights") else TARGET_LIST
            emit("growth", name, r["p99_ms"], "ms", target, p50=r["p50_ms"], status=r["status"])
    if scheds:
        print("\nSchedules firing every minute (web not running; worker + beat)")
        table(
            [(r["schedules"], r["beat_cpu_s_per_tick"], f"{r['firings']}/{r['expected']}", r["lateness_p50_ms"],
              r["lateness_p99_ms"]) for r in scheds],
            ("schedules", "beat CPU s/tick", "runs/firings", "lateness p50 ms", "lateness p99 ms"),
        )  # fmt: skip
        for r in scheds:
            emit("growth", f"schedules.{r['schedules']}.lateness_p99_ms", r["lateness_p99_ms"], "ms", **r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
