"""Connect Slack and Connect Google in a real browser at 1,280 px, against the local authorization
servers' consent pages, then a workflow posting to Slack and appending a row with the connections
through the real worker; Google revoked -> the pages say "reconnect", Reconnect -> connected again."""

import pytest

from accounts.models import Membership, Organization, Role
from accounts.tests.conftest import make_user
from integrations.models import Connection, Credential
from testing.network import FakeGoogle, FakeSlack, worker_network_guard_env
from testing.worker import TEST_FERNET_KEY, wait_for_run
from workflows.models import TriggerType
from workflows.services import run_accept, workflow_create

from .test_builder import PASSWORD, fits, labelled, sign_in

SHEET = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"


@pytest.fixture(scope="module")
def providers():
    servers = {"slack": FakeSlack().start(), "google": FakeGoogle().start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def celery_worker_env(providers):
    env = worker_network_guard_env()
    env.update(providers["slack"].oauth_settings)
    env.update(providers["google"].oauth_urls)
    env["POTAFLOW_ALLOW_PRIVATE_DESTINATIONS"] = "127.0.0.1"
    return env


@pytest.fixture
def apps(providers, settings, live_server):
    settings.POTAFLOW_BASE_URL = live_server.url
    settings.POTAFLOW_FERNET_KEYS = [TEST_FERNET_KEY]  # the worker decrypts with the same key
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    for name, value in {**providers["slack"].oauth_settings, **providers["google"].oauth_urls}.items():
        setattr(settings, name, value)
    for server in providers.values():
        server.reset()
        server.init_oauth()
    providers["google"].sheets[SHEET] = {"Orders": []}
    return providers


def consent(page, provider: str) -> None:
    """On the provider's consent page: allow, and land back on the credentials page."""
    page.wait_for_selector("#allow")
    assert provider in page.title()
    page.click("#allow")
    page.wait_for_url("**/app/credentials/**")


def test_an_admin_connects_slack_and_google_and_a_workflow_uses_them(
    page, live_server, celery_worker, apps, shot, settings
):
    org = Organization.objects.create(name="Acme", slug="acme")
    admin = make_user("ada@example.com", password=PASSWORD)
    Membership.objects.create(user=admin, organization=org, role=Role.ADMIN)
    base = live_server.url
    sign_in(page, base, "ada@example.com")

    page.goto(f"{base}/app/credentials/")
    assert page.locator("#pf-redirect-uri").inner_text() == f"{base}/oauth/callback/"
    page.click("#pf-connect-slack_oauth")
    consent(page, "Slack")
    assert "“Slack Acme Workspace” connected (Acme Workspace)." in page.locator(".pf-messages").inner_text()
    page.click("#pf-connect-google_oauth")
    consent(page, "Google")
    rows = page.locator("#pf-credentials tbody tr")
    assert rows.count() == 2
    assert page.locator('tr[data-connection="connected"]').count() == 2
    google_row = page.locator("tr", has_text="ada@example.com")
    assert "spreadsheets" in google_row.inner_text() and "token expires" in google_row.inner_text()
    fits(page)
    labelled(page)
    shot(page, "connections-connected")
    # Behind a TLS-terminating proxy the page shows the public redirect URL, whatever host served it
    # (the README's screenshot, docs/credentials-connections.png, is this one).
    settings.POTAFLOW_BASE_URL = "https://potaflow.example.com"
    page.goto(f"{base}/app/credentials/")
    assert page.locator("#pf-redirect-uri").inner_text() == "https://potaflow.example.com/oauth/callback/"
    shot(page, "credentials-connections")
    settings.POTAFLOW_BASE_URL = base

    slack_conn = Credential.objects.get(kind="slack_oauth")
    google_conn = Credential.objects.get(kind="google_oauth")
    workflow = workflow_create(
        organization=org,
        name="New orders",
        trigger_type=TriggerType.MANUAL,
        steps=[
            {"key": "notify", "action_type": "slack.message", "credential": slack_conn.pk,
             "config": {"channel": "#general", "text": "Order {{ trigger.id }}"}},
            {"key": "log", "action_type": "sheets.append_row", "credential": google_conn.pk,
             "config": {"spreadsheet": SHEET, "worksheet": "Orders", "values": ["{{ trigger.id }}"]}},
        ],
    )  # fmt: skip
    run, _ = run_accept(workflow=workflow, trigger=TriggerType.MANUAL, payload={"id": "A-1"})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60, worker=celery_worker)
    assert run.status == "succeeded", list(run.step_runs.values_list("error", flat=True))
    assert apps["slack"].posted[-1]["text"] == "Order A-1"
    assert apps["google"].sheets[SHEET]["Orders"] == [["A-1"]]

    # The user removes PotaFlow at Google: the next run fails once, and the pages say what to do.
    apps["google"].revoke_all()
    run, _ = run_accept(workflow=workflow, trigger=TriggerType.MANUAL, payload={"id": "A-2"})
    run = wait_for_run(run.pk, {"failed"}, timeout=60, worker=celery_worker)
    page.goto(f"{base}/app/workflows/{workflow.pk}/")
    notice = page.locator(".pf-reconnect-notice")
    assert "reconnect Google in Credentials" in notice.inner_text()
    fits(page)
    shot(page, "connections-workflow-needs-reconnect")
    page.goto(f"{base}/app/credentials/")
    row = page.locator('tr[data-connection="needs_reconnect"]')
    assert "Needs reconnect" in row.inner_text() and "reconnect Google in Credentials" in row.inner_text()
    shot(page, "connections-needs-reconnect")
    row.get_by_role("link", name="Reconnect Google").click()
    consent(page, "Google")
    assert "reconnected (ada@example.com)" in page.locator(".pf-messages").inner_text()
    assert Connection.objects.get(pk=google_conn.pk).status == "connected"
    assert page.locator('tr[data-connection="connected"]').count() == 2
    shot(page, "connections-reconnected")
