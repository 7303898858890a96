import pytest

from accounts.models import Membership, Organization, Role, User
from testing.worker import TEST_FERNET_KEY
from workflows.tests import handlers  # noqa: F401 - registers the test handlers in this process too


@pytest.fixture
def org(db):
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_org(db):
    return Organization.objects.create(name="Other", slug="other")


@pytest.fixture
def single_tenant(settings):
    """One organization, no per-organization step limit, the local test servers allowed as destinations."""
    settings.POTAFLOW_ORG_MAX_RUNNING_STEPS = 0
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    return settings


def make_user(org, role, email):
    user = User.objects.create_user(email=email, password="pw-long-enough-123")
    Membership.objects.create(user=user, organization=org, role=role)
    return user


@pytest.fixture
def editor(org):
    return make_user(org, Role.EDITOR, "editor@example.com")


@pytest.fixture
def viewer(org):
    return make_user(org, Role.VIEWER, "viewer@example.com")


@pytest.fixture
def outsider(other_org):
    return make_user(other_org, Role.OWNER, "outsider@example.com")


@pytest.fixture
def calls_dir(tmp_path):
    return tmp_path


@pytest.fixture
def fernet_keys(settings):
    """The key the test worker also uses (see testing.worker)."""
    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]
    return settings
