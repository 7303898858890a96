"""The review of connections as an attacker would do it: what leaves PotaFlow, to whom, and what is kept.

- the callback's ``code`` and ``state`` never reach a log line, whatever ``POTAFLOW_REDACT_QUERY`` holds;
- an OAuth endpoint answering with a redirect does not get the refresh token, the code or the client
  secret re-posted to wherever it points;
- a provider echoing a token in its error never makes it into a step's error, the stored problem or a log;
- token, authorization and revocation URLs at private addresses are refused (when saved, and when used);
- the Disconnect form needs its CSRF token; two callbacks racing with one state exchange the code once.
"""

import json
import logging
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection as db_connection
from django.test import Client
from gunicorn.config import Config

from core.redaction import redact_url_text
from integrations.base import PREVIEW_MASK as MASK
from integrations.errors import PermanentError
from integrations.http.action import HttpRequest
from integrations.models import Connection, Credential, PendingAuthorization
from integrations.oauth.tokens import stored_tokens
from integrations.services import credential_create
from potaflow.gunicorn_logging import RedactingLogger
from testing.network import Reply

from .support import callback_path, connect, login, messages_of, start
from .test_connect import CONNECT_SLACK
from .test_tokens import call_api, expire_stored


@pytest.fixture
def acme_id(world, oauth_app):
    credential = credential_create(organization=world.acme, name="Acme ID", kind="oauth2", secret=oauth_app.secret())
    connect(login(world.users["admin"]), f"/app/credentials/{credential.pk}/connect/", oauth_app)
    return credential


# -- logs --------------------------------------------------------------------------------
def access_atoms(raw_uri: str, referer: str = "-") -> dict:
    path, _, query = raw_uri.partition("?")
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": raw_uri, "PATH_INFO": path, "QUERY_STRING": query,
               "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_REFERER": referer, "REMOTE_ADDR": "127.0.0.1"}  # fmt: skip
    response = SimpleNamespace(status="302 Found", sent=0, headers=[])
    return RedactingLogger(Config()).atoms(response, SimpleNamespace(headers=[]), environ, timedelta(seconds=0))


def test_the_callbacks_code_and_state_are_masked_in_the_access_log_whatever_the_setting(settings, db):
    settings.POTAFLOW_REDACT_QUERY = ["pin"]  # an operator's own list replaces the defaults (code among them)
    callback = "/oauth/callback/?code=C0DE-abcdef&state=ST4TE-abcdef"
    atoms = access_atoms(callback, referer=f"https://potaflow.example{callback}")
    logged = " ".join(str(atoms[k]) for k in ("r", "U", "q", "f"))
    assert "C0DE-abcdef" not in logged and "ST4TE-abcdef" not in logged, logged
    assert atoms["q"] == "code=[redacted]&state=[redacted]"
    line = redact_url_text(f"GET {callback} 302")  # any other log line (structured logging, Django's)
    assert "C0DE" not in line and "ST4TE" not in line
    # A session that ended during the consent: the sign-in page's ?next= carries the callback, encoded.
    login_url = Client().get(callback)["Location"]
    assert login_url.startswith("/app/login/?next=/oauth/callback/%3Fcode%3DC0DE")  # Django's login_required
    atoms = access_atoms(login_url, referer=f"https://potaflow.example{login_url}")
    logged = " ".join(str(atoms[k]) for k in ("r", "U", "q", "f"))
    assert "C0DE-abcdef" not in logged and "ST4TE-abcdef" not in logged, logged
    assert "next=/oauth/callback/%3F[redacted]" in atoms["q"]
    # Elsewhere "state" is an ordinary word and stays readable.
    assert access_atoms("/app/runs/?state=failed")["q"] == "state=failed"


