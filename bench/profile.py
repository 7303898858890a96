"""Profile one gunicorn worker under intake load and one Celery pool child draining a backlog (py-spy).

Not part of ``make bench`` (``make bench-profile``). Needs ``py-spy``
(``.venv/bin/pip install py-spy``) and the right to ptrace (root, or
``kernel.yama.ptrace_scope=0``). On a fresh database and its own redis-server:

1. web (gunicorn.conf.py) alone; ``wrk`` sends unsigned ~1 KiB webhooks at
   ``--concurrency`` for ``--seconds`` while ``py-spy record`` samples one
   gunicorn worker (all its threads);
2. ``--runs`` runs of the 1-step http workflow preloaded with no worker, then
   the worker starts and ``py-spy record`` samples one pool child while it drains.

Writes the raw (collapsed) stacks per target into a temporary folder and
prints the top frames: by own time ("self") and by time inside ("total",
project code only).

    .venv/bin/python bench/profile.py --seconds 15
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import benchlib
import execution
import intake
from benchlib import BIN, BenchStack, log

PROJECT = ("workflows/", "integrations/", "accounts/", "potaflow/")


def py_spy() -> str:
    found = shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists() else None)
    if not found:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def record(pid: int, seconds: int, out: Path, *, idle: bool = False) -> subprocess.Popen:
    argv = [py_spy(), "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "-f", "raw", "-o", str(out)]
    if idle:
        argv.append("--idle")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # noqa: S603


IDLE_LEAVES = (  # a thread waiting for work, not serving: left out of the shares
    "_worker (concurrent/futures/thread.py",  # gthread's idle pool threads
    "EpollSelector.select (selectors.py",  # gunicorn's accept loop
    "Connection._recv (billiard/connection.py",  # a pool child waiting for its next task
    "Condition.wait (threading.py",
)


def function_of(frame: str) -> str:
    """``func (path:line)`` -> ``func (path)``: line numbers apart, one entry per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else frame


def summarize(raw: Path, label: str, top: int = 15) -> str:
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = busy = keeper = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        if any("LeaseKeeper" in f for f in frames):
            keeper += n  # the lease renewal thread (mostly asleep)
            continue
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        busy += n
        own[function_of(frames[-1])] += n
        for frame in {function_of(f) for f in frames}:
            if any(p in frame for p in PROJECT):
                inside[frame] += n
    busy = busy or 1
    lines = [
        f"## {label}: {total} samples, {busy} busy (idle waits for work and the lease keeper thread,"
        f" {keeper} samples, left out); shares of busy samples ({raw})",
        "self (own time, any code):",
    ]
    lines += [f"  {100 * n / busy:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("total (time inside, project code):")
    lines += [f"  {100 * n / busy:5.1f}%  {f}" for f, n in inside.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="sampling time per target [15]")
    parser.add_argument("--concurrency", type=int, default=8, help="wrk connections for the web profile [8]")
    parser.add_argument("--runs", type=int, default=3000, help="preloaded runs for the worker profile [3000]")
    parser.add_argument("--database-url", default=benchlib.DEFAULT_DB)
    parser.add_argument("--summarize", type=Path, help="only summarize the raw stacks of an earlier run's folder")
    parser.add_argument("--web-only", action="store_true", help="profile the web worker only")
    parser.add_argument("--worker-only", action="store_true", help="profile the pool child only")
    parser.add_argument(
        "--workload",
        choices=["1-step", "5-step", "5-step-local", "flow"],
        default="1-step",
        help="the runs the pool child drains (bench/execution.py's workloads) [1-step]",
    )
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize / "web.txt", "gunicorn worker under webhook load"))
        if (args.summarize / "worker.txt").exists():
            print(summarize(args.summarize / "worker.txt", "Celery pool child draining 1-step runs"))
        return 0
    wrk = "" if args.worker_only else benchlib.wrk_path()
    py_spy()
    out = Path(tempfile.mkdtemp(prefix="potaflow-bench-profile-"))
    stack = BenchStack(args.database_url)
    sink = benchlib.Sink()
    reports = []
    try:
        stack.setup()
        org = benchlib.create_org()
        if not args.worker_only:
            reports.append(profile_web(stack, org, sink, wrk, out, args))
        if args.web_only:
            return print_reports(reports, out)

        steps = {
            "1-step": benchlib.one_step_steps,
            "5-step": benchlib.five_step_steps,
            "5-step-local": benchlib.five_step_local_steps,
            "flow": benchlib.flow_steps,
        }[args.workload]
        flow = benchlib.create_workflow(org, "profile execution", steps(sink.url))
        execution.preload(flow, args.runs)
        worker = stack.start("worker")
        time.sleep(1)
        target = benchlib.children_of(worker.pid)[0]
        log(f"py-spy on pool child {target} for {args.seconds} s while {args.runs} runs drain")
        spy = record(target, args.seconds, out / "worker.txt", idle=True)
        spy.wait(args.seconds + 60)
        label = f"Celery pool child draining {args.workload} runs (idle frames included)"
        reports.append(summarize(out / "worker.txt", label))
        stack.stop_service("worker")
    finally:
        stack.stop()
        sink.stop()
    return print_reports(reports, out)


def print_reports(reports: list[str], out: Path) -> int:
    print("\n\n".join(reports))
    print(f"\nraw stacks in {out} (flame graphs: e.g. flamegraph.pl {out}/web.txt > web.svg)")
    return 0


def profile_web(
    stack: BenchStack, org: object, sink: benchlib.Sink, wrk: str, out: Path, args: argparse.Namespace
) -> str:
    """py-spy on one gunicorn worker (all its threads) while wrk sends unsigned webhooks."""
    hook = benchlib.create_workflow(org, "profile intake", benchlib.one_step_steps(sink.url))
    intake.lua_data(out / "unsigned.lua", intake.make_requests(None, 1))
    web = stack.start("web")
    url = f"{stack.base_url}/hooks/{hook.webhook_token}"
    intake.run_wrk(wrk, url, out / "unsigned.lua", args.concurrency, 3)  # warm-up
    target = benchlib.children_of(web.pid)[0]
    load = threading.Thread(
        target=intake.run_wrk, args=(wrk, url, out / "unsigned.lua", args.concurrency, args.seconds + 4)
    )
    load.start()
    time.sleep(1)
    log(f"py-spy on gunicorn worker {target} for {args.seconds} s under wrk c={args.concurrency}")
    spy = record(target, args.seconds, out / "web.txt")
    spy.wait(args.seconds + 60)
    load.join(args.seconds + 60)
    stack.stop_service("web")
    return summarize(out / "web.txt", f"gunicorn worker, webhooks at c={args.concurrency}")


if __name__ == "__main__":
    raise SystemExit(main())
