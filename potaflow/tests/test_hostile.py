"""The hostile catalogue (issue 18): every reproduction, against the REAL web server and worker.

gunicorn is started as the Procfile's ``web:`` line starts it (gunicorn.conf.py,
its worker class, DEBUG off, JSON logs) on the test database, beside the
session's Celery worker. Each test is an attack from the issue, with its
limit, the error the attacker gets and ``/healthz`` answering within a second
while it runs. Everything is loopback (attackers use other 127.0.0.x source
addresses so the per-address cap is tested apart); loops are bounded in count
and in time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from django.db import connection
from requests.adapters import HTTPAdapter

from accounts.models import Membership, Organization, Role, User
from testing.http_server import RecordingHTTPServer, Reply, free_port
from testing.procfile import procfile_command
from testing.worker import BASE_DIR, subprocess_env
from workflows.models import Run, TriggerType
from workflows.services import workflow_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-long-enough-123"
METRICS_TOKEN = "hostile-metrics-token-0123456789"
HEADER_TIMEOUT = 3
BODY_TIMEOUT = 3
PER_ADDRESS = 20
SERVER_ENV = {
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_SSL_REDIRECT": "false",
    "LOG_FORMAT": "json",
    "POTAFLOW_WEB_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "POTAFLOW_WEB_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
    "POTAFLOW_WEBHOOK_RATE": "5/s",
    "POTAFLOW_TEST_RUN_WAIT_SECONDS": "1",
    "POTAFLOW_METRICS_TOKEN": METRICS_TOKEN,
    "CONN_MAX_AGE": "60",  # production's default (the test kit's 0 opens a connection per request)
    # No collectstatic here: pages load their stylesheets by plain names.
    "POTAFLOW_STATICFILES_STORAGE": "django.contrib.staticfiles.storage.StaticFilesStorage",
}


@pytest.fixture
def celery_worker_env():
    return {"POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1"}


# -- the real web server ---------------------------------------------------------------
class Server:
    def __init__(self, port: int, log: Path, process: subprocess.Popen) -> None:
        self.port, self.log, self.process = port, log, process
        self.base = f"http://127.0.0.1:{port}"

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def start_server(folder: Path, **extra: str) -> Server:
    port = free_port()
    env = subprocess_env({**SERVER_ENV, "HOST": "127.0.0.1", "PORT": str(port), **extra})
    env["PROMETHEUS_MULTIPROC_DIR"] = str(folder / "prometheus")
    log = folder / "web.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            procfile_command("web"), cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(port, log, process)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail("gunicorn exited:\n" + log.read_text())
        try:
            if requests.get(f"{server.base}/healthz", timeout=5).status_code == 200:
                warm_up(server)
                return server
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail("gunicorn did not start:\n" + log.read_text())
        time.sleep(0.2)


def warm_up(server: Server) -> None:
    """Every thread of both processes opens its database connection, as after some traffic in production.

    (Measured: a burst reaching cold threads opens 32 connections at once, and on a loaded 2-core machine
    the first /healthz waited for them.)
    """

    def miss(n: int) -> int:
        source = f"127.0.9.{n + 2}"
        with requests.Session() as session:
            session.mount("http://", SourceAddressAdapter(source))
            return session.post(f"{server.base}/hooks/warm-up-{n}", timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        assert set(pool.map(miss, range(48))) == {404}


def stop_server(server: Server) -> None:
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Server]:
    with django_db_blocker.unblock():
        server = start_server(tmp_path_factory.mktemp("hostile-web"))
    yield server
    stop_server(server)


def healthz_latencies(server: Server, count: int = 5, pause: float = 0.3) -> list[float]:
    """``count`` /healthz answers (each must be a 200), their latency in seconds."""
    latencies = []
    for _ in range(count):
        started = time.monotonic()
        response = requests.get(f"{server.base}/healthz", timeout=10)
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200, response.text
        time.sleep(pause)
    return latencies


def assert_healthz_fast(server: Server, **kwargs: Any) -> None:
    latencies = healthz_latencies(server, **kwargs)
    assert max(latencies) < 1.0, f"/healthz latencies under attack: {[round(x, 3) for x in latencies]}"


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def json_body(answer: bytes) -> dict[str, Any]:
    return json.loads(answer.partition(b"\r\n\r\n")[2] or b"null")


# -- people and workflows ------------------------------------------------------------------
def member(name: str, role: str = Role.OWNER) -> tuple[User, Organization]:
    organization = Organization.objects.create(name=name, slug=name.lower())
    user = User.objects.create_user(email=f"{name.lower()}@hostile.test", password=PASSWORD)
    Membership.objects.create(user=user, organization=organization, role=role)
    return user, organization


class SourceAddressAdapter(HTTPAdapter):
    """Connections from another loopback address: the attacker's, apart from the /healthz probe's 127.0.0.1."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__(pool_connections=4, pool_maxsize=64)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def api(server: Server, user: User, source: str) -> requests.Session:
    """A session signed in through the API (a self-registered member would get the same), from ``source``."""
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(source))
    answer = session.post(
        f"{server.base}/api/auth/token/", json={"email": user.email, "password": PASSWORD}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    session.headers["Authorization"] = f"Bearer {answer.json()['access']}"
    return session


def during(attack: Callable[[threading.Event], None], check: Callable[[], None]) -> None:
    """Run ``attack`` in a thread (it stops when the event is set) while ``check`` runs."""
    stop = threading.Event()
    thread = threading.Thread(target=attack, args=(stop,), daemon=True)
    thread.start()
    try:
        check()
    finally:
        stop.set()
        thread.join(timeout=30)


# -- 1. slow header senders ----------------------------------------------------------------------
def test_forty_slow_header_senders_hold_no_thread_and_get_a_408_at_the_header_deadline(web):
    clients = []
    for n in range(40):  # one address each: the per-address cap is another test
        sock = connect_from(f"127.0.0.{n + 2}", web.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        clients.append(sock)

    def trickle(stop: threading.Event) -> None:
        line = 0
        while not stop.wait(0.5):
            line += 1
            for sock in clients:
                with contextlib.suppress(OSError):
                    sock.sendall(f"X-Slow-{line}: a\r\n".encode())

    started = time.monotonic()
    try:
        during(trickle, lambda: assert_healthz_fast(web, count=4, pause=0.2))
        answers = [read_answer(sock, HEADER_TIMEOUT + 5) for sock in clients]
    finally:
        for sock in clients:
            sock.close()
    assert time.monotonic() - started < HEADER_TIMEOUT + 8
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert "POTAFLOW_WEB_HEADER_TIMEOUT" in json_body(answer)["detail"]


# -- slow bodies and the per-address cap -----------------------------------------------------
def test_slow_body_senders_hold_no_thread_and_get_a_408_at_the_body_deadline(web):
    clients = []
    for n in range(20):
        sock = connect_from(f"127.0.1.{n + 2}", web.port)
        sock.sendall(b"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{")
        clients.append(sock)

    def trickle(stop: threading.Event) -> None:
        while not stop.wait(0.3):
            for sock in clients:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")

    try:
        during(trickle, lambda: assert_healthz_fast(web, count=4, pause=0.2))
        answers = [read_answer(sock, BODY_TIMEOUT + 5) for sock in clients]
    finally:
        for sock in clients:
            sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert json_body(answer) == {
            "detail": f"Request body not received within {BODY_TIMEOUT} seconds (POTAFLOW_WEB_BODY_TIMEOUT).",
            "errors": {},
        }


def test_clients_that_never_hang_up_after_their_answer_hold_nothing(web):
    # gunicorn's graceful close waited in the worker's main loop, up to 2 s per connection, for the client
    # to hang up: 20 such clients froze every connection of the process for ~40 s.
    clients = [connect_from(f"127.0.4.{n + 2}", web.port) for n in range(20)]
    try:
        started = time.monotonic()
        for sock in clients:
            sock.sendall(b"GET /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answers = [read_answer(sock, 10) for sock in clients]  # each reads to the server's FIN, never closes
        assert time.monotonic() - started < 5, [answer[:12] for answer in answers]
        assert all(answer.startswith(b"HTTP/1.1 405") for answer in answers), [a[:12] for a in answers]
        assert_healthz_fast(web, count=3, pause=0.1)
    finally:
        for sock in clients:
            sock.close()


def test_one_address_gets_at_most_its_connection_cap_per_web_process(web):
    sockets = [connect_from("127.0.2.2", web.port) for _ in range(PER_ADDRESS * 3)]
    try:
        refused = []
        for sock in sockets:
            sock.settimeout(0.5)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue  # accepted and waiting for a request
            if data:
                refused.append(data)
        assert_healthz_fast(web, count=3, pause=0.1)
    finally:
        for sock in sockets:
            sock.close()
    # Two web processes: at most 2 x the cap are kept, the others are told why.
    assert len(refused) >= PER_ADDRESS, len(refused)
    assert refused[0].startswith(b"HTTP/1.1 503")
    assert "POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS" in json_body(refused[0])["detail"]


def test_a_request_whose_declared_body_exceeds_the_limit_is_refused_before_it_is_read(web):
    sock = connect_from("127.0.3.2", web.port)
    try:
        sock.sendall(b"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n")
        answer = read_answer(sock, 5)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert "POTAFLOW_MAX_BODY_BYTES" in json_body(answer)["detail"]


def test_keep_alive_pipelining_chunked_bodies_and_100_continue_still_work(web):
    _, organization = member("Piper")
    workflow = workflow_create(organization=organization, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=[])
    head = f"POST /hooks/{workflow.webhook_token} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    bodies = [json.dumps({"n": n}).encode() for n in range(3)]
    sock = connect_from("127.0.3.3", web.port)
    try:
        # Two pipelined requests (the second chunked) on one kept-alive connection...
        sock.sendall(
            head.encode() + b"Content-Length: %d\r\n\r\n%s" % (len(bodies[0]), bodies[0])
            + head.encode() + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(bodies[1]), bodies[1])
        )  # fmt: skip
        answers = read_responses(sock, 2)
        # ...then one that waits for "100 Continue" before sending its body.
        sock.sendall(head.encode() + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(bodies[2]))
        interim = read_until(sock, b"\r\n\r\n")
        sock.sendall(bodies[2])
        answers += read_responses(sock, 1)
    finally:
        sock.close()
    assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
    assert [status for status, _ in answers] == [202, 202, 202], answers
    stored = [Run.objects.get(pk=json.loads(body)["run_id"]).payload["body"] for _, body in answers]
    assert stored == [{"n": 0}, {"n": 1}, {"n": 2}]


def read_until(sock: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def read_responses(sock: socket.socket, count: int, timeout: float = 10) -> list[tuple[int, bytes]]:
    """``count`` responses framed by their Content-Length: (status, body)."""
    sock.settimeout(timeout)
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        while len(buffer) < length:
            buffer += sock.recv(65536)
        answers.append((int(head.split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return answers


# -- 2. test runs that send for real -------------------------------------------------------------
def test_forty_concurrent_test_runs_sending_to_a_slow_destination_hold_no_web_thread(web, celery_worker, settings):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]  # the destination is saved here, sent by the worker
    user, organization = member("Tester")
    with RecordingHTTPServer() as destination, api(web, user, "127.0.4.2") as session:
        destination.route("POST", "/slow", Reply(200, {"ok": True}, delay=8))
        workflow = workflow_create(
            organization=organization,
            name="Slow",
            steps=[
                {
                    "key": "send",
                    "action_type": "http.request",
                    "timeout_seconds": 2,
                    "config": {"method": "POST", "url": f"{destination.url}/slow", "body": {"a": 1}},
                }
            ],
        )
        url = f"{web.base}/api/workflows/{workflow.pk}/test/"

        def post(_: int) -> requests.Response:
            return session.post(url, json={"payload": {}, "send_step": "send"}, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            futures = [pool.submit(post, n) for n in range(40)]
            assert_healthz_fast(web, count=4, pause=0.2)
            answers = [f.result() for f in futures]
        accepted = [a for a in answers if a.status_code in (200, 202)]
        refused = [a for a in answers if a.status_code in (429, 503)]
        assert len(accepted) + len(refused) == 40, [a.status_code for a in answers]
        assert 1 <= len(accepted) <= 2  # POTAFLOW_TEST_RUN_MAX_CONCURRENT
        assert all(a.headers.get("Retry-After") for a in refused)
        limits = (
            "POTAFLOW_TEST_RUN_MAX_CONCURRENT",
            "POTAFLOW_TEST_RUN_RATE",
            "POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS",
        )
        details = {a.json()["detail"] for a in refused}
        assert all(any(limit in d for limit in limits) for d in details), details
        # The send happened on the worker, bounded by the step's timeout: the result says so.
        pending = next(a for a in accepted)
        result = poll_test(session, web, pending)
        assert result["steps"][0]["status"] == "error" and "timed out" in result["steps"][0]["error"].lower()
        assert destination.requests, "the worker sent the step"


def poll_test(session: requests.Session, server: Server, answer: requests.Response, timeout: float = 30) -> dict:
    if answer.status_code == 200:
        return answer.json()
    url = server.base + answer.json()["url"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        polled = session.get(url, timeout=10)
        if polled.status_code == 200:
            return polled.json()
        assert polled.status_code == 202, polled.text
        time.sleep(0.2)
    raise AssertionError(f"the test run did not finish: {answer.json()}")


# -- 3/5. template bombs run by the worker, refused with their limit --------------------------------
BOMBS = {
    "forceescape chain": ("{{ ('&' * 999999) " + "| forceescape " * 60 + "| length }}", "POTAFLOW_TEMPLATE_MAX_CHARS"),
    "tojson chain": ("{{ ('<' * 999999) | tojson | tojson | tojson | length }}", "POTAFLOW_TEMPLATE_MAX_CHARS"),
    "urlencode chain": ("{{ ('é' * 999999) | urlencode | urlencode | length }}", "POTAFLOW_TEMPLATE_MAX_CHARS"),
    "urlize": ("{{ ('a.co ' * 199999) | urlize | length }}", "POTAFLOW_TEMPLATE_MAX_CHARS"),
    "shared references": ("{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 30 + "{{ a }}", "MAX_CHARS"),
    "doubling (first pass)": ("{% set a = lipsum(n=5) %}" + "{% set a = a ~ a %}" * 13 + "{{ a }}", "MAX_CHARS"),
    "long filter (CPU)": (
        "{% for i in range(99999) %}{{ range(99999) | map('string') | join | length }}{% endfor %}",
        "POTAFLOW_TEMPLATE_CPU_SECONDS",
    ),
}


def test_template_bombs_in_test_runs_end_with_their_limit_on_the_worker(web, celery_worker):
    user, organization = member("Bomber")
    session = api(web, user, "127.0.4.3")
    steps = [{"key": f"b{n}", "action_type": "transform", "config": {"value": source}} for n, (source, _) in
             enumerate(BOMBS.values())]  # fmt: skip
    workflow = workflow_create(organization=organization, name="Bombs", steps=[steps[0]])
    for n, (name, (_source, limit)) in enumerate(BOMBS.items()):
        answer = session.post(
            f"{web.base}/api/workflows/{workflow.pk}/test/", json={"payload": {}, "steps": [steps[n]]}, timeout=30
        )
        assert answer.status_code in (200, 202), answer.text
        result = poll_test(session, web, answer)
        step = result["steps"][0]
        assert step["status"] == "error" and limit in step["error"], (name, step)
    assert_healthz_fast(web, count=2, pause=0.1)


# -- 4/5. the template check: source size, nesting, CPU, throttled -----------------------------------
def test_template_checks_are_capped_in_size_nesting_and_rate(web):
    user, _organization = member("Checker")
    session = api(web, user, "127.0.4.4")
    check = f"{web.base}/api/templates/check/"
    huge = "{{ trigger.body.a.b.c | upper }}" * 80_000  # 2.4 MB: 17-21 s of CPU per request before
    started = time.monotonic()
    answer = session.post(check, json={"template": huge}, timeout=30)
    assert time.monotonic() - started < 5
    assert answer.status_code == 200 and "POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS" in answer.json()["error"]
    nested = "{{ " + "(" * 100 + "1" + ")" * 100 + " }}"
    answer = session.post(check, json={"template": nested}, timeout=30)
    assert answer.json()["valid"] is False and "POTAFLOW_TEMPLATE_MAX_NESTING" in answer.json()["error"]

    heaviest = ("{{ 1+2*3-4 }}" * 6000)[:32_768]  # at the source limit: the costliest template to parse
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(session.post, check, json={"template": heaviest}, timeout=60) for _ in range(32)]
        assert_healthz_fast(web, count=4, pause=0.3)
        statuses = [f.result().status_code for f in futures]
    assert set(statuses) <= {200, 429, 503}, statuses  # 429: the check slots or the rate; 503: per-address cap


def test_one_hundred_nested_parentheses_are_a_400_naming_the_limit_on_save_test_and_import(web):
    user, organization = member("Nester")
    session = api(web, user, "127.0.4.5")
    nested = "{{ " + "(" * 100 + "1" + ")" * 100 + " }}"
    steps = [{"key": "t", "action_type": "transform", "config": {"value": nested}}]
    saved = session.post(f"{web.base}/api/workflows/", json={"name": "Nested", "steps": steps}, timeout=30)
    assert saved.status_code == 400 and "POTAFLOW_TEMPLATE_MAX_NESTING" in saved.text, saved.text
    workflow = workflow_create(organization=organization, name="Plain", steps=[])
    tested = session.post(f"{web.base}/api/workflows/{workflow.pk}/test/", json={"steps": steps}, timeout=30)
    assert tested.status_code == 400 and "POTAFLOW_TEMPLATE_MAX_NESTING" in tested.text, tested.text
    document = session.get(f"{web.base}/api/workflows/{workflow.pk}/export/", timeout=30).json()
    document["steps"] = [{**steps[0], "credential": None}]
    imported = session.post(f"{web.base}/api/workflows/import/", json=document, timeout=30)
    assert imported.status_code == 400 and "POTAFLOW_TEMPLATE_MAX_NESTING" in imported.text, imported.text


# -- 6/7. logs and stored payloads never hold a capability ------------------------------------------
def test_a_flood_of_429s_and_bad_signatures_writes_no_token_in_any_log_line(web, tmp_path):
    _, organization = member("Flooded")
    open_hook = workflow_create(organization=organization, name="Open", trigger_type=TriggerType.WEBHOOK, steps=[])
    signed = workflow_create(
        organization=organization, name="Signed", trigger_type=TriggerType.WEBHOOK, steps=[], webhook_secret="s" * 32
    )
    secret_query = "query-secret-value-0123456789"
    plain = start_server(tmp_path, LOG_FORMAT="plain", WEB_CONCURRENCY="1", POTAFLOW_METRICS_TOKEN="")
    try:
        statuses: list[int] = []
        for server in (web, plain):
            for workflow in (open_hook, signed):
                url = f"{server.base}/hooks/{workflow.webhook_token}?access-token={secret_query}&jwt={secret_query}"
                for _ in range(12):
                    statuses.append(requests.post(url, json={"n": 1}, timeout=10).status_code)
        # Production without a token: /metrics is closed, not open to anyone.
        closed = requests.get(f"{plain.base}/metrics", timeout=10)
        assert closed.status_code == 403 and "POTAFLOW_METRICS_TOKEN" in closed.text
    finally:
        stop_server(plain)
    assert 429 in statuses and 401 in statuses, statuses
    for server in (web, plain):
        lines = server.log_lines()
        assert any("/hooks/[redacted]" in line for line in lines), "the hook requests were logged"
        for workflow in (open_hook, signed):
            leaked = [line for line in lines if workflow.webhook_token in line or secret_query in line]
            assert not leaked, leaked[:3]
    assert any(json.loads(line).get("request") for line in web.log_lines() if line.startswith("{")), (
        "Django's request warnings (with their request field) were written"
    )


def test_common_token_carriers_are_stored_redacted(web):
    _, organization = member("Carrier")
    workflow = workflow_create(organization=organization, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=[])
    secret = "carrier-secret-0123456789"
    headers = {
        "X-Gitlab-Token": secret,
        "Private-Token": secret,
        "X-Shopify-Access-Token": secret,
        "X-Twilio-Signature": secret,
        "X-Custom-Api-Key": secret,
        "X-Client-Secret-Value": secret,
        "Idempotency-Key": "not-a-secret",
    }
    query = {"access-token": secret, "jwt": secret, "session": secret, "page": "2"}
    answer = requests.post(f"{web.base}/hooks/{workflow.webhook_token}", params=query, headers=headers, json={},
                           timeout=10)  # fmt: skip
    assert answer.status_code == 202, answer.text
    payload = Run.objects.get(pk=answer.json()["run_id"]).payload
    assert secret not in json.dumps(payload)
    assert payload["headers"]["idempotency-key"] == "not-a-secret" and payload["query"]["page"] == "2"


# -- 8. database trouble ------------------------------------------------------------------------
@pytest.mark.services  # stops and restarts a PostgreSQL connection path
def test_a_lost_database_is_a_503_with_retry_after_counted_in_metrics_never_a_500(web):
    user, organization = member("Unlucky")
    workflow = workflow_create(organization=organization, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=[])
    session = api(web, user, "127.0.4.6")
    hook = f"{web.base}/hooks/{workflow.webhook_token}"
    name = connection.settings_dict["NAME"]
    quoted = connection.ops.quote_name(name)

    def terminate_others() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )

    # Sweeps under load: every answer is a 202, or a 503 the sender retries.
    statuses: list[int] = []

    def send(stop: threading.Event) -> None:
        sender = requests.Session()
        while not stop.is_set() and len(statuses) < 200:
            answer = sender.post(hook, json={"n": 1}, timeout=10)
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.headers.get("Retry-After")

    def sweeps() -> None:
        for _ in range(3):
            time.sleep(0.3)
            terminate_others()

    during(send, sweeps)
    assert 500 not in statuses and set(statuses) <= {202, 429, 503}, statuses

    # A database that refuses connections: webhook and API both answer 503, then recover. (A database
    # cannot refuse connections from its own session: the switch is thrown from the maintenance database.)
    own = connection.settings_dict
    maintenance_params = {"host": own["HOST"] or "127.0.0.1", "port": own["PORT"] or 5432, "user": own["USER"]}
    with psycopg.connect(dbname="postgres", autocommit=True, password=own["PASSWORD"] or None,
                         **maintenance_params) as maintenance:  # fmt: skip
        maintenance.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false")
        try:
            terminate_others()
            down = requests.post(hook, json={"n": 1}, timeout=10)
            down_api = session.get(f"{web.base}/api/workflows/", timeout=10)
        finally:
            maintenance.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true")
    for answer in (down, down_api):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5" and "database is unavailable" in answer.json()["detail"]
    time.sleep(1.1)  # the rate limit's window
    assert requests.post(hook, json={"n": 2}, timeout=10).status_code == 202
    scrape = requests.get(f"{web.base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    counted = [line for line in scrape.text.splitlines() if line.startswith("potaflow_database_unavailable_total")]
    webhook = next(line for line in counted if 'kind="webhook"' in line)
    assert float(webhook.split()[-1]) >= 1, counted


# -- 9. member pages are not cached ----------------------------------------------------------------
def test_member_pages_are_no_store(web):
    answer = requests.get(f"{web.base}/app/login/", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
