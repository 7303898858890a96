"""A recording HTTP/1.1 server on 127.0.0.1: the base of every fake peer in the test kit.

``RecordingHTTPServer`` records each request and replies as routed; the fake
peers of the integrations (``integrations/<name>/tests/peer.py``) subclass it
and speak their service's protocol in ``handle``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.body.decode())


@dataclass
class Reply:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        body = self.body
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        elif isinstance(body, str):
            body = body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return body, headers


Responder = Reply | Callable[[RecordedRequest], Reply] | list


class RecordingHTTPServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 that records requests and replies as routed.

    ``route(method, path, reply)``: ``reply`` is a ``Reply``, a function of the
    request, or a list of those consumed in order (the last one repeats).
    Unrouted requests go to ``handle`` (subclasses implement a protocol there),
    which answers 404 by default.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[RecordedRequest] = []
        self.connections = 0  # TCP connections accepted (a kept-alive one serves several requests)
        self.routes: dict[tuple[str, str], Responder] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:  # once per accepted connection
                super().setup()
                with server._lock:
                    server.connections += 1

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                request = RecordedRequest(
                    method=self.command,
                    path=urllib.parse.unquote(parsed.path),
                    query=urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with server._lock:
                    server.requests.append(request)
                reply = server._reply_for(request)
                if reply.delay:
                    time.sleep(reply.delay)
                payload, headers = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name=f"http-{self.port}", daemon=True
        )

    # -- lifecycle -------------------------------------------------------
    def start(self) -> RecordingHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> RecordingHTTPServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- behaviour -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def route(self, method: str, path: str, reply: Responder) -> None:
        self.routes[(method.upper(), path)] = reply

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.routes.clear()

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            responder = self.routes.get((request.method, request.path))
            if isinstance(responder, list):
                responder = responder.pop(0) if len(responder) > 1 else responder[0]
        if responder is None:
            try:
                return self.handle(request)
            except Exception as exc:  # a bug in a fake must be visible, not a hang  # noqa: BLE001 - a test peer answers every failure as a 500
                return Reply(599, {"fake_server_error": repr(exc)})
        return responder(request) if callable(responder) else responder

    def handle(self, request: RecordedRequest) -> Reply:
        return Reply(404, {"error": f"no route for {request.method} {request.path}"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
