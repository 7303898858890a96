"""The shipped proxy configuration (deploy/nginx/potaflow.conf) in front of the real gunicorn.

nginx (Debian's) runs the file verbatim; only its two site files are the
test's (``testing.services.Nginx``): the upstream is a gunicorn started with
gunicorn.conf.py on a free loopback port, and nginx connects to it from
127.0.0.2 (``proxy_bind``), the one address the web process trusts
(``POTAFLOW_TRUSTED_PROXIES=127.0.0.2/32``). Clients connect from 127.0.0.1
or, to be a second client, from 127.0.0.3.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testing.services import Nginx, free_port

BASE_DIR = Path(__file__).resolve().parents[2]
PROXY_ADDRESS = "127.0.0.2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    port = free_port()
    environment = {
        **os.environ,
        "POTAFLOW_VAR_DIR": str(folder),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "POTAFLOW_BEHIND_PROXY": "true",
        "POTAFLOW_TRUSTED_PROXIES": f"{PROXY_ADDRESS}/32",
        "POTAFLOW_AUTH_THROTTLE_RATE": "3/min",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    environment.pop("CACHE_URL", None)  # the file cache under POTAFLOW_VAR_DIR: shared by both workers
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "potaflow.wsgi:application", "--config", "gunicorn.conf.py"],
        cwd=BASE_DIR,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "gunicorn.log").open("wb"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("gunicorn did not start:\n" + (folder / "gunicorn.log").read_text()[-3000:])
        time.sleep(0.2)
    yield port
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def proxy(web):
    nginx = Nginx([f"127.0.0.1:{web}"], site_extra=[f"proxy_bind {PROXY_ADDRESS};"]).start()
    yield nginx
    nginx.stop()


def get(url: str, *, headers: dict | None = None, source: str | None = None, data: bytes | None = None,
        timeout: float = 5) -> tuple[int, bytes]:  # fmt: skip
    """One request from ``source`` (a loopback address of the client's choice)."""
    host, _, port = url.split("/")[2].partition(":")
    path = "/" + url.split("/", 3)[3]
    with socket.create_connection((host, int(port)), timeout=timeout, source_address=(source or "127.0.0.1", 0)) as s:
        lines = [f"{'POST' if data is not None else 'GET'} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if data is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (data or b""))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_healthz_answers_within_a_second_while_50_clients_trickle_headers(proxy):
    stop = threading.Event()
    clients = []

    def trickle(sock: socket.socket) -> None:
        while not stop.wait(0.5):
            try:
                sock.sendall(b"a")
            except OSError:
                return

    try:
        for _ in range(50):
            sock = socket.create_connection((proxy.listen, proxy.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            threading.Thread(target=trickle, args=(sock,), daemon=True).start()
            clients.append(sock)
        time.sleep(1)
        for _ in range(5):
            started = time.monotonic()
            status, body = get(f"{proxy.url}/healthz")
            elapsed = time.monotonic() - started
            assert status == 200, body
            assert elapsed < 1.0, f"/healthz took {elapsed:.2f} s behind 50 slow-header clients"
    finally:
        stop.set()
        for sock in clients:
            sock.close()


def test_the_proxy_and_potaflow_agree_on_the_body_limit(proxy):
    status, body = get(f"{proxy.url}/api/auth/token/", data=b"x" * (2621440 + 1))
    assert status == 413
    assert "2621440" in json.loads(body)["detail"]
    # At the limit the proxy passes it on: PotaFlow itself answers (a 400 for this non-JSON body).
    status, body = get(f"{proxy.url}/api/auth/token/", data=b"x" * 2621440, timeout=30)
    assert status == 400, body[:300]
    status, _ = get(f"{proxy.url}/metrics")
    assert status == 404  # scraped on the web hosts, not through the proxy


def throttled_after(url: str, *, source: str = "127.0.0.1", spoof: bool) -> int | None:
    """The request number answered 429 by the auth throttle (3/min per client address), if any."""
    for n in range(1, 6):
        headers = {"X-Forwarded-For": f"203.0.113.{n}"} if spoof else {}
        status, _ = get(f"{url}/api/auth/token/refresh/", headers=headers, source=source, data=b'{"refresh": "x"}')
        if status == 429:
            return n
    return None


def test_forwarded_for_is_believed_from_the_proxy_only(proxy, web):
    # Straight at gunicorn, a client rotating X-Forwarded-For is still one address: the 4th is refused.
    assert throttled_after(f"http://127.0.0.1:{web}", source="127.0.0.4", spoof=True) == 4
    # Through the proxy the client's own header is replaced: rotating it changes nothing either.
    assert throttled_after(proxy.url, source="127.0.0.1", spoof=True) == 4
    # ...while the proxy's word is believed: another client behind the same proxy has its own budget.
    assert throttled_after(proxy.url, source="127.0.0.3", spoof=False) == 4
