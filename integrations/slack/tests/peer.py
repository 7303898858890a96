"""A local peer speaking Slack's Web API ``chat.postMessage``
(https://api.slack.com/methods/chat.postMessage) and the external file upload flow
(files.getUploadURLExternal, a POST of the bytes to the URL it returns,
files.completeUploadExternal: https://api.slack.com/messaging/files#uploading_files),
for the official slack_sdk client.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from integrations.oauth.tests.peer import OAuthServer
from testing.http_server import RecordedRequest, RecordingHTTPServer, Reply

# Slack's codes for the token answer's refusals (https://api.slack.com/methods/oauth.v2.access#errors).
_SLACK_TOKEN_ERRORS = {"authorization_code": "invalid_code", "refresh_token": "invalid_refresh_token",
                       "client": "invalid_client_id"}  # fmt: skip


class FakeSlack(OAuthServer, RecordingHTTPServer):
    """Speaks Slack's Web API conventions: HTTP 200 with ``{"ok": false, "error": code}``
    for API errors, HTTP 429 + ``Retry-After`` with ``error: ratelimited``.

    And Slack's OAuth v2 (https://api.slack.com/authentication/oauth-v2): the
    authorize page, ``oauth.v2.access`` (code, and refresh when token rotation
    is on: ``rotate_tokens()``), ``auth.revoke``. Without rotation, as Slack by
    default, a bot token never expires and comes without a refresh token.
    """

    provider_name = "Slack"
    authorize_path = "/oauth/v2/authorize"
    token_path = "/api/oauth.v2.access"
    revoke_path = "/api/auth.revoke"
    client_id = "1111.2222"
    client_secret = "slack-client-secret"
    token_prefix = "xoxb-oauth-"
    refresh_prefix = "xoxe-1-"
    token_type = "bot"
    team = {"id": "T0ACME", "name": "Acme Workspace"}

    def __init__(self) -> None:
        RecordingHTTPServer.__init__(self)
        self.init_oauth()
        self.valid_tokens = {"xoxb-test-token"}
        self.channels = {"C0123456789": "general", "C0NOTMEMBER": "secret"}
        self.bot_member_of = {"C0123456789"}
        self.rate_limited: list[int] = []  # pending Retry-After values, consumed one per call
        self.posted: list[dict[str, Any]] = []
        self.pending_uploads: dict[str, dict[str, Any]] = {}  # file id -> {filename, length, data}
        self.files: list[dict[str, Any]] = []  # completed uploads: {id, filename, title, channel, comment, data}

    def oauth_defaults(self) -> None:
        self.expires_in, self.rotate, self.issue_refresh_tokens = None, False, False

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def authorize_url(self) -> str:
        return f"{self.url}{self.authorize_path}"

    @property
    def oauth_settings(self) -> dict[str, str]:
        """The settings pointing PotaFlow's Slack connection at this peer."""
        return {
            "POTAFLOW_SLACK_API_URL": self.api_url,
            "POTAFLOW_SLACK_OAUTH_AUTHORIZE_URL": self.authorize_url,
            "POTAFLOW_SLACK_CLIENT_ID": self.client_id,
            "POTAFLOW_SLACK_CLIENT_SECRET": self.client_secret,
        }

    def rotate_tokens(self, expires_in: int = 43200) -> None:
        """Slack's token rotation on: expiring access tokens and single-use refresh tokens."""
        self.expires_in, self.rotate, self.issue_refresh_tokens = expires_in, True, True

    def token_error(self, error: str, description: str = "", status: int = 400, grant_type: str = "") -> Reply:
        return Reply(200, {"ok": False, "error": _SLACK_TOKEN_ERRORS.get(grant_type, error)})

    def extend_token_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        body["scope"] = body["scope"].replace(" ", ",")
        return {"ok": True, **body, "bot_user_id": "U0BOT", "app_id": "A0APP", "team": self.team,
                "enterprise": None, "is_enterprise_install": False}  # fmt: skip

    def handle_revoke(self, request: RecordedRequest) -> Reply:
        super().handle_revoke(request)
        return Reply(200, {"ok": True, "revoked": True})

    def handle(self, request: RecordedRequest) -> Reply:
        answer = self.handle_oauth(request)
        if answer is not None:
            return answer
        if request.path.startswith("/upload/") and request.method == "POST":
            return self._receive_upload(request)
        if request.path == "/api/files.getUploadURLExternal" and request.method == "POST":
            return self._upload_url(request)
        if request.path == "/api/files.completeUploadExternal" and request.method == "POST":
            return self._complete_upload(request)
        if request.path != "/api/chat.postMessage" or request.method != "POST":
            return Reply(404, {"ok": False, "error": "unknown_method"})
        if self.rate_limited:
            return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(self.rate_limited.pop(0))})
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Reply(200, {"ok": False, "error": "not_authed"})
        token = auth.removeprefix("Bearer ")
        if token not in self.valid_tokens:
            state = self.token_state(token)
            if state != "valid":
                code = {"expired": "token_expired", "revoked": "token_revoked"}.get(state, "invalid_auth")
                return Reply(200, {"ok": False, "error": code})
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            args = request.json()
        else:
            args = {k: v[0] for k, v in request.form().items()}
        channel = args.get("channel")
        channel_id = channel if channel in self.channels else None
        if channel_id is None and isinstance(channel, str):
            channel_id = next((cid for cid, name in self.channels.items() if f"#{name}" == channel), None)
        if channel_id is None:
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        if channel_id not in self.bot_member_of:
            return Reply(200, {"ok": False, "error": "not_in_channel"})
        if not args.get("text") and not args.get("blocks"):
            return Reply(200, {"ok": False, "error": "no_text"})
        ts = f"{time.time():.6f}"
        message = {"type": "message", "text": args.get("text", ""), "bot_id": "B0FAKEBOT", "ts": ts}
        if args.get("blocks"):
            message["blocks"] = args["blocks"]
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self.posted.append(args)
        return Reply(200, {"ok": True, "channel": channel_id, "ts": ts, "message": message})

    def _args(self, request: RecordedRequest) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("application/json"):
            return request.json()
        return {**{k: v[0] for k, v in request.query.items()}, **{k: v[0] for k, v in request.form().items()}}

    def _authed(self, request: RecordedRequest) -> Reply | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Reply(200, {"ok": False, "error": "not_authed"})
        token = auth.removeprefix("Bearer ")
        if token not in self.valid_tokens and self.token_state(token) != "valid":
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        return None

    # -- the external upload flow ------------------------------------------------
    def _upload_url(self, request: RecordedRequest) -> Reply:
        refused = self._authed(request)
        if refused:
            return refused
        args = self._args(request)
        if not args.get("filename"):
            return Reply(200, {"ok": False, "error": "invalid_arguments"})
        try:
            length = int(args.get("length", ""))
        except ValueError:
            return Reply(200, {"ok": False, "error": "invalid_arguments"})
        file_id = "F" + secrets.token_hex(5).upper()
        self.pending_uploads[file_id] = {"filename": args["filename"], "length": length, "data": None}
        return Reply(200, {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id})

    def _receive_upload(self, request: RecordedRequest) -> Reply:
        file_id = request.path.removeprefix("/upload/")
        pending = self.pending_uploads.get(file_id)
        if pending is None:
            return Reply(404, "not found")
        if len(request.body) != pending["length"]:
            return Reply(400, f"expected {pending['length']} bytes, got {len(request.body)}")
        pending["data"] = request.body
        return Reply(200, f"OK - {len(request.body)}")

    def _complete_upload(self, request: RecordedRequest) -> Reply:
        refused = self._authed(request)
        if refused:
            return refused
        args = self._args(request)
        try:
            files = json.loads(args.get("files") or "[]")
        except ValueError:
            return Reply(200, {"ok": False, "error": "invalid_arguments"})
        channel = args.get("channel_id")
        if channel and channel not in self.channels:
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        if channel and channel not in self.bot_member_of:
            return Reply(200, {"ok": False, "error": "not_in_channel"})
        completed = []
        for entry in files:
            pending = self.pending_uploads.pop(entry.get("id"), None)
            if pending is None or pending["data"] is None:
                return Reply(200, {"ok": False, "error": "file_upload_not_found"})
            record = {"id": entry["id"], "filename": pending["filename"], "title": entry.get("title"),
                      "channel": channel, "comment": args.get("initial_comment"), "data": pending["data"]}  # fmt: skip
            self.files.append(record)
            completed.append({"id": entry["id"], "title": entry.get("title") or pending["filename"]})
        return Reply(200, {"ok": True, "files": completed})
