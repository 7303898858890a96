"""Tenant sweep: another organization's ids are 404 on every API operation and admin page, with no effect.

Operations are enumerated, not listed by hand: the API from the OpenAPI schema
(so a new endpoint is swept as soon as it is in ``/api/schema/``), the admin
from ``admin.site``'s registry and each ModelAdmin's URLs. An endpoint whose
path parameter names a resource the sweep does not know, or an admin model
without a victim object, fails the sweep until it is added below.

The attacker owns organization B (so every role check passes there) and is
staff; the victim is organization A. For every operation the answer with A's
id must be the 404 a nonexistent id gets (nothing to tell the two apart), and
at the end no row anywhere changed: counts of every model, and A's rows field
by field.
"""

import re
import uuid
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import URLPattern, reverse
from django.views.generic import RedirectView
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Membership, Organization, Role, User
from accounts.services import invitation_create
from integrations.services import credential_create
from testing.worker import TEST_FERNET_KEY
from workflows.models import TestRun, TriggerType
from workflows.services import run_accept, workflow_create

pytestmark = pytest.mark.django_db

MARK = "VICTIM-7f3a"  # in every name of organization A: must never appear in an answer to the attacker
METHODS = ("get", "post", "put", "patch", "delete")
MISSING = 987654321


def _steps(credential_id: int | None) -> list[dict[str, Any]]:
    return [
        {
            "key": "call",
            "action_type": "http.request",
            "config": {"method": "GET", "url": "https://example.com/"},
            "credential": credential_id,
        }
    ]


@pytest.fixture
def tenants(settings):
    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]
    victim_org = Organization.objects.create(name=f"Acme {MARK}", slug=f"acme-{MARK.lower()}")
    victim = User.objects.create_user(email=f"{MARK.lower()}@example.com", is_staff=True, full_name=MARK)
    victim_membership = Membership.objects.create(user=victim, organization=victim_org, role=Role.OWNER)
    victim_credential = credential_create(
        organization=victim_org,
        name=f"Token {MARK}",
        kind="http_bearer",
        secret={"token": "s3cret", "allowed_hosts": ["example.com"]},
    )
    steps = [{**step, "credential_id": step.pop("credential")} for step in _steps(victim_credential.pk)]
    victim_workflow = workflow_create(
        organization=victim_org, name=f"Flow {MARK}", trigger_type=TriggerType.WEBHOOK, steps=steps
    )
    victim_run, _ = run_accept(workflow=victim_workflow, trigger="webhook", payload={"body": {"m": MARK}})
    victim_run.status = "failed"
    victim_run.save(update_fields=["status"])
    victim_test = TestRun.objects.create(
        workflow=victim_workflow, organization=victim_org, created_by=victim, request={"payload": {"m": MARK}}
    )

    victim_invitation = invitation_create(
        actor=victim, organization=victim_org, email="guest@example.com", role=Role.VIEWER
    )  # its mail would go after commit: this test never commits
    attacker_org = Organization.objects.create(name="Mallory Inc", slug="mallory")
    attacker = User.objects.create_user(email="mallory@example.com", is_staff=True)
    Membership.objects.create(user=attacker, organization=attacker_org, role=Role.OWNER)
    attacker_credential = credential_create(
        organization=attacker_org,
        name="Mine",
        kind="http_bearer",
        secret={"token": "mine", "allowed_hosts": ["example.com"]},
    )
    attacker_workflow = workflow_create(organization=attacker_org, name="Mine", trigger_type=TriggerType.MANUAL)
    return {
        "organizations": victim_org,
        "members": victim_membership,
        "invitations": victim_invitation,
        "users": victim,
        "credentials": victim_credential,
        "workflows": victim_workflow,
        "runs": victim_run,
        "test": victim_test,
        "attacker": attacker,
        "attacker_org": attacker_org,
        "attacker_credential": attacker_credential,
        "attacker_workflow": attacker_workflow,
    }


def _snapshot(tenants) -> dict[str, Any]:
    counts = {model._meta.label: model.objects.count() for model in apps.get_models()}
    rows = {
        key: model_to_dict(type(obj).objects.get(pk=obj.pk))
        for key, obj in tenants.items()
        if key in ("organizations", "members", "users", "credentials", "workflows", "runs")
    }
    return {"counts": counts, "rows": rows}


