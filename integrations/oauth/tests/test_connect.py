"""Connect and Disconnect through the member pages against local authorization servers:
state, PKCE and redirect URI on the way out; what is refused on the way back, with nothing saved;
who may do it; what the API shows (never a token)."""

import json
import urllib.parse
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.models import Connection, Credential, PendingAuthorization
from integrations.oauth.tokens import stored_tokens

from .support import BASE_URL, callback_path, connect, messages_of, start

CONNECT_SLACK = "/app/credentials/connect/slack_oauth/"
CONNECT_GOOGLE = "/app/credentials/connect/google_oauth/"


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def test_an_admin_connects_slack_with_state_pkce_and_the_public_redirect_url(world, pages, slack_app):
    admin = pages("admin")
    consent, response = connect(admin, CONNECT_SLACK, slack_app)
    assert consent.startswith(slack_app.authorize_url + "?")
    asked = query(consent)
    assert asked["redirect_uri"] == f"{BASE_URL}/oauth/callback/"  # POTAFLOW_BASE_URL, not the request's host
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert len(asked["state"]) >= 32
    assert asked["scope"] == "chat:write,chat:write.public"
    assert asked["client_id"] == slack_app.client_id
    assert messages_of(response) == ["“Slack Acme Workspace” connected (Acme Workspace)."]

    credential = Credential.objects.get(organization=world.acme, kind="slack_oauth")
    row = Connection.objects.get(pk=credential.pk)
    assert (row.status, row.account, row.scopes) == ("connected", "Acme Workspace", ["chat:write", "chat:write.public"])
    token = stored_tokens(row)["access_token"]
    assert token.startswith("xoxb-oauth-") and token not in row.token_ciphertext  # encrypted at rest
    # The code exchange authenticated PotaFlow and proved PKCE at oauth.v2.access.
    exchange = next(r for r in slack_app.requests if r.path == "/api/oauth.v2.access")
    assert exchange.form()["code_verifier"][0] and exchange.form()["client_secret"] == [slack_app.client_secret]
    assert not PendingAuthorization.objects.exists()  # the state was spent

    api = world.client("admin").get(f"/api/credentials/{credential.pk}/")
    body = api.json()
    assert (body["status"], body["expires_at"]) == ("connected", None)  # Slack without rotation: never expires
    assert body["connection"]["account"] == "Acme Workspace"
    assert token not in api.content.decode()
    page = admin.get(f"/app/credentials/?org={world.acme.pk}").content.decode()
    assert "Acme Workspace" in page and "Disconnect" in page and token not in page
    assert f"{BASE_URL}/oauth/callback/" in page  # where the admin registers it


def test_google_asks_offline_access_and_shows_the_account_and_expiry(world, pages, google_app):
    consent, _response = connect(pages("admin"), CONNECT_GOOGLE, google_app)
    asked = query(consent)
    assert asked["access_type"] == "offline" and asked["prompt"] == "consent"
    assert asked["scope"].split() == ["openid", "email", "https://www.googleapis.com/auth/spreadsheets"]
    credential = Credential.objects.get(kind="google_oauth")
    body = world.client("admin").get(f"/api/credentials/{credential.pk}/").json()
    assert body["status"] == "connected"
    assert body["connection"]["account"] == "ada@example.com"
    expires = timezone.datetime.fromisoformat(body["expires_at"])
    assert timedelta(minutes=58) < expires - timezone.now() <= timedelta(seconds=3599)
    assert stored_tokens(Connection.objects.get(pk=credential.pk))["refresh_token"].startswith("1//refresh-")


def test_a_generic_oauth2_credential_is_created_by_the_api_then_connected(world, pages, oauth_app):
    created = world.client("admin").post(
        "/api/credentials/", {"kind": "oauth2", "name": "Acme ID", "secret": oauth_app.secret()}, format="json"
    )
    assert created.status_code == 201, created.content
    cred_id = created.json()["id"]
    assert created.json()["status"] == "not_connected"
    assert "client_secret" not in created.json()["public"]
    consent, response = connect(pages("admin"), f"/app/credentials/{cred_id}/connect/", oauth_app)
    assert query(consent)["scope"] == "read write"
    assert messages_of(response) == ["“Acme ID” reconnected."]
    body = world.client("admin").get(f"/api/credentials/{cred_id}/").json()
    assert body["status"] == "connected" and body["expires_at"]
    # Basic client authentication by default (client_secret_basic).
    exchange = next(r for r in oauth_app.requests if r.path == "/token")
    assert exchange.headers["authorization"].startswith("Basic ")


