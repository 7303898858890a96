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

from testing.http_server import RecordedRequest, RecordingHTTPServer, Reply


class FakeSlack(RecordingHTTPServer):
    """Speaks Slack's Web API conventions: HTTP 200 with ``{"ok": false, "error": code}``
    for API errors, HTTP 429 + ``Retry-After`` with ``error: ratelimited``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.valid_tokens = {"xoxb-test-token"}
        self.channels = {"C0123456789": "general", "C0NOTMEMBER": "secret"}
        self.bot_member_of = {"C0123456789"}
        self.rate_limited: list[int] = []  # pending Retry-After values, consumed one per call
        self.posted: list[dict[str, Any]] = []
        self.pending_uploads: dict[str, dict[str, Any]] = {}  # file id -> {filename, length, data}
        self.files: list[dict[str, Any]] = []  # completed uploads: {id, filename, title, channel, comment, data}

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def _args(self, request: RecordedRequest) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("application/json"):
            return request.json()
        return {**{k: v[0] for k, v in request.query.items()}, **{k: v[0] for k, v in request.form().items()}}

    def _authed(self, request: RecordedRequest) -> Reply | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Reply(200, {"ok": False, "error": "not_authed"})
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        return None

    def handle(self, request: RecordedRequest) -> Reply:
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
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return Reply(200, {"ok": False, "error": "invalid_auth"})
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
