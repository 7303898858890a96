"""Network fixtures for tests (owned by the integrations work).

1. **Socket guard.** Installed for the whole test session when this plugin
   loads: any ``connect``/``sendto`` to an address outside 127.0.0.0/8 and
   ::1 raises ``NetworkGuardViolation`` *before* the packet leaves, and the
   test that caused it fails even if the code under test swallowed the
   exception. Unix sockets are allowed. The Celery worker subprocess gets the
   same guard through ``worker_network_guard_env()`` (``PYTHONPATH`` puts
   ``worker_site/sitecustomize.py`` first, which installs it at interpreter
   start-up) and reports violations into a file this plugin checks after
   every test.
2. **Local protocol peers**, all bound to 127.0.0.1 on a free port:
   ``RecordingHTTPServer`` (records every request, replies as told),
   ``FakeSlack`` (``chat.postMessage``), ``FakeSendGrid`` (``POST
   /v3/mail/send``), ``FakeGoogle`` (OAuth JWT-bearer token exchange and the
   Sheets ``spreadsheets.get`` / ``values:append`` endpoints) and an aiosmtpd
   SMTP server (``smtp_server`` fixture; AUTH and STARTTLS).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .socket_guard import (  # noqa: F401 - re-exported for tests
    GUARD_LOG_ENV,
    NetworkGuardViolation,
    install_socket_guard,
    is_loopback_sockaddr,
    report_to_file,
)

# ---------------------------------------------------------------------------
# Socket guard
# ---------------------------------------------------------------------------
_violations: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    install_socket_guard(_violations.append)


@contextlib.contextmanager
def expected_guard_violations() -> Iterator[list[str]]:
    """For the guard's own tests: collect (and forgive) violations raised inside the block."""
    before = len(_violations)
    caught: list[str] = []
    try:
        yield caught
    finally:
        caught.extend(_violations[before:])
        del _violations[before:]


_guard_log_path = Path(tempfile.gettempdir()) / f"potaflow-network-guard-{os.getpid()}.log"


def worker_network_guard_env() -> dict[str, str]:
    """Environment for a worker subprocess so it installs the same guard and reports here.

    ``worker_site/sitecustomize.py`` runs at interpreter start-up (before
    Django, Celery or any task), so the guard covers everything the worker does.
    """
    site = Path(__file__).resolve().parent / "worker_site"
    base = Path(__file__).resolve().parent.parent
    return {GUARD_LOG_ENV: str(_guard_log_path), "PYTHONPATH": os.pathsep.join([str(site), str(base)])}


@pytest.fixture(autouse=True)
def _network_guard() -> Iterator[None]:
    """Fail the test if it (or a guarded worker) tried to reach beyond loopback."""
    before = len(_violations)
    yield
    found = _violations[before:]
    if _guard_log_path.exists():
        found += _guard_log_path.read_text(encoding="utf-8").splitlines()
        _guard_log_path.unlink()
    if found:
        pytest.fail("\n".join(found), pytrace=False)


# ---------------------------------------------------------------------------
# Recording HTTP server
# ---------------------------------------------------------------------------
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
        self.routes: dict[tuple[str, str], Responder] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

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
            except Exception as exc:  # a bug in a fake must be visible, not a hang
                return Reply(599, {"fake_server_error": repr(exc)})
        return responder(request) if callable(responder) else responder

    def handle(self, request: RecordedRequest) -> Reply:
        return Reply(404, {"error": f"no route for {request.method} {request.path}"})


@pytest.fixture
def http_server() -> Iterator[RecordingHTTPServer]:
    with RecordingHTTPServer() as server:
        yield server


