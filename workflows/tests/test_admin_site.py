"""The admin site as a newcomer meets it: where / leads, what the sidebar offers, credential pages, API docs."""

import re

import pytest
from django.test import Client

from accounts.models import Membership, Organization, Role, User
from integrations.credential_kinds import KINDS
from workflows.tests.conftest import make_user

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    User.objects.filter(pk=user.pk).update(is_staff=True)
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


def selected_organization(html: str) -> list[str]:
    select = re.search(r'<select name="organization".*?</select>', html, re.S).group(0)
    return re.findall(r'<option value="(\d+)" selected>', select)


def test_the_root_url_leads_to_the_member_pages(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/app/"


def test_the_sidebar_has_no_beat_or_token_blacklist_tables_but_keeps_groups(db):
    root = User.objects.create_superuser(email="root@example.com", password="pw-long-enough-123")
    html = logged_in(root).get("/admin/").content.decode()
    for hidden in ("Periodic tasks", "Clocked", "Crontabs", "Intervals", "Solar events", "Blacklisted", "Outstanding"):
        assert hidden not in html, hidden
    assert "Groups" in html and "Workflows" in html and "Credentials" in html
    assert logged_in(root).get("/admin/django_celery_beat/periodictask/").status_code == 404


@pytest.mark.parametrize(
    ("url", "role"),
    [("/admin/workflows/workflow/add/", Role.EDITOR), ("/admin/integrations/credential/add/", Role.ADMIN)],
)
def test_the_organization_is_preselected_only_when_there_is_one_to_pick(org, other_org, url, role):
    user = make_user(org, role, "one@example.com")
    assert selected_organization(logged_in(user).get(url).content.decode()) == [str(org.pk)]
    Membership.objects.create(user=user, organization=other_org, role=role)
    assert selected_organization(logged_in(user).get(url).content.decode()) == []


def test_credential_pages_show_each_kind_once_per_fieldset_and_help_as_typed(org):
    html = logged_in(make_user(org, Role.ADMIN, "adm@example.com")).get("/admin/integrations/credential/add/")
    html = html.content.decode()
    assert "Sent as Authorization: Bearer &lt;token&gt;." in html
    # Every kind's fieldset is tagged, so the page's script can show only the chosen one.
    # One per kind the registry lists (connections among them), each once.
    kinds = re.findall(r'<fieldset class="module aligned pf-kind pf-kind-(\w+)"', html)
    assert sorted(kinds) == sorted(KINDS) and len(KINDS) >= 10
    assert 'document.querySelectorAll("fieldset.pf-kind")' in html


def test_api_docs_load_swagger_ui_from_this_server_only(client, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.WHITENOISE_USE_FINDERS = True  # as under `make run`; production serves the collected copy
    html = client.get("/api/docs/").content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r'"(https?://[^"]+)"', html)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls), urls
    external = [u for u in urls if u.startswith(("http:", "https:", "//"))]
    assert external == []
    bundle = next(u for u in urls if u.endswith("swagger-ui-bundle.js"))
    assert bundle.startswith("/static/")
    served = client.get(bundle)
    assert served.status_code == 200 and b"SwaggerUI" in b"".join(served.streaming_content)


def test_other_organizations_stay_out_of_the_preselection(org, other_org):
    # A superuser can pick any organization: nothing is preselected for them.
    root = User.objects.create_superuser(email="root@example.com", password="pw-long-enough-123")
    assert Organization.objects.count() == 2
    assert selected_organization(logged_in(root).get("/admin/workflows/workflow/add/").content.decode()) == []
