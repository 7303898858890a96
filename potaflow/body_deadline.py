"""A deadline for receiving a request body, so a slow client cannot hold a web thread for long.

Under the default start command (the Procfile's gunicorn with ``potaflow.web_worker.BufferingWorker``)
the front has read every request whole, within its deadlines and limits, before the application runs
(``potaflow.request_buffered`` in the environ): this wrapper then passes it through. What follows is
for a server that hands the application the socket (plain ``gthread``; the worker with TLS on).

gunicorn hands the application the socket once the headers are in; the body
is read lazily, with blocking reads and no timeout, by whatever first touches
it. A client that sends ``Content-Length: 1000000`` and then a byte every few
seconds would keep that thread forever. This WSGI wrapper reads bodies up to
``DATA_UPLOAD_MAX_MEMORY_SIZE`` before the application runs, stops reading
after ``POTAFLOW_WEB_BODY_TIMEOUT`` seconds, and answers ``408`` in the API's
error shape when the body does not arrive in time.

Larger bodies (uploads a webhook streams to file storage as they arrive; any
other view refuses them unread) and chunked bodies (no ``Content-Length``)
are read by the application itself: they get a deadline too
(``upload_seconds``, ``POTAFLOW_UPLOAD_BODY_TIMEOUT``, for a large body;
``seconds`` for a chunked one, which the webhook bounds at
``POTAFLOW_WEBHOOK_MAX_BYTES``). At the deadline the socket's read side is shut,
reads end early, and the environ carries ``core.request_body.BODY_EXPIRED``:
the view answers 408 and keeps nothing of the cut body.
"""

import contextlib
import io
import json
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from core.errors import error_body
from core.request_body import BODY_EXPIRED

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BodyDeadline:
    """Wrap a WSGI app: read the body within ``seconds`` or answer 408."""

    def __init__(self, app: WSGIApp, *, seconds: float, max_bytes: int, upload_seconds: float = 0) -> None:
        self.app = app
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.upload_seconds = upload_seconds

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if environ.get("potaflow.request_buffered"):  # potaflow.web_worker read the whole request already
            return self.app(environ, start_response)
        if sock is not None and length > self.max_bytes and self.upload_seconds > 0:
            return self._streamed(environ, start_response, sock, self.upload_seconds)
        if sock is not None and not length and environ.get("HTTP_TRANSFER_ENCODING") and self.seconds > 0:
            return self._streamed(environ, start_response, sock, self.seconds)
        if sock is None or self.seconds <= 0 or not 0 < length <= self.max_bytes:
            return self.app(environ, start_response)
        body = self._read(environ["wsgi.input"], sock, length)
        if body is None:
            detail = f"Request body not received within {self.seconds:g} seconds (POTAFLOW_WEB_BODY_TIMEOUT)."
            payload = json.dumps(error_body(detail)).encode()
            start_response(
                "408 Request Timeout",
                [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), ("Connection", "close")],
            )
            return [payload]
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def _streamed(
        self, environ: dict[str, Any], start_response: StartResponse, sock: socket.socket, seconds: float
    ) -> Iterable[bytes]:
        """Run the application on a body it reads itself, ended early at ``seconds`` (then ``BODY_EXPIRED``)."""
        stream = environ["wsgi.input"]

        def expire() -> None:
            environ[BODY_EXPIRED] = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        environ["wsgi.input"] = _UntilExpired(stream, environ)
        timer.start()
        try:
            return self.app(environ, start_response)
        finally:
            timer.cancel()

    def _read(self, stream: Any, sock: socket.socket, length: int) -> bytes | None:
        # gunicorn's body reader loops until it has the bytes asked for, so a
        # socket timeout per recv() never fires against a trickle. A timer shuts
        # the socket's read side at the deadline instead: the read then ends early.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

        timer = threading.Timer(self.seconds, expire)
        timer.daemon = True
        timer.start()
        chunks: list[bytes] = []
        remaining = length
        try:
            while remaining > 0 and not expired.is_set():
                chunk = stream.read(min(remaining, 65536))
                if not chunk:  # the client stopped early: the application sees what arrived
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError:
            if not expired.is_set():
                raise
        finally:
            timer.cancel()
        if expired.is_set() and remaining > 0:
            return None
        return b"".join(chunks)


class _UntilExpired:
    """``wsgi.input`` that reads as the end of the body once its deadline passed (the socket is shut)."""

    def __init__(self, stream: Any, environ: dict[str, Any]) -> None:
        self.stream = stream
        self.environ = environ

    def _call(self, method: str, *args: Any) -> bytes:
        if self.environ.get(BODY_EXPIRED):
            return b""
        try:
            return getattr(self.stream, method)(*args)
        except OSError:
            if self.environ.get(BODY_EXPIRED):
                return b""
            raise

    def read(self, *args: Any) -> bytes:
        return self._call("read", *args)

    def readline(self, *args: Any) -> bytes:
        return self._call("readline", *args)
