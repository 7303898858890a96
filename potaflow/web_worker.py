"""The web server's worker class: a request is read whole before a thread is given to it.

gunicorn's ``gthread`` worker hands a connection to a pool thread as soon as
it is readable; the thread then parses the request line, the headers and the
body with blocking reads. A client sending one header line every two seconds
held a thread for as long as it liked: 32 of them (2 workers x 16 threads)
left ``/healthz`` unanswered. ``BufferingWorker`` keeps ``gthread``'s pool,
keep-alive and shutdown, but its main loop (one selector, non-blocking
sockets) reads each request itself, the way a buffering proxy does:

- **headers** must be complete within ``POTAFLOW_WEB_HEADER_TIMEOUT`` of the
  connection (or, on a kept-alive connection, of the request's first byte):
  else ``408`` and the connection is closed;
- **the body** (``Content-Length`` or ``Transfer-Encoding: chunked``) must
  arrive within ``POTAFLOW_WEB_BODY_TIMEOUT`` of the headers (``408``) and is
  at most ``workflows.intake.lookup.largest_webhook_request()`` under ``/hooks/`` (a webhook's
  files may be larger than a plain body), ``DATA_UPLOAD_MAX_MEMORY_SIZE`` elsewhere (``413``,
  read no further); a webhook body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is an upload and
  gets ``POTAFLOW_UPLOAD_BODY_TIMEOUT`` instead (``workflows.intake.lookup.body_deadline``);
  beyond ``SPOOL_BYTES`` it waits in a temporary file, not in memory (anonymous: closed, it is
  gone; deleted when the request ends, is refused or its process dies);
- **bodies held at once** by one worker process (memory and temporary files, the declared
  ``Content-Length`` counted when the headers are in, a chunked body as it arrives) are at most
  ``POTAFLOW_WEB_SPOOL_MAX_BYTES``: the request that would go over is answered ``503`` with
  ``Retry-After`` before its body is read (``413`` if it alone is larger), so the disk a web
  process can be made to fill is bounded whoever sends;
- **a body cut short** (the client closes its sending side before its ``Content-Length`` or last
  chunk arrived) is answered ``400`` saying how much arrived, and never reaches the application:
  nothing of it is kept;
- **per address** (IPv6: per /64) at most
  ``POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS`` connections per worker process
  (the peers in ``POTAFLOW_TRUSTED_PROXIES`` excepted): the next one is
  answered ``503`` and closed;
- a thread writing a response to a client that does not read gives up after
  ``POTAFLOW_WEB_BODY_TIMEOUT`` seconds without progress; a connection closed
  after its answer lingers (``LINGER_SECONDS``) in the selector, never in the
  main loop: gunicorn's own graceful close waited there up to 2 s for each
  client that did not hang up, and every other connection waited with it.

``/healthz`` has a thread of its own, so a burst of requests never queues a
health check. Only then does a thread get the request: gunicorn's own parser reads it from
memory (its validation, chunked decoding and ``wsgi.input_terminated`` are
unchanged), so a thread never waits on a client. The framing here decides
only where a request ends; anything malformed is handed to the parser as it
is, which answers ``400`` as before. Settings are read from Django's settings
once the application is loaded. TLS is not terminated here (the proxy does
it): with ``certfile`` set the worker behaves as ``gthread``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import math
import selectors
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers import gthread

from core.errors import error_body

# Request bytes kept in memory per connection; past this they wait in a temporary file.
SPOOL_BYTES = 256 * 1024
READ_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions
HEALTH_PATHS = frozenset({b"/healthz"})
SWITCH_INTERVAL = 0.001
# A closed connection lingers this long, reading (and dropping) at most this much of what its client still
# sends, so the kernel does not reset it before the client read the answer (RFC 9112 section 9.6), as
# gunicorn's close_graceful does, but in the selector: close_graceful waits in the main loop itself.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
ACCEPT_BATCH = 64


class Refusal(Exception):  # noqa: N818 - the answer itself
    """An answer the front gives itself (the request never reaches the application)."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def payload(self, extra_headers: tuple[tuple[str, str], ...] = ()) -> bytes:
        body = json.dumps(error_body(self.detail)).encode()
        head = [f"HTTP/1.1 {self.status}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in extra_headers]
        head.append("Connection: close")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RequestFramer:
    """Where one HTTP/1.1 request ends, fed bytes as they arrive; raw bytes kept (spooled past ``SPOOL_BYTES``).

    ``feed`` returns True once the request is complete; ``leftover`` is what
    followed it (a pipelined request). Malformed framing is not judged here:
    the request is declared complete as it is and gunicorn's parser refuses it.
    """

    def __init__(self, *, max_head: int, limits: Callable[[bytes], tuple[int, str]]) -> None:
        self.max_head = max_head
        self.limits = limits  # request target -> (body limit, its setting)
        self.max_body = 0
        self.limit_setting = ""
        self.target = b""
        self.pending = bytearray()  # bytes not yet consumed by the framing
        self.memory = bytearray()  # the request's bytes, up to SPOOL_BYTES...
        self.file: Any = None  # ...then all of them in a temporary file
        self.head_done = False
        self.expects_continue = False
        self.complete = False
        self.leftover = b""
        self.body_bytes = 0
        self.declared_length: int | None = None  # the Content-Length, None for a chunked body
        self._length: int | None = None  # Content-Length left to read
        self._chunked = False
        self._chunk_left = 0  # data bytes (+2 for the CRLF) left in the current chunk
        self._in_trailers = False

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    @property
    def held_bytes(self) -> int:
        """The body bytes this request holds or will: its ``Content-Length``, or a chunked body's so far."""
        return self.declared_length if self.declared_length is not None else self.body_bytes

    def cut_short(self) -> str:
        """What arrived of a body whose client closed its sending side before the end."""
        if self.declared_length is not None and self._length is not None:
            received = self.declared_length - self._length
            return (
                f"Request body cut short: the client closed the connection after {received} of the "
                f"{self.declared_length} bytes its Content-Length declared; the request was not processed "
                "and nothing was kept."
            )
        return (
            "Request body cut short: the client closed the connection before the last chunk of its chunked "
            "body; the request was not processed and nothing was kept."
        )

    def feed(self, data: bytes) -> bool:
        self.pending += data
        if not self.head_done:
            self._frame_head()
        if self.head_done and not self.complete:
            self._frame_body()
        return self.complete

    def request_chunks(self) -> Iterator[bytes]:
        """The request's raw bytes, for gunicorn's parser."""
        if self.file is None:
            return iter((bytes(self.memory),))
        self.file.seek(0)
        return iter(partial(self.file.read, READ_BYTES), b"")

    def _consume(self, count: int) -> None:
        if self.file is not None:
            self.file.write(self.pending[:count])
        else:
            self.memory += self.pending[:count]
            if len(self.memory) > SPOOL_BYTES:
                self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
                self.file.write(self.memory)
                self.memory = bytearray()
        del self.pending[:count]

    def _finish(self) -> None:
        self.complete = True
        self.leftover = bytes(self.pending)
        self.pending.clear()

    def _frame_head(self) -> None:
        # Empty lines before a request line are ignored (RFC 9112 section 2.2).
        while self.pending[:2] == b"\r\n":
            del self.pending[:2]
        end = self.pending.find(b"\r\n\r\n")
        if end < 0:
            if len(self.pending) > self.max_head:
                self._consume(len(self.pending))  # the parser answers "too large"
                self._finish()
            return
        head = bytes(self.pending[: end + 4])
        self._consume(end + 4)
        self.head_done = True
        lengths: list[str] = []
        codings: list[str] = []
        request_line = head.split(b"\r\n", 1)[0].split()
        version_11 = request_line[-1:] == [b"HTTP/1.1"]
        self.target = request_line[1] if len(request_line) > 1 else b""
        self.max_body, self.limit_setting = self.limits(self.target)
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = name.strip().lower()
            text = value.strip().decode("latin-1")
            if key == b"content-length":
                lengths.append(text)
            elif key == b"transfer-encoding":
                codings += [c.strip().lower() for c in text.split(",")]
            elif key == b"expect" and text.lower() == "100-continue" and version_11:
                self.expects_continue = True
        if codings:
            if codings[-1] != "chunked" or lengths:
                self._finish()  # the parser refuses such framing
                return
            self._chunked = True
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                self._finish()
                return
            length = int(lengths[0])
            if length > self.max_body:
                raise Refusal("413 Payload Too Large", self._too_large(f"{length} bytes declared"))
            self._length = self.declared_length = length
        else:
            self._length = 0

    def _too_large(self, what: str) -> str:
        return f"Body too large: {what}, the limit is {self.max_body} bytes ({self.limit_setting})."

    def _frame_body(self) -> None:
        if self._length is not None:
            take = min(self._length, len(self.pending))
            self._consume(take)
            self._length -= take
            self.body_bytes += take
            if self._length == 0:
                self._finish()
            return
        while not self.complete:
            if self._chunk_left:
                take = min(self._chunk_left, len(self.pending))
                if not take:
                    return
                self._consume(take)
                self._chunk_left -= take
                continue
            if self._in_trailers:
                if self.pending[:2] == b"\r\n":
                    self._consume(2)
                    self._finish()
                    return
                end = self.pending.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.pending) > self.max_head:
                        self._consume(len(self.pending))
                        self._finish()
                    return
                self._consume(end + 4)
                self._finish()
                return
            end = self.pending.find(b"\r\n")
            if end < 0:
                if len(self.pending) > MAX_CHUNK_LINE:
                    self._consume(len(self.pending))
                    self._finish()
                return
            size_text = bytes(self.pending[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self._consume(end + 2)
                self._finish()  # the parser answers "invalid chunk size"
                return
            self._consume(end + 2)
            if size == 0:
                self._in_trailers = True
                continue
            self.body_bytes += size
            if self.body_bytes > self.max_body:
                raise Refusal("413 Payload Too Large", self._too_large(f"more than {self.max_body} bytes (chunked)"))
            self._chunk_left = size + 2


class BufferedConn(gthread.TConn):
    """A connection whose requests the main loop reads before a thread sees them."""

    def __init__(self, worker: BufferingWorker, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.worker = worker
        self.address_key = worker.address_key(client)
        self.framer: RequestFramer | None = None
        self.carry = b""  # bytes of the next request read with the previous one
        self.deadline = 0.0
        self.reason = ""
        self.body_seconds = worker.body_timeout
        self.body_setting = "POTAFLOW_WEB_BODY_TIMEOUT"
        self.got_bytes = False
        self.closed = False
        self.held = 0  # body bytes counted against the worker's POTAFLOW_WEB_SPOOL_MAX_BYTES
        self.lingered = 0  # bytes drained after the answer (BufferingWorker._linger)

    def start_request(self, *, idle_seconds: float | None) -> None:
        """Wait for the next request: ``idle_seconds`` for its first byte (None: the header deadline)."""
        self.release_body()
        self.framer = RequestFramer(max_head=self.worker.max_head, limits=self.worker.body_limit)
        self.got_bytes = False
        now = time.monotonic()
        if idle_seconds is None:
            self.deadline, self.reason = now + self.worker.header_timeout, "headers"
        else:
            self.deadline, self.reason = now + idle_seconds, "idle"

    def release_body(self) -> None:
        """The request is done with (answered, refused, connection gone): its spool goes, its bytes count no more."""
        if self.framer is not None:
            self.framer.close()
        self.worker.held_bytes -= self.held
        self.held = 0

    def close(self, graceful: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.release_body()
        self.worker.forget_address(self.address_key)
        super().close(graceful=graceful)


class BufferingWorker(gthread.ThreadWorker):
    """``gthread`` with requests read whole, within deadlines and limits, before a thread takes them."""

    header_timeout = 10.0
    body_timeout = 20.0
    max_body = 2_621_440
    max_webhook_body = 1_048_576
    webhook_limit_setting = "POTAFLOW_WEBHOOK_MAX_BYTES"
    max_per_address = 50
    max_held_bytes = 0  # POTAFLOW_WEB_SPOOL_MAX_BYTES (0: no cap)
    max_head = 0
    body_deadline: Callable[..., tuple[float, str]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.per_address: dict[str, int] = {}
        self.held_bytes = 0  # request bodies held by this process now (memory and temporary files)
        self.waiting: set[BufferedConn] = set()
        self.trusted: Callable[[str], bool] = lambda _address: False
        self.buffering = not self.cfg.is_ssl
        self.health_pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="potaflow-health")

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Django is configured once the application is loaded: its settings are the limits.
        from django.conf import settings  # noqa: PLC0415 - only importable after the application loaded

        # client_ip and the intake's limits need configured settings too (after load_wsgi).
        from core.client_ip import is_trusted_proxy  # noqa: PLC0415
        from workflows.intake.lookup import body_deadline, largest_webhook_request  # noqa: PLC0415

        self.header_timeout = float(settings.POTAFLOW_WEB_HEADER_TIMEOUT)
        self.body_timeout = float(settings.POTAFLOW_WEB_BODY_TIMEOUT)
        self.max_body = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        self.max_webhook_body, self.webhook_limit_setting = largest_webhook_request()
        self.body_deadline = body_deadline
        self.max_per_address = int(settings.POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS)
        self.max_held_bytes = int(settings.POTAFLOW_WEB_SPOOL_MAX_BYTES)
        self.max_head = (
            self.cfg.limit_request_line + 2 + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2)
        )
        self.trusted = is_trusted_proxy
        # A thread waiting on I/O (the health check, the main loop) gets the GIL back from a CPU-bound thread
        # (a template check) after 1 ms instead of 5: measured, /healthz under 32 concurrent template checks.
        sys.setswitchinterval(SWITCH_INTERVAL)
        application: Any = getattr(self, "wsgi")  # noqa: B009 - set by gunicorn's load_wsgi (untyped)

        def buffered(environ: dict[str, Any], start_response: Any) -> Any:
            # potaflow.body_deadline has nothing left to wait for: the body is in memory already.
            environ["potaflow.request_buffered"] = self.buffering
            return application(environ, start_response)

        self.wsgi = buffered

    def _body_deadline(self, framer: RequestFramer) -> tuple[float, str]:
        if self.body_deadline is None:  # settings not loaded (a worker class used outside PotaFlow)
            return self.body_timeout, "POTAFLOW_WEB_BODY_TIMEOUT"
        return self.body_deadline(framer.declared_length, webhook=framer.target.startswith(b"/hooks/"))

    def body_limit(self, target: bytes) -> tuple[int, str]:
        """A request's body limit and its setting: webhooks have their own (``/hooks/``)."""
        if target.startswith(b"/hooks/"):
            return self.max_webhook_body, self.webhook_limit_setting
        return self.max_body, "POTAFLOW_MAX_BODY_BYTES"

    # -- addresses ---------------------------------------------------------------------
    @staticmethod
    def address_key(client: Any) -> str:
        """The per-address key: the IPv4 address, or the IPv6 /64 (one host's usual allocation)."""
        host = client[0] if isinstance(client, tuple) else str(client)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)

    def forget_address(self, key: str) -> None:
        left = self.per_address.get(key, 0) - 1
        if left > 0:
            self.per_address[key] = left
        else:
            self.per_address.pop(key, None)

    # -- the main loop -----------------------------------------------------------------
    def accept(self, listener: Any) -> None:
        if not self.buffering:
            super().accept(listener)
            return
        # Every pending connection at once (up to a bound): under a burst, one per loop turn left the
        # health check waiting in the backlog while the main loop competed for the GIL.
        for _ in range(ACCEPT_BATCH):
            if self.nr_conns >= self.worker_connections:
                return
            try:
                client_sock, client_addr = listener.accept()
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return
            self._accepted(listener, client_sock, client_addr)

    def _accepted(self, listener: Any, client_sock: socket.socket, client_addr: Any) -> None:
        self.nr_conns += 1
        conn = BufferedConn(self, self.cfg, client_sock, client_addr, listener.getsockname())
        count = self.per_address.get(conn.address_key, 0) + 1
        self.per_address[conn.address_key] = count
        host = client_addr[0] if isinstance(client_addr, tuple) else ""
        if self.max_per_address > 0 and count > self.max_per_address and not self.trusted(host):
            refusal = Refusal(
                "503 Service Unavailable",
                f"Too many connections from your address: at most {self.max_per_address} per web process "
                "(POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS).",
            )
            self._refuse(conn, refusal, (("Retry-After", "5"),), linger=False)  # a flood: nothing to wait for
            return
        conn.start_request(idle_seconds=None)
        self._wait_for_bytes(conn)

    def _wait_for_bytes(self, conn: BufferedConn) -> None:
        conn.sock.setblocking(False)
        self.waiting.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_buffered_readable, conn))

    def _stop_waiting(self, conn: BufferedConn) -> None:
        self.waiting.discard(conn)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)

    def _drop(self, conn: BufferedConn) -> None:
        self._stop_waiting(conn)
        self.nr_conns -= 1
        conn.close()

    def _refuse(
        self, conn: BufferedConn, refusal: Refusal, headers: tuple[tuple[str, str], ...] = (), *, linger: bool = True
    ) -> None:
        """Answer from the front (best effort: a small write on a non-blocking socket) and close."""
        try:
            conn.sock.setblocking(False)
            conn.sock.send(refusal.payload(headers))
        except OSError:
            self._drop(conn)
            return
        if linger:
            self._stop_waiting(conn)
            self._linger(conn)
        else:
            self._drop(conn)

    def _linger(self, conn: BufferedConn) -> None:
        """Close after an answer: FIN now, then drain what the client still sends until it hangs up, for at most
        ``LINGER_SECONDS`` / ``LINGER_BYTES``, from the selector (the main loop waits for nobody)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.release_body()
        conn.lingered = 0
        conn.deadline, conn.reason = time.monotonic() + LINGER_SECONDS, "linger"
        conn.sock.setblocking(False)
        self.waiting.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_linger_readable, conn))

    def on_linger_readable(self, conn: BufferedConn, _client: Any) -> None:
        try:
            data = conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.lingered += len(data)
        if not data or conn.lingered >= LINGER_BYTES:
            self._drop(conn)

    def on_buffered_readable(self, conn: BufferedConn, _client: Any) -> None:
        try:
            data = conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            framer = conn.framer
            if framer is not None and framer.head_done and not framer.complete:
                # The client closed its sending side mid-body (it may still read): say so, keep nothing.
                self._refuse(conn, Refusal("400 Bad Request", framer.cut_short()))
                return
            self._drop(conn)
            return
        self._take(conn, data)

    def _take(self, conn: BufferedConn, data: bytes) -> None:
        framer = conn.framer
        assert framer is not None  # noqa: S101 - set by start_request before any read
        if not conn.got_bytes:
            conn.got_bytes = True
            if conn.reason == "idle":  # a kept-alive connection's next request: its header deadline starts now
                conn.deadline, conn.reason = time.monotonic() + self.header_timeout, "headers"
        had_head = framer.head_done
        try:
            complete = framer.feed(data)
        except Refusal as refusal:
            self._refuse(conn, refusal)
            return
        too_much = self._hold(conn, framer)
        if too_much is not None:
            self._refuse(conn, too_much, (("Retry-After", "10"),) if too_much.status.startswith("503") else ())
            return
        if framer.head_done and not had_head and not complete:
            conn.body_seconds, conn.body_setting = self._body_deadline(framer)
            # 0: no deadline (POTAFLOW_UPLOAD_BODY_TIMEOUT=0); the connection still holds no thread.
            seconds = conn.body_seconds if conn.body_seconds > 0 else math.inf
            conn.deadline, conn.reason = time.monotonic() + seconds, "body"
            if framer.expects_continue:
                with contextlib.suppress(OSError):
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if complete:
            self._stop_waiting(conn)
            self._dispatch(conn)

    def _hold(self, conn: BufferedConn, framer: RequestFramer) -> Refusal | None:
        """Count the request's body against ``POTAFLOW_WEB_SPOOL_MAX_BYTES``, or the refusal when it does not fit."""
        more = framer.held_bytes - conn.held
        if more <= 0 or self.max_held_bytes <= 0:
            return None
        limit = self.max_held_bytes
        if framer.held_bytes > limit:
            return Refusal(
                "413 Payload Too Large",
                f"Body too large: {framer.held_bytes} bytes, the most a web process holds at once is {limit} bytes "
                "(POTAFLOW_WEB_SPOOL_MAX_BYTES).",
            )
        if self.held_bytes + more > limit:
            return Refusal(
                "503 Service Unavailable",
                f"The server is receiving too many request bodies at once: {self.held_bytes} bytes held, this one "
                f"needs {framer.held_bytes}, at most {limit} per web process (POTAFLOW_WEB_SPOOL_MAX_BYTES). "
                "Retry later.",
            )
        self.held_bytes += more
        conn.held += more
        return None

    def _dispatch(self, conn: BufferedConn) -> None:
        framer = conn.framer
        assert framer is not None  # noqa: S101
        conn.carry = framer.leftover
        conn.parser = http.get_parser(self.cfg, framer.request_chunks(), conn.client)
        conn.initialized = True
        conn.data_ready = True
        conn.continue_sent = framer.expects_continue
        if framer.target.split(b"?", 1)[0] in HEALTH_PATHS:
            # Health checks have a thread of their own: a burst of requests never queues them (load balancers
            # take a process out when they time out).
            future = self.health_pool.submit(self.handle, conn)
            future.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))
            return
        self.enqueue_req(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.waiting if c.deadline <= now]:
            if conn.reason in ("idle", "linger") or not conn.got_bytes:
                self._drop(conn)  # nothing was asked (or it was answered): nothing to answer
            elif conn.reason == "body":
                seconds = f"{conn.body_seconds:g}"
                self._refuse(
                    conn,
                    Refusal(
                        "408 Request Timeout",
                        f"Request body not received within {seconds} seconds ({conn.body_setting}).",
                    ),
                )
            else:
                self._refuse(
                    conn,
                    Refusal(
                        "408 Request Timeout",
                        f"Request headers not received within {self.header_timeout:g} seconds "
                        "(POTAFLOW_WEB_HEADER_TIMEOUT).",
                    ),
                )

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # Wake up for the next deadline, not a second later.
        if self.waiting:
            soonest = min(c.deadline for c in self.waiting) - time.monotonic()
            timeout = max(0.05, min(timeout, soonest + 0.01))
        super().wait_for_and_dispatch_events(timeout)
        if self.waiting:
            self.murder_pending()

    def finish_request(self, conn: Any, fs: Any) -> None:
        if not self.buffering or not isinstance(conn, BufferedConn):
            super().finish_request(conn, fs)
            return
        try:
            keepalive = fs.result() if not fs.cancelled() else False
        except Exception:  # noqa: BLE001 - as gthread: a failed request closes its connection
            keepalive = False
        if not keepalive:
            self._linger(conn)
            return
        idle = float(self.cfg.keepalive)
        if not self.alive:
            idle = min(idle, gthread.STOP_KEEPALIVE_LINGER)
        conn.start_request(idle_seconds=idle)
        carry, conn.carry = conn.carry, b""
        if carry:
            self.waiting.add(conn)  # _take may dispatch or refuse at once
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_buffered_readable, conn))
            conn.sock.setblocking(False)
            self._take(conn, carry)
            return
        self._wait_for_bytes(conn)

    def handle_request(self, req: Any, conn: Any) -> bool:
        if getattr(conn, "continue_sent", False):
            req._expected_100_continue = False  # the front answered it already
        if self.buffering:
            # A client that stops reading the response holds this thread at most this long per write.
            conn.sock.settimeout(self.body_timeout)
        return super().handle_request(req, conn)