# -- what leaves PotaFlow -------------------------------------------------------------------
def test_a_token_endpoint_that_redirects_does_not_get_the_refresh_token_reposted(acme_id, oauth_app, http_server):
    refresh_token = stored_tokens(Connection.objects.get(pk=acme_id.pk))["refresh_token"]
    expire_stored(acme_id)
    # A 307 keeps the method and the body: the form with the refresh token and the client secret.
    oauth_app.route("POST", "/token", Reply(307, b"", {"Location": f"{http_server.url}/collect"}))
    with pytest.raises(PermanentError, match="answered with a redirect, which is not followed"):
        call_api(acme_id, oauth_app)
    assert http_server.requests == []
    assert refresh_token == stored_tokens(Connection.objects.get(pk=acme_id.pk))["refresh_token"]


def test_a_provider_echoing_the_refresh_token_in_its_error_never_gets_it_stored_or_logged(
    world, acme_id, oauth_app, caplog
):
    refresh_token = stored_tokens(Connection.objects.get(pk=acme_id.pk))["refresh_token"]
    expire_stored(acme_id)
    answer = {"error": "invalid_grant", "error_description": f"refresh token {refresh_token} was revoked"}
    oauth_app.route("POST", "/token", Reply(400, answer))
    with caplog.at_level(logging.INFO), pytest.raises(PermanentError) as failed:
        call_api(acme_id, oauth_app)
    assert "reconnect “Acme ID” in Credentials" in failed.value.message
    assert "refresh token [redacted] was revoked" in failed.value.message
    row = Connection.objects.get(pk=acme_id.pk)
    assert row.status == "needs_reconnect"
    api = world.client("admin").get(f"/api/credentials/{acme_id.pk}/").content.decode()
    page = login(world.users["admin"]).get("/app/credentials/").content.decode()
    for text in (failed.value.message, row.problem, api, page, caplog.text):
        assert refresh_token not in text


def test_a_refused_refresh_that_echoes_a_token_is_masked_too(acme_id, oauth_app):
    tokens = stored_tokens(Connection.objects.get(pk=acme_id.pk))
    expire_stored(acme_id)
    echo = f"client sent {tokens['refresh_token']} for {tokens['access_token']}"
    oauth_app.route("POST", "/token", Reply(400, {"error": "invalid_request", "error_description": echo}))
    with pytest.raises(PermanentError) as failed:
        call_api(acme_id, oauth_app)
    assert tokens["refresh_token"] not in failed.value.message
    assert tokens["access_token"] not in failed.value.message
    assert "invalid_request" in failed.value.message


# -- private destinations -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("token_url", "http://169.254.169.254/latest/meta-data/"),
        ("token_url", "https://10.1.2.3/token"),
        ("authorize_url", "http://[::1]:8080/authorize"),
        ("revocation_url", "http://192.168.0.1/revoke"),
    ],
)
def test_an_oauth2_endpoint_at_a_private_address_is_refused_when_saved(world, oauth_app, field, url):
    secret = oauth_app.secret(**{field: url})
    response = world.client("admin").post(
        "/api/credentials/", {"kind": "oauth2", "name": "Metadata", "secret": secret}, format="json"
    )
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["errors"]["secret"][field])
    assert "not a public address" in message and "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS" in message
    assert not Credential.objects.filter(kind="oauth2").exists()


def test_a_private_oauth2_endpoint_is_accepted_once_an_operator_allows_it(world, oauth_app, settings):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1", "10.1.2.0/24"]
    secret = oauth_app.secret(token_url="https://10.1.2.3/token")
    response = world.client("admin").post(
        "/api/credentials/", {"kind": "oauth2", "name": "Internal ID", "secret": secret}, format="json"
    )
    assert response.status_code == 201, response.content


