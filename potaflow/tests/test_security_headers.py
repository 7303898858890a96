"""A strict Content-Security-Policy on every page, inline code only with the nonce; no-store on the API.

The attack report: no CSP on the admin, the live view or the API docs, and API
answers (tokens included) without ``Cache-Control: no-store``. The browser
tests (``potaflow/tests/browser``) fail on any CSP violation in the console.
"""

import re

import pytest
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Membership, Organization, Role, User
from workflows.models import TriggerType
from workflows.services import run_accept, workflow_create

pytestmark = pytest.mark.django_db

STEPS = [{"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.body.n }}"}}}]


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def world():
    org = Organization.objects.create(name="Acme", slug="acme")
    root = User.objects.create_superuser(email="root@example.com", password="pw-long-enough-123")
    editor = User.objects.create_user(email="editor@example.com", password="pw-long-enough-123", is_staff=True)
    Membership.objects.create(user=editor, organization=org, role=Role.EDITOR)
    workflow = workflow_create(organization=org, name="Hooked", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    run, _ = run_accept(workflow=workflow, trigger="webhook", payload={"body": {"n": 1}})
    run.step_runs.update(error="boom")
    return {"root": root, "editor": editor, "org": org, "workflow": workflow, "run": run}


def _policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part for part in (p.strip() for p in header.split(";")) if part}


def _assert_strict(response) -> str:
    """The policy allows only our origin and the nonce; returns the nonce."""
    policy = _policy(response)
    header = response["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header and "http" not in header
    assert policy["default-src"] == "default-src 'self'"
    assert policy["object-src"] == "object-src 'none'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    match = re.fullmatch(r"script-src 'self' 'nonce-([\w-]+)'", policy["script-src"])
    assert match, policy["script-src"]
    assert policy["style-src"] == f"style-src 'self' 'nonce-{match.group(1)}'"
    return match.group(1)


def _assert_inline_code_has_the_nonce(html: str, nonce: str) -> None:
    for tag in re.findall(r"<script\b[^>]*>", html):
        if "src=" in tag or 'type="application/json"' in tag:
            continue
        assert f'nonce="{nonce}"' in tag, tag
    for tag in re.findall(r"<style\b[^>]*>", html):
        assert f'nonce="{nonce}"' in tag, tag
    assert not re.findall(r"<[^>]+\son[a-z]+\s*=", html), "inline event handlers do not run under the CSP"
    assert not re.findall(r"<[^>]+\sstyle\s*=", html), "style attributes do not apply under the CSP"


def _pages(world) -> list[str]:
    workflow, run = world["workflow"], world["run"]
    return [
        "/admin/",
        f"/admin/workflows/workflow/{workflow.pk}/change/",
        "/admin/workflows/workflow/",
        "/admin/workflows/run/",
        f"/admin/workflows/run/{run.pk}/change/",
        "/admin/integrations/credential/add/",
        f"/runs/{run.pk}/live",
        "/api/docs/",
    ]


def test_every_page_has_a_strict_policy_and_its_inline_code_the_nonce(world):
    client = Client()
    login_page = client.get("/admin/login/")
    _assert_inline_code_has_the_nonce(login_page.content.decode(), _assert_strict(login_page))
    client.force_login(world["root"])
    for url in _pages(world):
        response = client.get(url)
        assert response.status_code == 200, url
        nonce = _assert_strict(response)
        html = response.content.decode()
        _assert_inline_code_has_the_nonce(html, nonce)
    # The pages that do have inline code use the nonce (so the check above is not vacuous).
    live = client.get(f"/runs/{world['run'].pk}/live")
    assert f'<style nonce="{_assert_strict(live)}">' in live.content.decode()


def test_the_nonce_changes_with_every_response(world):
    client = Client()
    assert _assert_strict(client.get("/admin/login/")) != _assert_strict(client.get("/admin/login/"))


def test_swagger_ui_initialises_from_a_script_file_not_inline_code(world):
    client = Client()
    html = client.get("/api/docs/").content.decode()
    script_url = re.search(r'<script src="(/api/docs/\?script[^"]*)"', html).group(1)
    script = client.get(script_url.replace("&amp;", "&"))
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


def test_api_answers_are_never_stored(world):
    api = APIClient()
    assert api.post("/api/auth/token/", {"email": "editor@example.com", "password": "x"}).status_code == 401
    login = api.post("/api/auth/token/", {"email": "editor@example.com", "password": "pw-long-enough-123"})
    assert login.status_code == 200 and login["Cache-Control"] == "no-store"
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(world['editor']).access_token}")
    for url in ("/api/me/", "/api/workflows/", f"/api/runs/{world['run'].pk}/", "/api/nowhere/", "/hooks/nope"):
        response = api.get(url)
        assert response["Cache-Control"] == "no-store", url


def test_member_pages_are_not_stored_by_any_cache(db):
    """Run data and webhook URLs on /app/ pages: not for a shared cache or the back button (issue 18)."""
    response = Client().get("/app/login/")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
