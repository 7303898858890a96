"""Network fixtures for tests: the socket guard, and the local peers as fixtures.

1. **Socket guard.** Installed for the whole test session when this plugin
   loads: any ``connect``/``sendto`` to an address outside 127.0.0.0/8 and
   ::1 raises ``NetworkGuardViolation`` *before* the packet leaves, and the
   test that caused it fails even if the code under test swallowed the
   exception. Unix sockets are allowed. The Celery worker subprocess gets the
   same guard through ``worker_network_guard_env()`` (``PYTHONPATH`` puts
   ``worker_site/sitecustomize.py`` first, which installs it at interpreter
   start-up) and reports violations into a file this plugin checks after
   every test.
2. **Local protocol peers**, all bound to 127.0.0.1 on a free port, as
   fixtures: ``http_server`` (``testing.http_server.RecordingHTTPServer``),
   and each integration's fake from its own folder
   (``integrations/<name>/tests/peer.py``): ``fake_slack``, ``fake_sendgrid``,
   ``fake_google``, ``fake_oauth`` (a generic OAuth 2.0 provider), ``smtp_server`` / ``smtp_starttls_server``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.email.tests.peer import FakeSendGrid, ReceivedMail, SMTPServer
from integrations.oauth.tests.peer import FakeOAuthProvider
from integrations.sheets.tests.peer import FakeGoogle, service_account_key
from integrations.slack.tests.peer import FakeSlack

from .http_server import RecordedRequest, RecordingHTTPServer, Reply, free_port
from .socket_guard import (
    GUARD_LOG_ENV,
    NetworkGuardViolation,
    install_socket_guard,
    is_loopback_sockaddr,
    report_to_file,
)

# Tests import the peers and the guard's names from here.
__all__ = [
    "GUARD_LOG_ENV",
    "FakeGoogle",
    "FakeOAuthProvider",
    "FakeSendGrid",
    "FakeSlack",
    "NetworkGuardViolation",
    "ReceivedMail",
    "RecordedRequest",
    "RecordingHTTPServer",
    "Reply",
    "SMTPServer",
    "expected_guard_violations",
    "free_port",
    "is_loopback_sockaddr",
    "report_to_file",
    "self_signed_certificate",
    "service_account_key",
    "worker_network_guard_env",
]

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


@pytest.fixture
def http_server() -> Iterator[RecordingHTTPServer]:
    with RecordingHTTPServer() as server:
        yield server


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        yield server


@pytest.fixture
def fake_google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        yield server


@pytest.fixture
def fake_oauth() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider() as server:
        yield server


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
