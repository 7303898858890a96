"""The real web server (gunicorn with the repository's ``gunicorn.conf.py``) against the test database.

``start_web(env)`` starts it on a free loopback port in its own process group
(``.kill()`` is a machine dying mid-request) and returns once ``/healthz``
answers; ``.url`` is its origin. It sees what the worker sees
(``testing.worker.subprocess_env``: the test database and broker) plus ``env``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping

from .worker import BASE_DIR, _free_port, subprocess_env, test_var_dir


class WebProcess:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.port = _free_port()
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = test_var_dir() / f"web-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> WebProcess:
        env = subprocess_env({"HOST": "127.0.0.1", "PORT": str(self.port), "WEB_CONCURRENCY": "1",
                              "SECURE_SSL_REDIRECT": "false", **self.extra_env})  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "potaflow.wsgi:application", "--config", "gunicorn.conf.py"],
                cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"gunicorn did not start:\n{self.log_path.read_text(errors='replace')[-5000:]}")

    def kill(self) -> None:
        """SIGKILL the master and its workers at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_web(env: Mapping[str, str] | None = None) -> WebProcess:
    return WebProcess(env).start()
