import pytest

from accounts.models import Organization
from integrations.actions.base import ActionContext


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
    defaults = {"run_id": 1, "workflow_id": 1, "organization_id": 1, "step_key": "step", "timeout_seconds": 5.0}
    defaults.update(kwargs)
    return ActionContext(credential=credential, credential_kind=kind, **defaults)
