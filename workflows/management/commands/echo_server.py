"""A local echo destination for trying workflows (README "Quick start"): ``manage.py echo_server``.

Listens on 127.0.0.1 (``--port``, 9000), prints each request it gets and answers
``200`` with ``{"received": {...}}`` — the method, path, headers and body it was
sent — so a workflow's HTTP step has somewhere real to send to. The SSRF guard
refuses loopback destinations unless ``POTAFLOW_ALLOW_PRIVATE_DESTINATIONS``
allows them (``127.0.0.1``); the command says so when it starts.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

MAX_BODY = 1024 * 1024


class EchoHandler(BaseHTTPRequestHandler):
    server_version = "PotaFlowEcho/1.0"
    out: Any = None  # the command's stdout

    def _answer(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        raw = self.rfile.read(length) if length else b""
        text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        received = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
        self.out.write(f"{self.command} {self.path}\n{json.dumps(body, indent=2, ensure_ascii=False)}\n")
        self.out.flush()
        payload = json.dumps({"received": received}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return  # each request is printed by _answer, once


class Command(BaseCommand):
    help = "Run a local echo HTTP server (127.0.0.1) that prints and answers what workflows send it."
    requires_system_checks: list[str] = []  # a tool beside PotaFlow: it reads no model, no broker

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=9000)

    def handle(self, *args: Any, port: int, **options: Any) -> None:
        EchoHandler.out = self.stdout
        server = ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
        self.stdout.write(f"Echo server on http://127.0.0.1:{port}/ — Ctrl-C stops it.")
        if "127.0.0.1" not in settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS:
            self.stdout.write(
                "Workflows may only send here once POTAFLOW_ALLOW_PRIVATE_DESTINATIONS includes 127.0.0.1 "
                "(in .env), read by web and worker at start: restart make run after setting it."
            )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            thread.join()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()
