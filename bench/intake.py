"""Intake: webhooks (~1 KiB JSON, signed and unsigned) at c=8 and c=32 against gunicorn.conf.py, with wrk.

Starts PotaFlow's web process as the Procfile does (gunicorn.conf.py, DEBUG
off) on a fresh PostgreSQL database and its own redis-server, no worker (the
runs queue up in Redis: intake alone is measured), with
POTAFLOW_WEBHOOK_RATE=off. Then the **limit baseline**: bench/baseline_app.py
(one INSERT+COMMIT and one LPUSH per request) under the same gunicorn
command and settings. Load comes from ``wrk`` with a Lua script
(bench/intake.lua). Prints a table and one JSON line per figure.

    .venv/bin/python bench/intake.py --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BenchStack, emit, log, table

HERE = Path(__file__).resolve().parent
TARGETS = {"ratio": ">= 50 % of baseline", "p99_c32": "p99 <= 50 ms at c=32", "non2xx": "0 non-2xx"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="seconds per measurement [20]")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load before each [3]")
    parser.add_argument("--concurrency", default="8,32", help="connections, comma-separated [8,32]")
    parser.add_argument("--signed-pool", type=int, default=20000, help="pre-signed distinct events [20000]")
    parser.add_argument("--database-url", default=benchlib.DEFAULT_DB)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--keep-web", type=int, default=0, help="keep the web up N s after the load (profiling)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VAL",
        help="environment for web and the baseline (repeatable), e.g. POTAFLOW_WEB_THREADS=8",
    )
    return parser.parse_args(argv)


def lua_data(path: Path, requests: list[tuple[dict[str, str], str]]) -> None:
    """Requests as a Lua table (headers, body), read by bench/intake.lua."""
    with path.open("w") as out:
        out.write("data = {\n")
        for headers, body in requests:
            hs = ", ".join(f'["{k}"] = [==[{v}]==]' for k, v in headers.items())
            out.write(f"{{ {{ {hs} }}, [==[{body}]==] }},\n")
        out.write("}\n")


def make_requests(secret: str | None, count: int) -> list[tuple[dict[str, str], str]]:
    out = []
    now = int(time.time())
    for n in range(count if secret else 1):
        body = json.dumps(benchlib.event_body(n), separators=(",", ":"))
        headers = {"Content-Type": "application/json"}
        if secret:
            msg_id = f"msg_{secrets.token_hex(8)}_{n}"
            headers |= {
                "webhook-id": msg_id,
                "webhook-timestamp": str(now),
                "webhook-signature": benchlib.sign(secret, msg_id, now, body.encode()),
            }
        out.append((headers, body))
    return out


USED: dict[Path, int] = {}


def run_wrk(wrk: str, url: str, data: Path, connections: int, duration: int) -> dict[str, Any]:
    """One wrk run; successive runs on the same data file go on where the last stopped (no repeated ids)."""
    threads = min(2, connections)
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s"]
    argv += ["-s", str(HERE / "intake.lua"), url, "--", str(data), str(threads), str(USED.get(data, 0))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)  # noqa: S603
    for line in proc.stdout.splitlines():
        if line.startswith('{"wrk"'):
            result = json.loads(line)["wrk"]
            USED[data] = result["next"]  # past the highest index any thread reached
            return result
    raise RuntimeError(f"wrk gave no summary (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU of each process so far (from /proc; a process gone is left out)."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def serving_pids(stack: BenchStack, service: Any) -> dict[str, list[int]]:
    """The processes a request costs CPU in: the web process tree, this database's PostgreSQL
    backends (not the server's shared background processes) and the bench's redis-server."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        backends = [row[0] for row in cur.fetchall()]
    return {
        "web": [service.pid, *benchlib.children_of(service.pid)],
        "postgres": backends,
        "redis": [stack.redis.service.pid],
    }


def measure(wrk: str, label: str, url: str, data: Path, args: argparse.Namespace, pids: Any) -> list[dict[str, Any]]:
    """wrk at each concurrency; ``pids()`` names the processes whose CPU is counted per request."""
    results = []
    for c in [int(x) for x in args.concurrency.split(",")]:
        if args.warmup:
            run_wrk(wrk, url, data, c, args.warmup)
        before = {kind: cpu_seconds(found) for kind, found in pids().items()}
        r = run_wrk(wrk, url, data, c, args.duration)
        # Processes that appeared during the run (a new database connection) count from zero.
        after = {kind: cpu_seconds(found) for kind, found in pids().items()}
        cpu = {kind: sum(t - before[kind].get(pid, 0.0) for pid, t in after[kind].items()) for kind in after}
        statuses = {int(k): v for k, v in r["status"].items()}
        ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
        accepted = statuses.get(202, 0) if label != "baseline" else ok
        non2xx = sum(v for k, v in statuses.items() if not 200 <= k < 300) + r["errors"]
        row = {
            "target": label,
            "c": c,
            "accepted_per_s": round(accepted / r["seconds"], 1),
            "ok_2xx": ok,
            "duplicates_200": statuses.get(200, 0) if label != "baseline" else 0,
            "p50_ms": round(r["p50_us"] / 1000, 1),
            "p95_ms": round(r["p95_us"] / 1000, 1),
            "p99_ms": round(r["p99_us"] / 1000, 1),
            "non_2xx": non2xx,
            "statuses": statuses,
            "socket_errors": r["errors"],
            "seconds": r["seconds"],
            "cpu_ms_per_request": {k: round(1000 * v / max(ok, 1), 3) for k, v in cpu.items()},
        }
        row["cpu_ms_per_request"]["total"] = round(sum(row["cpu_ms_per_request"].values()), 3)
        log(
            f"{label} c={c}: {row['accepted_per_s']}/s p99 {row['p99_ms']} ms non-2xx {non2xx}"
            f" CPU ms/request {row['cpu_ms_per_request']}"
        )
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = benchlib.wrk_path()
    stack = BenchStack(args.database_url, extra_env=dict(item.split("=", 1) for item in args.env))
    work = Path(tempfile.mkdtemp(prefix="potaflow-bench-intake-"))
    rows: list[dict[str, Any]] = []
    rss: dict[str, Any] = {}
    try:
        stack.setup()
        org = benchlib.create_org()
        sink = "http://127.0.0.1:9/unused"  # no worker runs here: the step never executes
        plain = benchlib.create_workflow(org, "bench intake unsigned", benchlib.one_step_steps(sink))
        secret = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(24)).decode()
        signed = benchlib.create_workflow(org, "bench intake signed", benchlib.one_step_steps(sink), secret)
        lua_data(work / "unsigned.lua", make_requests(None, 1))
        lua_data(work / "signed.lua", make_requests(secret, args.signed_pool))

        web = stack.start("web")
        rss["web_idle_mib"] = round(benchlib.rss_mb(web.pid), 1)
        pids = lambda: serving_pids(stack, web)  # noqa: E731
        rows += measure(
            wrk, "potaflow-unsigned", f"{stack.base_url}/hooks/{plain.webhook_token}", work / "unsigned.lua", args, pids
        )
        rows += measure(
            wrk, "potaflow-signed", f"{stack.base_url}/hooks/{signed.webhook_token}", work / "signed.lua", args, pids
        )
        rss["web_after_load_mib"] = round(benchlib.rss_mb(web.pid), 1)
        if args.keep_web:
            log(f"web pid {web.pid} kept {args.keep_web} s")
            time.sleep(args.keep_web)
        stack.stop_service("web")

        if not args.skip_baseline:
            from django.db import connection

            with connection.cursor() as cur:
                cur.execute(
                    "CREATE TABLE bench_baseline_event (id bigserial PRIMARY KEY, payload jsonb NOT NULL,"
                    " created_at timestamptz NOT NULL DEFAULT now())"
                )
            stack.env |= {"BENCH_BASELINE_DSN": stack.database_url, "BENCH_BASELINE_REDIS": stack.redis.url}
            argv_web = [a if a != "potaflow.wsgi:application" else "baseline_app:app" for a in stack.command("web")]
            argv_web += ["--pythonpath", str(HERE)]
            baseline = stack.start("web", argv_web, name="baseline")
            pids = lambda: serving_pids(stack, baseline)  # noqa: E731
            rows += measure(wrk, "baseline", f"{stack.base_url}/hooks/baseline", work / "unsigned.lua", args, pids)
            stack.stop_service("baseline")
    finally:
        stack.stop()

    report(rows, rss, args)
    return 0