def test_a_staff_token_url_at_the_metadata_address_is_refused_at_the_code_exchange(pages, google_app, settings):
    settings.POTAFLOW_GOOGLE_OAUTH_TOKEN_URL = "http://169.254.169.254/token"
    _, response = connect(pages("admin"), "/app/credentials/connect/google_oauth/", google_app)
    message = messages_of(response)[0]
    assert "Google was not connected" in message and "169.254.169.254" in message
    assert "not a public address" in message and "Nothing was saved" in message
    assert not google_app.requests or all(r.path != "/token" for r in google_app.requests)
    assert not Credential.objects.filter(kind="google_oauth").exists()


# -- the member pages -------------------------------------------------------------------------
def test_disconnect_needs_the_csrf_token(world, slack_app):
    connect(login(world.users["admin"]), CONNECT_SLACK, slack_app)
    credential = Credential.objects.get(kind="slack_oauth")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(world.users["admin"])
    assert browser.post(f"/app/credentials/{credential.pk}/disconnect/").status_code == 403
    assert Connection.objects.get(pk=credential.pk).status == "connected"
    assert slack_app.revocations == []


@pytest.mark.django_db(transaction=True)
def test_two_callbacks_racing_with_one_state_exchange_the_code_once(world, slack_app):
    admin = login(world.users["admin"])
    back = callback_path(slack_app.approve(start(admin, CONNECT_SLACK)))
    # The provider answers the exchange slowly: the second callback arrives while the first is in flight.
    slack_app.route("POST", "/api/oauth.v2.access", _slow(slack_app, 0.5))
    barrier = threading.Barrier(2)
    said: list[str] = []

    def callback() -> None:
        try:
            client = login(world.users["admin"])
            client.session.save()
            barrier.wait(timeout=10)
            said.extend(messages_of(client.get(back, follow=True)))
        finally:
            db_connection.close()

    threads = [threading.Thread(target=callback) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    exchanges = [r for r in slack_app.requests if r.path == "/api/oauth.v2.access"]
    assert len(exchanges) == 1
    assert sorted(m.split(" ")[0] for m in said) == ["This", "“Slack"], said
    assert Credential.objects.filter(kind="slack_oauth").count() == 1
    assert not PendingAuthorization.objects.exists()


def _slow(peer, seconds: float):
    """The peer's own token endpoint, answering after ``seconds``."""

    def answer(request):
        threading.Event().wait(seconds)
        return peer.handle(request)

    return answer


# -- the Django admin and edits of a connected credential --------------------------------------
@pytest.fixture
def staff_admin(world) -> Client:
    world.users["admin"].is_staff = True
    world.users["admin"].save(update_fields=["is_staff"])
    return login(world.users["admin"])


def test_the_admin_shows_a_connections_state_and_never_its_tokens(world, staff_admin, acme_id, slack_app):
    connect(login(world.users["admin"]), CONNECT_SLACK, slack_app)
    slack = Credential.objects.get(kind="slack_oauth")
    tokens = [*stored_tokens(Connection.objects.get(pk=acme_id.pk)).values(),
              *stored_tokens(Connection.objects.get(pk=slack.pk)).values()]  # fmt: skip
    Connection.objects.filter(pk=acme_id.pk).update(status="needs_reconnect", problem="Acme ID answered invalid_grant")
    page = staff_admin.get(f"/admin/integrations/credential/{slack.pk}/change/").content.decode()
    assert "Connected; account Acme Workspace; scopes chat:write chat:write.public" in page
    page = staff_admin.get(f"/admin/integrations/credential/{acme_id.pk}/change/").content.decode()
    assert "Needs reconnect" in page and "reconnect “Acme ID” in Credentials" in page
    listing = staff_admin.get("/admin/integrations/credential/").content.decode()
    assert "account Acme Workspace" in listing
    for html in (page, listing):
        assert not [t for t in tokens if len(t) > 8 and t in html]


@pytest.mark.parametrize("field", ["token_url", "revocation_url", "client_id", "authorize_url"])
def test_a_connected_oauth2_credential_keeps_its_client_and_endpoints(world, acme_id, oauth_app, http_server, field):
    """Otherwise the next refresh (or Disconnect) hands the refresh token and client secret to the new URL."""
    new = "someone-else" if field == "client_id" else f"{http_server.url}/{field}"
    response = world.client("admin").patch(f"/api/credentials/{acme_id.pk}/", {"secret": {field: new}}, format="json")
    assert response.status_code == 400, response.content
    assert "Disconnect it first" in " ".join(response.json()["errors"]["secret"][field])
    assert Credential.objects.get(pk=acme_id.pk).public_data[field] == oauth_app.secret()[field]
    # The client secret may be rotated, the allowed hosts and scopes changed: the tokens stay the client's.
    fine = world.client("admin").patch(
        f"/api/credentials/{acme_id.pk}/", {"secret": {"client_secret": "rotated", "scopes": ["read"]}}, format="json"
    )
    assert fine.status_code == 200, fine.content
    # Disconnected, the fields may change (and Connect binds the new client).
    login(world.users["admin"]).post(f"/app/credentials/{acme_id.pk}/disconnect/")
    again = world.client("admin").patch(f"/api/credentials/{acme_id.pk}/", {"secret": {field: new}}, format="json")
    assert again.status_code == 200, again.content
    assert http_server.requests == []


def test_the_admin_form_refuses_a_new_token_url_when_connected(staff_admin, acme_id, oauth_app, http_server):
    fields = {f"oauth2__{k}": (" ".join(v) if isinstance(v, list) else v) for k, v in oauth_app.secret().items()}
    fields.update(name="Acme ID", oauth2__token_url=f"{http_server.url}/token", oauth2__client_secret="")
    response = staff_admin.post(f"/admin/integrations/credential/{acme_id.pk}/change/", fields)
    assert response.status_code == 200  # the form again, with the error
    assert "Disconnect it first" in str(response.context["adminform"].form.errors["oauth2__token_url"])
    assert Credential.objects.get(pk=acme_id.pk).public_data["token_url"] == oauth_app.secret()["token_url"]


def test_deleting_a_connection_in_the_admin_revokes_it_first(staff_admin, acme_id, oauth_app):
    refresh_token = stored_tokens(Connection.objects.get(pk=acme_id.pk))["refresh_token"]
    response = staff_admin.post(f"/admin/integrations/credential/{acme_id.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Credential.objects.filter(pk=acme_id.pk).exists()
    assert oauth_app.revocations and oauth_app.revocations[-1]["token"] == [refresh_token]


def test_a_connection_needing_reconnect_does_not_claim_its_token_refreshes_by_itself(world, acme_id):
    page = login(world.users["admin"]).get("/app/credentials/").content.decode()
    assert "(refreshed by itself)" in page  # connected, with an expiry
    Connection.objects.filter(pk=acme_id.pk).update(status="needs_reconnect", problem="invalid_grant")
    page = login(world.users["admin"]).get("/app/credentials/").content.decode()
    assert "Needs reconnect" in page and "reconnect “Acme ID” in Credentials" in page
    assert "refreshed by itself" not in page and "token expires" not in page


def test_a_preview_of_an_http_request_with_a_connection_shows_the_masked_bearer(acme_id, oauth_app):
    action = HttpRequest()
    preview = action.preview({"url": f"{oauth_app.url}/api/me"}, acme_id)
    assert preview["headers"]["Authorization"] == f"Bearer {MASK}"
    tokens = stored_tokens(Connection.objects.get(pk=acme_id.pk))
    assert tokens["access_token"] not in json.dumps(preview)


@pytest.mark.parametrize("persona", ["viewer", "editor"])
def test_viewers_and_editors_cannot_delete_a_connection_through_the_api(world, acme_id, oauth_app, persona):
    response = world.client(persona).delete(f"/api/credentials/{acme_id.pk}/")
    assert response.status_code in (403, 404)
    assert Connection.objects.filter(pk=acme_id.pk).exists() and oauth_app.revocations == []