def _api(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------
# Bodies that would succeed on an object of one's own: a refusal is then the tenancy check, not validation.
BODIES = {
    "workflows": {"name": "Hijacked", "trigger_type": "manual", "steps": [], "is_active": False},
    "credentials": {"name": "Hijacked", "secret": {"token": "x"}},
    "organizations": {"name": "Hijacked"},
    "members": {"email": "mallory@example.com", "role": "owner"},
    "invitations": {"email": "mallory@example.com", "role": "owner"},
    "listen": {},
    "samples": {"name": "Hijacked", "body": {"x": 1}},
    # A test run (POST .../test/, unsaved steps too) and its result (GET .../test/<id>/).
    "test": {"payload": {"x": 1}, "steps": []},
    "runs": {},
    "replay": {},
    "approve": {"step": "approve", "approved": True},  # a wait's approval (issue 19): editors of the run's org only
    "run": {"payload": {"x": 1}},
    "rotate-webhook-token": {},
    # An export document of one's own, imported into the victim's organization.
    "import": {
        "potaflow_export": 1,
        "workflow": {"name": "Hijacked", "trigger_type": "manual"},
        "steps": [],
        "import": {"organization": None},  # filled with the victim organization's id below
    },
}
# Endpoints without a path parameter that take no organization's ids (the auth flow, creating one's own org).
NO_FOREIGN_IDS = {
    ("/api/auth/register/", "post"),
    ("/api/auth/token/", "post"),
    ("/api/auth/token/refresh/", "post"),
    ("/api/auth/logout/", "post"),
    ("/api/organizations/", "post"),
    ("/api/templates/check/", "post"),  # checks a template string; reads and writes nothing
}
# The built-in templates: one catalog shipped with the code, the same for every organization.
# A wait's resume URL: its unguessable token is the capability (like a webhook URL), whoever holds it
# resumes that one wait; test_flow_run covers unknown and used tokens.
NOT_TENANT_DATA_PATHS = {"/api/templates/{slug}/", "/api/runs/resume/{token}/"}


def _api_operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (path, method)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/")
        for method in operations
        if method in METHODS
    ]


def _fill(path: str, ids: dict[str, Any]) -> str:
    """Each ``{param}`` gets the id of the resource named by the segment before it."""
    segments = path.strip("/").split("/")
    out = []
    for index, segment in enumerate(segments):
        if segment.startswith("{"):
            resource = segments[index - 1]
            assert resource in ids, f"{path}: the tenant sweep does not know {resource!r}; add a victim for it"
            out.append(str(ids[resource]))
        else:
            out.append(segment)
    return "/" + "/".join(out) + "/"


def test_every_api_operation_on_another_organizations_id_is_a_404_without_effect(tenants):
    client = _api(tenants["attacker"])
    victim_ids = {key: obj.pk for key, obj in tenants.items() if key in BODIES}
    before = _snapshot(tenants)
    swept = []
    for path, method in _api_operations():
        if "{" not in path or path in NOT_TENANT_DATA_PATHS:
            continue
        action = path.strip("/").split("/")[-1]
        resource = action if action in BODIES and not action.startswith("{") else path.strip("/").split("/")[-2]
        body = BODIES.get(action) if action in BODIES else BODIES.get(resource, {})
        url = _fill(path, victim_ids)
        missing = (
            re.sub(r"/[0-9a-f-]{6,}/|/\d+/", f"/{MISSING}/", url)
            if "runs" not in url
            else url.replace(str(tenants["runs"].pk), str(uuid.uuid4()))
        )
        answer = getattr(client, method)(url, body, format="json")
        control = getattr(client, method)(missing, body, format="json")
        assert answer.status_code == 404, (method, url, answer.status_code, answer.content[:300])
        assert (answer.status_code, answer.json()) == (control.status_code, control.json()), (method, url)
        swept.append((method, path))
    assert len(swept) >= 15, swept  # the schema was read at all
    assert _snapshot(tenants) == before


def test_lists_filters_and_creates_never_reach_another_organization(tenants):
    client = _api(tenants["attacker"])
    victim_org, victim_workflow = tenants["organizations"], tenants["workflows"]
    before = _snapshot(tenants)
    for path, method in _api_operations():
        if "{" in path or (path, method) in NO_FOREIGN_IDS:
            continue
        if method == "get":
            for query in ("", f"?workflow={victim_workflow.pk}", f"?organization={victim_org.pk}"):
                answer = client.get(path + query)
                assert answer.status_code in (200, 400, 404), (path, query, answer.status_code)
                assert MARK not in answer.content.decode(), (path, query)
                assert str(tenants["runs"].pk) not in answer.content.decode(), (path, query)
        elif method == "post":
            resource = path.strip("/").split("/")[-1]
            assert resource in BODIES, f"POST {path}: the tenant sweep does not know it; add it"
            body = {**BODIES[resource], "organization": victim_org.pk}
            if "import" in body:
                body["import"] = {"organization": victim_org.pk}
            answer = client.post(path, body, format="json")
            assert answer.status_code in (400, 403, 404), (path, answer.status_code, answer.content[:300])
            assert MARK not in answer.content.decode()
        else:
            pytest.fail(f"{method.upper()} {path}: the tenant sweep does not know it; add it")
    assert _snapshot(tenants) == before