def test_a_bad_oauth2_credential_is_a_400_naming_the_field(world):
    response = world.client("admin").post(
        "/api/credentials/",
        {"kind": "oauth2", "name": "x", "secret": {"client_id": "a", "client_secret": "b", "authorize_url": "ftp://x",
                                                   "token_url": "https://t.example/token", "scopes": [],
                                                   "allowed_hosts": ["api.example.com"]}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    errors = response.json()["errors"]["secret"]
    assert "authorize_url" in errors and "scopes" in errors


# -- refused, nothing saved --------------------------------------------------------------
def nothing_saved() -> None:
    assert not Credential.objects.filter(kind__in=("slack_oauth", "google_oauth")).exists()
    assert not Connection.objects.exists()


def test_denied_consent_is_said_and_nothing_saved(pages, slack_app):
    _, response = connect(pages("admin"), CONNECT_SLACK, slack_app, allow=False)
    assert messages_of(response) == ["Slack was not connected: access was not allowed. Nothing was saved."]
    nothing_saved()


def test_a_reused_state_is_refused(pages, slack_app):
    admin = pages("admin")
    back = slack_app.approve(start(admin, CONNECT_SLACK))
    assert messages_of(admin.get(callback_path(back), follow=True))[0].endswith("connected (Acme Workspace).")
    Credential.objects.all().delete()
    response = admin.get(callback_path(back), follow=True)
    assert "unknown, was already used" in messages_of(response)[0]
    nothing_saved()


def test_a_wrong_or_missing_state_is_refused(pages, slack_app):
    admin = pages("admin")
    back = slack_app.approve(start(admin, CONNECT_SLACK))
    forged = back.replace("state=", "state=x")
    assert "unknown, was already used" in messages_of(admin.get(callback_path(forged), follow=True))[0]
    no_state = admin.get("/oauth/callback/?code=abc", follow=True)
    assert "has no state" in messages_of(no_state)[0]
    nothing_saved()


def test_an_expired_state_is_refused(pages, slack_app):
    admin = pages("admin")
    back = slack_app.approve(start(admin, CONNECT_SLACK))
    PendingAuthorization.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "expired" in messages_of(admin.get(callback_path(back), follow=True))[0]
    nothing_saved()


def test_a_callback_in_another_organizations_session_is_refused(world, pages, slack_app):
    admin = pages("admin")
    back = slack_app.approve(start(admin, CONNECT_SLACK))
    response = pages("outsider").get(callback_path(back), follow=True)
    assert "another user or in another organization's session" in messages_of(response)[0]
    nothing_saved()
    # The attempt stays its starter's: the admin can still finish it.
    assert messages_of(admin.get(callback_path(back), follow=True))[0].endswith("connected (Acme Workspace).")


def test_a_provider_error_at_the_code_exchange_is_said(pages, slack_app):
    admin = pages("admin")
    back = slack_app.approve(start(admin, CONNECT_SLACK))
    code = query(back)["code"]
    slack_app.codes.pop(code)  # the provider no longer knows the code
    response = admin.get(callback_path(back), follow=True)
    assert messages_of(response) == ["Slack was not connected: Slack answered invalid_code. Nothing was saved."]
    nothing_saved()


def test_a_provider_not_set_up_by_staff_names_the_settings(pages, settings):
    settings.POTAFLOW_SLACK_CLIENT_ID = ""
    response = pages("admin").get(CONNECT_SLACK, follow=True)
    assert "POTAFLOW_SLACK_CLIENT_ID" in messages_of(response)[0]
    nothing_saved()


def test_pending_connects_per_user_are_bounded(pages, slack_app, settings):
    settings.POTAFLOW_OAUTH_MAX_PENDING = 2
    admin = pages("admin")
    first = slack_app.approve(start(admin, CONNECT_SLACK))
    for _ in range(2):
        start(admin, CONNECT_SLACK)
    assert PendingAuthorization.objects.count() == 2
    assert "POTAFLOW_OAUTH_MAX_PENDING" in messages_of(admin.get(callback_path(first), follow=True))[0]


# -- who may ------------------------------------------------------------------------------
@pytest.fixture
def slack_connection(world, pages, slack_app):
    connect(pages("admin"), CONNECT_SLACK, slack_app)
    return Credential.objects.get(kind="slack_oauth")


@pytest.mark.parametrize("persona", ["viewer", "editor"])
def test_viewers_and_editors_cannot_connect_or_disconnect(pages, slack_connection, persona):
    client = pages(persona)
    assert client.get(CONNECT_SLACK).status_code == 403
    assert client.get(f"/app/credentials/{slack_connection.pk}/connect/").status_code == 403
    assert client.post(f"/app/credentials/{slack_connection.pk}/disconnect/").status_code == 403
    assert Connection.objects.get(pk=slack_connection.pk).status == "connected"
    assert PendingAuthorization.objects.count() == 0


def test_another_organization_gets_404_everywhere(world, pages, slack_connection):
    client = pages("outsider")
    assert client.get(f"/app/credentials/{slack_connection.pk}/connect/").status_code == 404
    assert client.post(f"/app/credentials/{slack_connection.pk}/disconnect/").status_code == 404
    assert world.client("outsider").get(f"/api/credentials/{slack_connection.pk}/").status_code == 404
    assert Connection.objects.filter(pk=slack_connection.pk).exists()


def test_disconnect_revokes_at_the_provider_then_forgets_the_tokens(world, pages, slack_app, slack_connection):
    token = stored_tokens(Connection.objects.get(pk=slack_connection.pk))["access_token"]
    response = pages("admin").post(f"/app/credentials/{slack_connection.pk}/disconnect/", follow=True)
    assert "disconnected and its access revoked at the provider" in messages_of(response)[0]
    assert slack_app.revocations[-1]["token"] == [token]
    assert slack_app.token_state(token) == "revoked"
    assert not Connection.objects.filter(pk=slack_connection.pk).exists()
    body = world.client("admin").get(f"/api/credentials/{slack_connection.pk}/").json()
    assert body["status"] == "not_connected"


def test_deleting_a_connection_revokes_it_first(world, slack_app, slack_connection):
    token = stored_tokens(Connection.objects.get(pk=slack_connection.pk))["access_token"]
    assert world.client("admin").delete(f"/api/credentials/{slack_connection.pk}/").status_code == 204
    assert slack_app.token_state(token) == "revoked"
    assert not Credential.objects.filter(pk=slack_connection.pk).exists()


def test_no_token_in_the_credential_list(world, slack_app, slack_connection):
    token = stored_tokens(Connection.objects.get(pk=slack_connection.pk))["access_token"]
    listing = world.client("admin").get("/api/credentials/")
    assert token not in listing.content.decode()
    assert json.loads(listing.content)["results"][0]["status"] == "connected"
