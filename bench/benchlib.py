"""What the performance scripts share (a helper module, not a benchmark).

A ``BenchStack`` is PotaFlow as ``make run`` starts it (the Procfile's web,
worker and beat commands, gunicorn.conf.py) on a fresh PostgreSQL database
(name starting ``potaflow_bench``) and a ``redis-server`` of its own, all on
loopback; plus a fast keep-alive HTTP sink standing for a third-party API, the
workflows the scripts use, ``wrk`` discovery and one-JSON-line reporting.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stack import (  # noqa: E402
    BASE_DIR,
    BIN,
    LOOPBACK,
    RedisServer,
    Service,
    children_of,
    ensure_loopback,
    free_port,
    fresh_database,
    percentile,
    procfile_command,
    production_env,
    redact,
    rss_mb,
    wait_until,
)

DB_PREFIX = "potaflow_bench"
DEFAULT_DB = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/potaflow_bench")
READY_TIMEOUT = 90
FINAL = ("succeeded", "failed", "filtered", "cancelled")

__all__ = [
    "BASE_DIR",
    "BIN",
    "LOOPBACK",
    "BenchStack",
    "Sink",
    "children_of",
    "emit",
    "machine",
    "percentile",
    "rss_mb",
    "sign",
    "wait_until",
    "wrk_path",
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "load_1m_at_start": round(load[0], 2), "shared": True}


def emit(bench: str, figure: str, value: Any, unit: str = "", target: str = "", **extra: Any) -> None:
    """One JSON line per figure (stdout)."""
    line = {"bench": bench, "figure": figure, "value": value, "unit": unit, "target": target, **extra}
    print(json.dumps(line, default=str), flush=True)


def table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(fmt.format(*[str(c) for c in row]))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: installing the Debian package (running as root)")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)  # noqa: S607
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit("wrk is not installed: `sudo apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk`")


ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class Sink:
    """A keep-alive HTTP/1.1 server on loopback answering every POST with a small JSON (a fast API)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per answer and no Nagle delay (else 40 ms stalls against delayed ACKs).
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.wfile.write(ANSWER)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/sink"
        self.thread = threading.Thread(target=self.server.serve_forever, name="sink", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BenchStack:
    """Fresh database + own redis-server + migrations; web/worker/beat as the Procfile starts them."""

    def __init__(self, database_url: str = DEFAULT_DB, extra_env: dict[str, str] | None = None) -> None:
        ensure_loopback(database_url, "database URL")
        name = database_url.rsplit("/", 1)[-1]
        if not name.startswith(DB_PREFIX):
            sys.exit(f"the bench database's name must start with {DB_PREFIX!r} (it is dropped), not {name!r}")
        self.database_url = database_url
        self.log_dir = Path(tempfile.mkdtemp(prefix="potaflow-bench-"))
        self.redis = RedisServer(free_port(), self.log_dir)
        self.web_port = free_port()
        extra = {
            "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": LOOPBACK,
            "POTAFLOW_WEBHOOK_RATE": "off",
            "HOST": LOOPBACK,
            "PORT": str(self.web_port),
            **(extra_env or {}),
        }
        self.env = production_env(
            db_url=database_url, broker_url=self.redis.url, var_dir=self.log_dir / "var", extra=extra
        )
        self.services: dict[str, Service] = {}
        self._stopped = False
        atexit.register(self.stop)

        def on_signal(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGHUP, on_signal)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.web_port}"

    def setup(self) -> None:
        """Database, redis, Django in this process (migrated)."""
        log(f"fresh database {redact(self.database_url)}, redis-server on {self.redis.url}, logs in {self.log_dir}")
        fresh_database(self.database_url, required_prefix=DB_PREFIX)
        for attempt in range(3):  # a free port can be taken by another process before redis binds it
            try:
                self.redis.start()
                break
            except RuntimeError:
                self.redis.stop()
                if attempt == 2:
                    raise
                self.redis = RedisServer(free_port(), self.log_dir)
                self.env["CELERY_BROKER_URL"] = self.redis.url
        os.environ.update(self.env)
        os.environ["LOG_LEVEL"] = "WARNING"
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)

    def command(self, kind: str) -> list[str]:
        argv = procfile_command(kind, self.env)
        if argv is None:
            argv = {
                "web": [str(BIN / "gunicorn"), "potaflow.wsgi:application", "--config", "gunicorn.conf.py"],
                "worker": [str(BIN / "celery"), "-A", "potaflow", "worker", "-l", "info"],
                "beat": [str(BIN / "celery"), "-A", "potaflow", "beat", "-l", "info"],
            }[kind]
        return argv

    def start(
        self, kind: str, argv: list[str] | None = None, name: str | None = None, env: dict[str, str] | None = None
    ) -> Service:
        name = name or kind
        service = Service(name, argv or self.command(kind), env or self.env, self.log_dir).start()
        self.services[name] = service
        if kind == "web":
            self.wait_http(service)
        elif kind == "worker":
            service.wait_for_log(" ready.", READY_TIMEOUT)
        elif kind == "beat":
            service.wait_for_log("beat: Starting...", READY_TIMEOUT)
        return service

    def wait_http(self, service: Service, path: str = "/healthz") -> None:
        import requests

        def up() -> bool:
            if not service.alive:
                raise RuntimeError(f"{service.name} exited:\n{service.log()[-3000:]}")
            try:
                return requests.get(self.base_url + path, timeout=5).status_code < 500
            except requests.RequestException:
                return False

        wait_until(up, timeout=READY_TIMEOUT, what=f"{service.name} {path}", interval=0.3)

    def stop_service(self, name: str) -> None:
        service = self.services.pop(name, None)
        if service is not None:
            service.stop(timeout=10)

    def rss(self) -> dict[str, float]:
        return {name: round(rss_mb(s.pid), 1) for name, s in self.services.items() if s.alive}

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for name in list(self.services):
            try:
                self.stop_service(name)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log(f"stopping {name}: {exc}")
        try:
            self.redis.stop()
        except Exception as exc:  # noqa: BLE001
            log(f"stopping redis: {exc}")


