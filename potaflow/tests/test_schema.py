"""The OpenAPI schema validates, and the API keeps its promises when fuzzed against it.

Schemathesis generates requests for every operation of ``/api/schema/`` and
sends them through the real WSGI application with a JWT bearer token, against
a database holding a workflow and a run: once as the organization's owner
(who may do everything) and once, with fewer examples, as a viewer (whose
writes must be refused in the documented way, never with a 5xx). Every answer
must be a non-5xx, with a documented status code, and its body must match the
documented schema. Examples are few per operation so the module stays around
a minute.
"""

import io

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis import checks

from accounts.models import Membership, Organization, Role, User
from testing.worker import TEST_FERNET_KEY
from workflows.models import TriggerType
from workflows.services import run_accept, workflow_create

MAX_EXAMPLES = 8
VIEWER_MAX_EXAMPLES = 3
# The promise: no 5xx, documented status codes, bodies and headers as documented.
# (Not "every schema-valid request is accepted": a filter naming another
# organization is schema-valid and rightly a 400.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.unsupported_method,
    checks.ignored_auth,
]


def test_spectacular_validate_is_clean(tmp_path):
    out = tmp_path / "schema.yaml"
    stderr = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=stderr)
    text = out.read_text()
    assert stderr.getvalue() == ""
    for needle in ("/hooks/{token}:", "/api/stats/:", "/api/auth/token/:", "Error:", "jwtAuth"):
        assert needle in text


def _token_for(role: str, settings) -> str:
    """A member with ``role`` in an organization with a workflow and a run to act on; their JWT access token."""
    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]
    org = Organization.objects.create(name="Acme", slug="acme")
    user = User.objects.create_user(email="fuzz@example.com", password="pw-long-enough-123")
    Membership.objects.create(user=user, organization=org, role=role)
    workflow = workflow_create(
        organization=org,
        name="Fuzzed",
        trigger_type=TriggerType.WEBHOOK,
        steps=[{"key": "shape", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}}],
    )
    # Inside the test transaction: never committed, so never dispatched to a broker.
    run_accept(workflow=workflow, trigger="manual", payload={"body": {}})
    return str(AccessToken.for_user(user))


@pytest.fixture
def token(db, settings) -> str:
    return _token_for(Role.OWNER, settings)


@pytest.fixture
def viewer_token(db, settings) -> str:
    return _token_for(Role.VIEWER, settings)


@pytest.fixture
def _keep_test_connection():
    """Requests go straight to the WSGI handler: as Django's test client does, stop the
    request signals from closing the connection that holds the test's transaction."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


# Loaded once at collection, through the WSGI app (serving the schema reads no database).
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_conforms_to_its_schema(case, token, _keep_test_connection):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@schema.parametrize()
@settings(
    max_examples=VIEWER_MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_conforms_to_its_schema_for_a_viewer(case, viewer_token, _keep_test_connection):
    response = case.call_and_validate(headers={"Authorization": f"Bearer {viewer_token}"}, checks=CHECKS)
    method = case.method.upper()
    # Open to anyone: the auth flow, the webhook (its token is the capability) and
    # creating an organization of one's own. Every other write is refused to a viewer.
    open_to_all = case.path.startswith(("/api/auth/", "/hooks/")) or (method, case.path) == (
        "POST",
        "/api/organizations/",
    )
    if method in ("POST", "PUT", "PATCH", "DELETE") and not open_to_all:
        assert response.status_code not in (200, 201, 202, 204), (method, case.path, response.status_code)


@pytest.mark.django_db
def test_an_unknown_api_url_answers_in_the_error_shape(client):
    response = client.get("/api/credentials/not-a-number/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found.", "errors": {}}
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")
