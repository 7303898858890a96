"""Memory: resident memory (RSS) of web, worker and beat idle, in the default ``make run`` configuration.

Starts the Procfile's three processes (gunicorn.conf.py: 2 workers x 16
threads; Celery worker with its default concurrency; beat) on a fresh
PostgreSQL database and its own redis-server, waits ``--settle`` seconds and
prints each process tree's RSS (the master and each child) and the total
against the target (<= 400 MiB together). RSS under load is printed by
bench/e2e.py, bench/intake.py and bench/execution.py.

    .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import benchlib
from benchlib import BenchStack, emit, log, table

TARGET = "web + worker + beat idle <= 400 MiB"


def own_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: shared (copy-on-write) pages divided among the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=10, help="seconds idle before measuring [10]")
    parser.add_argument("--database-url", default=benchlib.DEFAULT_DB)
    args = parser.parse_args(argv)
    stack = BenchStack(args.database_url)
    rows, totals, pss = [], {}, {}
    try:
        stack.setup()
        for kind in ("web", "worker", "beat"):
            stack.start(kind)
        log(f"idle for {args.settle:g} s")
        time.sleep(args.settle)
        for name, service in stack.services.items():
            pids = [service.pid, *benchlib.children_of(service.pid)]
            parts = [round(own_rss_mb(pid), 1) for pid in pids]
            totals[name] = round(benchlib.rss_mb(service.pid), 1)
            pss[name] = round(sum(pss_mb(pid) for pid in pids), 1)
            rows.append(
                (name, len(pids), parts[0], " + ".join(str(p) for p in parts[1:]) or "-", totals[name], pss[name])
            )
    finally:
        stack.stop()
    total = round(sum(totals.values()), 1)
    print(f"\nMemory, idle after {args.settle:g} s (make run's configuration, {benchlib.machine()})")
    table(rows, ("process", "processes", "main MiB", "children MiB", "RSS total MiB", "PSS total MiB"))
    pss_total = round(sum(pss.values()), 1)
    print(f"RSS total {total} MiB (counts copy-on-write pages once per process), PSS total {pss_total} MiB")
    print(f"target: {TARGET} (RSS)")
    emit("memory", "rss_idle_total_mib", total, "MiB", TARGET, **totals)
    emit("memory", "pss_idle_total_mib", pss_total, "MiB", **pss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
