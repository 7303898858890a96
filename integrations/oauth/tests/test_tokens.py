"""Tokens that are never lost: proactive and reactive refresh, rotation, dead grants -> needs_reconnect,
a provider that is down (single-flight with twenty steps of a real worker: ``test_single_flight``).

Real PostgreSQL row locks, real HTTP to the local authorization servers, the real actions."""

from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from integrations.errors import PermanentError, RetryableError
from integrations.http.action import HttpRequest
from integrations.models import Connection, Credential
from integrations.oauth.tokens import stored_tokens
from integrations.services import credential_create, credential_for_step, credentials_rotate_keys
from integrations.slack.action import SlackMessage
from integrations.tests.support import make_ctx
from testing.network import Reply

from .support import connect, login

http = HttpRequest()


@pytest.fixture
def acme_id(world, oauth_app):
    """A connected generic oauth2 credential against the local provider (rotating refresh tokens)."""
    credential = credential_create(organization=world.acme, name="Acme ID", kind="oauth2", secret=oauth_app.secret())
    connect(login(world.users["admin"]), f"/app/credentials/{credential.pk}/connect/", oauth_app)
    assert Connection.objects.get(pk=credential.pk).status == "connected"
    return credential


def expire_stored(credential: Credential) -> None:
    """The access token is past its expiry, for PotaFlow and for the provider."""
    Connection.objects.filter(pk=credential.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def call_api(credential: Credential, peer) -> dict:
    opened = credential_for_step(Credential.objects.get(pk=credential.pk), timeout=5)
    ctx = make_ctx(opened.fields, credential.kind, connection=opened.connection)
    return http.run({"url": f"{peer.url}/api/me"}, ctx)


def tokens(credential: Credential) -> dict[str, str]:
    return stored_tokens(Connection.objects.get(pk=credential.pk))


def test_an_expiring_token_is_refreshed_before_use_and_the_rotated_refresh_token_stored(acme_id, oauth_app):
    before = tokens(acme_id)
    oauth_app.expire_access_tokens()
    expire_stored(acme_id)
    out = call_api(acme_id, oauth_app)
    assert out["status"] == 200
    assert oauth_app.refreshes == 1
    after = tokens(acme_id)
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]  # rotated: the newest is the stored one
    assert oauth_app.requests[-1].headers["authorization"] == f"Bearer {after['access_token']}"
    row = Connection.objects.get(pk=acme_id.pk)
    assert row.refresh_count == 1 and row.expires_at > timezone.now()
    call_api(acme_id, oauth_app)
    assert oauth_app.refreshes == 1  # fresh now: not refreshed again


def test_a_401_refreshes_once_and_retries_once(acme_id, oauth_app):
    oauth_app.expire_access_tokens()  # PotaFlow still thinks the token is good
    out = call_api(acme_id, oauth_app)
    assert out["status"] == 200
    assert oauth_app.refreshes == 1
    api_calls = [r for r in oauth_app.requests if r.path == "/api/me"]
    assert len(api_calls) == 2  # the refused call and its one retry


def test_a_401_after_the_refresh_is_the_apis_answer_not_a_loop(acme_id, oauth_app):
    oauth_app.route("GET", "/api/me", Reply(401, {"error": "invalid_token"}))
    with pytest.raises(PermanentError, match="HTTP 401"):
        call_api(acme_id, oauth_app)
    assert oauth_app.refreshes == 1
    assert len([r for r in oauth_app.requests if r.path == "/api/me"]) == 2


def test_the_old_refresh_token_is_kept_when_none_comes_back(world, pages, google_app):
    connect(pages("admin"), "/app/credentials/connect/google_oauth/", google_app)
    credential = Credential.objects.get(kind="google_oauth")
    before = tokens(credential)
    expire_stored(credential)
    opened = credential_for_step(credential, timeout=5)
    assert google_app.refreshes == 1
    after = tokens(credential)
    assert opened.fields["access_token"] == after["access_token"] != before["access_token"]
    assert after["refresh_token"] == before["refresh_token"]  # Google sends none: the old one stays


