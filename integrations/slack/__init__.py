"""``slack.message``: post to a channel with a bot token or a Slack connection (``slack_sdk``)."""

from .action import SlackMessage
from .credentials import SLACK_BOT_TOKEN, SLACK_OAUTH

ACTIONS = (SlackMessage,)
CREDENTIAL_KINDS = (SLACK_BOT_TOKEN, SLACK_OAUTH)
