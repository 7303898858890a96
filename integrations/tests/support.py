"""Fixtures and helpers shared by the tests of every integration.

Each ``integrations/<name>/tests/conftest.py`` (and ``integrations/tests/conftest.py``)
imports the fixtures it uses from here; ``make_ctx`` builds an ``ActionContext``.
"""

import socket

import pytest

from accounts.models import Organization
from integrations.base import ActionContext
from testing.worker import TEST_FERNET_KEY

# pytest-django runs with DEBUG off, where an empty key list is refused (integrations.E001);
# the worker subprocess decrypts with the same fixed TEST_FERNET_KEY.


@pytest.fixture(autouse=True)
def fernet_keys(settings):
    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]
    return settings


@pytest.fixture
def allow_loopback(settings):
    """The local test servers live on 127.0.0.1: open exactly that address."""
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    return settings


@pytest.fixture
def no_exceptions(settings):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = []
    return settings


@pytest.fixture
def organization(db):
    return Organization.objects.create(name="Acme", slug="acme")


def make_ctx(credential=None, kind=None, **kwargs) -> ActionContext:
    defaults = {
        "run_id": "00000000-0000-0000-0000-000000000001",
        "workflow_id": 1,
        "organization_id": 1,
        "step_key": "step",
        "timeout_seconds": 5.0,
    }
    defaults.update(kwargs)
    return ActionContext(credential=credential, credential_kind=kind, **defaults)


@pytest.fixture
def fake_dns(monkeypatch):
    """Answer chosen names from a table (a stand-in for a hostile DNS server)."""
    real = socket.getaddrinfo
    answers: dict[str, list] = {}
    calls: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            calls.append(host)
            queue = answers[host]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in addresses]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, calls


def stored_file(organization, name: str, data: bytes, content_type: str = "application/octet-stream") -> dict:
    """A ready file of ``organization`` in the storage under test; its reference (what templates give)."""
    from integrations.file_access import FileInfo  # here: only the file tests need these
    from workflows.files import services as file_services

    row = file_services.write_file(
        organization_id=organization.pk, origin="upload", name=name, content_type=content_type, chunks=[data],
        limit=len(data) + 1, setting="POTAFLOW_UPLOAD_MAX_BYTES",
    )  # fmt: skip
    return FileInfo(str(row.pk), row.name, row.size, row.content_type, row.sha256).as_ref()


def file_ctx(organization, credential=None, kind=None, **kwargs) -> ActionContext:
    """``make_ctx`` with the organization's files (``ActionContext.files``), as the engine gives them."""
    from workflows.files.services import RunFileAccess  # here: only the file tests need it

    return make_ctx(credential, kind, organization_id=organization.pk,
                    files=RunFileAccess(organization_id=organization.pk), **kwargs)  # fmt: skip
