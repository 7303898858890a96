"""slack.message through slack_sdk against a local peer speaking Slack's Web API."""

import json

import pytest

from integrations.errors import ConfigError, PermanentError, RetryableError
from integrations.slack.action import SlackMessage
from integrations.tests.support import file_ctx, make_ctx, stored_file
from testing.network import Reply

action = SlackMessage()
CRED = {"token": "xoxb-test-token"}
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* done"}}]


@pytest.fixture
def slack(settings, fake_slack):
    settings.POTAFLOW_SLACK_API_URL = fake_slack.api_url
    return fake_slack


def post(config, cred=CRED):
    return action.run(config, make_ctx(cred, "slack_bot_token"))


def test_it_posts_text_blocks_and_thread_with_the_bot_token(slack):
    out = post({"channel": "C0123456789", "text": "Deploy done", "blocks": BLOCKS, "thread_ts": "1700000000.000100"})
    (req,) = slack.requests
    assert (req.method, req.path) == ("POST", "/api/chat.postMessage")
    assert req.headers["authorization"] == "Bearer xoxb-test-token"
    assert req.headers["content-type"].startswith("application/json")
    assert req.json() == {"channel": "C0123456789", "text": "Deploy done", "blocks": BLOCKS,
                          "thread_ts": "1700000000.000100"}  # fmt: skip
    assert out["ok"] is True
    assert out["channel"] == "C0123456789"
    assert out["ts"] == out["message"]["ts"]
    assert out["message"]["thread_ts"] == "1700000000.000100"


def test_a_channel_name_resolves(slack):
    assert post({"channel": "#general", "text": "hi"})["channel"] == "C0123456789"


@pytest.mark.parametrize(
    ("config", "cred", "code"),
    [
        ({"channel": "#nope", "text": "x"}, CRED, "channel_not_found"),
        ({"channel": "C0123456789", "text": "x"}, {"token": "xoxb-revoked"}, "invalid_auth"),
        ({"channel": "C0NOTMEMBER", "text": "x"}, CRED, "not_in_channel"),
    ],
)
def test_slack_errors_are_permanent_with_slacks_code(slack, config, cred, code):
    with pytest.raises(PermanentError, match=f"Slack error {code}"):
        post(config, cred)
    assert slack.posted == []


def test_ratelimited_is_retryable_with_retry_after(slack):
    slack.rate_limited.append(12)
    with pytest.raises(RetryableError, match="ratelimited") as exc:
        post({"channel": "C0123456789", "text": "x"})
    assert exc.value.retry_after == 12
    assert len(slack.requests) == 1  # the client did not retry on its own
    assert post({"channel": "C0123456789", "text": "x"})["ok"] is True


# -- odd answers (a proxy's error page, an empty body, data a database refuses) --
ROUTE = ("POST", "/api/chat.postMessage")


@pytest.mark.parametrize("status", [502, 503, 504])
def test_an_html_gateway_page_is_retryable(slack, status):
    slack.route(*ROUTE, Reply(status, "<html><body><h1>Bad Gateway</h1></body></html>", {"Content-Type": "text/html"}))
    with pytest.raises(RetryableError, match=f"HTTP {status}.*not JSON.*Bad Gateway"):
        post({"channel": "C0123456789", "text": "x"})


@pytest.mark.parametrize("body", [b"", b"<html>maintenance</html>", b"[1, 2]"])
def test_a_200_that_is_not_a_slack_json_object_is_retryable_and_says_so(slack, body):
    slack.route(*ROUTE, Reply(200, body, {"Content-Type": "text/html"}))
    with pytest.raises(RetryableError, match="not (JSON|a Slack API answer)"):
        post({"channel": "C0123456789", "text": "x"})


def test_a_4xx_with_a_non_json_body_is_permanent(slack):
    slack.route(*ROUTE, Reply(404, "Not Found", {"Content-Type": "text/plain"}))
    with pytest.raises(PermanentError, match="HTTP 404"):
        post({"channel": "C0123456789", "text": "x"})


def test_the_output_stays_storable_when_slack_echoes_odd_data(slack):
    raw = b'{"ok": true, "channel": "C0123456789", "ts": "1.2", "message": {"text": "a\\u0000b", "score": NaN}}'
    slack.route(*ROUTE, Reply(200, raw, {"Content-Type": "application/json"}))
    out = post({"channel": "C0123456789", "text": "x"})
    assert out["message"] == {"text": "a\ufffdb", "score": "NaN"}
    assert "\\u0000" not in json.dumps(out, allow_nan=False)


def test_an_error_code_with_a_nul_is_cleaned_from_the_message(slack):
    slack.route(*ROUTE, Reply(200, b'{"ok": false, "error": "weird\\u0000code"}', {"Content-Type": "application/json"}))
    with pytest.raises(PermanentError, match="Slack error weird\ufffdcode"):
        post({"channel": "C0123456789", "text": "x"})


def test_config_needs_a_channel_and_text_or_blocks():
    with pytest.raises(ConfigError):
        action.validate_config({"channel": "C1"})
    with pytest.raises(ConfigError, match="config.blocks"):
        action.validate_config({"channel": "C1", "blocks": "not a list"})
    action.validate_config({"channel": "C1", "blocks": BLOCKS})


# -- file upload (issue 23) ----------------------------------------------------------
def test_a_file_is_uploaded_with_the_external_upload_flow_and_shared_in_the_channel(file_storage, organization, slack):
    data = b"col\n" + b"1\n" * 1000
    ref = stored_file(organization, "rows.csv", data, "text/csv")
    out = action.run({"channel": "C0123456789", "text": "Here are the rows", "file": ref},
                     file_ctx(organization, CRED, "slack_bot_token"))  # fmt: skip
    paths = [r.path for r in slack.requests]
    assert paths[0] == "/api/files.getUploadURLExternal" and paths[-1] == "/api/files.completeUploadExternal"
    (uploaded,) = slack.files
    assert uploaded["data"] == data and uploaded["filename"] == "rows.csv"
    assert (uploaded["channel"], uploaded["comment"]) == ("C0123456789", "Here are the rows")
    assert out["file_id"] == uploaded["id"] and out["file"]["sha256"] == ref["sha256"]


def test_a_file_upload_needs_a_channel_id_and_channel_errors_are_slacks(file_storage, organization, slack):
    ref = stored_file(organization, "x.txt", b"x")
    with pytest.raises(PermanentError, match="channel's id"):
        action.run({"channel": "#general", "file": ref}, file_ctx(organization, CRED, "slack_bot_token"))
    with pytest.raises(PermanentError, match="not_in_channel"):
        action.run({"channel": "C0NOTMEMBER", "file": ref}, file_ctx(organization, CRED, "slack_bot_token"))
    assert slack.files == []
