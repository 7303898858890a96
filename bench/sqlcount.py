"""SQL statements per webhook and per step (a profiling harness, not a timing benchmark).

On a fresh PostgreSQL database (``potaflow_bench_sql``) and its own
redis-server: one webhook (unsigned and signed) through Django's test client
(the real URL, middleware and view), then each message of a 1-step and two 5-step
runs executed in this process with ``workflows.execution.engine.run_step`` (what the
Celery task calls; a message runs its step and the steps after it that only compute),
counting the statements on this thread's connection with
``CaptureQueriesContext`` (DEBUG stays off). Statements of other threads (the
step's lease keeper) are not counted. Prints the counts by kind and, with
``--show``, the statements.

``--time N``: then N more runs of each workflow executed message by message in this
process, printing the median wall time and this process's CPU time per
``run_step`` (claim + render + action + record, no broker): steadier than
throughput on a shared machine, and comparable across commits.

    .venv/bin/python bench/sqlcount.py --show
    .venv/bin/python bench/sqlcount.py --time 300
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import statistics
import time
import uuid
from collections import Counter
from typing import Any

import benchlib
from benchlib import BenchStack, emit, table

DB = benchlib.DEFAULT_DB.rsplit("/", 1)[0] + "/potaflow_bench_sql"


def kinds(queries: list[dict[str, Any]]) -> Counter[str]:
    return Counter(q["sql"].split(None, 1)[0].upper() for q in queries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show", action="store_true", help="print every statement (first 160 characters)")
    parser.add_argument("--database-url", default=DB)
    parser.add_argument("--time", type=int, default=0, metavar="N", help="also time run_step over N runs per workflow")
    args = parser.parse_args(argv)
    stack = BenchStack(args.database_url)
    sink = benchlib.Sink()
    rows: list[tuple] = []
    shown: list[tuple[str, list[str]]] = []
    try:
        stack.setup()
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from workflows.execution.engine import run_step
        from workflows.models import Run

        org = benchlib.create_org()
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        flows = {
            "1-step unsigned": benchlib.create_workflow(org, "sql 1", benchlib.one_step_steps(sink.url)),
            "1-step signed": benchlib.create_workflow(org, "sql 1s", benchlib.one_step_steps(sink.url), secret),
            "5-step unsigned": benchlib.create_workflow(org, "sql 5", benchlib.five_step_steps(sink.url)),
            "5-step-local unsigned": benchlib.create_workflow(org, "sql 5l", benchlib.five_step_local_steps(sink.url)),
        }
        client = Client(HTTP_HOST=benchlib.LOOPBACK)
        for label, workflow in flows.items():
            for attempt in ("first", "warm"):  # the first request pays for imports and caches
                body = json.dumps(benchlib.event_body(1)).encode()
                headers = {}
                if workflow.webhook_secret:
                    msg_id, now = f"msg_{uuid.uuid4().hex}", int(time.time())
                    headers = {
                        "HTTP_WEBHOOK_ID": msg_id,
                        "HTTP_WEBHOOK_TIMESTAMP": str(now),
                        "HTTP_WEBHOOK_SIGNATURE": benchlib.sign(workflow.webhook_secret, msg_id, now, body),
                    }
                with CaptureQueriesContext(connection) as ctx:
                    response = client.post(
                        f"/hooks/{workflow.webhook_token}", data=body, content_type="application/json", **headers
                    )
                assert response.status_code == 202, response.content
                if attempt == "warm":
                    rows.append((f"webhook {label}", len(ctx.captured_queries), dict(kinds(ctx.captured_queries))))
                    shown.append((f"webhook {label}", [q["sql"] for q in ctx.captured_queries]))
            run_id = response.json()["run_id"]
            if label.endswith("signed") and "unsigned" not in label:
                continue
            run = Run.objects.get(pk=run_id)
            for spec, group in messages(run.definition["steps"]):
                with CaptureQueriesContext(connection) as ctx:
                    outcome = run_step(run_id, spec["position"], message_id=str(uuid.uuid4()))
                name = f"{label} message: steps " + " + ".join(f"{s['position']} {s['action_type']}" for s in group)
                rows.append((name, len(ctx.captured_queries), dict(kinds(ctx.captured_queries))))
                shown.append((name, [q["sql"] for q in ctx.captured_queries]))
                if not outcome.proceed:
                    break
            run.refresh_from_db()
            rows.append((f"{label}: run ends", run.status, ""))
        flow_wf = benchlib.create_workflow(org, "sql flow", benchlib.flow_steps(sink.url))
        for attempt in ("first", "warm"):
            with CaptureQueriesContext(connection) as ctx:
                messages_run = run_flow_in_process(flow_wf, 1)
            if attempt == "warm":
                rows.append(
                    (
                        f"flow run ({messages_run} messages)",
                        len(ctx.captured_queries),
                        dict(kinds(ctx.captured_queries)),
                    )
                )
                shown.append(("flow run", [q["sql"] for q in ctx.captured_queries]))
        if args.time:
            timed = {label: time_steps(wf, args.time) for label, wf in flows.items() if "signed" not in label.split()}
            timed["flow (per run)"] = time_flow(flow_wf, args.time)
    finally:
        stack.stop()
        sink.stop()
    print(f"\nSQL statements (this thread's connection; {benchlib.machine()})")
    table(rows, ("what", "statements", "by kind"))
    for name, count, by_kind in rows:
        if isinstance(count, int):
            emit("sql", name.replace(" ", "_"), count, "statements", by_kind=by_kind)
    if args.time:
        print(f"\nrun_step in this process, {args.time} runs per workflow after 10 warm ones (ms per message)")
        table(
            [(label, t["steps"], t["wall_ms_p50"], t["wall_ms_p99"], t["cpu_ms_p50"]) for label, t in timed.items()],
            ("workflow", "messages", "wall p50", "wall p99", "CPU p50"),
        )
        for label, t in timed.items():
            emit("sql", f"{label.replace(' ', '_')}.run_step_wall_ms", t["wall_ms_p50"], "ms", p99=t["wall_ms_p99"])
            emit("sql", f"{label.replace(' ', '_')}.run_step_cpu_ms", t["cpu_ms_p50"], "ms")
    if args.show:
        for name, statements in shown:
            print(f"\n-- {name}: {len(statements)}")
            for sql in statements:
                print("   ", sql[:160])
    return 0


def messages(specs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The run's messages as dispatch sends them: the step each is about and the steps its task runs
    (steps that only compute run in the task of the step before them)."""
    from workflows.execution.dispatch import message_groups

    return [(specs[group[0]], [specs[i] for i in group]) for group in message_groups(specs)]


