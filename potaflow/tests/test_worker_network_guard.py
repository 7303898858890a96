"""The guard reaches subprocesses started with ``worker_network_guard_env()`` (the Celery worker's way)."""

import subprocess
import sys

from testing import network


def test_a_subprocess_with_the_guard_env_refuses_and_reports(monkeypatch, tmp_path):
    log = tmp_path / "guard.log"
    monkeypatch.setattr(network, "_guard_log_path", log)
    env = {**network.worker_network_guard_env()}
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('10.255.255.1', 9))\n"
        "except AssertionError as exc:\n"
        "    print('refused:', type(exc).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert "refused: NetworkGuardViolation" in result.stdout, result.stderr
    assert "10.255.255.1" in log.read_text()
    log.unlink()  # handled here: the autouse check must not fail this test
