"""Chaos run: signed webhooks through the whole stack while processes and the broker die.

Starts its own stack on loopback -- gunicorn (2 workers, DEBUG off), a Celery
worker and beat (the recovery sweeper) on a fresh PostgreSQL database and a
``redis-server`` of its own -- plus a recorder HTTP server that honours
``Idempotency-Key`` as Stripe does. A webhook workflow (``transform`` then
``http.request`` POST to the recorder with the event id in the body) receives
``--events`` signed events from ``--concurrency`` client threads that retry on
connection errors and 5xx with the same ``webhook-id``. Meanwhile it SIGKILLs
the worker's process group ``--kills`` times (restarting it), one pool child,
one gunicorn worker, restarts the broker once and wipes it (FLUSHALL) once.
Then it waits until every accepted run is final and prints a table and one
JSON line: lost runs, duplicate effects, settle time after the last fault.
Bounded in count and time; every process it starts is stopped on exit.
See bench/README.md.

    .venv/bin/python bench/chaos.py --events 200
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import benchlib
from benchlib import FLOW_ITEMS
from stack import (
    BIN,
    LOOPBACK,
    RedisServer,
    Service,
    children_of,
    drop_database,
    ensure_loopback,
    free_port,
    fresh_database,
    procfile_command,
    production_env,
    redact,
    serving,
    worker_pool,
)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/potaflow_chaos"
DB_PREFIX = "potaflow_chaos"  # the script drops and recreates its database: only names like this
CLIENT_ATTEMPTS = 8  # a sender's retries of one event (connection error, timeout, 5xx)
CLIENT_TIMEOUT = 10.0
WORKER_PAUSE = 1.5  # seconds between a worker's SIGKILL and its restart
BROKER_PAUSE = 1.0  # seconds the broker stays down when restarted
READY_TIMEOUT = 90.0
FINAL_STATUSES = ("succeeded", "failed", "filtered")
FAULT_KINDS = ("worker-group", "pool-child", "web-worker", "broker-restart", "broker-flush", "broker-blip")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="signed webhook events to send (max 20000) [1000]")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads [8]")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of the worker's whole process group [5]")
    parser.add_argument(
        "--settle-timeout", type=float, default=300.0, help="seconds to wait for every accepted run to be final [300]"
    )
    parser.add_argument(
        "--fault-window",
        type=float,
        default=None,
        help="seconds over which events are paced and faults spread [max(45, events/15)]",
    )
    parser.add_argument(
        "--slow-fraction", type=float, default=0.25, help="share of recorder requests answered in 0.2-1 s [0.25]"
    )
    parser.add_argument(
        "--slow-seconds", default="0.2-1", metavar="MIN-MAX", help="how long a slow answer takes [0.2-1]"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (faults' victims, slow replies)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CHAOS_DATABASE_URL", DEFAULT_DB),
        help=f"PostgreSQL database, dropped and recreated; its name must start with {DB_PREFIX!r} [{DEFAULT_DB}]",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs for inspection")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VAL",
        help="extra environment for web, worker and beat (repeatable), e.g. POTAFLOW_STALLED_AFTER_SECONDS=30",
    )
    parser.add_argument(
        "--plan",
        default=None,
        help="comma-separated fault kinds instead of the default plan, in order: "
        f"{', '.join(FAULT_KINDS)} (broker-blip: CLIENT KILL of every broker connection, data kept)",
    )
    parser.add_argument(
        "--broker", choices=("redis", "amqp"), default="redis", help="a redis-server or a rabbitmq-server of its own"
    )
    parser.add_argument(
        "--flow",
        action="store_true",
        help=f"a flow-control workflow: branch (even/odd) then for_each over {FLOW_ITEMS} items (parallel: 2) "
        "posting one effect per item; every effect of a succeeded run must be applied exactly once",
    )
    parser.add_argument("--assert", dest="check", action="store_true", help="exit 1 when lost > 0 or duplicates > 0")
    args = parser.parse_args(argv)
    args.events = max(1, min(args.events, 20_000))
    args.concurrency = max(1, min(args.concurrency, 64))
    args.kills = max(1, min(args.kills, 50))
    args.settle_timeout = max(1.0, min(args.settle_timeout, 3600.0))
    if args.fault_window is None:
        args.fault_window = max(45.0, args.events / 15)
    args.fault_window = max(10.0, min(args.fault_window, 1800.0))
    extra = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--env expects KEY=VAL, got {item!r}")
        extra[key] = value
    args.extra_env = extra
    try:
        low, high = (float(x) for x in args.slow_seconds.split("-", 1))
    except ValueError:
        parser.error(f"--slow-seconds expects MIN-MAX, got {args.slow_seconds!r}")
    args.slow_range = (max(0.0, min(low, 60.0)), max(0.0, min(high, 60.0)))
    args.plan = [kind.strip() for kind in args.plan.split(",") if kind.strip()] if args.plan else None
    for kind in args.plan or []:
        if kind not in FAULT_KINDS:
            parser.error(f"--plan: unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the recorder: the third-party API the workflow calls ------------------------------
class Recorder:
    """Counts effects per event id; ``Idempotency-Key`` repeats are counted, not applied (Stripe)."""

    def __init__(self, slow_fraction: float, slow_range: tuple[float, float], rng: random.Random) -> None:
        self.lock = threading.Lock()
        self.slow_fraction, self.slow_range, self.rng = slow_fraction, slow_range, rng
        self.raw = 0
        self.with_key = 0
        self.repeats = 0
        self.keys: dict[str, str] = {}
        self.applied: Counter[str] = Counter()
        self.in_flight = 0
        self.last_request_at = 0.0
        self.server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/effects"
        self.thread = threading.Thread(target=self.server.serve_forever, name="recorder", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    event_id = str(json.loads(raw).get("event_id", ""))
                except (ValueError, AttributeError):
                    event_id = ""
                key = self.headers.get("Idempotency-Key")
                with recorder.lock:
                    recorder.raw += 1
                    recorder.in_flight += 1
                    recorder.last_request_at = time.time()
                    if key:
                        recorder.with_key += 1
                    if key and key in recorder.keys:
                        recorder.repeats += 1
                        applied = False
                    else:
                        if key:
                            recorder.keys[key] = event_id
                        recorder.applied[event_id] += 1
                        applied = True
                    slow = recorder.rng.random() < recorder.slow_fraction
                    delay = recorder.rng.uniform(*recorder.slow_range) if slow else 0
                try:
                    # The effect is already applied: a kill during this sleep loses only the answer.
                    if delay:
                        time.sleep(delay)
                    body = json.dumps({"event_id": event_id, "applied": applied}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller died mid-call
                finally:
                    with recorder.lock:
                        recorder.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the broker: Redis (default) or RabbitMQ ---------------------------------------------
class RabbitBroker:
    """A ``rabbitmq-server`` node of the script's own (testing.services.RabbitMQ), with RedisServer's faults.

    Quorum queues are durable: a restarted node keeps its messages (Redis without
    persistence loses them); a flush purges both of PotaFlow's queues; a blip
    closes every client connection (``rabbitmqctl close_all_connections``).
    """

    def __init__(self, port: int, log_dir: Path) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from testing.services import RabbitMQ

        self.port = port
        self.node = RabbitMQ(port=port, folder=log_dir / "rabbitmq")
        self.url = self.node.url

    def start(self) -> None:
        self.node.start()

    def stop(self) -> None:
        self.node.stop()

    def flushall(self) -> None:
        from kombu import Connection

        with Connection(self.url, connect_timeout=5) as conn:
            for queue in ("celery", "potaflow.schedules", "potaflow.recovery", "potaflow.tests"):
                try:
                    conn.default_channel.queue_purge(queue)
                except Exception:  # noqa: BLE001 - not declared yet: nothing to lose
                    conn.close()
                    conn.connect()

    def kill_clients(self) -> int:
        result = self.node.ctl("close_all_connections", "chaos: broker blip")
        return len([line for line in result.stdout.splitlines() if line.strip()])


# -- the sender: a Standard Webhooks client --------------------------------------------
def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Sender:
    def __init__(self, url: str, secret: str, stop: threading.Event) -> None:
        self.url, self.secret, self.stop = url, secret, stop
        self.local = threading.local()
        self.lock = threading.Lock()
        self.retries = 0
        self.attempt_errors: Counter[str] = Counter()

    def send(self, event_id: str, n: int) -> tuple[str, int | str, str | None, int]:
        """(event id, final status or error, run id, attempts): one event, retried like a webhook sender."""
        import requests

        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        body = json.dumps({"event_id": event_id, "n": n, "email": f"user{n}@example.com"}).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, event_id, timestamp, body),
        }
        outcome: int | str = "not sent"
        for attempt in range(1, CLIENT_ATTEMPTS + 1):
            if self.stop.is_set():
                return event_id, "stopped", None, attempt - 1
            try:
                response = session.post(self.url, data=body, headers=headers, timeout=CLIENT_TIMEOUT)
            except requests.RequestException as exc:
                response, outcome = None, type(exc).__name__
            if response is not None:
                outcome = response.status_code
                if 200 <= response.status_code < 300:
                    run_id = (response.json() or {}).get("run_id")
                    return event_id, response.status_code, run_id, attempt
                if response.status_code < 500:
                    return event_id, response.status_code, None, attempt  # a 4xx is not retried
            with self.lock:
                self.retries += 1
                self.attempt_errors[str(outcome)] += 1
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0) * random.uniform(0.5, 1.0))
        return event_id, outcome, None, CLIENT_ATTEMPTS


# -- faults --------------------------------------------------------------------------
class Stack:
    """web, worker and beat as the Procfile starts them (``make run``), on our port, database and broker."""

    def __init__(self, env: dict[str, str], web_port: int, redis: RedisServer | RabbitBroker, log_dir: Path) -> None:
        self.redis, self.web_port = redis, web_port
        env = {**env, "HOST": LOOPBACK, "PORT": str(web_port), "WEB_CONCURRENCY": "2"}
        web = procfile_command("web", env) or [
            str(BIN / "gunicorn"), "potaflow.wsgi:application", "--workers", "2", "--graceful-timeout", "10",
        ]  # fmt: skip
        if "--bind" not in web and not any(arg.startswith("--bind=") for arg in web):
            web += ["--bind", f"{LOOPBACK}:{web_port}"]
        for index, arg in enumerate(web):
            if arg == "--bind" or arg.startswith("--bind="):
                bind = web[index + 1] if arg == "--bind" else arg.split("=", 1)[1]
                ensure_loopback(f"http://{bind}", "the web process's --bind")
        worker = procfile_command("worker", env) or [str(BIN / "celery"), "-A", "potaflow", "worker", "-l", "info"]
        beat = procfile_command("beat", env) or [str(BIN / "celery"), "-A", "potaflow", "beat", "-l", "info"]
        self.web = Service("web", web, env, log_dir)
        self.worker = Service("worker", worker, env, log_dir)  # default concurrency (POTAFLOW_WORKER_CONCURRENCY)
        self.beat = Service("beat", beat, env, log_dir)

    def start_worker(self) -> None:
        self.worker.start()
        self.worker.wait_for_log(" ready.", READY_TIMEOUT)

    def stop(self) -> None:
        for service in (self.web, self.worker, self.beat):
            try:
                service.stop(timeout=5)
            except Exception:  # noqa: BLE001 - keep stopping the others
                traceback.print_exc()
        self.redis.stop()


def fault_plan(kills: int) -> list[str]:
    """Worker group kills interleaved with the other faults; the last fault is a worker kill."""
    others = ["pool-child", "web-worker", "broker-restart", "broker-flush"]
    plan = []
    for i in range(kills):
        plan.append("worker-group")
        if i < len(others):
            plan.append(others[i])
    if plan[-1] != "worker-group":
        plan.append("worker-group")  # fewer kills than other faults: still end on a kill
    return plan


def inject(kind: str, stack: Stack, recorder: Recorder, rng: random.Random) -> str:
    """Inject one fault; returns what was done. The fault's time is taken by the caller just before."""
    if kind == "worker-group":
        pid = stack.worker.pid
        stack.worker.kill_group()
        time.sleep(WORKER_PAUSE)
        t0 = time.monotonic()
        stack.start_worker()
        return f"SIGKILL worker group (pid {pid}), restarted, ready in {time.monotonic() - t0:.1f} s"
    if kind == "pool-child":
        children = children_of(stack.worker.pid)
        if not children:
            return "no pool child to kill"
        victim = rng.choice(children)
        os.kill(victim, signal.SIGKILL)
        return f"SIGKILL pool child {victim} of worker {stack.worker.pid}"
    if kind == "web-worker":
        children = children_of(stack.web.pid)
        if not children:
            return "no gunicorn worker to kill"
        busy = serving(children, stack.web_port)
        victim = rng.choice(busy or children)
        os.kill(victim, signal.SIGKILL)
        # sync workers hold a connection only while serving it; gthread ones also keep-alive idle ones
        state = "holding a client connection" if busy else "idle"
        return f"SIGKILL gunicorn worker {victim}, {state} (the master starts another)"
    if kind == "broker-restart":
        stack.redis.stop()
        time.sleep(BROKER_PAUSE)
        stack.redis.start()
        if isinstance(stack.redis, RabbitBroker):
            return f"rabbitmq-server stopped and started again on port {stack.redis.port} (quorum queues kept)"
        return f"redis-server stopped and started again on port {stack.redis.port} (no persistence: queue lost)"
    if kind == "broker-flush":
        stack.redis.flushall()
        if isinstance(stack.redis, RabbitBroker):
            return "both queues purged on the broker (every queued message lost)"
        return "FLUSHALL on the broker (every queued message lost)"
    if kind == "broker-blip":
        killed = stack.redis.kill_clients()
        return f"CLIENT KILL of {killed} broker connection(s); the broker keeps its data"
    raise ValueError(kind)