def time_steps(workflow: Any, runs: int) -> dict[str, Any]:
    """Wall and CPU milliseconds per run_step (one message) over ``runs`` runs (10 more first, not counted)."""
    from workflows.execution.engine import run_step
    from workflows.models import RunTrigger
    from workflows.services import run_accept

    walls: list[float] = []
    cpus: list[float] = []
    for n in range(runs + 10):
        run, _ = run_accept(
            workflow=workflow, trigger=RunTrigger.WEBHOOK, payload={"body": benchlib.event_body(n, 256)}
        )
        for spec, _ in messages(run.definition["steps"]):
            wall, cpu = time.perf_counter(), time.process_time()
            outcome = run_step(str(run.pk), spec["position"], message_id=str(uuid.uuid4()))
            if n >= 10:
                walls.append(1000 * (time.perf_counter() - wall))
                cpus.append(1000 * (time.process_time() - cpu))
            if not outcome.proceed:
                break
    walls.sort()
    return {
        "steps": len(walls),
        "wall_ms_p50": round(statistics.median(walls), 2),
        "wall_ms_p99": round(walls[int(0.99 * (len(walls) - 1))], 2),
        "cpu_ms_p50": round(statistics.median(cpus), 2),
    }


def run_flow_in_process(workflow: Any, n: int) -> int:
    """Accept a run and execute its messages here until it is final: each pending instance, in
    position order, as its message would (what a message runs in process runs with it). Returns
    the messages executed. The broker still receives what dispatch sends; nobody consumes it."""
    from workflows.execution.engine import run_step
    from workflows.models import RunTrigger, StepRun, StepRunStatus
    from workflows.services import run_accept

    run, _ = run_accept(workflow=workflow, trigger=RunTrigger.WEBHOOK, payload={"body": benchlib.event_body(n, 256)})
    for executed in range(200):
        run.refresh_from_db(fields=["status"])
        if run.status in benchlib.FINAL:
            return executed
        pending = (
            StepRun.objects.filter(run=run, status=StepRunStatus.PENDING)
            .order_by("position")
            .values_list("position", flat=True)
        )
        position = pending.first()
        if position is None:
            raise RuntimeError(f"flow run {run.pk} is {run.status} with no pending step")
        run_step(str(run.pk), position, message_id=str(uuid.uuid4()))
    raise RuntimeError(f"flow run {run.pk} did not finish in 200 messages")


def time_flow(workflow: Any, runs: int) -> dict[str, Any]:
    """Wall and CPU milliseconds per whole flow run executed in this process (10 more first)."""
    walls: list[float] = []
    cpus: list[float] = []
    messages = 0
    for n in range(runs + 10):
        wall, cpu = time.perf_counter(), time.process_time()
        count = run_flow_in_process(workflow, n)
        if n >= 10:
            walls.append(1000 * (time.perf_counter() - wall))
            cpus.append(1000 * (time.process_time() - cpu))
            messages = count
    walls.sort()
    return {
        "steps": messages,
        "wall_ms_p50": round(statistics.median(walls), 2),
        "wall_ms_p99": round(walls[int(0.99 * (len(walls) - 1))], 2),
        "cpu_ms_p50": round(statistics.median(cpus), 2),
    }


if __name__ == "__main__":
    raise SystemExit(main())