# ---------------------------------------------------------------------------
# Slack Web API: chat.postMessage (https://api.slack.com/methods/chat.postMessage)
# ---------------------------------------------------------------------------
class FakeSlack(RecordingHTTPServer):
    """Speaks Slack's Web API conventions: HTTP 200 with ``{"ok": false, "error": code}``
    for API errors, HTTP 429 + ``Retry-After`` with ``error: ratelimited``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.valid_tokens = {"xoxb-test-token"}
        self.channels = {"C0123456789": "general", "C0NOTMEMBER": "secret"}
        self.bot_member_of = {"C0123456789"}
        self.rate_limited: list[int] = []  # pending Retry-After values, consumed one per call
        self.posted: list[dict[str, Any]] = []

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def handle(self, request: RecordedRequest) -> Reply:
        if request.path != "/api/chat.postMessage" or request.method != "POST":
            return Reply(404, {"ok": False, "error": "unknown_method"})
        if self.rate_limited:
            return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(self.rate_limited.pop(0))})
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Reply(200, {"ok": False, "error": "not_authed"})
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            args = request.json()
        else:
            args = {k: v[0] for k, v in request.form().items()}
        channel = args.get("channel")
        channel_id = channel if channel in self.channels else None
        if channel_id is None and isinstance(channel, str):
            channel_id = next((cid for cid, name in self.channels.items() if f"#{name}" == channel), None)
        if channel_id is None:
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        if channel_id not in self.bot_member_of:
            return Reply(200, {"ok": False, "error": "not_in_channel"})
        if not args.get("text") and not args.get("blocks"):
            return Reply(200, {"ok": False, "error": "no_text"})
        ts = f"{time.time():.6f}"
        message = {"type": "message", "text": args.get("text", ""), "bot_id": "B0FAKEBOT", "ts": ts}
        if args.get("blocks"):
            message["blocks"] = args["blocks"]
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self.posted.append(args)
        return Reply(200, {"ok": True, "channel": channel_id, "ts": ts, "message": message})


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


# ---------------------------------------------------------------------------
# SendGrid v3 Mail Send (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send)
# ---------------------------------------------------------------------------
class FakeSendGrid(RecordingHTTPServer):
    """``POST /v3/mail/send``: 202 with an empty body and ``X-Message-Id`` on success;
    ``{"errors": [{"message", "field", "help"}]}`` with 400/401/403/413 otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.valid_keys = {"SG.test-key"}
        self.failures: list[Reply] = []  # injected replies (e.g. 500, 429), consumed in order
        self.sent: list[dict[str, Any]] = []

    def _error(self, status: int, message: str, field_name: str | None = None) -> Reply:
        return Reply(status, {"errors": [{"message": message, "field": field_name, "help": None}]})

    def handle(self, request: RecordedRequest) -> Reply:
        if (request.method, request.path) != ("POST", "/v3/mail/send"):
            return self._error(404, "Not found")
        if self.failures:
            return self.failures.pop(0)
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_keys:
            return self._error(401, "The provided authorization grant is invalid, expired, or revoked")
        try:
            mail = request.json()
        except ValueError:
            return self._error(400, "Bad Request", None)
        personalizations = mail.get("personalizations") or []
        if not personalizations:
            return self._error(
                400,
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
            )
        for index, p in enumerate(personalizations):
            if not p.get("to"):
                return self._error(
                    400,
                    "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",  # noqa: E501 - SendGrid's wording
                    f"personalizations.{index}.to",
                )
            if not (p.get("subject") or mail.get("subject")):
                return self._error(
                    400,
                    "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",  # noqa: E501 - SendGrid's wording
                    "subject",
                )
        if not (mail.get("from") or {}).get("email"):
            return self._error(
                400,
                "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",  # noqa: E501 - SendGrid's wording
                "from",
            )
        content = mail.get("content") or []
        if not content:
            return self._error(
                400,
                "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",  # noqa: E501 - SendGrid's wording
                "content",
            )
        self.sent.append(mail)
        return Reply(202, b"", {"X-Message-Id": secrets.token_urlsafe(16)})


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        yield server


