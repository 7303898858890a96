"""``sheets.append_row``: append one row to a Google Sheet with gspread and a service account.

The Google client libraries live in ``client`` and load on the first run, not
when the registry loads: web and beat never carry them (see that module for
the SSRF guard and the configurable API base URLs).
"""

from typing import Any

from integrations.base import Action, ActionContext
from integrations.storable import JSONValue

from .credentials import GOOGLE_OAUTH, GOOGLE_SERVICE_ACCOUNT


class AppendRow(Action):
    name = "sheets.append_row"
    title = "Google Sheets: append row"
    description = "Append one row of values to a worksheet, as the credential's service account or Google account."
    credential_kind = (GOOGLE_SERVICE_ACCOUNT.kind, GOOGLE_OAUTH.kind)
    credential_required = True
    config_schema = {
        "type": "object",
        "required": ["spreadsheet", "values"],
        "additionalProperties": False,
        "properties": {
            "spreadsheet": {"type": "string", "minLength": 1, "description": "Spreadsheet key or its URL"},
            "worksheet": {"type": "string", "description": "Worksheet title (default: the first one)"},
            "values": {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}, "minItems": 1},
            "value_input_option": {
                "type": "string",
                "enum": ["RAW", "USER_ENTERED"],
                "default": "RAW",
                "description": "RAW stores values as given; USER_ENTERED parses them like typed input "
                "(formulas too, so only for trusted data)",
            },
        },
    }

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue]:
        return {"spreadsheet": config.get("spreadsheet"), "worksheet": config.get("worksheet")}

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        # deferred: keeps idle memory down (gspread and google-auth load only where a row is appended)
        from . import client

        return client.append_row(config, ctx)