def run_faults(
    plan: list[str],
    stack: Stack,
    recorder: Recorder,
    rng: random.Random,
    start: float,
    window: float,
    stop: threading.Event,
    faults: list[dict[str, Any]],
) -> None:
    for index, kind in enumerate(plan):
        due = start + window * (index + 1) / (len(plan) + 1)
        while time.monotonic() < due and not stop.is_set():
            time.sleep(0.05)
        if stop.is_set():
            return
        # Land mid-call when possible: wait (bounded) for a step calling the recorder, or a webhook in flight.
        if kind in ("worker-group", "pool-child", "broker-blip"):
            busy = lambda: recorder.in_flight  # noqa: E731
        elif kind == "web-worker":
            busy = lambda: serving(children_of(stack.web.pid), stack.web_port)  # noqa: E731
        else:
            busy = lambda: 1  # noqa: E731
        deadline = time.monotonic() + 3
        while not busy() and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.005)
        at = time.time()
        try:
            what = inject(kind, stack, recorder, rng)
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next fault
            what = f"FAILED: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        faults.append({"kind": kind, "at": at, "what": what, "recorder_in_flight": recorder.in_flight})
        log(f"fault {index + 1}/{len(plan)} {kind}: {what}")


# -- main ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)  # noqa: S311 - chaos, not cryptography
    ensure_loopback(args.database_url, "--database-url")
    redis_port, web_port = free_port(), free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="potaflow-chaos-"))
    redis: RedisServer | RabbitBroker = (
        RabbitBroker(redis_port, log_dir) if args.broker == "amqp" else RedisServer(redis_port, log_dir)
    )
    ensure_loopback(redis.url, "broker URL")
    # INFO: the engine's dispatch/recovery lines land in the logs, for inspection.
    extra = {"POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": LOOPBACK, "LOG_LEVEL": "INFO", **args.extra_env}
    env = production_env(db_url=args.database_url, broker_url=redis.url, var_dir=log_dir / "var", extra=extra)
    os.environ.update(env)
    os.environ["LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background
    signal.signal(signal.SIGHUP, on_signal)

    stack: Stack | None = None
    recorder = Recorder(args.slow_fraction, args.slow_range, rng)
    recorder_url = recorder.url
    ensure_loopback(recorder_url, "recorder URL")
    fault_thread: threading.Thread | None = None
    started = time.monotonic()
    keep_logs = args.keep
    try:
        log(f"fresh database {redact(args.database_url)}, {args.broker} broker on port {redis_port}, logs in {log_dir}")
        fresh_database(args.database_url, required_prefix=DB_PREFIX)
        redis.start()
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        workflow, secret = create_workflow(recorder_url, flow=args.flow)
        webhook_url = f"http://{LOOPBACK}:{web_port}/hooks/{workflow.webhook_token}"
        ensure_loopback(webhook_url, "webhook URL")

        recorder.start()
        stack = Stack(env, web_port, redis, log_dir)
        for service in (stack.web, stack.worker, stack.beat):
            log(f"{service.name}: {' '.join([Path(service.argv[0]).name, *service.argv[1:]])}")
        stack.web.start()
        stack.beat.start()
        stack.start_worker()
        wait_healthy(f"http://{LOOPBACK}:{web_port}/healthz", stack)
        stack.beat.wait_for_log("beat: Starting...", READY_TIMEOUT)
        up = time.monotonic() - started
        log(f"stack up in {up:.1f} s; sending {args.events} events over ~{args.fault_window:g} s")

        plan = args.plan or fault_plan(args.kills)
        faults: list[dict[str, Any]] = []
        sender = Sender(webhook_url, secret, stop)
        tag = dt.datetime.now(dt.UTC).strftime("%H%M%S")
        send_start = time.monotonic()
        fault_thread = threading.Thread(
            target=run_faults,
            args=(plan, stack, recorder, rng, send_start, args.fault_window, stop, faults),
            name="faults",
            daemon=True,
        )
        fault_thread.start()
        sampler = QueueSampler(redis, stop)
        sampler.thread.start()
        results = send_all(args, sender, tag, send_start, stop)
        send_seconds = time.monotonic() - send_start
        fault_thread.join(timeout=READY_TIMEOUT * 2 + args.fault_window)
        if fault_thread.is_alive():
            stop.set()
            raise RuntimeError("the fault injector did not finish in time")
        if not stack.worker.alive:
            stack.start_worker()  # never leave the stack without a worker
        log(f"sent in {send_seconds:.1f} s; {len(faults)} faults; waiting up to {args.settle_timeout:g} s to settle")

        accepted = {e: run_id for e, status, run_id, _ in results if isinstance(status, int) and 200 <= status < 300}
        last_fault = max((f["at"] for f in faults), default=time.time())
        settled, settle_wait = wait_settled(workflow, accepted, args.settle_timeout, last_fault)
        time.sleep(3)  # late deliveries (a superseded attempt still calling) are counted too
        report = build_report(
            args,
            workflow,
            results,
            accepted,
            faults,
            recorder,
            sender,
            last_fault,
            settled,
            settle_wait,
            send_seconds,
            log_dir=log_dir,
            queue_peak=sampler.peak if sampler.samples else None,
        )
        print_report(report)
        keep_logs = keep_logs or report["lost"] > 0 or report["duplicate_effects"] > 0
        if args.check and (report["lost"] > 0 or report["duplicate_effects"] > 0):
            return 1
        return 0
    finally:
        stop.set()
        if fault_thread is not None:
            fault_thread.join(timeout=READY_TIMEOUT + 10)  # it may be restarting the worker
        if stack is not None:
            stack.stop()
        else:
            redis.stop()
        if recorder.thread.is_alive():
            recorder.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception as exc:  # noqa: BLE001 - Django may not be set up yet
            log(f"closing database connections: {type(exc).__name__}")
        if args.keep:
            log(f"kept database {redact(args.database_url)} and logs in {log_dir}")
        else:
            drop_database(args.database_url, required_prefix=DB_PREFIX)
            if keep_logs:
                log(f"logs kept in {log_dir}")
            else:
                import shutil

                shutil.rmtree(log_dir, ignore_errors=True)


def effect_ids(event_id: str, *, flow: bool) -> list[str]:
    """The effects a succeeded run of this event must have applied: one, or one per loop item."""
    return [f"{event_id}#{i}" for i in range(FLOW_ITEMS)] if flow else [event_id]


def create_workflow(recorder_url: str, *, flow: bool = False) -> tuple[Any, str]:
    from accounts.models import User
    from accounts.services import organization_create
    from workflows.services import workflow_create

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    owner = User.objects.create_user(email="chaos@example.com", password=None)
    organization = organization_create(name="chaos", owner=owner)
    if flow:
        workflow = workflow_create(
            organization=organization,
            name="chaos: webhook -> branch -> for_each (parallel 2) -> http.request",
            trigger_type="webhook",
            webhook_secret=secret,
            steps=benchlib.flow_steps(recorder_url, effect="{{ trigger.body.event_id }}#{{ index }}"),
        )
        return workflow, secret
    workflow = workflow_create(
        organization=organization,
        name="chaos: webhook -> transform -> http.request",
        trigger_type="webhook",
        webhook_secret=secret,
        steps=[
            {
                "key": "shape",
                "action_type": "transform",
                "config": {"value": {"event_id": "{{ trigger.body.event_id }}", "n2": "{{ trigger.body.n * 2 }}"}},
            },
            {
                "key": "deliver",
                "action_type": "http.request",
                "config": {
                    "method": "POST",
                    "url": recorder_url,
                    "body_type": "json",
                    "body": {"event_id": "{{ steps.shape.output.event_id }}", "n2": "{{ steps.shape.output.n2 }}"},
                },
            },
        ],
    )
    return workflow, secret


def wait_healthy(url: str, stack: Stack) -> None:
    import requests

    def healthy() -> bool:
        if not stack.web.alive:
            raise RuntimeError(f"gunicorn exited:\n{stack.web.log()[-3000:]}")
        try:
            return requests.get(url, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    from stack import wait_until

    wait_until(healthy, timeout=READY_TIMEOUT, what="web /healthz", interval=0.3)


def send_all(args: argparse.Namespace, sender: Sender, tag: str, start: float, stop: threading.Event) -> list[tuple]:
    """Every event once (plus the sender's retries), paced evenly over the fault window."""
    spacing = args.fault_window / args.events

    def paced(i: int) -> tuple:
        due = start + i * spacing
        while not stop.is_set() and (left := due - time.monotonic()) > 0:
            time.sleep(min(0.05, left))
        return sender.send(f"evt_{tag}_{i:05d}", i)

    results = []
    deadline = start + args.fault_window + 300  # generous, yet bounded
    with ThreadPoolExecutor(args.concurrency, thread_name_prefix="sender") as pool:
        futures = [pool.submit(paced, i) for i in range(args.events)]
        try:
            for future in as_completed(futures, timeout=max(1.0, deadline - time.monotonic())):
                results.append(future.result())
        except TimeoutError:
            stop.set()
            log("sending did not finish in time; the rest is abandoned")
        finally:
            if len(results) < len(futures):  # interrupted or out of time: the threads give up
                stop.set()
                for future in futures:
                    future.cancel()
    return results


class QueueSampler:
    """The broker's step queues (default + recovery), sampled every half second: the peak backlog."""

    def __init__(self, redis: RedisServer | RabbitBroker, stop: threading.Event) -> None:
        self.redis, self.stop, self.peak, self.samples = redis, stop, 0, 0
        self.thread = threading.Thread(target=self._run, name="queue-sampler", daemon=True)

    def _run(self) -> None:
        if isinstance(self.redis, RabbitBroker):
            return
        import redis as redis_client

        client = redis_client.Redis.from_url(self.redis.url, socket_timeout=1)
        while not self.stop.wait(0.5):
            try:
                length = sum(client.llen(q) for q in ("celery", "potaflow.recovery"))
            except redis_client.RedisError:
                continue  # the broker is down (a fault)
            self.peak, self.samples = max(self.peak, length), self.samples + 1


LOG_COUNTS = {
    "resends_lost_message": "recovering stalled run",
    "resends_lapsed_lease": "lease lapsed (worker lost)",
    "deferrals_republished": "deferred",
    "parked": "parked: its organization",
    "parked_woken": "a parked step is sent",
    "duplicate_messages_dropped": "dropping duplicate message",
}


def count_log_lines(log_dir: Path) -> dict[str, int]:
    """What the workers did, from their logs (every start of the worker: worker-N.log)."""
    counts = dict.fromkeys(LOG_COUNTS, 0)
    resent: set[str] = set()
    dropped: set[str] = set()
    for path in sorted(log_dir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            for name, needle in LOG_COUNTS.items():
                if needle in line:
                    counts[name] += 1
            if "recovering stalled run " in line:
                resent.add(line.split("recovering stalled run ", 1)[1][:36])
            elif "dropping duplicate message for run " in line:
                dropped.add(line.split("dropping duplicate message for run ", 1)[1][:36])
    # A lost-message re-send whose run later dropped a duplicate: its first message was not lost after all.
    counts["resent_runs_with_a_duplicate_dropped"] = len(resent & dropped)
    return counts


def retry_after_loss(faults: list[dict[str, Any]]) -> list[float]:
    """Seconds from the kill that lost an attempt to the next attempt of its step (in doubt, worker lost)."""
    from django.db import connection

    kills = sorted(f["at"] for f in faults if f["kind"] in ("worker-group", "pool-child"))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT a.started_at, b.started_at FROM workflows_stepattempt AS a
              JOIN workflows_stepattempt AS b ON b.step_run_id = a.step_run_id AND b.number = a.number + 1
             WHERE a.outcome IN ('in_doubt', 'worker_lost', 'timed_out')
            """
        )
        rows = cursor.fetchall()
    delays = []
    for lost_started, next_started in rows:
        kill = max((k for k in kills if lost_started.timestamp() <= k <= next_started.timestamp()), default=None)
        if kill is not None:
            delays.append(round(next_started.timestamp() - kill, 1))
    return sorted(delays)


def wait_settled(workflow: Any, accepted: dict[str, Any], timeout: float, last_fault: float) -> tuple[bool, float]:
    """Poll until no accepted run is queued/running (bounded); returns (settled, seconds waited)."""
    from workflows.models import Run

    t0 = time.monotonic()
    next_note = t0 + 15
    keys = list(accepted)
    while True:
        final = Run.objects.filter(workflow=workflow, idempotency_key__in=keys, status__in=FINAL_STATUSES).count()
        if final >= len(keys):
            return True, time.monotonic() - t0
        now = time.monotonic()
        if now - t0 > timeout:
            return False, now - t0
        if now >= next_note:
            since = time.time() - last_fault
            log(f"{len(keys) - final} accepted run(s) not final yet, {since:.0f} s after the last fault")
            next_note = now + 15
        time.sleep(1)


def build_report(
    args: argparse.Namespace,
    workflow: Any,
    results: list[tuple],
    accepted: dict[str, Any],
    faults: list[dict[str, Any]],
    recorder: Recorder,
    sender: Sender,
    last_fault: float,
    settled: bool,
    settle_wait: float,
    send_seconds: float,
    log_dir: Path | None = None,
    queue_peak: int | None = None,
) -> dict[str, Any]:
    from django.db import connection
    from django.db.models import Max

    from workflows.models import Run, StepRun

    runs = Run.objects.filter(workflow=workflow)
    by_status = dict(Counter(runs.values_list("status", flat=True)))
    accepted_runs = dict(runs.filter(idempotency_key__in=list(accepted)).values_list("idempotency_key", "status"))
    lost = sorted(e for e in accepted if accepted_runs.get(e) not in FINAL_STATUSES)
    last_finish = runs.aggregate(last=Max("finished_at"))["last"]
    settle_after_fault = round(max(0.0, last_finish.timestamp() - last_fault), 1) if settled and last_finish else None

    with recorder.lock:
        applied = dict(recorder.applied)
        raw, repeats, with_key = recorder.raw, recorder.repeats, recorder.with_key
    duplicates = {e: n for e, n in applied.items() if n > 1}
    succeeded = {e for e, status in accepted_runs.items() if status == "succeeded"}
    missing = sorted(e for e in succeeded if any(x not in applied for x in effect_ids(e, flow=args.flow)))

    attempts = None
    if "workflows_stepattempt" in connection.introspection.table_names():
        with connection.cursor() as cursor:
            cursor.execute("SELECT outcome, count(*) FROM workflows_stepattempt GROUP BY outcome ORDER BY outcome")
            attempts = {outcome or "open": count for outcome, count in cursor.fetchall()}
    step_attempts = Counter(StepRun.objects.filter(run__workflow=workflow).values_list("attempts", flat=True))

    failures = []
    for run in runs.exclude(status="succeeded").order_by("created_at")[:50]:
        steps = "; ".join(
            f"{s.key}={s.status}/{s.attempts}" + (f" ({s.error[:120]})" if s.error else "")
            for s in run.step_runs.order_by("position")
        )
        failures.append(
            {
                "event": run.idempotency_key,
                "status": run.status,
                "dead_lettered": run.dead_lettered,
                "error": run.error[:300],
                "steps": steps,
            }
        )
    statuses = Counter(str(status) for _, status, _, _ in results)
    dispatch_counts = count_log_lines(log_dir) if log_dir is not None else {}
    retry_delays = retry_after_loss(faults) if attempts is not None else []
    return {
        "chaos": 1,
        "broker": args.broker,
        "flow": args.flow,
        "events": args.events,
        "sent": len(results),
        "accepted": len(accepted),
        "client_final_statuses": dict(statuses),
        "client_retries": sender.retries,
        "client_retry_causes": dict(sender.attempt_errors),
        "runs_total": runs.count(),
        "runs_by_status": by_status,
        "effects_applied_once": sum(1 for n in applied.values() if n == 1),
        "raw_deliveries": raw,
        "deliveries_with_idempotency_key": with_key,
        "duplicate_effects": len(duplicates),
        "duplicate_effect_extra_applications": sum(n - 1 for n in duplicates.values()),
        "repeats_absorbed_by_key": repeats,
        "succeeded_without_effect": len(missing),
        "lost": len(lost),
        "lost_events": lost[:20],
        "settled": settled,
        "settle_after_last_fault_s": settle_after_fault,
        "settle_wait_after_sending_s": round(settle_wait, 1),
        "send_seconds": round(send_seconds, 1),
        "faults": [{"kind": f["kind"], "t_s": round(f["at"] - faults[0]["at"], 1), "what": f["what"]} for f in faults],
        "attempts_by_outcome": attempts,
        "dispatch": dispatch_counts,
        "queue_peak": queue_peak,
        "retry_after_kill_s": retry_delays,
        "lease_seconds": int(os.environ.get("POTAFLOW_STEP_LEASE_SECONDS", "15")),
        "step_runs_by_attempts": {str(k): v for k, v in sorted(step_attempts.items())},
        "not_succeeded": failures,
        "conditions": {
            "cpu_cores": os.cpu_count(),
            "client_threads": args.concurrency,
            "fault_window_s": args.fault_window,
            "worker_kills": args.kills,
            "slow_fraction": args.slow_fraction,
            "slow_seconds": args.slow_seconds,
            "gunicorn_workers": 2,
            "celery_concurrency": int(
                args.extra_env.get("POTAFLOW_WORKER_CONCURRENCY", worker_pool().DEFAULT_CONCURRENCY)
            ),
            "database": redact(args.database_url),
            "env_overrides": args.extra_env,
        },
    }


def _resends(report: dict[str, Any]) -> str:
    d = report["dispatch"]
    return (
        f"{d.get('resends_lost_message')} / {d.get('resends_lapsed_lease')} "
        f"({d.get('resent_runs_with_a_duplicate_dropped')} re-sent runs also dropped a duplicate)"
    )


def _deferrals(report: dict[str, Any]) -> str:
    d = report["dispatch"]
    return f"{d.get('deferrals_republished')} / {d.get('parked')} (woken {d.get('parked_woken')})"


def _retry_delays(report: dict[str, Any]) -> str:
    delays = report["retry_after_kill_s"]
    if not delays:
        return "none"
    return f"max {max(delays)} s (lease {report['lease_seconds']} s): {delays}"


def print_report(report: dict[str, Any]) -> None:
    settle = report["settle_after_last_fault_s"]
    rows = [
        ("events sent / accepted (2xx)", f"{report['sent']} / {report['accepted']}"),
        ("client final statuses", report["client_final_statuses"]),
        ("client retries (same webhook-id)", f"{report['client_retries']} {report['client_retry_causes']}"),
        ("runs by status", report["runs_by_status"]),
        ("effects applied once", report["effects_applied_once"]),
        ("raw deliveries to the recorder", report["raw_deliveries"]),
        ("  of which with Idempotency-Key", report["deliveries_with_idempotency_key"]),
        (
            "DUPLICATE EFFECTS (events)",
            f"{report['duplicate_effects']} (+{report['duplicate_effect_extra_applications']} extra applications)",
        ),
        ("repeats absorbed by the key", report["repeats_absorbed_by_key"]),
        ("succeeded runs without effect", report["succeeded_without_effect"]),
        ("LOST (accepted, never final)", report["lost"]),
        ("time to settle after last fault", f"{settle} s" if settle is not None else "did not settle"),
        ("waited after sending", f"{report['settle_wait_after_sending_s']} s"),
        ("step attempts by outcome", report["attempts_by_outcome"] or "no workflows_stepattempt table"),
        ("step runs by attempt count", report["step_runs_by_attempts"]),
        ("re-sends (lost message / lapsed lease)", _resends(report)),
        ("deferrals re-published / parked", _deferrals(report)),
        ("duplicate messages dropped", report["dispatch"].get("duplicate_messages_dropped")),
        ("broker queue peak (sampled)", report["queue_peak"]),
        ("lost attempt retried after its kill", _retry_delays(report)),
    ]
    print()
    print("faults:")
    for fault in report["faults"]:
        print(f"  +{fault['t_s']:>6.1f} s  {fault['kind']:<15} {fault['what']}")
    print()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if report["not_succeeded"]:
        print()
        print(f"runs not succeeded (first {len(report['not_succeeded'])}):")
        for run in report["not_succeeded"]:
            flag = " dead-lettered" if run["dead_lettered"] else ""
            print(f"  {run['event']}: {run['status']}{flag} {run['error']!r} [{run['steps']}]")
    if report["lost_events"]:
        print(f"lost events (first {len(report['lost_events'])}): {', '.join(report['lost_events'])}")
    print()
    print(json.dumps({k: v for k, v in report.items() if k != "not_succeeded"}, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything was stopped on the way out
        sys.exit(130)
