"""slack.message through slack_sdk against a local peer speaking Slack's Web API."""

import pytest

from integrations.actions.slack import SlackMessage
from integrations.errors import ConfigError, PermanentError, RetryableError

from .conftest import make_ctx

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


def test_config_needs_a_channel_and_text_or_blocks():
    with pytest.raises(ConfigError):
        action.validate_config({"channel": "C1"})
    with pytest.raises(ConfigError, match="config.blocks"):
        action.validate_config({"channel": "C1", "blocks": "not a list"})
    action.validate_config({"channel": "C1", "blocks": BLOCKS})