def report(rows: list[dict[str, Any]], rss: dict[str, Any], args: argparse.Namespace) -> None:
    base = {r["c"]: r["accepted_per_s"] for r in rows if r["target"] == "baseline"}
    out = []
    for r in rows:
        ratio = round(r["accepted_per_s"] / base[r["c"]], 2) if base.get(r["c"]) and r["target"] != "baseline" else None
        r["ratio_to_baseline"] = ratio
        cpu = r["cpu_ms_per_request"]
        out.append(
            (r["target"], r["c"], r["accepted_per_s"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["non_2xx"],
             r["duplicates_200"], "" if ratio is None else f"{ratio:.0%}",
             f"{cpu['total']:.2f} ({cpu['web']:.2f} + {cpu['postgres']:.2f} + {cpu['redis']:.2f})")
        )  # fmt: skip
    print(f"\nIntake ({args.duration} s per row, wrk, gunicorn.conf.py defaults, {benchlib.machine()})")
    header = ("target", "c", "accepted/s", "p50 ms", "p95 ms", "p99 ms", "non-2xx", "dup 200", "÷ baseline")
    table(out, (*header, "CPU ms/request (web + postgres + redis)"))
    print(f"targets: {TARGETS['ratio']}; {TARGETS['p99_c32']}; {TARGETS['non2xx']}")
    print(
        "CPU per request: user + system time of the web processes, this database's PostgreSQL backends and"
        " the bench's redis-server over the measured run, per 2xx (less noisy than rates on a shared machine)"
    )
    print(f"web RSS: {rss}")
    for r in rows:
        name = f"{r['target']}.c{r['c']}"
        emit(
            "intake",
            f"{name}.accepted_per_s",
            r["accepted_per_s"],
            "1/s",
            TARGETS["ratio"],
            ratio=r["ratio_to_baseline"],
        )
        emit(
            "intake",
            f"{name}.p99_ms",
            r["p99_ms"],
            "ms",
            TARGETS["p99_c32"] if r["c"] == 32 else "",
            p50=r["p50_ms"],
            p95=r["p95_ms"],
        )
        emit("intake", f"{name}.non_2xx", r["non_2xx"], "", TARGETS["non2xx"], statuses=r["statuses"])
        emit("intake", f"{name}.cpu_ms_per_request", r["cpu_ms_per_request"]["total"], "ms", **r["cpu_ms_per_request"])
    for key, value in rss.items():
        emit("intake", f"rss.{key}", value, "MiB")


if __name__ == "__main__":
    raise SystemExit(main())