def create_org(email: str = "bench@example.com") -> Any:
    from accounts.models import User
    from accounts.services import organization_create

    owner = User.objects.create_user(email=email, password=None)
    return organization_create(name="bench", owner=owner)


def one_step_steps(sink_url: str) -> list[dict[str, Any]]:
    return [
        {
            "key": "deliver",
            "action_type": "http.request",
            "config": {"method": "POST", "url": sink_url, "body_type": "json", "body": {"n": "{{ trigger.body.n }}"}},
        }
    ]


def five_step_steps(sink_url: str) -> list[dict[str, Any]]:
    return [
        {"key": "shape", "action_type": "transform", "config": {"value": {"n2": "{{ trigger.body.n * 2 }}"}}},
        {"key": "gate", "action_type": "filter", "config": {"condition": "{{ steps.shape.output.n2 >= 0 }}"}},
        {
            "key": "first",
            "action_type": "http.request",
            "config": {"method": "POST", "url": sink_url, "body_type": "json", "body": {"n": "{{ trigger.body.n }}"}},
        },
        {"key": "again", "action_type": "transform", "config": {"value": {"status": "{{ steps.first.status }}"}}},
        {
            "key": "second",
            "action_type": "http.request",
            "config": {"method": "POST", "url": sink_url, "body_type": "json", "body": {"n": "{{ trigger.body.n }}"}},
        },
    ]


def five_step_local_steps(sink_url: str) -> list[dict[str, Any]]:
    """Issue 19's 5-step run: 3 transforms and a filter (nothing leaves the process), then one http."""
    return [
        {"key": "shape", "action_type": "transform", "config": {"value": {"n2": "{{ trigger.body.n * 2 }}"}}},
        {"key": "more", "action_type": "transform", "config": {"value": {"n3": "{{ steps.shape.output.n2 + 1 }}"}}},
        {"key": "label", "action_type": "transform", "config": {"value": {"email": "{{ trigger.body.email }}"}}},
        {"key": "gate", "action_type": "filter", "config": {"condition": "{{ steps.more.output.n3 > 0 }}"}},
        {
            "key": "deliver",
            "action_type": "http.request",
            "config": {"method": "POST", "url": sink_url, "body_type": "json", "body": {"n": "{{ trigger.body.n }}"}},
        },
    ]


FLOW_ITEMS = 5


def flow_steps(sink_url: str, effect: str = "{{ trigger.body.n }}#{{ index }}") -> list[dict[str, Any]]:
    """Issue 19's flow: branch (even/odd, a transform on each path) -> for_each of FLOW_ITEMS items, parallel 2 -> http.

    Each iteration posts its own effect (``effect``, e.g. ``<event>#<index>``) with its own idempotency key
    (run + path). The chaos plan ``--flow`` and ``execution.py --only flow`` run this definition.
    """
    tag = {"key": "tag_{0}", "action_type": "transform", "config": {"value": {"side": "{0}"}}}
    return [
        {
            "key": "side",
            "action_type": "branch",
            "config": {
                "paths": [
                    {
                        "name": "even",
                        "when": "{{ trigger.body.n % 2 == 0 }}",
                        "steps": [json.loads(json.dumps(tag).replace("{0}", "even"))],
                    }
                ],
                "otherwise": [json.loads(json.dumps(tag).replace("{0}", "odd"))],
            },
        },
        {
            "key": "items",
            "action_type": "for_each",
            "config": {
                "items": "{{ " + str(list(range(FLOW_ITEMS))) + " }}",
                "parallel": 2,
                "steps": [
                    {
                        "key": "deliver",
                        "action_type": "http.request",
                        "config": {
                            "method": "POST",
                            "url": sink_url,
                            "body_type": "json",
                            "body": {"event_id": effect, "n": "{{ item }}"},
                        },
                    }
                ],
            },
        },
    ]


def create_workflow(organization: Any, name: str, steps: list[dict[str, Any]], secret: str = "") -> Any:
    from workflows.services import workflow_create

    return workflow_create(
        organization=organization, name=name, trigger_type="webhook", webhook_secret=secret, steps=steps
    )


def event_body(n: int, size: int = 1024) -> dict[str, Any]:
    """A JSON event of about ``size`` bytes."""
    base = {"n": n, "type": "order.created", "email": f"user{n}@example.com", "items": []}
    filler = max(0, size - len(json.dumps(base)) - 16)
    base["note"] = "x" * filler
    return base
