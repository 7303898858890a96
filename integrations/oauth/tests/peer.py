"""A local OAuth 2.0 authorization server (RFC 6749, PKCE RFC 7636, revocation RFC 7009).

``OAuthServer`` is a mixin of ``testing.http_server.RecordingHTTPServer``
peers: the generic ``FakeOAuthProvider`` here, and the Slack and Google peers
(``integrations/slack/tests/peer.py``, ``integrations/sheets/tests/peer.py``)
speak it at their providers' paths and in their providers' answer formats.

What it does, as the real servers do:
- an authorization page (``GET <authorize_path>``) with *Allow* / *Deny* links,
  checking client id and redirect URI; *Allow* redirects back with a single-use
  code bound to the redirect URI and the S256 code challenge, *Deny* with
  ``error=access_denied``; ``approve(url)`` does the same without a browser;
- the token endpoint: ``authorization_code`` (client authentication, code,
  redirect URI and ``code_verifier`` checked) and ``refresh_token`` grants,
  with **rotation** (``rotate``: every refresh issues a new refresh token and
  the old one dies), access tokens that expire after ``expires_in`` seconds,
  ``refreshes`` counting refresh grants, ``refuse_refresh`` answering
  ``invalid_grant``, ``on_refresh`` called after a refresh is granted and
  before its answer is sent (a test kills the worker there);
- revocation, and ``revoke_all()`` (the user removed the app at the provider).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testing.http_server import RecordedRequest, RecordingHTTPServer, Reply


@dataclass
class Grant:
    """One consent: the tokens issued under it share its fate (revocation)."""

    scope: str
    alive: bool = True
    refresh_tokens: set[str] = field(default_factory=set)


class OAuthServer:
    """The authorization-server half of a peer; subclasses set the paths and may reformat answers."""

    authorize_path = "/authorize"
    token_path = "/token"
    revoke_path = "/revoke"
    client_id = "potaflow-client"
    client_secret = "potaflow-client-secret"
    token_prefix = "at-"
    refresh_prefix = "rt-"
    token_type = "Bearer"

    def init_oauth(self) -> None:
        self.oauth_lock = threading.Lock()
        self.expires_in: int | None = 3600
        self.rotate = True
        self.issue_refresh_tokens = True
        self.refreshes = 0
        self.refuse_refresh = False
        self.on_refresh: Callable[[], None] | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, tuple[Grant, float | None]] = {}  # token -> (grant, expiry monotonic)
        self.refresh_tokens: dict[str, Grant] = {}
        self.grants: list[Grant] = []
        self.revocations: list[dict[str, list[str]]] = []
        self.oauth_defaults()

    def oauth_defaults(self) -> None:
        """The provider's own defaults (expiry, rotation), applied by ``init_oauth``."""

    # -- what the API side asks --------------------------------------------------------
    def token_state(self, token: str) -> str:
        """``valid``, ``expired``, ``revoked`` or ``unknown``."""
        with self.oauth_lock:
            entry = self.access_tokens.get(token)
        if entry is None:
            return "unknown"
        grant, expiry = entry
        if not grant.alive:
            return "revoked"
        if expiry is not None and time.monotonic() >= expiry:
            return "expired"
        return "valid"

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (refresh tokens stay valid)."""
        with self.oauth_lock:
            now = time.monotonic()
            self.access_tokens = {t: (g, now) for t, (g, _) in self.access_tokens.items()}

    def revoke_all(self) -> None:
        """The user removed the app at the provider: every grant, token and refresh token dies."""
        with self.oauth_lock:
            for grant in self.grants:
                grant.alive = False

    # -- the consent ---------------------------------------------------------------------
    def _check_authorize(self, query: dict[str, list[str]]) -> str | None:
        def one(name: str) -> str:
            return (query.get(name) or [""])[0]

        if one("client_id") != self.client_id:
            return "invalid_client_id"
        if not one("redirect_uri").startswith(("http://", "https://")):
            return "bad_redirect_uri"
        if one("code_challenge_method") != "S256" or len(one("code_challenge")) != 43:
            return "invalid_request: PKCE S256 required"
        if not one("state"):
            return "invalid_request: state required"
        return None

    def approve(self, authorize_url: str, *, allow: bool = True) -> str:
        """What the browser's redirect back would be after *Allow* (or *Deny*): the callback URL."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize_url).query)
        problem = self._check_authorize(query)
        if problem:
            raise AssertionError(f"the authorization request is refused: {problem}")
        return self._decide(query, allow)

    def _decide(self, query: dict[str, list[str]], allow: bool) -> str:
        def one(name: str) -> str:
            return (query.get(name) or [""])[0]

        back: dict[str, str] = {"state": one("state")}
        if allow:
            code = "code-" + secrets.token_urlsafe(16)
            with self.oauth_lock:
                self.codes[code] = {
                    "redirect_uri": one("redirect_uri"),
                    "challenge": one("code_challenge"),
                    "scope": one("scope"),
                }
            back["code"] = code
        else:
            back.update(error="access_denied", error_description="The user denied access")
        return one("redirect_uri") + "?" + urllib.parse.urlencode(back)

    def handle_authorize(self, request: RecordedRequest) -> Reply:
        if request.path.endswith("/decide"):
            original = urllib.parse.parse_qs(request.query.get("q", [""])[0])
            location = self._decide(original, request.query.get("allow") == ["1"])
            return Reply(302, b"", {"Location": location})
        problem = self._check_authorize(request.query)
        if problem:
            return Reply(400, f"<html><body><h1>Error: {html.escape(problem)}</h1></body></html>",
                         {"Content-Type": "text/html"})  # fmt: skip
        q = urllib.parse.quote(urllib.parse.urlencode(request.query, doseq=True))
        scope = html.escape((request.query.get("scope") or [""])[0])
        page = (
            f"<!doctype html><html><head><title>{self.provider_name} consent</title></head><body>"
            f"<h1>{self.provider_name}</h1><p>PotaFlow would like to: <code>{scope}</code></p>"
            f'<a id="allow" href="{self.authorize_path}/decide?allow=1&q={q}">Allow</a> '
            f'<a id="deny" href="{self.authorize_path}/decide?allow=0&q={q}">Deny</a></body></html>'
        )
        return Reply(200, page, {"Content-Type": "text/html; charset=utf-8"})

    provider_name = "OAuth provider"

    # -- the token endpoint ------------------------------------------------------------------
    def token_error(self, error: str, description: str = "", status: int = 400, grant_type: str = "") -> Reply:
        return Reply(status, {"error": error, "error_description": description})

    def token_answer(self, body: dict[str, Any]) -> Reply:
        return Reply(200, body, {"Cache-Control": "no-store"})

    def _client_ok(self, request: RecordedRequest, form: dict[str, list[str]]) -> bool:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Basic "):
            pair = base64.b64decode(auth[6:]).decode()
            client_id, _, secret = pair.partition(":")
            client_id, secret = urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
        else:
            client_id = (form.get("client_id") or [""])[0]
            secret = (form.get("client_secret") or [""])[0]
        return client_id == self.client_id and secret == self.client_secret

    def _issue(self, grant: Grant, *, refresh: bool) -> dict[str, Any]:
        access = self.token_prefix + secrets.token_urlsafe(18)
        expiry = time.monotonic() + self.expires_in if self.expires_in is not None else None
        self.access_tokens[access] = (grant, expiry)
        body: dict[str, Any] = {"access_token": access, "token_type": self.token_type, "scope": grant.scope}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if refresh:
            token = self.refresh_prefix + secrets.token_urlsafe(18)
            self.refresh_tokens[token] = grant
            grant.refresh_tokens.add(token)
            body["refresh_token"] = token
        return body

    def handle_token(self, request: RecordedRequest) -> Reply:
        form = request.form()
        if not self._client_ok(request, form):
            return self.token_error("invalid_client", "Client authentication failed", 401, grant_type="client")
        grant_type = (form.get("grant_type") or [""])[0]
        if grant_type == "authorization_code":
            code = (form.get("code") or [""])[0]
            with self.oauth_lock:
                issued = self.codes.pop(code, None)  # single use
            if issued is None:
                return self.token_error("invalid_grant", "Unknown or used authorization code", grant_type=grant_type)
            if (form.get("redirect_uri") or [""])[0] != issued["redirect_uri"]:
                return self.token_error("invalid_grant", "redirect_uri does not match", grant_type=grant_type)
            verifier = (form.get("code_verifier") or [""])[0]
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != issued["challenge"]:
                return self.token_error("invalid_grant", "PKCE verification failed", grant_type=grant_type)
            with self.oauth_lock:
                grant = Grant(scope=issued["scope"].replace(",", " ") if issued["scope"] else "")
                self.grants.append(grant)
                body = self._issue(grant, refresh=self.issue_refresh_tokens)
            return self.token_answer(self.extend_token_answer(body))
        if grant_type == "refresh_token":
            token = (form.get("refresh_token") or [""])[0]
            with self.oauth_lock:
                self.refreshes += 1
                grant = self.refresh_tokens.get(token)
                if self.refuse_refresh or grant is None or not grant.alive or token not in grant.refresh_tokens:
                    return self.token_error(
                        "invalid_grant", "Token has been expired or revoked.", grant_type=grant_type
                    )
                if self.rotate:
                    grant.refresh_tokens.discard(token)
                body = self._issue(grant, refresh=self.rotate)
            if self.on_refresh is not None:
                self.on_refresh()
            return self.token_answer(self.extend_token_answer(body))
        return self.token_error("unsupported_grant_type", grant_type)

    def extend_token_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def handle_revoke(self, request: RecordedRequest) -> Reply:
        form = request.form()
        self.revocations.append(form)
        token = (form.get("token") or [""])[0]
        with self.oauth_lock:
            grant = self.refresh_tokens.get(token) or (self.access_tokens.get(token) or (None, None))[0]
            if grant is not None:
                grant.alive = False
        return Reply(200, b"")

    def handle_oauth(self, request: RecordedRequest) -> Reply | None:
        """The answer when ``request`` is for the authorization server, else None."""
        if request.path.startswith(self.authorize_path) and request.method == "GET":
            return self.handle_authorize(request)
        if request.path == self.token_path and request.method == "POST":
            return self.handle_token(request)
        if request.path == self.revoke_path and request.method == "POST":
            return self.handle_revoke(request)
        return None


class FakeOAuthProvider(OAuthServer, RecordingHTTPServer):
    """A generic provider: the authorization server and one protected API, ``GET /api/me``."""

    provider_name = "Acme ID"

    def __init__(self) -> None:
        RecordingHTTPServer.__init__(self)
        self.init_oauth()

    def secret(self, **overrides: Any) -> dict[str, Any]:
        """The ``secret`` of an ``oauth2`` credential for this server."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "authorize_url": f"{self.url}{self.authorize_path}",
            "token_url": f"{self.url}{self.token_path}",
            "revocation_url": f"{self.url}{self.revoke_path}",
            "scopes": ["read", "write"],
            "allowed_hosts": [f"{self.url}/api/"],
            **overrides,
        }

    def handle(self, request: RecordedRequest) -> Reply:
        answer = self.handle_oauth(request)
        if answer is not None:
            return answer
        if request.path.startswith("/api/"):
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            state = self.token_state(token)
            if state != "valid":
                return Reply(401, {"error": f"token {state}"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return Reply(200, {"ok": True, "path": request.path, "user": "ada"})
        return Reply(404, {"error": "not found"})
