"""``filter``: continue only when a condition holds; otherwise the run ends as ``filtered``."""

from typing import Any

from integrations.base import Action, ActionContext
from integrations.errors import RunFiltered
from integrations.storable import JSONValue

_FALSE_STRINGS = {"", "0", "false", "no", "off", "none", "null"}


def truthy(value: Any) -> bool:
    """Truth of a rendered condition: strings such as "false" or "0" are false."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)


class Filter(Action):
    name = "filter"
    has_side_effects = False
    runs_in_process = True
    computes_ahead = True
    title = "Filter"
    description = (
        "Ends the run as 'filtered' (later steps skipped) when the condition is false, "
        'e.g. {"condition": "{{ trigger.body.amount > 100 }}"}. A bare expression without '
        "braces is accepted too."
    )
    config_schema = {
        "type": "object",
        "properties": {"condition": {"description": "A template expression."}},
        "required": ["condition"],
        "additionalProperties": False,
    }
    # Config fields that hold an expression: a bare "a > 1" is read as "{{ a > 1 }}".
    expression_fields = ("condition",)
    # An event without a field the condition reads is filtered out, not a failed run (the note says so).
    condition_fields = ("condition",)

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        passed = truthy(config["condition"])
        output: dict[str, JSONValue] = {"passed": passed, "condition": config["condition"]}
        undefined = (config.get("_undefined") or {}).get("condition")
        if undefined:
            output["note"] = f"undefined in the condition, read as false: {'; '.join(undefined)}"
        if not passed:
            raise RunFiltered(output)
        return output
