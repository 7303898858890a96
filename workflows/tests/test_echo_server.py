"""The README quick start's echo destination answers and prints what it got."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from testing.http_server import free_port
from testing.worker import BASE_DIR, subprocess_env

pytestmark = pytest.mark.slow


def test_echo_server_echoes_a_post(tmp_path):
    port = free_port()
    log = (tmp_path / "echo.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "echo_server", "--port", str(port)],
        cwd=BASE_DIR, env=subprocess_env({}), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/orders", data=b'{"amount": 150}', method="POST",
                    headers={"Content-Type": "application/json"},
                )  # fmt: skip
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the local echo server
                    answer = json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert answer["received"]["body"] == {"amount": 150} and answer["received"]["path"] == "/orders"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "POST /orders" in (tmp_path / "echo.log").read_text()
