"""``sheets.append_row``: append one row to a Google Sheet with gspread and a service account.

The Google client libraries live in ``client`` and load on the first run, not
when the registry loads: web and beat never carry them (see that module for
the SSRF guard and the configurable API base URLs).
"""

import json
from collections.abc import Callable, Mapping
from typing import Any

from integrations.base import Action, ActionContext, PreviewCredential, preview_row
from integrations.errors import PermanentError
from integrations.storable import JSONValue
from integrations.template_syntax import is_template

from .credentials import GOOGLE_OAUTH, GOOGLE_SERVICE_ACCOUNT

_CELL = {"type": ["string", "number", "boolean", "null"]}
# What a spreadsheet reads as the start of a formula (OWASP "CSV injection"; Sheets also takes + - @).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def as_text(value: Any) -> Any:
    """An untrusted value that a spreadsheet would run as a formula, made text (a leading apostrophe,
    which USER_ENTERED reads as "this is text" and does not show); numbers such as -3 stay numbers."""
    if not isinstance(value, str):
        return value
    # After leading blanks too: " =1+1" and "\n=1+1" are formulas to a spreadsheet that trims them.
    if not (value.startswith(FORMULA_STARTS) or value.lstrip().startswith(FORMULA_STARTS)):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def _always(index: int) -> bool:
    return True


def untrusted_cells(raw: Any) -> Callable[[int], bool]:
    """Which positions of ``values`` came from a template (untrusted) rather than the workflow's author:
    a literal list marks its literal strings trusted; anything rendered is untrusted."""
    if isinstance(raw, list):
        flags = [not (isinstance(v, str) and not is_template(v)) for v in raw]
        return lambda index: flags[index] if index < len(flags) else True
    return lambda index: True


class AppendRow(Action):
    name = "sheets.append_row"
    title = "Google Sheets: append row"
    description = (
        "Append one row of values (or many rows) to a worksheet, as the credential's service account or "
        "Google account. Values from templates that start with =, +, -, @ are written as text, never as formulas."
    )
    credential_kind = (GOOGLE_SERVICE_ACCOUNT.kind, GOOGLE_OAUTH.kind)
    credential_required = True
    config_schema = {
        "type": "object",
        "required": ["spreadsheet"],
        "anyOf": [{"required": ["values"]}, {"required": ["rows"]}],
        "additionalProperties": False,
        "properties": {
            "spreadsheet": {"type": "string", "minLength": 1, "description": "Spreadsheet key or its URL"},
            "worksheet": {"type": "string", "description": "Worksheet title (default: the first one)"},
            "values": {"type": "array", "items": _CELL, "minItems": 1},
            "rows": {
                "type": "array",
                "items": {"type": ["array", "object"]},
                "description": "Many rows in one call: lists of values, or objects with columns naming "
                "their keys in order, e.g. {{ steps.parse.output.rows }}",
            },
            "columns": {
                "type": "array",
                "items": {"type": "string"},
                "description": "For rows that are objects: the keys, in column order "
                "(e.g. {{ steps.parse.output.columns }}); a stored object keeps no key order",
            },
            "value_input_option": {
                "type": "string",
                "enum": ["RAW", "USER_ENTERED"],
                "default": "RAW",
                "description": "RAW stores values as given; USER_ENTERED parses them like typed input "
                "(formulas too, so only for trusted data)",
            },
        },
    }

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        """Where the row(s) would go, and what they hold."""
        worksheet = config.get("worksheet") or "(the first worksheet)"
        rows = config.get("rows")
        return {
            "kind": "sheets",
            "spreadsheet": config.get("spreadsheet"),
            "worksheet": worksheet,
            "row": config.get("values"),
            "rows": [
                preview_row("Spreadsheet", config.get("spreadsheet")),
                preview_row("Worksheet", worksheet),
                preview_row("Rows", json.dumps(rows))
                if rows not in (None, "")
                else preview_row("Row", json.dumps(config.get("values"))),
            ],
        }

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue]:
        return {"spreadsheet": config.get("spreadsheet"), "worksheet": config.get("worksheet")}

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        # deferred: keeps idle memory down (gspread and google-auth load only where a row is appended)
        from . import client

        return client.append_row({**config, "rows": safe_rows(config, ctx)}, ctx)


def safe_rows(config: dict[str, Any], ctx: ActionContext) -> list[list[Any]]:
    """The rows to append, with untrusted would-be formulas written as text when Sheets parses input."""
    if config.get("rows") not in (None, ""):
        columns: list[str] = list(config.get("columns") or [])
        if any(isinstance(r, dict) for r in config["rows"]) and not columns:
            raise PermanentError(
                "config.columns: the rows are objects, whose keys have no order once stored; name the columns "
                "in order, e.g. {{ steps.parse.output.columns }}"
            )
        rows = [[r.get(c) for c in columns] if isinstance(r, dict) else list(r) for r in config["rows"]]
        untrusted: Callable[[int], bool] = _always  # rows always come from data
    else:
        rows = [list(config["values"])]
        untrusted = untrusted_cells(ctx.raw_config.get("values"))
    rows = [["" if v is None else v for v in row] for row in rows]
    if (config.get("value_input_option") or "RAW") != "USER_ENTERED":
        return rows  # RAW stores every value as it is: a string is text, never a formula
    return [[as_text(v) if untrusted(i) else v for i, v in enumerate(row)] for row in rows]
