"""``slack.message``: post to a channel with a bot token (``slack_sdk``)."""

from .action import SlackMessage
from .credentials import SLACK_BOT_TOKEN

ACTIONS = (SlackMessage,)
CREDENTIAL_KINDS = (SLACK_BOT_TOKEN,)
