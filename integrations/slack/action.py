"""``slack.message``: post a message with ``slack_sdk.WebClient.chat_postMessage``.

Base URL from ``POTAFLOW_SLACK_API_URL``. Slack answers API errors with HTTP
200 and ``{"ok": false, "error": "<code>"}``; rate limits with 429,
``error: ratelimited`` and ``Retry-After``. Retrying is left to the engine
(the client's own retry handlers are disabled). An answer that is not a Slack
JSON object (a proxy's HTML error page, an empty body) is classified by its
HTTP status alone: 5xx, 429 and a puzzling 200 are retryable, other 4xx
permanent.

``slack_sdk`` is imported on first use, not when the registry loads, so that
processes that never post to Slack (web, beat) do not carry it.
"""

from __future__ import annotations

import functools
import urllib.error
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings

from integrations import errors
from integrations.base import Action, ActionContext, PreviewCredential, preview_row
from integrations.errors import PermanentError, RetryableError
from integrations.storable import JSONValue, storable

from .credentials import SLACK_BOT_TOKEN, SLACK_OAUTH

if TYPE_CHECKING:
    from slack_sdk.errors import SlackApiError

# https://api.slack.com/methods/chat.postMessage#errors: transient on Slack's side.
RETRYABLE_ERRORS = {"ratelimited", "rate_limited", "fatal_error", "internal_error", "service_unavailable",
                    "request_timeout"}  # fmt: skip
# Slack's codes for a token it does not accept (any more): a connection refreshes once and retries once.
UNAUTHORIZED_ERRORS = {"invalid_auth", "not_authed", "token_expired", "token_revoked", "account_inactive"}
# What slack_sdk (3.x) puts in place of the error code when the body was not JSON.
_NOT_JSON = "Received a response in a non-JSON format:"


class SlackMessage(Action):
    name = "slack.message"
    title = "Slack message"
    description = (
        "Post a message (text and/or Block Kit blocks) to a channel, optionally in a thread; "
        "or upload a file there with the text as its comment."
    )
    credential_kind = (SLACK_BOT_TOKEN.kind, SLACK_OAUTH.kind)
    credential_required = True
    config_schema = {
        "type": "object",
        "required": ["channel"],
        "anyOf": [{"required": ["text"]}, {"required": ["blocks"]}, {"required": ["file"]}],
        "additionalProperties": False,
        "properties": {
            "channel": {"type": "string", "minLength": 1, "description": "Channel id (C0123...) or #name"},
            "text": {"type": "string", "description": "Message text; the notification fallback when blocks are set"},
            "blocks": {"type": "array", "items": {"type": "object"}, "description": "Block Kit blocks"},
            "thread_ts": {"type": "string", "description": "Reply in this thread"},
            "unfurl_links": {"type": "boolean"},
            "file": {
                "type": ["object", "string"],
                "description": "Upload this file ({{ trigger.files.<field> }}) to the channel (needs its id); "
                "text becomes its comment. At most POTAFLOW_SEND_FILE_MAX_BYTES.",
            },
            "filename": {"type": "string", "description": "The uploaded file's name (default: its own)"},
            "title": {"type": "string", "description": "The uploaded file's title"},
        },
    }

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        """The message: channel, text and how many blocks."""
        blocks = config.get("blocks")
        return {
            "kind": "slack",
            "channel": config.get("channel"),
            "text": config.get("text"),
            "blocks": blocks,
            "rows": [
                preview_row("Channel", config.get("channel")),
                preview_row("Text", config.get("text") or ""),
                preview_row("Blocks", f"{len(blocks)} block(s)" if isinstance(blocks, list) and blocks else "none"),
            ],
        }

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue]:
        return {"channel": config.get("channel")}

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        cred = ctx.credential or {}
        token = cred.get("token") or cred.get("access_token")
        if not token:
            raise PermanentError("slack.message needs a slack_bot_token credential or a Slack connection")
        # deferred: keeps idle memory down (slack_sdk loads only in a process that posts to Slack)
        from slack_sdk.errors import SlackApiError

        send: Callable[[str], dict[str, Any]]
        upload = _upload_args(config, ctx) if config.get("file") not in (None, "") else None
        if upload is not None:
            send = functools.partial(_upload, kwargs=upload, ctx=ctx)
        else:
            kwargs: dict[str, Any] = {"channel": config["channel"]}
            for key in ("text", "blocks", "thread_ts", "unfurl_links"):
                if config.get(key) not in (None, ""):
                    kwargs[key] = config[key]
            send = functools.partial(_post, kwargs=kwargs, ctx=ctx)
        try:
            data = send(token)
        except SlackApiError as exc:
            if ctx.connection is None or _error_code(exc) not in UNAUTHORIZED_ERRORS:
                raise _classify(exc, config["channel"]) from None
            token = ctx.connection.refreshed_after(token)  # once, single-flight; dead: "reconnect Slack"
            try:
                data = send(token)
            except SlackApiError as again:
                raise _classify(again, config["channel"]) from None
        if upload is not None:
            uploaded = data.get("file") or {}
            shared: dict[str, JSONValue] = storable(
                {"ok": True, "channel": config["channel"], "file_id": uploaded.get("id"),
                 "title": uploaded.get("title"), "file": upload["file"]}
            )  # fmt: skip
            return shared
        output: dict[str, JSONValue] = storable(
            {"ok": True, "channel": data.get("channel"), "ts": data.get("ts"), "message": data.get("message", {})}
        )
        return output


