"""The Slack credential kind: a bot token, sent only to ``POTAFLOW_SLACK_API_URL``."""

from integrations.base import Field, KindSpec

SLACK_BOT_TOKEN = KindSpec(
    "slack_bot_token",
    "Slack bot token",
    (Field("token", secret=True, help="A bot token, xoxb-..."),),
)