def test_a_step_cannot_use_another_organizations_credential(tenants):
    client = _api(tenants["attacker"])
    foreign = tenants["credentials"].pk
    before = _snapshot(tenants)
    created = client.post(
        "/api/workflows/",
        {
            "organization": tenants["attacker_org"].pk,
            "name": "Steal",
            "trigger_type": "manual",
            "steps": _steps(foreign),
        },
        format="json",
    )
    assert created.status_code == 400, created.content
    assert list(created.json()["errors"]) == ["steps[0].credential"]
    updated = client.patch(
        f"/api/workflows/{tenants['attacker_workflow'].pk}/", {"steps": _steps(foreign)}, format="json"
    )
    assert updated.status_code == 400, updated.content
    # The same answer as for a credential that does not exist at all: nothing confirms the id.
    missing = client.patch(
        f"/api/workflows/{tenants['attacker_workflow'].pk}/", {"steps": _steps(MISSING)}, format="json"
    )
    assert str(missing.json()["errors"]).replace(str(MISSING), str(foreign)) == str(updated.json()["errors"])
    assert _snapshot(tenants) == before
    # Their own credential is accepted (so the refusal above is the tenancy check).
    own = client.patch(
        f"/api/workflows/{tenants['attacker_workflow'].pk}/",
        {"steps": _steps(tenants["attacker_credential"].pk)},
        format="json",
    )
    assert own.status_code == 200, own.content


# ---------------------------------------------------------------------------
# Admin and live view
# ---------------------------------------------------------------------------
NOT_TENANT_DATA = {"auth.Group"}  # superusers only; holds no organization's data


def _object_urls(model_admin) -> list[str]:
    """Names of the ModelAdmin's URLs that take an object id (change, delete, history, and custom ones)."""
    names = []
    for pattern in model_admin.get_urls():
        if not isinstance(pattern, URLPattern) or "object_id" not in pattern.pattern.regex.groupindex:
            continue
        if getattr(pattern.callback, "view_class", None) is RedirectView:
            continue  # "<id>/" only redirects to "<id>/change/", which is swept
        names.append(pattern.name)
    return names


def test_every_admin_page_of_another_organizations_object_is_a_404_without_effect(tenants):
    client = Client()
    client.force_login(tenants["attacker"])
    victims = {
        "accounts.User": tenants["users"],
        "accounts.Organization": tenants["organizations"],
        "accounts.Membership": tenants["members"],
        "integrations.Credential": tenants["credentials"],
        "workflows.Workflow": tenants["workflows"],
        "workflows.Run": tenants["runs"],
    }
    before = _snapshot(tenants)
    swept = []
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label
        if label in NOT_TENANT_DATA:
            continue
        assert label in victims, f"admin model {label}: the tenant sweep has no victim object for it; add one"
        victim = victims[label]
        for name in _object_urls(model_admin):
            url = reverse(f"admin:{name}", kwargs={"object_id": victim.pk})
            missing_id = uuid.uuid4() if isinstance(victim.pk, uuid.UUID) else MISSING
            missing = reverse(f"admin:{name}", kwargs={"object_id": missing_id})
            for method in ("get", "post"):
                answer = getattr(client, method)(url)
                # 404; or the refusal a nonexistent id gets too (403 where the page is closed to the
                # attacker's role whatever the object, e.g. deleting users is for superusers).
                control = getattr(client, method)(missing)
                assert answer.status_code in (403, 404), (method, url, answer.status_code)
                assert answer.status_code == control.status_code, (method, url, answer.status_code)
                assert MARK not in answer.content.decode(), (method, url)
                swept.append((method, url))
        changelist = client.get(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
        assert changelist.status_code in (200, 403)
        assert MARK not in changelist.content.decode(), label
        # Bulk actions with the victim's id selected do nothing.
        for action in model_admin.get_actions(_request_of(client, tenants["attacker"])):
            client.post(
                reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"),
                {"action": action, "_selected_action": [str(victim.pk)], "index": 0},
            )
    run = tenants["runs"]
    for url in (f"/runs/{run.pk}/live", f"/runs/{run.pk}/live.json"):
        assert client.get(url).status_code == 404
    assert len(swept) >= 20, swept
    assert _snapshot(tenants) == before


def _request_of(client: Client, user: User):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return request
