"""End-to-end: a steady rate of webhooks into the 1-step workflow; webhook -> run succeeded latency, backlog.

Starts web, worker and beat as ``make run`` does (Procfile, gunicorn.conf.py,
default worker concurrency) on a fresh PostgreSQL database and its own
redis-server, with POTAFLOW_WEBHOOK_RATE=off. A bounded Python pacer (wrk
cannot pace; wrk2 is not packaged) sends ``--rate`` unsigned ~1 KiB events per
second for ``--duration`` seconds, each at its scheduled time (an open model:
a late answer does not delay the next send), from a pool of keep-alive
connections. Latency is the run's own ``finished_at - created_at``; the
backlog (runs not final) is sampled every second. Also RSS of web, worker and
beat idle and under this load. Prints a table and one JSON line per figure.

    .venv/bin/python bench/e2e.py --rate 100 --duration 60
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import benchlib
from benchlib import BenchStack, emit, log, percentile, table

TARGET = "p99 <= 250 ms"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100, help="events per second [100]")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load [60]")
    parser.add_argument("--senders", type=int, default=32, help="sender threads (connections) [32]")
    parser.add_argument("--settle-timeout", type=float, default=300, help="longest wait for the backlog [300]")
    parser.add_argument("--database-url", default=benchlib.DEFAULT_DB)
    return parser.parse_args(argv)


def send_paced(url: str, rate: float, duration: float, senders: int) -> dict[str, Any]:
    import requests

    local = threading.local()
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    lateness: list[float] = []

    def send(n: int, due: float) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        late = time.monotonic() - due
        body = json.dumps(benchlib.event_body(n), separators=(",", ":"))
        try:
            key = str(
                session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10).status_code
            )
        except requests.RequestException as exc:
            key = type(exc).__name__
        with lock:
            statuses[key] = statuses.get(key, 0) + 1
            lateness.append(late * 1000)

    total = int(rate * duration)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=senders, thread_name_prefix="sender") as pool:
        for n in range(total):
            due = start + n / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            pool.submit(send, n, due)
    return {
        "sent": total,
        "statuses": statuses,
        "seconds": round(time.monotonic() - start, 1),
        "send_start_lateness_ms_p99": round(percentile(lateness, 99), 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = BenchStack(args.database_url)
    sink = benchlib.Sink()
    backlog: list[tuple[float, int]] = []
    result: dict[str, Any] = {}
    try:
        stack.setup()
        from workflows.models import Run

        org = benchlib.create_org()
        workflow = benchlib.create_workflow(org, "bench e2e 1-step", benchlib.one_step_steps(sink.url))
        url = f"{stack.base_url}/hooks/{workflow.webhook_token}"
        for kind in ("web", "worker", "beat"):
            stack.start(kind)
        time.sleep(5)
        rss_idle = stack.rss()
        log(f"idle RSS {rss_idle}; warm-up")
        send_paced(url, 20, 3, 4)
        benchlib.wait_until(
            lambda: not workflow.runs.exclude(status__in=benchlib.FINAL).exists(), timeout=60, what="warm-up"
        )
        workflow.runs.all().delete()

        stop = threading.Event()
        rss_load: dict[str, float] = {}

        def sample() -> None:
            t0 = time.monotonic()
            while not stop.wait(1.0):
                pending = Run.objects.filter(workflow=workflow).exclude(status__in=benchlib.FINAL).count()
                backlog.append((round(time.monotonic() - t0, 1), pending))
                for name, value in stack.rss().items():
                    rss_load[name] = max(rss_load.get(name, 0), value)
            from django.db import connection

            connection.close()

        sampler = threading.Thread(target=sample, name="sampler", daemon=True)
        log(f"sending {args.rate:g}/s for {args.duration:g} s")
        sampler.start()
        sent = send_paced(url, args.rate, args.duration, args.senders)
        stop.set()
        sampler.join(10)
        settle_start = time.monotonic()
        settled = True
        try:
            benchlib.wait_until(
                lambda: not workflow.runs.exclude(status__in=benchlib.FINAL).exists(),
                timeout=args.settle_timeout,
                what="backlog",
                interval=0.5,
            )
        except RuntimeError:
            settled = False
        settle = time.monotonic() - settle_start
        latencies = [
            (f - c).total_seconds() * 1000
            for c, f in workflow.runs.filter(finished_at__isnull=False).values_list("created_at", "finished_at")
        ]
        by_status: dict[str, int] = {}
        for status in workflow.runs.values_list("status", flat=True):
            by_status[status] = by_status.get(status, 0) + 1
        result = {
            **sent,
            "runs_by_status": by_status,
            "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies, default=float("nan")), 1),
            "settled": settled,
            "settle_after_send_s": round(settle, 1),
            "rss_idle_mib": rss_idle,
            "rss_load_max_mib": rss_load,
        }
    finally:
        stack.stop()
        sink.stop()
    if not result:
        return 1
    report(result, backlog, args)
    return 0


def report(r: dict[str, Any], backlog: list[tuple[float, int]], args: argparse.Namespace) -> None:
    quarter = max(1, len(backlog) // 4)
    first = [b for _, b in backlog[:quarter]]
    last = [b for _, b in backlog[-quarter:]]
    mean_first = sum(first) / len(first) if first else 0
    mean_last = sum(last) / len(last) if last else 0
    grows = mean_last > max(2 * mean_first, args.rate)  # more than a second of events waiting, and rising
    print(f"\nEnd-to-end ({args.rate:g} events/s for {args.duration:g} s, 1-step http workflow, {benchlib.machine()})")
    table(
        [(r["sent"], json.dumps(r["statuses"]), r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"],
          f"{mean_first:.0f} -> {mean_last:.0f}", "yes" if grows else "no", r["settle_after_send_s"])],
        ("sent", "answers", "p50 ms", "p95 ms", "p99 ms", "max ms", "backlog 1st->last quarter", "grows", "settle s"),
    )  # fmt: skip
    print(f"target: {TARGET}; runs {r['runs_by_status']}; sender lateness p99 {r['send_start_lateness_ms_p99']} ms")
    print(f"RSS idle {r['rss_idle_mib']} MiB; under load (max) {r['rss_load_max_mib']} MiB")
    print("backlog samples (s, runs not final):", backlog[:: max(1, len(backlog) // 12)])
    emit("e2e", "webhook_to_succeeded_p99_ms", r["p99_ms"], "ms", TARGET, p50=r["p50_ms"], p95=r["p95_ms"])
    emit("e2e", "backlog_grows", grows, "", "no", first_quarter=round(mean_first, 1), last_quarter=round(mean_last, 1))
    emit("e2e", "answers", r["statuses"], "", "all 202", runs=r["runs_by_status"])
    emit("e2e", "rss_idle_total_mib", round(sum(r["rss_idle_mib"].values()), 1), "MiB", "<= 400", **r["rss_idle_mib"])
    emit("e2e", "rss_load_max_mib", round(sum(r["rss_load_max_mib"].values()), 1), "MiB", **r["rss_load_max_mib"])


if __name__ == "__main__":
    raise SystemExit(main())