# ---------------------------------------------------------------------------
# Google: OAuth 2.0 JWT-bearer token exchange + Sheets API v4
# (https://developers.google.com/identity/protocols/oauth2/service-account,
#  https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/append)
# ---------------------------------------------------------------------------
_rsa_cache: dict[str, Any] = {}


def service_account_key(
    token_uri: str, *, client_email: str = "potaflow@test-project.iam.gserviceaccount.com", unknown: bool = False
) -> dict[str, Any]:
    """A service-account JSON key with a real RSA key generated by ``cryptography``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if "key" not in _rsa_cache:
        _rsa_cache["key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # An unknown key (one the fake token endpoint cannot verify) when asked for.
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if unknown else _rsa_cache["key"]
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": client_email,
        "client_id": "123456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
    }


def _public_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization

    return (
        _rsa_cache["key"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


class FakeGoogle(RecordingHTTPServer):
    """Token endpoint at ``/token`` (verifies the RS256 assertion against the generated
    key) and Sheets at ``/v4/spreadsheets``. ``sheets`` maps spreadsheet id ->
    {worksheet title -> rows}; ids in ``forbidden`` answer 403 (not shared).
    """

    SHEETS_SCOPE = "https://www.googleapis.com/auth/spreadsheets"

    def __init__(self) -> None:
        super().__init__()
        self.sheets: dict[str, dict[str, list[list[Any]]]] = {}
        self.forbidden: set[str] = set()
        self.failures: list[Reply] = []  # injected Sheets replies (e.g. 429, 503)
        self.tokens: set[str] = set()
        self.assertions: list[dict[str, Any]] = []

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def sheets_url(self) -> str:
        return f"{self.url}/v4/spreadsheets"

    @property
    def drive_url(self) -> str:
        return f"{self.url}/drive/v3/files"

    def _google_error(self, code: int, message: str, status: str) -> Reply:
        return Reply(code, {"error": {"code": code, "message": message, "status": status}})

    def handle(self, request: RecordedRequest) -> Reply:
        if request.path == "/token" and request.method == "POST":
            return self._token(request)
        if request.path.startswith("/v4/spreadsheets/"):
            return self._sheets(request)
        return self._google_error(404, "Not found", "NOT_FOUND")

    def _token(self, request: RecordedRequest) -> Reply:
        from google.auth import jwt

        form = request.form()
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return Reply(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."})
        try:
            # Google documents aud = its token endpoint; google-auth always sends that value.
            audience = ["https://oauth2.googleapis.com/token", self.token_uri]
            claims = jwt.decode(form["assertion"][0], certs=_public_pem(), audience=audience)
        except Exception as exc:
            return Reply(400, {"error": "invalid_grant", "error_description": f"Invalid JWT Signature. ({exc})"})
        self.assertions.append(claims)
        if self.SHEETS_SCOPE not in claims.get("scope", "").split():
            return Reply(400, {"error": "invalid_scope", "error_description": "Missing spreadsheets scope."})
        token = f"ya29.fake-{secrets.token_urlsafe(12)}"
        self.tokens.add(token)
        return Reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _sheets(self, request: RecordedRequest) -> Reply:
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return self._google_error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        if self.failures:
            return self.failures.pop(0)
        rest = request.path.removeprefix("/v4/spreadsheets/")
        sheet_id, _, sub = rest.partition("/")
        if sheet_id in self.forbidden:
            return self._google_error(403, "The caller does not have permission", "PERMISSION_DENIED")
        if sheet_id not in self.sheets:
            return self._google_error(404, "Requested entity was not found.", "NOT_FOUND")
        worksheets = self.sheets[sheet_id]
        if not sub and request.method == "GET":
            return Reply(
                200,
                {
                    "spreadsheetId": sheet_id,
                    "properties": {"title": f"Sheet {sheet_id}", "locale": "en_US", "timeZone": "Etc/GMT"},
                    "sheets": [
                        {
                            "properties": {
                                "sheetId": index,
                                "title": title,
                                "index": index,
                                "sheetType": "GRID",
                                "gridProperties": {"rowCount": 1000, "columnCount": 26},
                            }
                        }
                        for index, title in enumerate(worksheets)
                    ],
                    "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{sheet_id}/edit",
                },
            )
        if sub.startswith("values/") and sub.endswith(":append") and request.method == "POST":
            a1 = sub.removeprefix("values/").removesuffix(":append")
            title = a1.rsplit("!", 1)[0].strip("'").replace("''", "'")
            option = request.query.get("valueInputOption", [None])[0]
            if option not in ("RAW", "USER_ENTERED"):
                return self._google_error(400, "Invalid valueInputOption", "INVALID_ARGUMENT")
            if title not in worksheets:
                return self._google_error(400, f"Unable to parse range: {a1}", "INVALID_ARGUMENT")
            values = request.json().get("values") or []
            rows = worksheets[title]
            start = len(rows) + 1
            rows.extend(values)
            width = max((len(r) for r in values), default=0)
            last_col = chr(ord("A") + max(width, 1) - 1)
            updated = f"{title}!A{start}:{last_col}{start + len(values) - 1}"
            return Reply(
                200,
                {
                    "spreadsheetId": sheet_id,
                    "tableRange": f"{title}!A1:{last_col}{max(start - 1, 1)}",
                    "updates": {
                        "spreadsheetId": sheet_id,
                        "updatedRange": updated,
                        "updatedRows": len(values),
                        "updatedColumns": width,
                        "updatedCells": sum(len(r) for r in values),
                    },
                },
            )
        return self._google_error(404, "Not found", "NOT_FOUND")


@pytest.fixture
def fake_google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        yield server


# ---------------------------------------------------------------------------
# SMTP: aiosmtpd (AUTH, optional STARTTLS with a self-signed certificate)
# ---------------------------------------------------------------------------
@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None

    def message(self):
        import email
        import email.policy

        return email.message_from_bytes(self.data, policy=email.policy.default)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_certificate(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Write a self-signed certificate (valid for ``hostname`` and 127.0.0.1) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class SMTPServer:
    """aiosmtpd on 127.0.0.1: records messages; AUTH PLAIN/LOGIN against ``users``;
    with ``tls=(cert, key)`` it offers STARTTLS and requires it before AUTH.
    """

    def __init__(self, *, users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[ReceivedMail] = []
        self.users = users if users is not None else {"mailer": "s3cret"}
        server = self

        class Handler:
            async def handle_DATA(self, smtp_server, session, envelope):  # noqa: N802 - aiosmtpd hook name
                login = session.auth_data.login.decode() if getattr(session.auth_data, "login", None) else None
                server.messages.append(
                    ReceivedMail(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        envelope.original_content or envelope.content,
                        login,
                    )
                )
                return "250 OK queued as fake"

        def authenticator(smtp_server, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
            password = auth_data.password.decode() if isinstance(auth_data.password, bytes) else auth_data.password
            ok = login is not None and server.users.get(login) == password
            # handled=False: aiosmtpd then answers 235, or 535 on failure, itself.
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs: dict[str, Any] = {
            "authenticator": authenticator,
            # Without TLS, AUTH is offered and checked but not required (aiosmtpd warns about
            # requiring it in clear); with TLS it is required, after STARTTLS.
            "auth_required": bool(self.users) and tls is not None,
            "auth_require_tls": tls is not None,
        }
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
        self.port = free_port()
        self.host = "127.0.0.1"
        self.controller = Controller(Handler(), hostname=self.host, port=self.port, **kwargs)

    def start(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_starttls_server(tls_certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[SMTPServer]:
    """STARTTLS-only server; the client trusts its certificate through SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_certificate[0]))
    server = SMTPServer(tls=tls_certificate).start()
    yield server
    server.stop()