def _post(token: str, kwargs: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    """One chat.postMessage; Slack's API errors come out as ``SlackApiError``, the rest classified."""
    # deferred: as in run
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError, SlackClientError

    client = WebClient(
        token=token,
        base_url=settings.POTAFLOW_SLACK_API_URL,
        timeout=max(1, round(ctx.timeout_seconds)),
        retry_handlers=[],
    )
    try:
        response = client.chat_postMessage(**kwargs)
    except AttributeError as exc:  # slack_sdk validating JSON that is not an object ([...], "...")
        raise RetryableError(f"Slack answered with JSON that is not a Slack API answer ({exc})") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RetryableError(f"Slack unreachable: {exc}") from None
    except SlackApiError:
        raise  # Slack's answer: the caller decides (refresh, or classify)
    except SlackClientError as exc:
        raise RetryableError(f"Slack unreachable: {exc}") from None
    return response.data if isinstance(response.data, dict) else {}


def _upload_args(config: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    """What files_upload_v2 sends, the file read once (within POTAFLOW_SEND_FILE_MAX_BYTES) for every try."""
    channel = str(config["channel"])
    if channel.startswith("#"):
        raise PermanentError(f"config.channel: a file upload needs the channel's id (C0123...), not {channel!r}")
    if ctx.files is None:
        raise PermanentError("this step runs without access to files")
    info, data = ctx.files.read(config["file"], field="config.file", limit=settings.POTAFLOW_SEND_FILE_MAX_BYTES,
                                setting="POTAFLOW_SEND_FILE_MAX_BYTES")  # fmt: skip
    kwargs: dict[str, Any] = {
        "channel": channel,
        "content": data,
        "filename": config.get("filename") or info.name,
        "title": config.get("title") or config.get("filename") or info.name,
        "file": info.as_ref(),
    }
    if config.get("text"):
        kwargs["initial_comment"] = config["text"]
    if config.get("thread_ts"):
        kwargs["thread_ts"] = config["thread_ts"]
    return kwargs


def _upload(token: str, kwargs: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    """Slack's external upload flow (``files_upload_v2``): files.getUploadURLExternal, the bytes to
    the URL it gives, then files.completeUploadExternal sharing the file in the channel."""
    # deferred: as in run
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError

    client = WebClient(token=token, base_url=settings.POTAFLOW_SLACK_API_URL,
                       timeout=max(1, round(ctx.timeout_seconds)), retry_handlers=[])  # fmt: skip
    try:
        response = client.files_upload_v2(**{k: v for k, v in kwargs.items() if k != "file"})
    except SlackApiError:
        raise  # Slack's answer: the caller decides (refresh, or classify)
    except SlackRequestError as exc:  # the upload URL answered something other than 200
        raise RetryableError(f"Slack file upload failed: {exc}") from None
    except (urllib.error.URLError, TimeoutError, OSError, SlackClientError) as exc:
        raise RetryableError(f"Slack unreachable: {exc}") from None
    return response.data if isinstance(response.data, dict) else {}


def _error_code(exc: SlackApiError) -> str | None:
    data = getattr(exc.response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def _classify(exc: SlackApiError, channel: str) -> Exception:
    response = exc.response
    data = getattr(response, "data", None)
    status = getattr(response, "status_code", 0)
    retry_after = errors.parse_retry_after(_header(getattr(response, "headers", None), "Retry-After"))
    code = data.get("error") if isinstance(data, dict) else None
    if not isinstance(code, str) or code.startswith(_NOT_JSON):
        body = str(code or data or "").removeprefix(_NOT_JSON).strip()
        message = f"Slack answered HTTP {status} with a body that is not JSON: {body[:200]!r}"
        if 200 <= status < 300:  # a success status with a body that is not Slack's: puzzling, so retried
            return RetryableError(message, retry_after=retry_after, status=status)
        return errors.from_status(status, message, retry_after=retry_after)
    message = f"Slack error {code[:100]} (HTTP {status}) posting to {channel}"
    if code in RETRYABLE_ERRORS:  # transient on Slack's side, whatever the status (often 200)
        return RetryableError(message, retry_after=retry_after, status=status)
    return errors.from_status(status, message, retry_after=retry_after)


def _header(headers: Mapping[str, str | list[str]] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list) else value
    return None