def test_a_dead_refresh_token_marks_the_connection_needs_reconnect(world, acme_id, oauth_app):
    oauth_app.revoke_all()  # the user removed the app at the provider
    with pytest.raises(PermanentError, match="reconnect “Acme ID” in Credentials") as exc:
        call_api(acme_id, oauth_app)
    assert "invalid_grant" in exc.value.message
    row = Connection.objects.get(pk=acme_id.pk)
    assert row.status == "needs_reconnect" and "invalid_grant" in row.problem
    assert oauth_app.refreshes == 1
    # From now on steps fail at once, without asking the provider again.
    with pytest.raises(PermanentError, match="reconnect “Acme ID” in Credentials"):
        call_api(acme_id, oauth_app)
    assert oauth_app.refreshes == 1
    body = world.client("admin").get(f"/api/credentials/{acme_id.pk}/").json()
    assert body["status"] == "needs_reconnect"
    assert "reconnect “Acme ID” in Credentials" in body["connection"]["problem"]
    # Reconnecting keeps the id and makes it usable again.
    connect(login(world.users["admin"]), f"/app/credentials/{acme_id.pk}/connect/", oauth_app)
    assert Credential.objects.filter(kind="oauth2").count() == 1
    assert call_api(acme_id, oauth_app)["status"] == 200


def test_a_provider_that_is_down_is_retryable_and_the_connection_stays(acme_id, oauth_app):
    expire_stored(acme_id)
    oauth_app.route("POST", "/token", Reply(503, "<html>down</html>", {"Content-Type": "text/html"}))
    with pytest.raises(RetryableError, match="refreshing the “Acme ID” token failed.*HTTP 503"):
        call_api(acme_id, oauth_app)
    assert Connection.objects.get(pk=acme_id.pk).status == "connected"


def test_slack_without_rotation_marks_a_revoked_token_needs_reconnect(world, pages, slack_app):
    connect(pages("admin"), "/app/credentials/connect/slack_oauth/", slack_app)
    credential = Credential.objects.get(kind="slack_oauth")
    slack_app.bot_member_of.add("C0123456789")
    slack_app.revoke_all()
    opened = credential_for_step(credential, timeout=5)
    ctx = make_ctx(opened.fields, "slack_oauth", connection=opened.connection)
    with pytest.raises(PermanentError, match="reconnect Slack in Credentials"):
        SlackMessage().run({"channel": "C0123456789", "text": "hi"}, ctx)
    assert Connection.objects.get(pk=credential.pk).status == "needs_reconnect"


def test_slack_with_rotation_refreshes_an_expired_token(world, pages, slack_app, settings):
    slack_app.rotate_tokens(expires_in=3600)
    connect(pages("admin"), "/app/credentials/connect/slack_oauth/", slack_app)
    credential = Credential.objects.get(kind="slack_oauth")
    slack_app.expire_access_tokens()
    opened = credential_for_step(credential, timeout=5)
    ctx = make_ctx(opened.fields, "slack_oauth", connection=opened.connection)
    out = SlackMessage().run({"channel": "C0123456789", "text": "hi"}, ctx)
    assert out["ok"] is True and slack_app.refreshes == 1
    refresh = next(r for r in slack_app.requests if r.form().get("grant_type") == ["refresh_token"])
    assert refresh.path == "/api/oauth.v2.access"
    assert slack_app.posted[-1]["text"] == "hi"


def test_an_oauth2_token_goes_only_to_its_allowed_hosts(acme_id, oauth_app, http_server):
    opened = credential_for_step(acme_id, timeout=5)
    ctx = make_ctx(opened.fields, "oauth2", connection=opened.connection)
    with pytest.raises(PermanentError, match="outside its allowed_hosts rule.*nothing was sent"):
        http.run({"url": f"{http_server.url}/steal"}, ctx)
    assert http_server.requests == []


def test_rotating_the_keys_rewrites_the_tokens_too(acme_id, oauth_app, settings):
    before = tokens(acme_id)
    new_key = Fernet.generate_key().decode()
    settings.POTAFLOW_FERNET_KEYS = [new_key, *settings.POTAFLOW_FERNET_KEYS]
    credentials_rotate_keys()
    settings.POTAFLOW_FERNET_KEYS = [new_key]  # the old key dropped
    assert tokens(acme_id) == before
    assert call_api(acme_id, oauth_app)["status"] == 200
