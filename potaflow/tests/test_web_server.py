"""The production web server (gunicorn.conf.py) stays reachable while slow clients trickle uploads.

The attack: two clients sending a body a byte at a time made the site
unreachable for ~32 s (sync workers, one request each). These tests start the
real gunicorn with the repository's config on a free loopback port.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthz(port: int, timeout: float) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as response:
        return response.status


def _start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    environment = {**os.environ, "POTAFLOW_VAR_DIR": str(tmp_path), "HOST": "127.0.0.1", "PORT": str(port), **env}
    environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "potaflow.wsgi:application", "--config", "gunicorn.conf.py"],
        cwd=BASE_DIR,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "gunicorn.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if _healthz(port, timeout=2) == 200:
                return process, port
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text())
        time.sleep(0.2)


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[int, Path]]:
    process, port = _start(tmp_path, POTAFLOW_WEB_BODY_TIMEOUT="3")
    yield port, tmp_path
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _slow_client(port: int, stop: threading.Event, length: int = 100_000) -> socket.socket:
    """Headers with a large Content-Length, then the body one byte every 0.2 s until ``stop``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
        + b"{"
    )

    def trickle() -> None:
        while not stop.wait(0.2):
            try:
                sock.sendall(b" ")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    return sock


def test_healthz_answers_within_a_second_while_ten_clients_trickle_bodies(server):
    port, _ = server
    stop = threading.Event()
    clients = [_slow_client(port, stop) for _ in range(10)]
    try:
        time.sleep(1)  # every slow client has been handed to a worker thread by now
        for _ in range(5):
            started = time.monotonic()
            assert _healthz(port, timeout=5) == 200
            assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        for sock in clients:
            sock.close()


def test_a_body_that_does_not_arrive_in_time_is_a_408_in_the_error_shape(server):
    port, _ = server
    stop = threading.Event()
    sock = _slow_client(port, stop)
    try:
        started = time.monotonic()
        sock.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    finally:
        stop.set()
        sock.close()
    assert 2.5 < time.monotonic() - started < 8
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    # The message names its setting (issue 23: every refusal names the limit and the setting).
    assert json.loads(body) == {
        "detail": "Request body not received within 3 seconds (POTAFLOW_WEB_BODY_TIMEOUT).",
        "errors": {},
    }


def test_a_normal_request_with_a_body_still_works(server):
    port, _ = server
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/auth/token/refresh/",
        data=json.dumps({"refresh": "garbage"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert excinfo.value.code == 401
    assert json.loads(excinfo.value.read())["detail"] == "Token is invalid"
