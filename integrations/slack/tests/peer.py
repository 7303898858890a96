"""A local peer speaking Slack's Web API ``chat.postMessage``
(https://api.slack.com/methods/chat.postMessage), for the official slack_sdk client.
"""

from __future__ import annotations

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

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def handle(self, request: RecordedRequest) -> Reply:
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
