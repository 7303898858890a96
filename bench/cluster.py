"""Cluster run: PotaFlow spread over hosts (Linux network namespaces), driven through faults.

Hosts, each its own network namespace and address on one bridge (the bridge
lives in a namespace of its own; this script's own namespace gets one address
on it to steer and to read the database):

    db        PostgreSQL (an instance of its own, initdb'd in a temporary folder),
              PgBouncer in transaction pooling in front of it, and the broker:
              redis-server or rabbitmq-server (a node of its own), per --broker
    proxy     nginx with deploy/nginx/potaflow.conf, verbatim
    web1 web2 gunicorn (gunicorn.conf.py), behind the proxy
    worker1-3 celery worker
    beat1 beat2  celery beat; one leads (the lease row), the other stands by
    recorder  the third-party API: counts effects per event; Idempotency-Key
              repeats are counted, not applied (as Stripe does)
    sender    signed webhooks (Standard Webhooks) at a steady rate through the
              proxy, each retried with the same webhook-id on errors and 5xx

Every PotaFlow process reaches the database through PgBouncer
(POTAFLOW_PGBOUNCER=true). While webhooks flow, the faults (each a step, with
its figures) are: a worker host killed whole mid-call (every process, its link
down: no goodbye); a worker host cut from the database and the broker by a
firewall rule in its namespace for --cut-seconds while a step's call is in
flight, then healed; a web host killed (the proxy routes around it); a rolling
restart of every web and worker host; the leading beat host killed (the
standby takes over; no schedule minute fires twice or is skipped). Then it
waits until every accepted run is final and prints a table and, last, one
JSON line: accepted, lost, duplicate_effects, settle_s, sender_5xx,
double_fired, skipped_firings and the per-fault figures.

--throughput instead measures runs/s draining a backlog with 1, 2 and 3
worker hosts, and the CPU seconds per run they used.

Needs root (namespaces, veth, iptables), and Debian's postgresql, pgbouncer,
nginx, redis-server / rabbitmq-server, iptables. Bounded: every wait has a
limit, the whole run has --max-seconds, and everything it started -- processes
(by their ids), namespaces, links -- is removed on exit, Ctrl-C included.
Traffic stays on the bridge between the namespaces this script creates.

    sudo .venv/bin/python bench/cluster.py --quick --broker redis
    sudo .venv/bin/python bench/cluster.py --broker amqp
    sudo .venv/bin/python bench/cluster.py --throughput
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(BASE_DIR / "bench"))

BIN = Path(sys.executable).parent
STATE_DIR = Path(tempfile.gettempdir())
STATE_GLOB = "potaflow-cluster-*.json"
FINAL = ("succeeded", "failed", "filtered", "cancelled")
WEB_PORT, RECORDER_PORT, PROXY_PORT, PGBOUNCER_PORT = 8000, 8080, 80, 6432
SCHEDULES = 3  # schedule workflows, every minute
READY_TIMEOUT = 120.0
FAIL_TIMEOUT = 5  # deploy/nginx/potaflow-upstream.conf's fail_timeout


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - our own commands
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    if not quiet and result.returncode != 0:
        log(f"(ignored) {' '.join(argv)}: {result.stderr.strip()}")
    return result


# -- the network: namespaces on a bridge ------------------------------------------------
class Network:
    """Namespaces ``pfc-<tag>-<host>`` on a bridge in ``pfc-<tag>-sw``; this namespace is ``.1``."""

    def __init__(self, tag: str, subnet: str) -> None:
        self.tag, self.subnet = tag, subnet  # subnet: "10.250.7" (a /24)
        self.switch = f"pfc-{tag}-sw"
        self.hosts: dict[str, str] = {}  # name -> address
        self.links: dict[str, str] = {}  # name -> the host's veth end in the switch namespace
        self.index = 1
        self.ctl_link = f"pc{tag}c"

    def ns(self, host: str) -> str:
        return f"pfc-{self.tag}-{host}"

    def prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def create(self) -> None:
        run("ip", "netns", "add", self.switch)
        run("ip", "netns", "exec", self.switch, "ip", "link", "add", "br0", "type", "bridge")
        run("ip", "netns", "exec", self.switch, "ip", "link", "set", "br0", "up")
        run("ip", "netns", "exec", self.switch, "ip", "link", "set", "lo", "up")
        # This (the steering) namespace: one address on the bridge, a route to the /24 only.
        peer = f"pc{self.tag}s"
        run("ip", "link", "add", self.ctl_link, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", peer, "netns", self.switch)
        run("ip", "netns", "exec", self.switch, "ip", "link", "set", peer, "master", "br0", "up")
        run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.ctl_link)
        run("ip", "link", "set", self.ctl_link, "up")

    def add_host(self, name: str, last_octet: int) -> str:
        address = f"{self.subnet}.{last_octet}"
        ns = self.ns(name)
        host_end, switch_end = f"pc{self.tag}h{self.index}", f"pc{self.tag}w{self.index}"
        self.index += 1
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", switch_end)
        run("ip", "link", "set", host_end, "netns", ns)
        run("ip", "link", "set", switch_end, "netns", self.switch)
        run("ip", "netns", "exec", self.switch, "ip", "link", "set", switch_end, "master", "br0", "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", host_end, "name", "eth0")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        self.hosts[name], self.links[name] = address, switch_end
        return address

    def link(self, host: str, up: bool) -> None:
        """The host's cable: down is a host that vanished (no RST, no FIN), up brings it back."""
        run("ip", "netns", "exec", self.switch, "ip", "link", "set", self.links[host], "up" if up else "down")

    def firewall(self, host: str, peer: str, cut: bool) -> None:
        """Drop (or stop dropping) everything between ``host`` and ``peer``, in ``host``'s namespace."""
        action = "-I" if cut else "-D"
        address = self.hosts[peer]
        run(*self.prefix(host), "iptables", action, "OUTPUT", "-d", address, "-j", "DROP")
        run(*self.prefix(host), "iptables", action, "INPUT", "-s", address, "-j", "DROP")

    def namespaces(self) -> list[str]:
        return [self.ns(h) for h in self.hosts] + [self.switch]

    def destroy(self) -> None:
        for ns in self.namespaces():
            kill_namespace_processes(ns)
        for ns in self.namespaces():
            run("ip", "netns", "del", ns, check=False, quiet=True)
        run("ip", "link", "del", self.ctl_link, check=False, quiet=True)


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL, by id, every process still in namespace ``ns`` (ours: nothing else runs there)."""
    pids = run("ip", "netns", "pids", ns, check=False, quiet=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def clean_stale_runs() -> None:
    """Namespaces of an earlier run whose script died without cleaning up (its state file says which)."""
    for state in STATE_DIR.glob(STATE_GLOB):
        try:
            data = json.loads(state.read_text())
            os.kill(int(data["pid"]), 0)
            continue  # still running: not ours to touch
        except ProcessLookupError:
            pass
        except (OSError, ValueError, KeyError):
            continue
        log(f"cleaning up after an earlier run (pid {data['pid']} is gone): {data['namespaces']}")
        for ns in data["namespaces"]:
            kill_namespace_processes(ns)
            run("ip", "netns", "del", ns, check=False, quiet=True)
        run("ip", "link", "del", data.get("ctl_link", ""), check=False, quiet=True)
        state.unlink(missing_ok=True)


def free_subnet() -> str:
    routes = run("ip", "-4", "route", "show").stdout + run("ip", "-4", "addr", "show").stdout
    for _ in range(50):
        subnet = f"10.250.{random.randint(1, 254)}"  # noqa: S311 - not cryptography
        if f"{subnet}." not in routes:
            return subnet
    raise RuntimeError("no free 10.250.x.0/24 for the cluster's bridge")


# -- processes on hosts --------------------------------------------------------------------
class HostProcess:
    """One server on one host: in its namespace, with the host's name (own UTS namespace), own group."""

    def __init__(self, net: Network, host: str, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.net, self.host, self.name, self.argv, self.env, self.log_dir = net, host, name, argv, env, log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path = log_dir / f"{name}.log"

    def start(self) -> HostProcess:
        self.starts += 1
        with self.log_path.open("ab") as out:
            out.write(f"\n===== start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            self.proc = subprocess.Popen(  # noqa: S603 - our own executables
                [*self.net.prefix(self.host), "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                 self.host, *self.argv],
                cwd=BASE_DIR, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def last_start_log(self) -> str:
        return self.log().rsplit("===== start", 1)[-1]

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the server (a graceful stop), SIGKILL to its group after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def cpu_seconds(self) -> float:
        return host_cpu_seconds(self.net, self.host)


def host_cpu_seconds(net: Network, host: str) -> float:
    """User + system CPU of every process now in ``host``'s namespace (and of their reaped children)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in run("ip", "netns", "pids", net.ns(host), check=False, quiet=True).stdout.split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


class HostDied(RuntimeError):  # noqa: N818 - reads as a state
    """A server exited while we waited for it to be ready."""


def wait_until(predicate, timeout: float, what: str, interval: float = 0.3) -> float:  # noqa: ANN001
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except HostDied:
            raise
        except Exception:  # noqa: BLE001, S110 - not yet
            pass
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def http_get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own hosts
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- roles run inside a host: the recorder and the sender ----------------------------------
def role_recorder(args: argparse.Namespace) -> int:
    lock = threading.Lock()
    state: dict[str, Any] = {"raw": 0, "with_key": 0, "repeats": 0, "in_flight": Counter(), "by_source": Counter()}
    keys: dict[str, str] = {}
    applied: Counter[str] = Counter()
    rng = random.Random(args.seed)  # noqa: S311
    slow = float(args.slow_fraction)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with lock:
                body = {**{k: v for k, v in state.items() if not isinstance(v, Counter)},
                        "in_flight": dict(state["in_flight"]), "by_source": dict(state["by_source"]),
                        "applied": dict(applied)}  # fmt: skip
            self._answer(200, body)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                event = str(json.loads(raw).get("event_id", ""))
            except (ValueError, AttributeError):
                event = ""
            key = self.headers.get("Idempotency-Key")
            source = self.client_address[0]
            with lock:
                state["raw"] += 1
                state["by_source"][source] += 1
                state["in_flight"][source] += 1
                if key:
                    state["with_key"] += 1
                if key and key in keys:
                    state["repeats"] += 1
                    done = False
                else:
                    if key:
                        keys[key] = event
                    applied[event] += 1
                    done = True
                delay = rng.uniform(0.5, 2.0) if rng.random() < slow else 0.0
            try:
                if delay:
                    time.sleep(delay)  # the effect is applied: a cut or a kill now loses only the answer
                self._answer(200, {"event_id": event, "applied": done})
            except OSError:
                pass
            finally:
                with lock:
                    state["in_flight"][source] -= 1

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", RECORDER_PORT), Handler)  # noqa: S104 - inside its own namespace
    server.daemon_threads = True
    deadline = time.monotonic() + args.max_seconds
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while time.monotonic() < deadline:
        time.sleep(1)
    return 0


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def role_sender(args: argparse.Namespace) -> int:
    """Paced signed webhooks until the stop file exists (or --max-seconds); one JSON line per event."""
    import requests

    config = json.loads(Path(args.config).read_text())
    url, secret, rate = config["url"], config["secret"], float(config["rate"])
    stop_file, out_path = Path(config["stop_file"]), Path(config["out"])
    local = threading.local()
    lock = threading.Lock()
    out = out_path.open("a")
    start = time.monotonic()
    deadline = start + args.max_seconds

    def send(i: int) -> None:
        due = start + i / rate
        while (left := due - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        event = f"evt_{config['tag']}_{i:06d}"
        body = json.dumps({"event_id": event, "n": i}).encode()
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": event, "webhook-timestamp": str(ts),
                   "webhook-signature": sign(secret, event, ts, body)}  # fmt: skip
        statuses: list[int | str] = []
        final: int | str = "not sent"
        sent_at = time.time()
        for attempt in range(8):
            try:
                response = session.post(url, data=body, headers=headers, timeout=15)
                final = response.status_code
            except requests.RequestException as exc:
                final = type(exc).__name__
                session = local.s = requests.Session()
            statuses.append(final)
            if isinstance(final, int) and final < 500:
                break
            time.sleep(min(0.5 * 2**attempt, 5) * random.uniform(0.5, 1))  # noqa: S311
        line = json.dumps({"event": event, "final": final, "statuses": statuses, "sent_at": sent_at,
                           "done_at": time.time()})  # fmt: skip
        with lock:
            out.write(line + "\n")
            out.flush()

    with ThreadPoolExecutor(max_workers=32) as pool:
        i = 0
        while not stop_file.exists() and time.monotonic() < deadline and i < config["max_events"]:
            # Submit a second's worth ahead; the pool paces them by their due time.
            while i < (time.monotonic() - start + 1) * rate and i < config["max_events"]:
                pool.submit(send, i)
                i += 1
            time.sleep(0.1)
    out.close()
    return 0


# -- the cluster ----------------------------------------------------------------------------
class Cluster:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = secrets.token_hex(2)
        self.net = Network(self.tag, free_subnet())
        self.dir = Path(tempfile.mkdtemp(prefix=f"potaflow-cluster-{self.tag}-"))
        self.dir.chmod(0o755)
        self.log_dir = self.dir / "logs"
        self.log_dir.mkdir()
        self.state_file = STATE_DIR / f"potaflow-cluster-{self.tag}.json"
        self.procs: dict[str, HostProcess] = {}
        self.services: list[Any] = []
        self.env: dict[str, str] = {}
        self.db_direct = ""
        self.tries: dict[str, int] = {}  # host -> starts that exited before ready (start_supervised)

    # -- bring up --------------------------------------------------------------------------
    def save_state(self) -> None:
        self.state_file.write_text(json.dumps({"pid": os.getpid(), "namespaces": self.net.namespaces(),
                                               "ctl_link": self.net.ctl_link}))  # fmt: skip

    def up(self) -> None:
        from testing.services import Nginx, PgBouncer, Postgres, RabbitMQ

        net, args = self.net, self.args
        self.save_state()
        net.create()
        layout = {"db": 10, "proxy": 20, "web1": 21, "web2": 22, "worker1": 31, "worker2": 32, "worker3": 33,
                  "beat1": 41, "beat2": 42, "recorder": 50, "sender": 60}  # fmt: skip
        for host, octet in layout.items():
            net.add_host(host, octet)
            self.save_state()
        db = net.hosts["db"]
        log(f"network {net.subnet}.0/24: {', '.join(f'{h}={a}' for h, a in net.hosts.items())}")

        postgres = Postgres(listen=db, port=5432, prefix=net.prefix("db"), folder=self.dir / "postgres",
                            trust_network=f"{net.subnet}.0/24")  # fmt: skip
        self.services.append(postgres)
        postgres.start()
        run("psql", "-h", db, "-U", "postgres", "-c", "CREATE DATABASE potaflow")
        self.db_direct = postgres.url("potaflow")
        bouncer = PgBouncer(db, 5432, listen=db, port=PGBOUNCER_PORT, pool_size=20, max_client_conn=500,
                            prefix=net.prefix("db"), folder=self.dir / "pgbouncer")  # fmt: skip
        self.services.append(bouncer)
        bouncer.start()
        if args.broker == "amqp":
            broker = RabbitMQ(listen=db, port=5672, prefix=net.prefix("db"), folder=self.dir / "rabbitmq",
                              name=f"potaflow-cluster-{self.tag}")  # fmt: skip
            self.services.append(broker)
            broker.start()
            broker_url = broker.url
        else:
            argv = ["redis-server", "--bind", db, "--port", "6379", "--save", "", "--appendonly", "no",
                    "--protected-mode", "no"]  # fmt: skip
            redis = HostProcess(net, "db", "redis", argv, dict(os.environ), self.log_dir)
            self.procs["redis"] = redis.start()
            wait_until(lambda: run(*net.prefix("db"), "redis-cli", "-h", db, "ping", check=False, quiet=True)
                       .stdout.strip() == "PONG", 20, "redis-server")  # fmt: skip
            broker_url = f"redis://{db}:6379/0"
        log(
            f"db host: PostgreSQL {db}:5432, PgBouncer {db}:{PGBOUNCER_PORT} (transaction pooling), broker {broker_url}"
        )

        from cryptography.fernet import Fernet

        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("POTAFLOW_", "DJANGO_", "CELERY_"))},
            "DJANGO_SETTINGS_MODULE": "potaflow.settings",
            "DATABASE_URL": f"postgres://postgres@{db}:{PGBOUNCER_PORT}/potaflow",
            "POTAFLOW_PGBOUNCER": "true",
            "CELERY_BROKER_URL": broker_url,
            "DEBUG": "false",
            "SECRET_KEY": "cluster-" + Fernet.generate_key().decode(),
            "POTAFLOW_FERNET_KEYS": Fernet.generate_key().decode(),
            "SECURE_SSL_REDIRECT": "false",
            "ALLOWED_HOSTS": "*",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "POTAFLOW_WEBHOOK_RATE": "off",  # the per-workflow limit is not what is measured
            "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": net.hosts["recorder"],
            "CONN_MAX_AGE": "60",
            **dict(item.split("=", 1) for item in args.env),
        }
        self.env.pop("CACHE_URL", None)
        self.migrate()

        self.procs["recorder"] = HostProcess(
            net, "recorder", "recorder",
            [sys.executable, str(Path(__file__).resolve()), "--role", "recorder", "--slow-fraction",
             str(args.slow_fraction), "--max-seconds", str(args.max_seconds + 60)],
            dict(os.environ), self.log_dir,
        ).start()  # fmt: skip
        for host in ("web1", "web2"):
            self.procs[host] = self.web_process(host).start()
        for host in ("worker1", "worker2", "worker3"):
            self.procs[host] = self.worker_process(host)
            if not args.throughput:
                self.procs[host].start()
        if not args.throughput:
            for host in ("beat1", "beat2"):
                self.procs[host] = self.beat_process(host).start()
        proxy = Nginx([f"{net.hosts['web1']}:{WEB_PORT}", f"{net.hosts['web2']}:{WEB_PORT}"],
                      listen=net.hosts["proxy"], port=PROXY_PORT, prefix=net.prefix("proxy"),
                      folder=self.dir / "nginx")  # fmt: skip
        self.services.append(proxy)
        proxy.start()
        self.proxy = proxy
        started = time.monotonic()
        for host in ("web1", "web2"):
            self.wait_web(host)
        if not args.throughput:
            for host in ("worker1", "worker2", "worker3"):
                self.wait_worker(host)
            for host in ("beat1", "beat2"):
                wait_until(lambda h=host: "beat: Starting" in self.procs[h].log() or "Starting..." in
                           self.procs[h].log(), READY_TIMEOUT, f"{host} beat")  # fmt: skip
        wait_until(lambda: http_get(f"http://{net.hosts['recorder']}:{RECORDER_PORT}/")[0] == 200, 30, "recorder")
        log(f"hosts up in {time.monotonic() - started:.1f} s (after migrations)")

    def start_prometheus(self) -> str:
        """Prometheus (Debian's) in this namespace, scraping both web hosts every 5 s, with the alert rules."""
        from testing.services import free_port

        folder = self.dir / "prometheus"
        folder.mkdir()
        port = free_port()
        targets = ", ".join(f'"{self.net.hosts[h]}:{WEB_PORT}"' for h in ("web1", "web2"))
        (folder / "prometheus.yml").write_text(
            "global: {scrape_interval: 5s, evaluation_interval: 5s}\n"
            f"rule_files: [{BASE_DIR / 'deploy' / 'prometheus' / 'alerts.yml'}]\n"
            f"scrape_configs:\n  - job_name: potaflow\n    static_configs: [{{targets: [{targets}]}}]\n"
        )
        argv = ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
        with (self.log_dir / "prometheus.log").open("wb") as out:
            self.prometheus = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(f"{url}/-/ready")[0] == 200, 60, "prometheus")
        return url

    def migrate(self) -> None:
        env = {**self.env, "DATABASE_URL": self.db_direct, "POTAFLOW_PGBOUNCER": "false", "LOG_LEVEL": "WARNING"}
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command

        t0 = time.monotonic()
        call_command("migrate", verbosity=0, interactive=False)
        log(f"migrations applied in {time.monotonic() - t0:.1f} s")

    def host_env(self, host: str, **extra: str) -> dict[str, str]:
        return {**self.env, "POTAFLOW_VAR_DIR": str(self.dir / "hosts" / host), **extra}

    def web_process(self, host: str) -> HostProcess:
        address = self.net.hosts[host]
        # Named here, as the README asks of every web host: gunicorn.conf.py's default is set after
        # it imports prometheus_client, too late for the master (fixed separately on main).
        metrics_dir = self.dir / "hosts" / host / "prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env = self.host_env(host, HOST=address, PORT=str(WEB_PORT), WEB_CONCURRENCY=str(self.args.web_concurrency),
                            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                            POTAFLOW_BEHIND_PROXY="true", POTAFLOW_TRUSTED_PROXIES=f"{self.net.hosts['proxy']}/32",
                            LOG_LEVEL="WARNING")  # fmt: skip
        argv = [str(BIN / "gunicorn"), "potaflow.wsgi:application", "--config", "gunicorn.conf.py",
                "--graceful-timeout", "15", "--no-control-socket"]  # fmt: skip
        return HostProcess(self.net, host, host, argv, env, self.log_dir)

    def worker_process(self, host: str) -> HostProcess:
        argv = [str(BIN / "celery"), "-A", "potaflow", "worker", "--pool", "prefork", "-l", "info",
                "--hostname", f"celery@{host}"]  # fmt: skip
        return HostProcess(self.net, host, host, argv, self.host_env(host), self.log_dir)

    def beat_process(self, host: str) -> HostProcess:
        argv = [str(BIN / "celery"), "-A", "potaflow", "beat", "-l", "info",
                "--schedule", str(self.dir / "hosts" / host / "celerybeat-schedule")]  # fmt: skip
        (self.dir / "hosts" / host).mkdir(parents=True, exist_ok=True)
        return HostProcess(self.net, host, host, argv, self.host_env(host), self.log_dir)

    def wait_web(self, host: str) -> float:
        url = f"http://{self.net.hosts[host]}:{WEB_PORT}/healthz"

        def healthy() -> bool:
            if not self.procs[host].alive:
                raise HostDied(f"{host} exited:\n{self.procs[host].last_start_log()[-3000:]}")
            return http_get(url)[0] == 200

        return wait_until(healthy, READY_TIMEOUT, f"{host} /healthz")

    def wait_worker(self, host: str) -> float:
        def ready() -> bool:
            if not self.procs[host].alive:
                raise HostDied(f"{host} exited:\n{self.procs[host].last_start_log()[-3000:]}")
            return " ready." in self.procs[host].last_start_log()

        return wait_until(ready, READY_TIMEOUT, f"{host} worker")

    # -- host-level faults -------------------------------------------------------------------
    def kill_host(self, host: str) -> None:
        self.net.link(host, up=False)
        self.procs[host].kill()
        kill_namespace_processes(self.net.ns(host))

    def revive_host(self, host: str) -> float:
        self.net.link(host, up=True)
        return self.start_supervised(host)

    def start_supervised(self, host: str) -> float:
        """Start a host's server and wait until it is ready, starting it again if it exits (as
        systemd's Restart=always would, every 3 s). Returns seconds to ready; counts the tries.

        Why: a worker host that vanished and comes back within the broker's heartbeat window finds
        its old connection still open at RabbitMQ, which then refuses the new one its exclusive
        remote-control queue (RESOURCE_LOCKED) until it notices the old one is dead.
        """
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            self.procs[host].start()
            try:
                if host.startswith("web"):
                    self.wait_web(host)
                elif host.startswith("worker"):
                    self.wait_worker(host)
                self.tries[host] = self.tries.get(host, 0) + tries - 1
                return time.monotonic() - started
            except HostDied:
                if time.monotonic() - started > READY_TIMEOUT:
                    raise
                time.sleep(3)

    def recorder_stats(self) -> dict[str, Any]:
        return json.loads(http_get(f"http://{self.net.hosts['recorder']}:{RECORDER_PORT}/", timeout=10)[1])

    def busy_worker(self, among: list[str], timeout: float = 8) -> tuple[str, bool]:
        """A worker host with a call in flight at the recorder now (else any of ``among``)."""
        by_address = {self.net.hosts[h]: h for h in among}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                for address, count in self.recorder_stats()["in_flight"].items():
                    if count > 0 and address in by_address:
                        return by_address[address], True
            time.sleep(0.02)
        return random.choice(among), False  # noqa: S311

    # -- tear down ---------------------------------------------------------------------------
    def down(self) -> None:
        if getattr(self, "prometheus", None) is not None:
            with contextlib.suppress(Exception):
                os.killpg(self.prometheus.pid, signal.SIGKILL)
                self.prometheus.wait(10)
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.kill()
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        self.net.destroy()
        self.state_file.unlink(missing_ok=True)


# -- the workflows --------------------------------------------------------------------------
def create_workflows(recorder_url: str) -> tuple[Any, str, list[Any]]:
    from accounts.models import User
    from accounts.services import organization_create
    from workflows.services import workflow_create

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    owner = User.objects.create_user(email="cluster@example.com", password=None)
    org = organization_create(name="cluster", owner=owner)
    webhook = workflow_create(
        organization=org,
        name="cluster: webhook -> transform -> http.request",
        trigger_type="webhook",
        webhook_secret=secret,
        steps=[
            {"key": "shape", "action_type": "transform",
             "config": {"value": {"event_id": "{{ trigger.body.event_id }}", "n2": "{{ trigger.body.n * 2 }}"}}},
            {"key": "deliver", "action_type": "http.request",
             "config": {"method": "POST", "url": recorder_url, "body_type": "json",
                        "body": {"event_id": "{{ steps.shape.output.event_id }}"}}},
        ],
    )  # fmt: skip
    schedules = [
        workflow_create(
            organization=org,
            name=f"cluster: every minute {i}",
            trigger_type="schedule",
            schedule="* * * * *",
            timezone="UTC",
            steps=[{"key": "tick", "action_type": "transform", "config": {"value": "{{ trigger }}"}}],
        )  # fmt: skip
        for i in range(SCHEDULES)
    ]
    return webhook, secret, schedules


# -- the fault run --------------------------------------------------------------------------
def fault_run(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    from django.db.models import Max

    from workflows.models import Run, SchedulerLease, StepAttempt

    net = cluster.net
    recorder_url = f"http://{net.hosts['recorder']}:{RECORDER_PORT}/effects"
    webhook, secret, schedules = create_workflows(recorder_url)
    schedules_created = time.time()
    prometheus = cluster.start_prometheus() if args.dashboard else None
    sender_cfg = {
        "url": f"http://{net.hosts['proxy']}:{PROXY_PORT}/hooks/{webhook.webhook_token}",
        "secret": secret, "rate": args.rate, "tag": cluster.tag, "max_events": args.max_events,
        "stop_file": str(cluster.dir / "stop-sending"), "out": str(cluster.dir / "sent.jsonl"),
    }  # fmt: skip
    (cluster.dir / "sender.json").write_text(json.dumps(sender_cfg))
    sender = HostProcess(net, "sender", "sender", [sys.executable, str(Path(__file__).resolve()), "--role", "sender",
                         "--config", str(cluster.dir / "sender.json"), "--max-seconds", str(args.max_seconds)],
                         dict(os.environ), cluster.log_dir).start()  # fmt: skip
    cluster.procs["sender"] = sender
    send_start = time.time()
    log(f"sending {args.rate:g} signed webhooks/s through the proxy; faults start in {args.warmup:g} s")
    time.sleep(args.warmup)

    faults: list[dict[str, Any]] = []
    faults_lock = threading.Lock()

    def note(kind: str, at: float, **figures: Any) -> dict[str, Any]:
        fault = {"kind": kind, "at": at, **figures}
        with faults_lock:
            faults.append(fault)
        log(f"fault {kind}: {json.dumps(figures, default=str)}")
        return fault

    def beat_track() -> None:
        # Kill the leading beat ~10 s before a minute boundary: the minute passes with no leader.
        wait_until(lambda: SchedulerLease.objects.filter(name="beat").exists(), 30, "a beat leader")
        while (time.time() % 60) < 44 or (time.time() % 60) > 52:
            time.sleep(0.2)
        lease = SchedulerLease.objects.get(name="beat")
        leader = lease.holder.split(":", 1)[0]
        standby = "beat2" if leader == "beat1" else "beat1"
        at = time.time()
        cluster.kill_host(leader)
        took = wait_until(lambda: SchedulerLease.objects.get(name="beat").holder.split(":", 1)[0] == standby,
                          120, "the standby beat's takeover", interval=0.2)  # fmt: skip
        new = SchedulerLease.objects.get(name="beat")
        lease_seconds = int(cluster.env.get("POTAFLOW_BEAT_LEASE_SECONDS", 20))
        note("beat-host-killed", at, host=leader, standby=standby, takeover_s=round(took, 1),
             terms=[lease.term, new.term], lease_seconds=lease_seconds)  # fmt: skip
        time.sleep(5)
        cluster.net.link(leader, up=True)
        cluster.procs[leader].start()  # back as the standby

    def worker_track() -> None:
        # 1. A worker host killed whole, mid-call.
        host, mid_call = cluster.busy_worker(["worker1", "worker2", "worker3"])
        at = time.time()
        cluster.kill_host(host)
        fault = note("worker-host-killed", at, host=host, mid_call=mid_call)
        time.sleep(args.down_seconds)
        ready = cluster.revive_host(host)
        fault["back_after_s"] = round(time.time() - at, 1)
        fault["restart_ready_s"] = round(ready, 1)
        fault["restarts_refused"] = cluster.tries.get(host, 0)
        time.sleep(args.gap)

        # 2. A worker host cut from the database and the broker while a call is in flight.
        host, mid_call = cluster.busy_worker(["worker1", "worker2", "worker3"])
        at = time.time()
        net.firewall(host, "db", cut=True)
        fault = note("worker-host-cut", at, host=host, mid_call=mid_call, cut_s=args.cut_seconds)
        time.sleep(args.cut_seconds)
        net.firewall(host, "db", cut=False)
        fault["ended_at"] = time.time()
        time.sleep(args.gap)

        # 3. A web host killed: the proxy routes around it.
        at = time.time()
        cluster.kill_host("web1")
        fault = note("web-host-killed", at, host="web1")
        time.sleep(args.down_seconds)
        cluster.revive_host("web1")
        fault["back_after_s"] = round(time.time() - at, 1)
        time.sleep(args.gap)

        # 4. Rolling restart of every web and worker host, one at a time.
        at = time.time()
        steps = []
        for host in ["web1", "web2", "worker1", "worker2", "worker3"]:
            t0 = time.monotonic()
            cluster.procs[host].stop(timeout=60)
            stopped = time.monotonic() - t0
            refused = cluster.tries.get(host, 0)
            ready = cluster.start_supervised(host)
            refused = cluster.tries.get(host, 0) - refused
            if host.startswith("web"):
                # nginx skips a host for fail_timeout (5 s) after a failure, then tries it again: the
                # next web host goes down only once the proxy routes to this one again.
                time.sleep(FAIL_TIMEOUT + 1)
            steps.append(
                f"{host} stop {stopped:.1f} s + ready {ready:.1f} s" + (f" ({refused} refused)" if refused else "")
            )
        note("rolling-restart", at, hosts=steps, took_s=round(time.time() - at, 1), ended_at=time.time())

    threads = [threading.Thread(target=beat_track, name="beat-track", daemon=True),
               threading.Thread(target=worker_track, name="worker-track", daemon=True)]  # fmt: skip
    errors: list[str] = []
    for thread in threads:
        original = thread.run

        def guarded(original=original) -> None:  # noqa: ANN001
            try:
                original()
            except BaseException as exc:  # noqa: BLE001 - reported, the run goes on to its report
                errors.append(f"{type(exc).__name__}: {exc}")
                traceback.print_exc()

        thread.run = guarded  # type: ignore[method-assign]
        thread.start()
    deadline = time.monotonic() + args.max_seconds
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
    last_fault = max((f.get("ended_at", f["at"]) for f in faults), default=time.time())
    time.sleep(args.tail)
    (cluster.dir / "stop-sending").write_text("stop")
    wait_until(lambda: not sender.alive, 120, "the sender to finish its retries")
    send_end = time.time()

    results = [json.loads(line) for line in (cluster.dir / "sent.jsonl").read_text().splitlines() if line]
    accepted = [r["event"] for r in results if isinstance(r["final"], int) and 200 <= r["final"] < 300]
    sender_5xx = sum(1 for r in results for s in r["statuses"] if isinstance(s, int) and s >= 500)
    sender_errors = Counter(str(s) for r in results for s in r["statuses"] if not (isinstance(s, int) and s < 300))
    log(f"sent {len(results)} events, {len(accepted)} accepted; waiting (<= {args.settle_timeout:g} s) to settle")

    t0 = time.monotonic()
    runs = Run.objects.filter(workflow=webhook)
    while time.monotonic() - t0 < args.settle_timeout:
        if runs.filter(idempotency_key__in=accepted, status__in=FINAL).count() >= len(accepted):
            break
        time.sleep(1)
    settled_wait = time.monotonic() - t0
    # The schedules: a minute whose firing time has passed by 30 s must have a run by now.
    firing_check_until = time.time() - 30
    time.sleep(3)
    final_status = dict(runs.filter(idempotency_key__in=accepted).values_list("idempotency_key", "status"))
    lost = [e for e in accepted if final_status.get(e) not in FINAL]
    last_finish = runs.aggregate(m=Max("finished_at"))["m"]
    settle_s = round(max(0.0, last_finish.timestamp() - last_fault), 1) if last_finish and not lost else None

    if prometheus:
        from dashboard_page import snapshot

        title = f"PotaFlow cluster run ({args.broker}): 2 web, 3 worker, 2 beat hosts; faults at " + ", ".join(
            f"+{f['at'] - send_start:.0f}s {f['kind']}" for f in sorted(faults, key=lambda f: f["at"])
        )
        log(f"dashboard: {snapshot(prometheus, send_start - 30, time.time(), args.dashboard, title)}")

    stats = cluster.recorder_stats()
    applied = stats["applied"]
    duplicates = {e: n for e, n in applied.items() if n > 1 and e.startswith("evt_")}
    succeeded = {e for e, s in final_status.items() if s == "succeeded"}
    missing_effects = sorted(succeeded - set(applied))

    # Steps taken over: attempts closed on a faulted host, and the attempt that took the step over.
    attempts = list(StepAttempt.objects.filter(step_run__run__workflow=webhook)
                    .values("step_run_id", "number", "outcome", "worker_host", "started_at", "finished_at", "error")
                    .order_by("step_run_id", "number"))  # fmt: skip
    by_step: dict[int, list[dict]] = defaultdict(list)
    for attempt in attempts:
        by_step[attempt["step_run_id"]].append(attempt)
    for fault in faults:
        if fault["kind"] not in ("worker-host-killed", "worker-host-cut"):
            continue
        taken = []
        for chain in by_step.values():
            for first, nxt in itertools.pairwise(chain):
                # The next attempt may run anywhere, the faulted host included once it is back.
                if (
                    first["worker_host"] == fault["host"]
                    and first["started_at"].timestamp() <= fault["at"] + 1
                    and nxt["started_at"].timestamp() > fault["at"]
                ):
                    taken.append((nxt["started_at"].timestamp() - fault["at"], first["outcome"] or "open", nxt))
        fault["steps_taken_over"] = len(taken)
        if taken:
            fault["takeover_s_max"] = round(max(t for t, _, _ in taken), 1)
            fault["takeover_s_median"] = round(sorted(t for t, _, _ in taken)[len(taken) // 2], 1)
            fault["closed_as"] = dict(Counter(outcome for _, outcome, _ in taken))
            fault["taken_by"] = dict(Counter(nxt["worker_host"] for _, _, nxt in taken))
    outcomes = Counter(a["outcome"] or "open" for a in attempts)
    chains = [
        [f"{a['worker_host']}#{a['number']}:{a['outcome'] or 'open'}@{a['started_at'].timestamp() - send_start:.1f}"
         for a in chain]
        for chain in by_step.values() if len(chain) > 1
    ]  # fmt: skip
    superseded = [a for a in attempts if a["outcome"] == "superseded"]
    explained = []
    cut = next((f for f in faults if f["kind"] == "worker-host-cut"), None)
    for a in superseded:
        reason = "unexplained"
        if cut and a["worker_host"] == cut["host"] and a["started_at"].timestamp() <= cut["ended_at"]:
            reason = (
                f"its host {cut['host']} was cut from the database; the step was taken over; it reported after the heal"
            )
        explained.append({"host": a["worker_host"], "attempt": a["number"], "why": reason})

    # Schedules: firings sent per minute by the beats (their logs) and runs recorded per minute.
    sent_by_minute: Counter[str] = Counter()
    for host in ("beat1", "beat2"):
        for line in cluster.procs[host].log().splitlines():
            if "schedule firing(s)" in line and line.startswith("{"):
                with contextlib.suppress(ValueError, KeyError):
                    record = json.loads(line)
                    n = int(re.search(r"sent (\d+) schedule firing", record["message"]).group(1))
                    sent_by_minute[record["ts"][:16]] += n
    double_fired = sum(max(0, n - SCHEDULES) for n in sent_by_minute.values())
    first_minute = int((schedules_created + 5) // 60 + 1) * 60
    expected = [m for m in range(first_minute, int(firing_check_until // 60) * 60 + 1, 60)]
    keys = set(Run.objects.filter(workflow__in=schedules).values_list("workflow_id", "idempotency_key"))
    skipped = []
    for minute in expected:
        key = "schedule:" + datetime.fromtimestamp(minute, UTC).isoformat()
        missing = [w.pk for w in schedules if (w.pk, key) not in keys]
        if missing:
            skipped.append({"minute": key[9:], "workflows": missing})
    fired_late = Run.objects.filter(workflow__in=schedules).values_list("created_at", "idempotency_key")
    lateness = sorted(created.timestamp() - datetime.fromisoformat(key[9:]).timestamp() for created, key in fired_late)

    report = {
        "cluster": 1,
        "broker": args.broker,
        "quick": args.quick,
        "events_sent": len(results),
        "accepted": len(accepted),
        "lost": len(lost),
        "lost_events": lost[:10],
        "duplicate_effects": len(duplicates),
        "succeeded_without_effect": len(missing_effects),
        "settle_s": settle_s,
        "settle_wait_after_sending_s": round(settled_wait, 1),
        "sender_5xx": sender_5xx,
        "sender_non_2xx_attempts": dict(sender_errors),
        "double_fired": double_fired,
        "skipped_firings": len(skipped),
        "skipped_minutes": skipped[:5],
        "schedule_minutes_checked": len(expected),
        "schedule_firing_lateness_s": {
            "p50": round(lateness[len(lateness) // 2], 1) if lateness else None,
            "max": round(lateness[-1], 1) if lateness else None,
        },  # fmt: skip
        "runs_by_status": dict(Counter(runs.values_list("status", flat=True))),
        "attempts_by_outcome": dict(outcomes),
        "superseded": explained,
        "steps_with_several_attempts": chains[:20],
        "recorder": {"raw": stats["raw"], "with_key": stats["with_key"], "repeats_absorbed": stats["repeats"]},
        "faults": [
            {k: (round(v - send_start, 1) if k in ("at", "ended_at") else v) for k, v in f.items()}
            for f in sorted(faults, key=lambda f: f["at"])
        ],  # fmt: skip
        "fault_errors": errors,
        "send_seconds": round(send_end - send_start, 1),
        "conditions": {
            "cpu_cores": os.cpu_count(),
            "load_at_end": [round(x, 2) for x in os.getloadavg()],
            "rate_per_s": args.rate,
            "web_hosts": 2,
            "worker_hosts": 3,
            "beat_hosts": 2,
            "web_concurrency": args.web_concurrency,
            "database": "PostgreSQL via PgBouncer (transaction)",
            "env": args.env,
        },  # fmt: skip
    }
    return report


def print_fault_report(report: dict[str, Any]) -> None:
    print()
    kind = "quick" if report["quick"] else "full"
    print(f"PotaFlow cluster run ({report['broker']}, {kind}): 2 web hosts behind nginx, 3 worker hosts, "
          "2 beat hosts, db host (PostgreSQL + PgBouncer + broker)")  # fmt: skip
    print()
    for fault in report["faults"]:
        figures = {k: v for k, v in fault.items() if k not in ("kind", "at")}
        print(f"  +{fault['at']:>6.1f} s  {fault['kind']:<20} {json.dumps(figures)}")
    rows = [
        ("events sent / accepted", f"{report['events_sent']} / {report['accepted']}"),
        ("LOST (accepted, never final)", report["lost"]),
        ("DUPLICATE EFFECTS", report["duplicate_effects"]),
        ("succeeded without effect", report["succeeded_without_effect"]),
        ("settle after the last fault", f"{report['settle_s']} s"),
        ("5xx seen by senders", report["sender_5xx"]),
        ("sender's non-2xx attempts", report["sender_non_2xx_attempts"]),
        ("schedule minutes checked", report["schedule_minutes_checked"]),
        ("DOUBLE-FIRED / SKIPPED firings", f"{report['double_fired']} / {report['skipped_firings']}"),
        ("firing lateness p50 / max", report["schedule_firing_lateness_s"]),
        ("runs by status", report["runs_by_status"]),
        ("attempts by outcome", report["attempts_by_outcome"]),
        ("superseded attempts", report["superseded"] or "none"),
        ("recorder", report["recorder"]),
    ]
    print()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if report["fault_errors"]:
        print(f"  FAULT STEPS FAILED: {report['fault_errors']}")


# -- throughput ------------------------------------------------------------------------------
def throughput_run(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    from django.db.models import Max, Min

    from workflows.models import Run, StepAttempt
    from workflows.services import run_accept, workflow_create

    net = cluster.net
    recorder_url = f"http://{net.hosts['recorder']}:{RECORDER_PORT}/effects"
    webhook, _secret, _schedules = create_workflows(recorder_url)
    config = {"method": "POST", "url": recorder_url, "body_type": "json", "body": {"event_id": "x"}}
    one_step = workflow_create(organization=webhook.organization, name="cluster: 1 step",
                               steps=[{"key": "deliver", "action_type": "http.request", "config": config}])  # fmt: skip
    rows = []
    for hosts in (1, 2, 3):
        names = [f"worker{i}" for i in range(1, hosts + 1)]
        ids = [run_accept(workflow=one_step, trigger="manual", payload={"n": i})[0].pk for i in range(args.backlog)]
        cpu0 = {h: cluster.procs[h].cpu_seconds() for h in names}
        for h in names:
            cluster.procs[h].start()
        for h in names:
            cluster.wait_worker(h)
        cpu_ready = {h: cluster.procs[h].cpu_seconds() for h in names}
        db_ready = host_cpu_seconds(net, "db")
        wait_until(lambda ids=ids: Run.objects.filter(pk__in=ids, status__in=FINAL).count() >= len(ids),
                   args.settle_timeout, f"{args.backlog} runs on {hosts} worker host(s)", interval=0.5)  # fmt: skip
        cpu = sum(cluster.procs[h].cpu_seconds() - cpu_ready[h] for h in names)
        db_cpu = host_cpu_seconds(net, "db") - db_ready
        first = StepAttempt.objects.filter(step_run__run_id__in=ids).aggregate(t=Min("started_at"))["t"]
        last = Run.objects.filter(pk__in=ids).aggregate(t=Max("finished_at"))["t"]
        seconds = (last - first).total_seconds()
        for h in names:
            cluster.procs[h].stop(timeout=60)
        row = {"worker_hosts": hosts, "runs": len(ids), "seconds": round(seconds, 2),
               "runs_per_s": round(len(ids) / seconds, 1), "worker_cpu_ms_per_run": round(cpu * 1000 / len(ids), 1),
               "db_host_cpu_ms_per_run": round(db_cpu * 1000 / len(ids), 1),
               "startup_cpu_s": round(sum(cpu_ready[h] - cpu0[h] for h in names), 1),
               "load": round(os.getloadavg()[0], 2)}  # fmt: skip
        log(f"throughput: {row}")
        rows.append(row)
    return {"cluster_throughput": 1, "broker": args.broker, "rows": rows,
            "conditions": {"cpu_cores": os.cpu_count(), "concurrency_per_worker_host": 2,
                           "database": "PostgreSQL via PgBouncer (transaction)", "backlog": args.backlog}}  # fmt: skip


# -- main -------------------------------------------------------------------------------------
# binary -> the Debian package that brings it
PACKAGES = {"ip": "iproute2", "unshare": "util-linux", "iptables": "iptables", "nginx": "nginx-light",
            "pgbouncer": "pgbouncer", "psql": "postgresql", "prometheus": "prometheus",
            "redis-server": "redis-server", "rabbitmq-server": "rabbitmq-server"}  # fmt: skip


def ensure_packages(broker: str, dashboard: bool = False) -> None:
    """Install (apt-get, as root) the Debian packages the hosts need, when missing: one command from a clone."""
    wanted = ["ip", "unshare", "iptables", "nginx", "pgbouncer", "psql",
              "rabbitmq-server" if broker == "amqp" else "redis-server"]  # fmt: skip
    wanted += ["prometheus"] if dashboard else []
    missing = sorted({PACKAGES[b] for b in wanted if shutil.which(b) is None})
    if missing and shutil.which("apt-get"):
        log(f"installing Debian packages: {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True, env=env)  # noqa: S607
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=False, capture_output=True, env=env)  # noqa: S603, S607
        missing = sorted({PACKAGES[b] for b in wanted if shutil.which(b) is None})
    if missing:
        sys.exit(f"missing Debian packages: {' '.join(missing)} (apt-get install {' '.join(missing)})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--quick", action="store_true", help="CI's reduced run: lower rate, shorter cut and pauses")
    parser.add_argument("--throughput", action="store_true", help="runs/s with 1, 2, 3 worker hosts instead")
    parser.add_argument("--rate", type=float, default=None, help="webhooks per second [8; quick 4]")
    parser.add_argument("--max-events", type=int, default=20_000)
    parser.add_argument("--cut-seconds", type=float, default=None, help="the network cut [30]")
    parser.add_argument("--backlog", type=int, default=600, help="runs per throughput measurement [600]")
    parser.add_argument("--web-concurrency", type=int, default=1, help="gunicorn workers per web host [1]")
    parser.add_argument("--slow-fraction", type=float, default=None,
                        help="recorder answers taking 0.5-2 s [0.2; --throughput 0]")  # fmt: skip
    parser.add_argument("--settle-timeout", type=float, default=240.0)
    parser.add_argument("--max-seconds", type=float, default=None, help="bound on the fault phase [600; quick 300]")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VAL", help="extra environment, every host")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--dashboard", type=Path, default=None, metavar="PNG",
                        help="run Prometheus beside the cluster and draw the dashboard's panels into PNG")  # fmt: skip
    parser.add_argument("--role", choices=("recorder", "sender"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.slow_fraction_default = args.slow_fraction is None
    args.slow_fraction = 0.2 if args.slow_fraction is None else max(0.0, min(args.slow_fraction, 1.0))
    quick = args.quick
    args.rate = max(0.5, min(args.rate or (4.0 if quick else 8.0), 200.0))
    args.cut_seconds = max(5.0, min(args.cut_seconds or 30.0, 120.0))
    args.max_seconds = max(60.0, min(args.max_seconds or (300.0 if quick else 600.0), 3600.0))
    args.settle_timeout = max(10.0, min(args.settle_timeout, 1800.0))
    args.backlog = max(10, min(args.backlog, 20_000))
    if args.throughput and args.slow_fraction_default:
        args.slow_fraction = 0.0  # a fast third-party API: what is measured is PotaFlow's side
    args.warmup = 5.0 if quick else 10.0
    args.gap = 3.0 if quick else 10.0
    args.down_seconds = 8.0 if quick else 20.0
    args.tail = 5.0 if quick else 10.0
    for item in args.env:
        if "=" not in item:
            parser.error(f"--env expects KEY=VAL, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "recorder":
        return role_recorder(args)
    if args.role == "sender":
        return role_sender(args)
    if os.geteuid() != 0:
        sys.exit("bench/cluster.py needs root: network namespaces, veth links and iptables (sudo)")
    ensure_packages(args.broker, dashboard=args.dashboard is not None)

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    clean_stale_runs()
    cluster = Cluster(args)
    log(f"cluster {cluster.tag}: files in {cluster.dir}; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    keep = args.keep_logs
    report: dict[str, Any] | None = None
    try:
        cluster.up()
        if args.throughput:
            report = throughput_run(cluster, args)
            for row in report["rows"]:
                print(f"  {row['worker_hosts']} worker host(s): {row['runs_per_s']} runs/s, "
                      f"{row['worker_cpu_ms_per_run']} ms worker CPU + {row['db_host_cpu_ms_per_run']} ms db host "
                      f"CPU per run ({row['runs']} runs in {row['seconds']} s)")  # fmt: skip
        else:
            report = fault_run(cluster, args)
            print_fault_report(report)
            keep = keep or report["lost"] > 0 or report["duplicate_effects"] > 0
    finally:
        log("tearing down")
        cluster.down()
        if keep:
            log(f"logs kept in {cluster.log_dir}")
        else:
            shutil.rmtree(cluster.dir, ignore_errors=True)
    print(json.dumps(report, default=str, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
